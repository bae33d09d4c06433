//! Path rules: what syncs, in which mode, with which conflict policy, up to which size.
//!
//! Sources, all combined: built-in excludes (switchable), the set's `exclude_patterns`, the
//! `default_rules` of `$PRISM_HOME/sync-rules.yml`, and `.prismsyncignore` at the top of the
//! synced folder — all in gitignore syntax (`**`, `!negation`, trailing `/` for directories,
//! leading `/` to anchor). Include patterns (if any) restrict which *files* sync; directories are
//! always walked. With the `research` preset, the first category whose include patterns match a
//! path gives its mode and size limit. `automatic_rules` map patterns to conflict policies.
//!
//! Excluded or oversized paths are *untracked*: they are neither published nor deleted
//! anywhere, so a rule change never looks like a deletion.

use globset::{Glob, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::{Mode, Policy};
use crate::error::{Error, Result};

/// Excluded unless switched off (`builtin_excludes: false`, or one pattern re-included with
/// `!*.log` in the set's `exclude_patterns`). `*.log` is in the Prism plan's default excludes.
/// A path a set already shared before a pattern joined this list stays in the shared state
/// as it was (an excluded path is never deleted anywhere); it just stops syncing.
pub const BUILTIN_EXCLUDES: &[&str] = &[
    ".git/",
    "__pycache__/",
    "*.pyc",
    ".DS_Store",
    "Thumbs.db",
    "*.tmp",
    "*.log",
    "node_modules/",
    ".venv/",
    ".conda/",
    ".ipynb_checkpoints/",
    "*.swp",
    "*.swo",
    "*~",
    ".#*",
    "~$*",
    ".~lock.*#",
];

/// Always excluded: prism-sync's own partial files.
pub const INTERNAL_EXCLUDES: &[&str] = &["*.prism-tmp-*"];

/// The ignore file inside a synced folder.
pub const IGNORE_FILE: &str = ".prismsyncignore";

/// A research category (`research_rules` preset).
#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub patterns: Vec<String>,
    pub mode: Mode,
    pub max_file_size: Option<u64>,
    pub real_time: bool,
}

/// Everything that decides how a path is treated. Build with [`RulesBuilder`].
pub struct Rules {
    excludes: Gitignore,
    includes: Option<GlobSet>,
    /// Each category with its patterns and, per pattern, its specificity.
    categories: Vec<(Category, GlobSet, Vec<usize>)>,
    auto: Vec<(GlobSet, Policy)>,
    pub default_mode: Mode,
    pub default_policy: Policy,
    pub max_file_size: Option<u64>,
    pub warn_file_size: Option<u64>,
}

#[derive(Default, Clone)]
pub struct RulesBuilder {
    pub builtin_excludes: bool,
    pub excludes: Vec<String>,
    pub includes: Vec<String>,
    pub categories: Vec<Category>,
    pub auto: Vec<(String, Policy)>,
    pub default_mode: Mode,
    pub default_policy: Policy,
    pub max_file_size: Option<u64>,
    pub warn_file_size: Option<u64>,
}

/// Builds a glob set; returns it with, per glob, the length of its literal prefix (how specific
/// it is: `results/**` beats `*.csv`).
fn globset_scored(patterns: &[String], what: &str) -> Result<(GlobSet, Vec<usize>)> {
    let mut b = GlobSetBuilder::new();
    let mut scores = Vec::new();
    let literal = |p: &str| p.find(['*', '?', '[', '{']).unwrap_or(p.len());
    for p in patterns {
        let p = p.trim_start_matches('/');
        let g = Glob::new(p).map_err(|e| Error::invalid(format!("{what} pattern {p:?}: {e}")))?;
        b.add(g);
        scores.push(literal(p));
        // `dir/` patterns also cover the directory's contents.
        if let Some(dir) = p.strip_suffix('/') {
            b.add(Glob::new(&format!("{dir}/**")).map_err(|e| Error::invalid(e.to_string()))?);
            scores.push(p.len());
        }
    }
    let set = b
        .build()
        .map_err(|e| Error::invalid(format!("{what} patterns: {e}")))?;
    Ok((set, scores))
}

fn globset(patterns: &[String], what: &str) -> Result<GlobSet> {
    globset_scored(patterns, what).map(|(s, _)| s)
}

impl RulesBuilder {
    pub fn new() -> Self {
        RulesBuilder {
            builtin_excludes: true,
            ..Default::default()
        }
    }

