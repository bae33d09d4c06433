//! Configuration: `$PRISM_HOME/sync/<NAME>.yml` (one sync set at this endpoint) and
//! `$PRISM_HOME/sync-rules.yml` (the Prism plan's rules schema). Unknown keys are refused with
//! the line and column, so a typo never silently changes what syncs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::home::Home;
use crate::sync::rules::{Category, Rules, RulesBuilder, parse_size};
use crate::sync::{Mode, Policy, Role};

/// Names under `$PRISM_HOME/sync/` that belong to the daemon, not to a set (`daemon.yml` is the
/// daemon's list of started sets): never a set's name, never listed as one.
pub const RESERVED_NAMES: &[&str] = &["daemon"];

fn yes() -> bool {
    true
}
fn thirty_days() -> String {
    "30d".into()
}
fn delete_count() -> u64 {
    1000
}
fn delete_percent() -> f64 {
    50.0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AutoRule {
    pub pattern: String,
    /// The Prism plan spells it `action:`.
    #[serde(alias = "action")]
    pub policy: Policy,
}

/// The Prism plan's `conflict_resolution:` block, accepted as the plan writes it. At load its
/// `policy`, `automatic_rules` and `backup_strategy.retention` move onto the set's own
/// `conflict_policy`, `automatic_rules` and `retention`; what stays here is accepted but not
/// acted on, and named in a warning (see [`SetConfig::ignored_keys`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConflictResolution {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub automatic_rules: Vec<AutoRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_strategy: Option<BackupStrategy>,
}

/// `conflict_resolution.backup_strategy`: where the plan keeps the losing versions, and for how
/// long. Every overwritten version stays in the snapshots for the set's `retention`, so
/// `retention` maps onto it; `location` has no counterpart (a `keep_both` copy is written beside
/// the original).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupStrategy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceInfo {
    pub name: String,
    /// RFC 3339.
    pub added: String,
    /// The id of the workspace's own key file in the repository (`key remove` revokes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Its folder, as `add-instance` was told (for `status` until it publishes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

/// One sync set at this endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    pub name: String,
    pub local_path: PathBuf,
    /// Repository URL.
    pub repo: String,
    /// This endpoint's name: `local` on the laptop, the workspace's name on a workspace.
    pub endpoint: String,
    pub role: Role,
    #[serde(default)]
    pub sync_mode: Mode,
    #[serde(default)]
    pub conflict_policy: Policy,
    #[serde(default)]
    pub automatic_rules: Vec<AutoRule>,
    #[serde(default)]
    pub exclude_patterns: Vec<String>,
    #[serde(default = "yes")]
    pub builtin_excludes: bool,
    /// `research` opts into the `research_rules` categories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
    #[serde(default)]
    pub instances: Vec<InstanceInfo>,
    #[serde(default = "thirty_days")]
    pub retention: String,
    /// A step that would delete more files than this halts the set.
    #[serde(default = "delete_count")]
    pub max_delete_count: u64,
    /// … or more than this share of the files (when it deletes at least 10).
    #[serde(default = "delete_percent")]
    pub max_delete_percent: f64,
    /// The folder's file system folds case (macOS, Windows, many SMB/exFAT mounts): names that
    /// differ only in case are kept apart. Probed at `init` and `join`.
    #[serde(default)]
    pub case_insensitive: bool,
    /// The folder's file system treats NFC and NFD spellings of a name as one (macOS): such
    /// names are kept apart. Probed at `init` and `join`.
    #[serde(default)]
    pub unicode_normalizing: bool,
    /// Send at most this many KiB/s to the repository (s3, rest); `--limit-upload` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload: Option<u64>,
    /// Receive at most this many KiB/s from the repository; `--limit-download` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_download: Option<u64>,
    /// The Prism plan's spelling of `conflict_policy` / `automatic_rules` / `retention`; what is
    /// left of it after load is not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_resolution: Option<ConflictResolution>,
}

impl SetConfig {
    /// The bandwidth limits of this set's transfers: the command line's, else the config's.
    pub fn bandwidth(&self) -> crate::backend::limit::Bandwidth {
        crate::backend::limit::with_defaults(self.limit_upload, self.limit_download)
    }

    /// What the folder's file system folds, as recorded.
    pub fn folding(&self) -> crate::fsx::fold::Folding {
        crate::fsx::fold::Folding {
            case: self.case_insensitive,
            unicode: self.unicode_normalizing,
        }
    }

    pub fn path(home: &Home, name: &str) -> PathBuf {
        home.set_config(name)
    }