    /// Adds the lines of a `.prismsyncignore`-style file (comments and blanks are ignored).
    pub fn ignore_file(&mut self, text: &str) -> &mut Self {
        self.excludes.extend(text.lines().map(str::to_string));
        self
    }

    pub fn build(&self) -> Result<Rules> {
        let mut gi = GitignoreBuilder::new("");
        let builtin: &[&str] = if self.builtin_excludes {
            BUILTIN_EXCLUDES
        } else {
            &[]
        };
        for line in INTERNAL_EXCLUDES
            .iter()
            .chain(builtin)
            .map(|s| s.to_string())
            .chain(self.excludes.iter().cloned())
        {
            gi.add_line(None, &line)
                .map_err(|e| Error::invalid(format!("exclude pattern {line:?}: {e}")))?;
        }
        let excludes = gi
            .build()
            .map_err(|e| Error::invalid(format!("exclude patterns: {e}")))?;
        let includes = if self.includes.is_empty() {
            None
        } else {
            Some(globset(&self.includes, "include")?)
        };
        let categories = self
            .categories
            .iter()
            .map(|c| {
                let (set, scores) = globset_scored(&c.patterns, &format!("category {}", c.name))?;
                Ok((c.clone(), set, scores))
            })
            .collect::<Result<Vec<_>>>()?;
        let auto = self
            .auto
            .iter()
            .map(|(p, pol)| Ok((globset(std::slice::from_ref(p), "automatic rule")?, *pol)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Rules {
            excludes,
            includes,
            categories,
            auto,
            default_mode: self.default_mode,
            default_policy: self.default_policy,
            max_file_size: self.max_file_size,
            warn_file_size: self.warn_file_size,
        })
    }
}

fn as_path(p: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(p))
}

impl Rules {
    /// Rules that track everything, bidirectionally (merging shared states with each other).
    pub fn everything(policy: Policy) -> Rules {
        let mut b = RulesBuilder::new();
        b.builtin_excludes = false;
        b.default_policy = policy;
        b.build().expect("empty rules build")
    }

    /// Is the path (relative, `/`-separated) excluded? Files outside the include list are too.
    pub fn excluded(&self, path: &[u8], is_dir: bool) -> bool {
        let p = as_path(path);
        if self.excludes.matched(p, is_dir).is_ignore() {
            return true;
        }
        !is_dir && self.includes.as_ref().is_some_and(|inc| !inc.is_match(p))
    }

    /// The category of a path: among categories with a matching pattern, the one whose matching
    /// pattern is most specific (longest literal prefix); ties go to the first.
    fn category(&self, path: &[u8]) -> Option<&Category> {
        let p = as_path(path);
        let mut best: Option<(usize, &Category)> = None;
        for (c, set, scores) in &self.categories {
            if let Some(score) = set.matches(p).into_iter().map(|i| scores[i]).max()
                && best.is_none_or(|(b, _)| score > b)
            {
                best = Some((score, c));
            }
        }
        best.map(|(_, c)| c)
    }

    pub fn category_name(&self, path: &[u8]) -> Option<&str> {
        self.category(path).map(|c| c.name.as_str())
    }

    /// Whether a change at this path is to be synced as soon as it happens: false in a category
    /// with `real_time: false` (the daemon leaves it to the next step or rescan).
    pub fn real_time(&self, path: &[u8]) -> bool {
        self.category(path).is_none_or(|c| c.real_time)
    }

    pub fn mode(&self, path: &[u8]) -> Mode {
        self.category(path)
            .map(|c| c.mode)
            .unwrap_or(self.default_mode)
    }

    pub fn policy(&self, path: &[u8]) -> Policy {
        let p = as_path(path);
        self.auto
            .iter()
            .find(|(g, _)| g.is_match(p))
            .map(|(_, pol)| *pol)
            .unwrap_or(self.default_policy)
    }

    /// The largest file that syncs at this path.
    pub fn size_limit(&self, path: &[u8]) -> Option<u64> {
        self.category(path)
            .and_then(|c| c.max_file_size)
            .or(self.max_file_size)
    }

    /// True if some category restricts direction (the merge cannot take whole-tree shortcuts
    /// that assume one mode).
    pub fn has_one_way(&self) -> bool {
        self.default_mode != Mode::Bidirectional
            || self
                .categories
                .iter()
                .any(|(c, _, _)| c.mode != Mode::Bidirectional)
    }
}