    pub fn load(home: &Home, name: &str) -> Result<SetConfig> {
        let path = Self::path(home, name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::invalid(format!(
                    "no sync set {name:?} here ({} does not exist): see `prism-sync status`, or create it with `prism-sync init DIR`",
                    path.display()
                )));
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut c: SetConfig = serde_saphyr::from_str(&text).map_err(|e| yaml_error(&path, &e))?;
        c.take_plan_block()
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        if c.name != name {
            return Err(Error::invalid(format!(
                "{}: it describes set {:?}, not {name:?}",
                path.display(),
                c.name
            )));
        }
        c.retention_policy()
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        Ok(c)
    }

    /// Moves what the plan's `conflict_resolution:` block says onto the set's own fields; a
    /// value that contradicts the set's own spelling of it is refused (which one wins would be a
    /// guess).
    fn take_plan_block(&mut self) -> Result<()> {
        let Some(block) = self.conflict_resolution.as_mut() else {
            return Ok(());
        };
        if let Some(p) = block.policy.take() {
            if self.conflict_policy != Policy::default() && self.conflict_policy != p {
                return Err(Error::invalid(format!(
                    "conflict_policy: {} and conflict_resolution.policy: {} disagree: keep one of them",
                    self.conflict_policy.name(),
                    p.name()
                )));
            }
            self.conflict_policy = p;
        }
        self.automatic_rules.append(&mut block.automatic_rules);
        if let Some(bs) = block.backup_strategy.as_mut() {
            if let Some(r) = bs.retention.take() {
                if self.retention != thirty_days() && self.retention != r {
                    return Err(Error::invalid(format!(
                        "retention: {} and conflict_resolution.backup_strategy.retention: {r} disagree: keep one of them",
                        self.retention
                    )));
                }
                self.retention = r;
            }
            if bs.location.is_none() {
                block.backup_strategy = None;
            }
        }
        if *block == ConflictResolution::default() {
            self.conflict_resolution = None;
        }
        Ok(())
    }

    /// Keys of this set's config and of the rules file that are accepted (the Prism plan writes
    /// them) but change nothing, each with why: `sync` and `status` warn about them.
    pub fn ignored_keys(&self, _file: &RulesFile) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(loc) = self
            .conflict_resolution
            .as_ref()
            .and_then(|b| b.backup_strategy.as_ref())
            .and_then(|b| b.location.as_deref())
        {
            v.push(format!(
                "conflict_resolution.backup_strategy.location ({loc}) is ignored: a keep_both copy is written beside the original and every overwritten version stays in the snapshots (`prism-sync history`); remove the key to silence this"
            ));
        }
        v
    }

    /// The set's retention, parsed (validated at load).
    pub fn retention_policy(&self) -> Result<crate::snapshot::retention::Policy> {
        crate::snapshot::retention::Policy::parse(&self.retention)
    }

    /// Writes the config via a temp file and rename.
    pub fn save(&self, home: &Home) -> Result<()> {
        let path = Self::path(home, &self.name);
        let text = serde_saphyr::to_string(self)
            .map_err(|e| Error::invalid(format!("cannot write {}: {e}", path.display())))?;
        let header =
            "# prism-sync: one sync set at this endpoint. Edit freely; unknown keys are refused.\n";
        write_atomic(&path, format!("{header}{text}").as_bytes())
    }

    /// Set names: letters, digits, `-`, `_`, `.`; not starting with `.` or `-`.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && !RESERVED_NAMES.contains(&name)
            && name.len() <= 64
            && !name.starts_with(['.', '-'])
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    }

    /// Every set configured under `home`.
    pub fn list(home: &Home) -> Result<Vec<String>> {
        let mut v = Vec::new();
        let sync_dir = home.sync_dir();
        let rd = match std::fs::read_dir(&sync_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
            Err(e) => return Err(Error::io(&sync_dir, e)),
        };
        for e in rd.flatten() {
            if let Some(n) = e.file_name().to_str().and_then(|n| n.strip_suffix(".yml"))
                && Self::valid_name(n)
            {
                v.push(n.to_string());
            }
        }
        v.sort();
        Ok(v)
    }
}

/// A config file that does not parse, as one line: the file, the line and column, and what the
/// parser expected there (for an unknown key, the keys it knows), without the source excerpt
/// the parser draws below it.
fn yaml_error(path: &Path, e: &dyn std::fmt::Display) -> Error {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    Error::invalid(format!("{}: {first}", path.display()))
}