/// Parses sizes like `100MB`, `1GB`, `512 KiB`, `12345` (units are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("{s:?} is not a size: write e.g. 100MB or 1GB")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(Error::invalid(format!(
                "{s:?}: unknown size unit (use B, KB, MB, GB or TB)"
            )));
        }
    };
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(f: impl FnOnce(&mut RulesBuilder)) -> Rules {
        let mut b = RulesBuilder::new();
        f(&mut b);
        b.build().unwrap()
    }

    #[test]
    fn builtin_excludes_and_gitignore_syntax() {
        let r = rules(|b| {
            b.ignore_file("# comment\nbuild/\n/top-only.txt\n*.log\n!keep.log\n");
        });
        assert!(r.excluded(b".git", true));
        assert!(r.excluded(b"src/__pycache__", true));
        assert!(r.excluded(b"a/b.pyc", false));
        assert!(r.excluded(b"build", true));
        assert!(
            !r.excluded(b"build", false),
            "trailing / matches directories only"
        );
        assert!(r.excluded(b"top-only.txt", false));
        assert!(!r.excluded(b"sub/top-only.txt", false), "leading / anchors");
        assert!(r.excluded(b"x/run.log", false));
        assert!(!r.excluded(b"keep.log", false), "negation");
        assert!(
            r.excluded(b"data/.big.bin.prism-tmp-0a1b", false),
            "our temp files never sync"
        );
        assert!(!r.excluded(b"notes.md", false));
        let off = rules(|b| b.builtin_excludes = false);
        assert!(!off.excluded(b".git", true));
        assert!(
            off.excluded(b".x.prism-tmp-1", false),
            "internal excludes cannot be switched off"
        );
    }

    #[test]
    fn includes_limit_files_not_directories() {
        let r = rules(|b| b.includes = vec!["*.py".into(), "data/**".into()]);
        assert!(!r.excluded(b"src/a.py", false));
        assert!(!r.excluded(b"data/x/y.bin", false));
        assert!(r.excluded(b"notes.md", false));
        assert!(!r.excluded(b"docs", true));
    }

    #[test]
    fn categories_modes_sizes_and_automatic_policies() {
        let r = rules(|b| {
            b.categories = vec![
                Category {
                    name: "datasets".into(),
                    patterns: vec!["data/**".into(), "*.h5".into()],
                    mode: Mode::UploadOnly,
                    max_file_size: Some(1 << 30),
                    real_time: false,
                },
                Category {
                    name: "results".into(),
                    patterns: vec!["results/".into()],
                    mode: Mode::DownloadOnly,
                    max_file_size: None,
                    real_time: false,
                },
            ];
            b.max_file_size = Some(100 << 20);
            b.auto = vec![
                ("*.ipynb".into(), Policy::KeepBoth),
                ("*.log".into(), Policy::KeepRemote),
            ];
        });
        assert_eq!(r.mode(b"data/raw/x.csv"), Mode::UploadOnly);
        assert_eq!(r.mode(b"model.h5"), Mode::UploadOnly);
        assert_eq!(r.mode(b"results/fig1.png"), Mode::DownloadOnly);
        assert_eq!(r.mode(b"src/a.py"), Mode::Bidirectional);
        assert!(!r.real_time(b"data/raw/x.csv") && r.real_time(b"src/a.py"));
        let both = rules(|b| {
            b.categories = vec![
                Category {
                    name: "datasets".into(),
                    patterns: vec!["*.csv".into()],
                    mode: Mode::UploadOnly,
                    max_file_size: None,
                    real_time: false,
                },
                Category {
                    name: "results".into(),
                    patterns: vec!["results/".into()],
                    mode: Mode::DownloadOnly,
                    max_file_size: None,
                    real_time: false,
                },
            ];
        });
        assert_eq!(
            both.mode(b"results/table.csv"),
            Mode::DownloadOnly,
            "a directory pattern is more specific than *.csv"
        );
        assert_eq!(both.mode(b"data/table.csv"), Mode::UploadOnly);
        assert_eq!(r.size_limit(b"data/big.bin"), Some(1 << 30));
        assert_eq!(r.size_limit(b"src/a.py"), Some(100 << 20));
        assert_eq!(r.policy(b"nb/analysis.ipynb"), Policy::KeepBoth);
        assert_eq!(r.policy(b"run.log"), Policy::KeepRemote);
        assert_eq!(r.policy(b"a.py"), Policy::UserPrompt);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MB").unwrap(), 100 << 20);
        assert_eq!(parse_size("1 GB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5KB").unwrap(), 1536);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