/// Writes a file under `$PRISM_HOME` atomically, readable by this user only (0600, in a 0700
/// directory).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    crate::fsx::private::write_atomic(path, data).map_err(|e| Error::io(path, e))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeLimits {
    #[serde(default)]
    pub max_file_size: Option<String>,
    #[serde(default)]
    pub warn_file_size: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRules {
    #[serde(default)]
    pub include_patterns: Vec<String>,
    #[serde(default)]
    pub exclude_patterns: Vec<String>,
    #[serde(default)]
    pub size_limits: SizeLimits,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryRules {
    #[serde(default)]
    pub include_patterns: Vec<String>,
    #[serde(default)]
    pub max_file_size: Option<String>,
    #[serde(default)]
    pub sync_mode: Option<String>,
    #[serde(default)]
    pub real_time: Option<bool>,
}

/// `$PRISM_HOME/sync-rules.yml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub default_rules: DefaultRules,
    #[serde(default)]
    pub research_rules: BTreeMap<String, CategoryRules>,
}

/// The `research` preset when `sync-rules.yml` does not define `research_rules` (the Prism
/// plan's categories).
pub fn research_preset() -> BTreeMap<String, CategoryRules> {
    let cat = |p: &[&str], size: Option<&str>, mode: &str, rt: bool| CategoryRules {
        include_patterns: p.iter().map(|s| s.to_string()).collect(),
        max_file_size: size.map(str::to_string),
        sync_mode: Some(mode.into()),
        real_time: Some(rt),
    };
    BTreeMap::from([
        (
            "code".into(),
            cat(
                &[
                    "*.py", "*.R", "*.r", "*.jl", "*.ipynb", "*.sh", "*.m", "*.cpp", "*.c", "*.h",
                    "*.rs",
                ],
                None,
                "bidirectional",
                true,
            ),
        ),
        (
            "datasets".into(),
            cat(
                &[
                    "data/",
                    "datasets/",
                    "*.h5",
                    "*.hdf5",
                    "*.parquet",
                    "*.npy",
                    "*.npz",
                    "*.csv",
                ],
                Some("1GB"),
                "upload_only",
                false,
            ),
        ),
        (
            "results".into(),
            cat(
                &["results/", "figures/", "output/", "outputs/"],
                None,
                "download_only",
                false,
            ),
        ),
    ])
}

impl RulesFile {
    pub fn load(home: &Path) -> Result<RulesFile> {
        let path = Home::new(home).rules_file();
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_saphyr::from_str(&t).map_err(|e| yaml_error(&path, &e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RulesFile::default()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

/// Builds the rules of a set: config + rules file + the folder's `.prismsyncignore`.
pub fn build_rules(cfg: &SetConfig, file: &RulesFile, ignore_file: Option<&str>) -> Result<Rules> {
    let mut b = RulesBuilder::new();
    b.builtin_excludes = cfg.builtin_excludes;
    b.excludes
        .extend(file.default_rules.exclude_patterns.iter().cloned());
    b.excludes.extend(cfg.exclude_patterns.iter().cloned());
    if let Some(text) = ignore_file {
        b.ignore_file(text);
    }
    b.includes = file.default_rules.include_patterns.clone();
    b.default_mode = cfg.sync_mode;
    b.default_policy = cfg.conflict_policy;
    b.auto = cfg
        .automatic_rules
        .iter()
        .map(|r| (r.pattern.clone(), r.policy))
        .collect();
    b.max_file_size = file
        .default_rules
        .size_limits
        .max_file_size
        .as_deref()
        .map(parse_size)
        .transpose()?;
    b.warn_file_size = file
        .default_rules
        .size_limits
        .warn_file_size
        .as_deref()
        .map(parse_size)
        .transpose()?;
    match cfg.rules.as_deref() {
        None | Some("default") => {}
        Some("research") => {
            let cats = if file.research_rules.is_empty() {
                research_preset()
            } else {
                file.research_rules.clone()
            };
            for (name, c) in cats {
                let mode = match c.sync_mode.as_deref() {
                    None => Mode::Bidirectional,
                    Some(m) => Mode::parse(m).ok_or_else(|| {
                        Error::invalid(format!("research_rules.{name}.sync_mode {m:?}: use bidirectional, upload_only or download_only"))
                    })?,
                };
                b.categories.push(Category {
                    name,
                    patterns: c.include_patterns,
                    mode,
                    max_file_size: c.max_file_size.as_deref().map(parse_size).transpose()?,
                    real_time: c.real_time.unwrap_or(false),
                });
            }
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "rules: {other:?} is not a preset: use `research` or leave it out"
            )));
        }
    }
    b.build()
}
