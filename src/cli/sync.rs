//! Handlers of the sync commands (`init`, `join`, `add-instance`, `sync`, `force-sync`,
//! `conflicts`, `resolve`, `history`, `status`, and the sync-set forms of `snapshots`, `ls`,
//! `restore`).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::progress::{Bar, Reading};
use super::render::{bytes, count};
use super::{Ctx, JoinArgs, LsArgs, Outcome, RestoreArgs, SyncInitArgs};
use crate::archiver::Progress;
use crate::backend::{self, Kind};
use crate::endpoint::config::SetConfig;
use crate::endpoint::{Endpoint, StepOptions, StepReport, step};
use crate::error::Error;
use crate::format::config as config_layout;
use crate::id::{SnapshotId, hex_decode, hex_encode};
use crate::repository::heads::list_heads;
use crate::repository::{InitOptions, Repository, hostname};
use crate::restorer::{RestoreOptions, restore as restore_tree};
use crate::snapshot::catalog::Catalog;
use crate::snapshot::tree::walk;
use crate::snapshot::{Node, NodeKind, Snapshot, display_path, select};
use crate::status::SetStatus;
use crate::sync::merge::{Action, Outcome as MergeOutcome};
use crate::sync::{Force, Mode, Policy, Role};
use crate::time::{format_local, format_rfc3339, parse_time};

/// Is `name` a sync set configured here?
pub fn is_set(ctx: &Ctx, name: &str) -> bool {
    SetConfig::valid_name(name) && SetConfig::path(&ctx.paths(), name).exists()
}

/// The sync set a command is about: the one named (which must exist here), or, with no name,
/// the only set there is. A name that is not a set gets the likely ones suggested.
pub fn set_name(ctx: &Ctx, given: Option<String>) -> Result<String> {
    let all = SetConfig::list(&ctx.paths())?;
    match given {
        Some(n) if all.contains(&n) => Ok(n),
        Some(n) => {
            let near = similar_names(&n, &all);
            match near.as_slice() {
                [] if all.is_empty() => bail!(Error::invalid(format!(
                    "no sync set {n} here (there is none yet): create one with `prism-sync init DIR`"
                ))),
                [] => bail!(Error::invalid(format!(
                    "no sync set {n} here: the sets are {}",
                    all.join(", ")
                ))),
                [one] => bail!(Error::invalid(format!(
                    "no sync set {n} — did you mean {one}?"
                ))),
                many => bail!(Error::invalid(format!(
                    "no sync set {n} — did you mean one of {}?",
                    many.join(", ")
                ))),
            }
        }
        None => match all.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!(Error::invalid(
                "no sync set here yet: create one with `prism-sync init DIR`"
            )),
            many => bail!(Error::invalid(format!(
                "there are {} sync sets here: name one of {}",
                many.len(),
                many.join(", ")
            ))),
        },
    }
}

/// Set names close to `n`: `n-sync` (the default name of `init n`), names starting with or
/// containing it, or within two edits of it.
fn similar_names(n: &str, all: &[String]) -> Vec<String> {
    let lower = n.to_lowercase();
    all.iter()
        .filter(|s| {
            let s = s.to_lowercase();
            s == format!("{lower}-sync")
                || (lower.len() >= 3 && s.contains(&lower))
                || edit_distance(&s, &lower) <= 2
        })
        .cloned()
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// `history [NAME] PATH`, `resolve [NAME] [PATH]`: with a single set and one argument that is
/// not a set's name, the argument is the path.
pub fn name_and_path(
    ctx: &Ctx,
    name: Option<String>,
    path: Option<std::ffi::OsString>,
) -> Result<(String, Option<std::ffi::OsString>)> {
    match (name, path) {
        (Some(n), None) if !is_set(ctx, &n) && SetConfig::list(&ctx.paths())?.len() == 1 => {
            Ok((set_name(ctx, None)?, Some(n.into())))
        }
        (n, p) => Ok((set_name(ctx, n)?, p)),
    }
}

fn open_set(ctx: &Ctx, name: &str) -> Result<(Endpoint, Repository)> {
    let _t = crate::timing::span("open the set and its repository");
    let ep = Endpoint::open(&ctx.home, name)?;
    let repo = ctx.open_repo(&ep.cfg.repo)?;
    repo.backend().set_bandwidth(ep.cfg.bandwidth());
    Ok((ep, repo))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    let a = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    Ok(a.components().collect())
}

/// A remote repository URL as a set records it: a `rest:` URL with the pin from
/// `PRISM_SYNC_REST_FINGERPRINT` made part of it.
fn recordable_url(url: &str) -> Result<String> {
    if url.starts_with("rest:") {
        return Ok(crate::backend::rest::canonical_url(url).map_err(Error::invalid)?);
    }
    Ok(url.to_string())
}

/// Keeps the token that opened a `rest:` repository with the set (0600): later commands and the
/// daemon need neither the environment nor a flag.
fn store_rest_token(ctx: &Ctx, name: &str, url: &str) -> Result<()> {
    if url.starts_with("rest:")
        && let Some(t) = crate::backend::rest::token(url)
    {
        Endpoint::store_rest_token(&ctx.home, name, &t)?;
    }
    Ok(())
}

/// What the folder's file system folds (case, Unicode normalization), found by trying.
fn probe_folder(dir: &Path) -> Result<crate::fsx::fold::Folding> {
    let d = crate::fsx::Dir::open_root(dir).map_err(|e| Error::io(dir, e))?;
    Ok(crate::fsx::fold::probe(&d).map_err(|e| Error::io(dir, e))?)
}

// ---- init, join, add-instance -----------------------------------------------------------------

pub fn init(ctx: &Ctx, a: &SyncInitArgs) -> Result<Outcome> {
    let dir = absolute(&a.dir)?;
    if dir.exists() && !dir.is_dir() {
        bail!(Error::invalid(format!(
            "{} is not a directory: name the folder to sync",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "folder".into());
    let name = a.name.clone().unwrap_or_else(|| format!("{base}-sync"));
    if let Ok(existing) = SetConfig::load(&ctx.paths(), &name)
        && existing.local_path == dir
        && ctx.repo.as_ref().is_none_or(|r| {
            *r == existing.repo
                || absolute(Path::new(r)).is_ok_and(|a| a.display().to_string() == existing.repo)
        })
    {
        ctx.out
            .line(format!("✅ {name} already keeps {} in sync", dir.display()));
        ctx.out.line(format!("💡 Sync now: prism-sync sync {name}"));
        return Ok(Outcome::ok());
    }
    for other in SetConfig::list(&ctx.paths())? {
        if let Ok(c) = SetConfig::load(&ctx.paths(), &other)
            && c.local_path == dir
        {
            bail!(Error::invalid(format!(
                "{} is already synced by set {other:?}: one folder, one set",
                dir.display()
            )));
        }
    }
    let folding = probe_folder(&dir)?;
    // A local repository is recorded by its absolute path, so the set works from any directory.
    let url = match ctx.repo.as_deref().map(|r| (r, backend::local_dir(r))) {
        Some((_, Some(dir))) => absolute(&dir)?.display().to_string(),
        Some((r, None)) => recordable_url(r)?,
        None => ctx.repo_url(),
    };
    let creds = ctx.credentials()?;
    let cache_root = ctx.paths().cache_root();
    let (repo, created) = match Repository::open_url(&url, &creds) {
        Ok(r) => (r.with_cache(&cache_root), false),
        Err(Error::RepoNotFound { .. }) => (
            Repository::init(
                crate::repository::open_backend(&url)?,
                &creds,
                &InitOptions::default(),
            )?,
            true,
        ),
        Err(e) => return Err(e.into()),
    };
    let cfg = SetConfig {
        name: name.clone(),
        local_path: dir.clone(),
        repo: url.clone(),
        endpoint: "local".into(),
        role: Role::Local,
        sync_mode: Mode::parse(&a.mode).expect("clap checked"),
        conflict_policy: Policy::parse(&a.conflict_policy).expect("clap checked"),
        automatic_rules: vec![],
        exclude_patterns: vec![],
        builtin_excludes: true,
        rules: a.rules.clone().filter(|r| r != "default"),
        instances: vec![],
        retention: "30d".into(),
        max_delete_count: 1000,
        max_delete_percent: 50.0,
        case_insensitive: folding.case,
        unicode_normalizing: folding.unicode,
        limit_upload: None,
        limit_download: None,
        conflict_resolution: None,
    };
    Endpoint::create(&ctx.home, cfg.clone())?;
    store_rest_token(ctx, &name, &url)?;
    if ctx.out.json {
        ctx.out.json(&json!({"name": name, "folder": dir.display().to_string(), "repository": repo.location(), "repository_created": created, "mode": cfg.sync_mode.name(), "conflict_policy": cfg.conflict_policy.name()}));
        return Ok(Outcome::ok());
    }
    ctx.out.line(format!("✅ Sync set {name} created"));
    ctx.out.kv("Folder", dir.display());
    ctx.out.kv(
        "Repository",
        format!("{}{}", repo.location(), if created { " (new)" } else { "" }),
    );
    ctx.out.kv("Endpoint", "local (this laptop)");
    ctx.out.kv("Mode", cfg.sync_mode.name());
    ctx.out.kv("Conflict policy", cfg.conflict_policy.name());
    if let Some(r) = &cfg.rules {
        ctx.out.kv("Rules", r);
    }
    ctx.out.kv("Retention", "every version for 30 days");
    ctx.out.line(format!(
        "💡 Sync now: prism-sync sync {name}   (or keep it in sync: prism-sync start {name})"
    ));
    ctx.out.line(format!(
        "💡 Add a workspace: prism-sync add-instance {name} WORKSPACE"
    ));
    Ok(Outcome::ok())
}

fn install_key(ctx: &Ctx, url: &str, a: &JoinArgs) -> Result<()> {
    let secret = match (&a.key_file, std::env::var("PRISM_SYNC_KEY")) {
        (Some(f), _) => std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?,
        (None, Ok(k)) => k,
        (None, Err(_)) => return Ok(()),
    };
    let mut raw = [0u8; 32];
    if !hex_decode(secret.trim(), &mut raw) {
        bail!(Error::invalid(
            "the repository key must be 64 hex digits (as `add-instance` prints it)"
        ));
    }
    let bytes = match crate::repository::open_backend(url)?.read(Kind::Config, "") {
        Ok(b) => b,
        Err(e) if e.is_not_found() => bail!(Error::RepoNotFound {
            location: url.to_string()
        }),
        Err(e) => return Err(Error::from(e).into()),
    };
    let (repo_id, _) = config_layout::decode_header(&bytes)
        .map_err(|e| Error::decode("the repository config", e))?;
    let path = ctx.credentials()?.local_key_path(&repo_id);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if existing.trim() == hex_encode(&raw) {
            return Ok(());
        }
        bail!(Error::invalid(format!(
            "{} already holds a different key for this repository",
            path.display()
        )));
    }
    let dir = path.parent().expect("key dir");
    crate::fsx::private::create_dir(dir).map_err(|e| Error::io(dir, e))?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    f.write_all(format!("{}\n", hex_encode(&raw)).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&path, e))?;
    Ok(())
}

pub fn join(ctx: &Ctx, a: &JoinArgs) -> Result<Outcome> {
    let Some(url) = ctx.repo.clone() else {
        bail!(Error::invalid(
            "join needs --repo URL: the repository the set lives in (add-instance prints the command)"
        ));
    };
    let url = match backend::local_dir(&url) {
        Some(dir) => absolute(&dir)?.display().to_string(),
        None => recordable_url(&url)?,
    };
    install_key(ctx, &url, a)?;
    let repo = ctx.open_repo(&url)?;
    if list_heads(&repo, &a.name)?.is_empty() {
        bail!(Error::invalid(format!(
            "the repository at {} has no sync set {:?} yet: run `prism-sync sync {}` on the laptop first, or check the name",
            repo.location(),
            a.name,
            a.name
        )));
    }
    let dir = absolute(&a.dir)?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let folding = probe_folder(&dir)?;
    let endpoint = a.endpoint.clone().unwrap_or_else(hostname);
    if endpoint == "local" || endpoint == "merge" {
        bail!(Error::invalid(format!(
            "{endpoint:?} is reserved: give this workspace another --endpoint name"
        )));
    }
    let cfg = SetConfig {
        name: a.name.clone(),
        local_path: dir.clone(),
        repo: url.clone(),
        endpoint: endpoint.clone(),
        role: Role::Instance,
        sync_mode: Mode::parse(&a.mode).expect("clap checked"),
        conflict_policy: Policy::parse(&a.conflict_policy).expect("clap checked"),
        automatic_rules: vec![],
        exclude_patterns: vec![],
        builtin_excludes: true,
        rules: a.rules.clone().filter(|r| r != "default"),
        instances: vec![],
        retention: "30d".into(),
        max_delete_count: 1000,
        max_delete_percent: 50.0,
        case_insensitive: folding.case,
        unicode_normalizing: folding.unicode,
        limit_upload: None,
        limit_download: None,
        conflict_resolution: None,
    };
    Endpoint::create(&ctx.home, cfg)?;
    store_rest_token(ctx, &a.name, &url)?;
    ctx.out
        .line(format!("✅ Joined {} as workspace {endpoint}", a.name));
    ctx.out.kv("Folder", dir.display());
    ctx.out.kv("Repository", repo.location());
    ctx.out.line(format!(
        "💡 Sync now: prism-sync sync {}   (or keep it in sync: prism-sync start {})",
        a.name, a.name
    ));
    Ok(Outcome::ok())
}

// ---- sync, force-sync ---------------------------------------------------------------------------

fn action_line(a: &Action) -> (char, String) {
    match a {
        Action::Mkdir { path, .. } => ('+', format!("{}/", display_path(path))),
        Action::Write {
            path, expect: None, ..
        } => ('↓', display_path(path)),
        Action::Write { path, .. } => ('↓', format!("{} (update)", display_path(path))),
        Action::Rename {
            from,
            to,
            node: Some(_),
            ..
        } => (
            '→',
            format!("{} → {}", display_path(from), display_path(to)),
        ),
        Action::Rename {
            from,
            to,
            node: None,
            ..
        } => (
            '⇄',
            format!("{} kept as {}", display_path(from), display_path(to)),
        ),
        Action::Delete { path, .. } => ('✗', display_path(path)),
        Action::Rmdir { path } => ('✗', format!("{}/", display_path(path))),
    }
}

fn report_json(name: &str, r: &StepReport) -> Value {
    json!({
        "set": name,
        "halted": r.halted,
        "dry_run": r.dry_run,
        "published": r.published.map(|s| s.to_hex()),
        "heads_combined": r.heads_combined,
        "uploads": r.uploads.iter().map(|(p, c)| json!({"path": display_path(p), "change": c.to_string()})).collect::<Vec<_>>(),
        // The local side's changes (files and symlinks; `actions` also has the directories).
        "downloads": r.actions.iter().filter(|a| !matches!(a, Action::Mkdir { .. } | Action::Rmdir { .. })).map(|a| { let (c, t) = action_line(a); json!({"op": c.to_string(), "what": t}) }).collect::<Vec<_>>(),
        "actions": r.actions.iter().map(|a| { let (c, t) = action_line(a); json!({"op": c.to_string(), "what": t}) }).collect::<Vec<_>>(),
        "conflicts": r.conflicts.iter().map(|c| json!({"path": display_path(&c.path), "kind": c.kind.name(), "outcome": format!("{:?}", c.outcome)})).collect::<Vec<_>>(),
        "failures": r.failures.iter().map(|(p, m)| json!({"path": display_path(p), "error": m})).collect::<Vec<_>>(),
        "skipped": r.skipped.iter().map(|(p, m)| json!({"path": display_path(p), "reason": m})).collect::<Vec<_>>(),
        "large_files": r.large.iter().map(|(p, n)| json!({"path": display_path(p), "size": n})).collect::<Vec<_>>(),
        "scan_errors": r.scan_errors.iter().map(|e| json!({"path": e.path.display().to_string(), "error": e.message})).collect::<Vec<_>>(),
        "deferred": r.deferred.iter().map(|p| display_path(p)).collect::<Vec<_>>(),
        "local_files": r.local_files, "local_bytes": r.local_bytes,
    })
}

/// A sync step's progress: its phase (scan + upload, merge, download + apply, publish); while
/// it scans, files and bytes against a pre-count of the folder under the set's rules, which
/// runs beside it while a terminal watches.
fn sync_bar(ctx: &Ctx, ep: &Endpoint, p: Arc<Progress>) -> Bar {
    use crate::archiver::{Filter, ScanFilter, Source, StepPhase};
    let total: Arc<std::sync::OnceLock<(u64, u64)>> = Arc::default();
    if ctx.out.progress_allowed() {
        let root = ep.cfg.local_path.clone();
        let ignore = std::fs::read_to_string(root.join(crate::sync::rules::IGNORE_FILE)).ok();
        let file = crate::endpoint::config::RulesFile::load(&ctx.home).unwrap_or_default();
        if let Ok(rules) = crate::endpoint::config::build_rules(&ep.cfg, &file, ignore.as_deref()) {
            let total = total.clone();
            let filter: ScanFilter = Arc::new(move |rel, md| {
                if rules.excluded(rel, md.is_dir()) {
                    Filter::Exclude
                } else {
                    Filter::Keep
                }
            });
            std::thread::spawn(move || {
                if let Ok(r) = super::exclude::dry_run(&Source::Dir(root), Some(&filter), false) {
                    let _ = total.set((r.files, r.bytes));
                }
            });
        }
    }
    Bar::start(&ctx.out, move || {
        let uploaded = bytes(p.bytes_stored.load(Ordering::Relaxed));
        let changes = count(p.actions_total.load(Ordering::Relaxed), "change", "changes");
        let total = total.get().copied();
        let scanned = Reading {
            op: "sync",
            phase: String::new(),
            counting: false,
            noun: "files",
            files_done: p.files.load(Ordering::Relaxed),
            files_total: total.map(|t| t.0),
            bytes_done: p.bytes_read.load(Ordering::Relaxed)
                + p.bytes_cached.load(Ordering::Relaxed),
            bytes_total: total.map(|t| t.1),
            note: None,
            per_phase: false,
        };
        match p.phase() {
            StepPhase::Scan => Reading {
                phase: "sync: scan + upload".into(),
                counting: true,
                note: Some(format!("↑ {uploaded} uploaded")),
                ..scanned
            },
            StepPhase::Merge => Reading {
                phase: "sync: merge".into(),
                note: Some(format!("↑ {uploaded} uploaded")),
                ..scanned
            },
            // The changes from elsewhere: done/total, and the bytes written into the folder.
            StepPhase::Apply => Reading {
                phase: "sync: download + apply".into(),
                counting: true,
                noun: "changes",
                files_done: p.actions_done.load(Ordering::Relaxed),
                files_total: Some(p.actions_total.load(Ordering::Relaxed)),
                bytes_done: p.apply_bytes_done.load(Ordering::Relaxed),
                bytes_total: Some(p.apply_bytes_total.load(Ordering::Relaxed)),
                ..scanned
            },
            StepPhase::Publish => Reading {
                phase: "sync: publish".into(),
                note: Some(format!("↓ {changes} applied")),
                ..scanned
            },
        }
    })
}

pub fn sync(
    ctx: &Ctx,
    name: &str,
    force: Option<Force>,
    dry_run: bool,
    allow_deletions: bool,
) -> Result<Outcome> {
    let (ep, repo) = open_set(ctx, name)?;
    warn_ignored_keys(ctx, &ep.cfg);
    if ep.state.meta()?.paused && !dry_run {
        bail!(Error::invalid(format!(
            "{name} is paused: nothing is synced until `prism-sync resume {name}`"
        )));
    }
    let progress = Arc::new(Progress::default());
    let bar = sync_bar(ctx, &ep, progress.clone());
    let t = crate::timing::span("step");
    let r = step(
        &ep,
        &repo,
        &StepOptions {
            force,
            dry_run,
            allow_deletions,
            progress: Some(progress),
            ..Default::default()
        },
    );
    drop(t);
    bar.finish(r.as_ref().is_ok_and(|r| r.halted.is_none()));
    let r = r?;
    if !dry_run {
        notice_log_exclude(ctx, &ep, Some(&repo));
    }
    // Retention and prune, when due, in a detached process of their own: never inside the step
    // (the daemon runs them on a thread when the set is idle). Its outcome is in `status`.
    let maintainer = if dry_run || r.halted.is_some() {
        None
    } else {
        start_maintainer(ctx, &ep)
    };
    if ctx.out.json {
        let mut j = report_json(name, &r);
        if let Some(pid) = maintainer {
            j["maintenance"] = json!({ "started": true, "pid": pid });
        }
        ctx.out.json(&j);
    }
    if let Some(why) = &r.halted {
        bail!(Error::invalid(format!("{name} is halted: {why}")));
    }
    for e in &r.scan_errors {
        eprintln!("❌ could not read {}: {}", e.path.display(), e.message);
    }
    for (p, m) in &r.failures {
        eprintln!("❌ {}: {m}", display_path(p));
    }
    let partial = !r.scan_errors.is_empty() || !r.failures.is_empty();
    if ctx.out.json {
        return Ok(Outcome { partial });
    }
    let verbose = ctx.out.verbose > 0 || dry_run;
    let show = |lines: Vec<String>| {
        for l in lines.iter().take(if verbose { usize::MAX } else { 10 }) {
            ctx.out.line(format!("   {l}"));
        }
        if !verbose && lines.len() > 10 {
            ctx.out
                .line(format!("   … and {} more (-v lists all)", lines.len() - 10));
        }
    };
    if dry_run {
        ctx.out
            .line(format!("🔄 {name}: plan (dry run, nothing changed)"));
        // Both directions, as the real step would do them.
        let direction = |lines: Vec<String>, none: &str, would: &str, one: &str, many: &str| {
            if lines.is_empty() {
                ctx.out.line(format!("   {none}"));
            } else {
                let n = count(lines.len() as u64, one, many);
                ctx.out.line(format!("   {would} {n}"));
                show(lines);
            }
        };
        direction(
            r.uploads
                .iter()
                .map(|(p, c)| format!("  {c} {}", display_path(p)))
                .collect(),
            "↑ Nothing to publish",
            "↑ Would publish",
            "change",
            "changes",
        );
        direction(
            r.actions
                .iter()
                .map(|a| {
                    let (c, t) = action_line(a);
                    format!("  {c} {t}")
                })
                .collect(),
            "↓ No changes to this folder",
            "↓ Would change here",
            "path",
            "paths",
        );
        if r.local_deletes + r.publish_deletes > 0 {
            ctx.out.kv(
                "Deletions",
                format!(
                    "{} here, {} in the shared state",
                    r.local_deletes, r.publish_deletes
                ),
            );
        }
        return Ok(Outcome::ok());
    }
    if r.heads_combined > 1 {
        ctx.out.line(format!(
            "🔄 Merged {} concurrent versions of the shared state",
            r.heads_combined
        ));
    }
    if !r.changed()
        && r.conflicts
            .iter()
            .all(|c| c.outcome == MergeOutcome::Parked)
        && r.conflicts.is_empty()
    {
        ctx.out.line(format!(
            "✅ {name} is in sync ({}, {})",
            count(r.local_files, "file", "files"),
            bytes(r.local_bytes)
        ));
    } else {
        ctx.out.line(format!(
            "✅ {name} synced ({}, {})",
            count(r.local_files, "file", "files"),
            bytes(r.local_bytes)
        ));
    }
    if !r.uploads.is_empty() {
        ctx.out.line(format!(
            "   ↑ {} published",
            count(r.uploads.len() as u64, "change", "changes")
        ));
        show(
            r.uploads
                .iter()
                .map(|(p, c)| format!("  {c} {}", display_path(p)))
                .collect(),
        );
    }
    let local: Vec<String> = r
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::Mkdir { .. } | Action::Rmdir { .. }))
        .map(|a| {
            let (c, t) = action_line(a);
            format!("  {c} {t}")
        })
        .collect();
    if let Some(pid) = maintainer {
        ctx.out.line(format!(
            "   🧹 Retention and prune run in the background (pid {pid}); `prism-sync status {name}` shows what they did"
        ));
    }
    if !local.is_empty() {
        ctx.out.line(format!(
            "   ↓ {} applied here",
            count(local.len() as u64, "change", "changes")
        ));
        show(local);
    }
    let parked: Vec<_> = r
        .conflicts
        .iter()
        .filter(|c| c.outcome == MergeOutcome::Parked)
        .collect();
    for c in r
        .conflicts
        .iter()
        .filter(|c| c.outcome != MergeOutcome::Parked)
    {
        let what = match &c.outcome {
            MergeOutcome::KeptBoth { copy } => format!(
                "kept both; this side's version is now {}",
                display_path(copy)
            ),
            MergeOutcome::KeptLocal => "kept this side's version".into(),
            MergeOutcome::KeptRemote => {
                "took the other side's version (yours is in the snapshots)".into()
            }
            _ => "a change met a deletion: the change was kept".into(),
        };
        ctx.out.line(format!(
            "   ⚠️  {}: {} — {what}",
            display_path(&c.path),
            c.kind.name()
        ));
    }
    if !parked.is_empty() {
        ctx.out.line(format!("⚠️  {} path(s) in conflict, parked (both sides keep their version): prism-sync conflicts {name}", parked.len()));
    }
    for (p, m) in &r.skipped {
        ctx.out.warn(format!("skipped {}: {m}", display_path(p)));
    }
    for (p, n) in &r.large {
        ctx.out.warn(format!(
            "large file {} ({}) is over warn_file_size; synced anyway",
            display_path(p),
            bytes(*n)
        ));
    }
    if !r.deferred.is_empty() {
        ctx.out.line(format!(
            "⏳ {} file(s) changed while being read, left for the next sync: {}",
            r.deferred.len(),
            r.deferred
                .iter()
                .take(5)
                .map(|p| display_path(p))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Outcome { partial })
}

// ---- conflicts, resolve ---------------------------------------------------------------------------

fn summary_text(s: &Option<crate::endpoint::state::NodeSummary>) -> String {
    match s {
        None => "deleted".into(),
        Some(s) => format!(
            "{} {} modified {}",
            s.kind,
            bytes(s.size),
            format_local(s.mtime_ns)
        ),
    }
}

pub fn conflicts(ctx: &Ctx, name: &str) -> Result<Outcome> {
    let ep = Endpoint::open(&ctx.home, name)?;
    let list = ep.state.conflicts()?;
    let all = crate::status::set_conflicts(&ep, &ctx.credentials()?)?;
    let elsewhere: Vec<_> = all.iter().filter(|c| !c.here).collect();
    if ctx.out.json {
        let mut v: Vec<Value> = list
            .iter()
            .map(|(p, c)| json!({"path": display_path(p), "kind": c.kind, "endpoint": ep.cfg.endpoint, "here": true, "local": c.local, "remote": c.remote, "detected": format_rfc3339(c.detected_ns), "resolution": c.resolution.map(|r| r.name())}))
            .collect();
        v.extend(elsewhere.iter().map(|c| json!({"path": c.path, "kind": c.kind, "endpoint": c.endpoint, "here": false, "detected": c.since})));
        ctx.out.json(&Value::Array(v));
        return Ok(Outcome::ok());
    }
    if list.is_empty() && elsewhere.is_empty() {
        ctx.out.line(format!("✅ {name}: no conflicts"));
        return Ok(Outcome::ok());
    }
    if !list.is_empty() {
        ctx.out.line(format!(
            "⚠️  {name}: {} path(s) in conflict here (each side keeps its own version until resolved)",
            list.len()
        ));
        for (p, c) in &list {
            ctx.out
                .line(format!("   {}  ({})", display_path(p), c.kind));
            ctx.out.kv("     Here", summary_text(&c.local));
            ctx.out.kv("     Shared", summary_text(&c.remote));
            ctx.out.kv("     Since", format_local(c.detected_ns));
        }
        ctx.out.line(format!(
            "💡 prism-sync resolve {name} PATH --keep local|remote|both   (or --all)"
        ));
    }
    if !elsewhere.is_empty() {
        ctx.out.line(format!(
            "⚠️  {name}: {} path(s) in conflict at other endpoints",
            elsewhere.len()
        ));
        for c in &elsewhere {
            let what = if c.kind == "parked" {
                "parked"
            } else {
                "not adopted yet"
            };
            ctx.out.line(format!(
                "   {}  ({what} at {}, since {})",
                c.path, c.endpoint, c.since
            ));
        }
        ctx.out
            .line("💡 Resolve them at the endpoint that parked them (prism-sync resolve there)");
    }
    Ok(Outcome::ok())
}

pub fn resolve(
    ctx: &Ctx,
    name: &str,
    path: Option<std::ffi::OsString>,
    all: bool,
    keep: &str,
) -> Result<Outcome> {
    let policy = match keep {
        "local" => Policy::KeepLocal,
        "remote" => Policy::KeepRemote,
        _ => Policy::KeepBoth,
    };
    let ep = Endpoint::open(&ctx.home, name)?;
    let list = ep.state.conflicts()?;
    let targets: Vec<Vec<u8>> = match (path, all) {
        (Some(_), true) => bail!(Error::invalid("give a PATH or --all, not both")),
        (None, false) => bail!(Error::invalid(format!(
            "name the PATH to resolve (see `prism-sync conflicts {name}`), or --all"
        ))),
        (None, true) => list.iter().map(|(p, _)| p.clone()).collect(),
        (Some(p), false) => {
            let p: Vec<u8> = crate::snapshot::components(p.as_bytes()).join(&b'/');
            if !list.iter().any(|(q, _)| *q == p) {
                let shown = display_path(&p);
                let elsewhere = crate::status::set_conflicts(&ep, &ctx.credentials()?)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| !c.here && c.path == shown);
                if let Some(c) = elsewhere {
                    bail!(Error::invalid(format!(
                        "{shown} is in conflict at {}, not here: resolve it there (`prism-sync resolve {name} {shown} --keep …` on {})",
                        c.endpoint, c.endpoint
                    )));
                }
                bail!(Error::invalid(format!(
                    "{shown} is not in conflict: see `prism-sync conflicts {name}`"
                )));
            }
            vec![p]
        }
    };
    if targets.is_empty() {
        ctx.out.line(format!("✅ {name}: no conflicts to resolve"));
        return Ok(Outcome::ok());
    }
    for t in &targets {
        ep.state.set_resolution(t, policy)?;
    }
    drop(ep);
    ctx.out.line(format!(
        "🔄 Resolving {} path(s), keeping {keep}",
        targets.len()
    ));
    sync(ctx, name, None, false, false)
}

// ---- history, snapshots, ls, restore ----------------------------------------------------------------

/// The set's catalog, brought up to date with the repository's snapshot list (new snapshots are
/// opened once; unreadable ones are reported and left out).
fn set_catalog(ctx: &Ctx, repo: &Repository, name: &str) -> Result<Catalog> {
    let _t = crate::timing::span("catalog: open and refresh");
    let mut catalog = Catalog::open(&ctx.home, repo, name);
    for e in catalog.refresh(repo)? {
        ctx.out
            .warn(format!("{e}; it is left out (run `prism-sync check`)"));
    }
    Ok(catalog)
}

/// The set's published states (with `include_safety` also the pre-sync safety snapshots), oldest
/// first.
fn set_snapshots(
    ctx: &Ctx,
    repo: &Repository,
    name: &str,
    include_safety: bool,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut catalog = set_catalog(ctx, repo, name)?;
    catalog.save(repo);
    catalog.read(repo, |c| Ok(c.snapshots(include_safety)))
}

pub fn history(ctx: &Ctx, name: &str, path: &std::ffi::OsStr) -> Result<Outcome> {
    let (_ep, repo) = open_set(ctx, name)?;
    // The index is loaded only if new snapshots are to be cataloged (their trees read).
    let p: Vec<u8> = crate::snapshot::components(path.as_bytes()).join(&b'/');
    let mut catalog = set_catalog(ctx, &repo, name)?;
    let t = crate::timing::span("catalog: paths, save, versions");
    catalog.catalog_paths(&repo)?;
    catalog.save(&repo);
    // The snapshots at which the path's node changed; between two of them it stays the same.
    let versions = catalog.read(&repo, |c| c.versions(&p))?;
    drop(t);
    let mut last: Option<Option<Node>> = None;
    let mut rows = Vec::new();
    for (id, s, node) in &versions {
        let changed = match (&last, &node) {
            (None, None) => false,
            (None, Some(_)) => true,
            (Some(prev), now) => match (prev, now) {
                (Some(a), Some(b)) => !crate::sync::merge::same_content(Some(a), Some(b)),
                (None, None) => false,
                _ => true,
            },
        };
        if changed {
            let event = match (&last, &node) {
                (Some(Some(_)), None) => "deleted",
                (None | Some(None), Some(_)) => "created",
                _ => "modified",
            };
            let safety = s.tags.iter().any(|t| t == "before-sync");
            rows.push((id, s, node.clone(), event, safety));
        }
        last = Some(node.clone());
    }
    if ctx.out.json {
        ctx.out.json(&Value::Array(
            rows.iter()
                .map(|(id, s, n, ev, safety)| json!({"snapshot": id.to_hex(), "time": format_rfc3339(s.time_ns), "endpoint": s.endpoint, "event": ev, "size": n.as_ref().map(|n| n.size()), "local_before_sync": safety}))
                .collect(),
        ));
        return Ok(Outcome::ok());
    }
    if rows.is_empty() {
        ctx.out
            .line(format!("💡 {} has no versions in {name}", display_path(&p)));
        return Ok(Outcome::ok());
    }
    ctx.out.line(format!(
        "📜 {} in {name}: {}",
        display_path(&p),
        count(rows.len() as u64, "version", "versions")
    ));
    for (id, s, n, ev, safety) in &rows {
        let size = n.as_ref().map(|n| bytes(n.size())).unwrap_or_default();
        let note = if *safety {
            " (local copy saved before a sync replaced it)"
        } else {
            ""
        };
        println!(
            "   {}  {}  {:<9} {:>10}  by {}{note}",
            id.short(),
            format_local(s.time_ns),
            ev,
            size,
            s.endpoint.as_deref().unwrap_or("?")
        );
    }
    ctx.out.line(format!(
        "💡 prism-sync restore {name} --at \"TIME\" --path {}",
        display_path(&p)
    ));
    Ok(Outcome::ok())
}

pub fn snapshots(ctx: &Ctx, name: &str) -> Result<Outcome> {
    let (_ep, repo) = open_set(ctx, name)?;
    let snaps = set_snapshots(ctx, &repo, name, true)?;
    if ctx.out.json {
        ctx.out.json(&Value::Array(
            snaps.iter()
                .map(|(id, s)| json!({"id": id.to_hex(), "short_id": id.short(), "time": format_rfc3339(s.time_ns), "endpoint": s.endpoint, "parents": s.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(), "tags": s.tags, "files": s.summary.files_unchanged, "bytes": s.summary.total_bytes}))
                .collect(),
        ));
        return Ok(Outcome::ok());
    }
    if snaps.is_empty() {
        ctx.out.line(format!(
            "💡 {name} has no versions yet: prism-sync sync {name}"
        ));
        return Ok(Outcome::ok());
    }
    println!("ID        Time                 Endpoint       Files        Size  Note");
    for (id, s) in &snaps {
        let note = if s.tags.iter().any(|t| t == "before-sync") {
            "local state saved before a sync changed it"
        } else if s.parents.len() > 1 {
            "merge"
        } else {
            ""
        };
        println!(
            "{:<8}  {:<19}  {:<12} {:>7}  {:>10}  {note}",
            id.short(),
            format_local(s.time_ns),
            s.endpoint.as_deref().unwrap_or("?"),
            s.summary.files_unchanged,
            bytes(s.summary.total_bytes)
        );
    }
    println!("{}", count(snaps.len() as u64, "version", "versions"));
    Ok(Outcome::ok())
}

fn state_at(
    ctx: &Ctx,
    repo: &Repository,
    name: &str,
    at: Option<&str>,
) -> Result<(SnapshotId, Snapshot)> {
    let mut catalog = set_catalog(ctx, repo, name)?;
    catalog.save(repo);
    catalog.read(repo, |catalog| match at {
        Some(t) => match parse_time(t) {
            // The newest state at or before that moment: one lookup in the catalog.
            Ok(ns) => match catalog.at(Some(ns), false)? {
                Some(found) => Ok(found),
                None => match catalog.oldest(false)? {
                    Some((_, first)) => bail!(Error::invalid(format!(
                        "no snapshot at or before {t}: the oldest is from {}",
                        format_local(first.time_ns)
                    ))),
                    None => bail!(Error::invalid("the repository has no snapshots yet")),
                },
            },
            // The ids `history` and `snapshots NAME` print.
            Err(e) if crate::id::is_hex_prefix(&t.to_ascii_lowercase()) => {
                let all = catalog.snapshots(true);
                let (id, s) = select::resolve(&all, t).map_err(|_| e)?;
                Ok((*id, s.clone()))
            }
            Err(e) => Err(e.into()),
        },
        None => catalog.at(None, false)?.ok_or_else(|| {
            Error::invalid(format!(
                "{name} has no versions yet: prism-sync sync {name}"
            ))
            .into()
        }),
    })
}

pub fn ls(ctx: &Ctx, a: &LsArgs) -> Result<Outcome> {
    let name = &a.snapshot;
    let (_ep, repo) = open_set(ctx, name)?;
    let (id, snap) = super::with_index(&repo, || state_at(ctx, &repo, name, a.at.as_deref()))?;
    let base: Vec<u8> = a
        .path
        .as_deref()
        .map(|p| crate::snapshot::components(p.as_bytes()).join(&b'/'))
        .unwrap_or_default();
    let node = crate::snapshot::tree::find(&repo, &snap.tree, &base)?.with_context(|| {
        Error::invalid(format!(
            "{} is not in {name} at {}",
            display_path(&base),
            format_local(snap.time_ns)
        ))
    })?;
    let mut entries = Vec::new();
    match &node.kind {
        NodeKind::Dir { subtree } => walk(&repo, subtree, &mut |p, n| {
            entries.push((crate::snapshot::join(&base, p), n.clone()));
            Ok(true)
        })?,
        _ => entries.push((base.clone(), node.clone())),
    }
    if ctx.out.json {
        ctx.out.json(&json!({"snapshot": id.to_hex(), "time": format_rfc3339(snap.time_ns), "entries": entries.iter().map(|(p, n)| json!({"path": display_path(p), "type": n.type_name(), "size": n.size(), "mtime": format_rfc3339(n.mtime_ns)})).collect::<Vec<_>>()}));
        return Ok(Outcome::ok());
    }
    for (p, n) in &entries {
        let suffix = if n.is_dir() { "/" } else { "" };
        if a.long {
            println!(
                "{:>12}  {}  {}{suffix}",
                n.size(),
                format_local(n.mtime_ns),
                display_path(p)
            );
        } else {
            println!("{}{suffix}", display_path(p));
        }
    }
    Ok(Outcome::ok())
}

pub fn restore(ctx: &Ctx, a: &RestoreArgs) -> Result<Outcome> {
    let name = a.snapshot.as_deref().expect("dispatched with a set name");
    let (ep, repo) = open_set(ctx, name)?;
    let (id, snap) = super::with_index(&repo, || match &a.version {
        Some(v) => {
            let all = set_snapshots(ctx, &repo, name, true)?;
            let (id, s) = select::resolve(&all, v).map_err(|_| {
                Error::invalid(format!(
                    "{name} has no version {v}: see `prism-sync snapshots {name}`"
                ))
            })?;
            Ok((*id, s.clone()))
        }
        None => state_at(ctx, &repo, name, a.at.as_deref()),
    })?;
    if a.in_place || a.beside {
        return restore_one(ctx, &ep, &repo, (&id, &snap), a);
    }
    let live = &ep.cfg.local_path;
    let target = match &a.target {
        Some(t) => absolute(t)?,
        None => {
            let stamp = jiff::Timestamp::from_nanosecond(snap.time_ns as i128)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
                .to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y%m%d-%H%M%S")
                .to_string();
            fresh_target(live, &stamp)
        }
    };
    if (target.starts_with(live) || live.starts_with(&target)) && !a.overwrite {
        bail!(Error::invalid(format!(
            "{} is inside the live folder {}: restore into another folder (the default is a new one beside it), or pass --overwrite to replace live files",
            target.display(),
            live.display()
        )));
    }
    let mut include: Vec<Vec<u8>> = a.include.iter().map(|i| i.as_bytes().to_vec()).collect();
    if let Some(p) = &a.path {
        include.push(p.as_bytes().to_vec());
    }
    let t = crate::timing::span("restore the tree");
    let r = restore_tree(
        &repo,
        &snap.tree,
        &target,
        &RestoreOptions {
            include,
            overwrite: a.overwrite,
            ..Default::default()
        },
    )?;
    drop(t);
    for e in &r.errors {
        eprintln!("❌ could not restore {}: {}", e.path.display(), e.message);
    }
    let renamed = super::repo::report_renamed(ctx, &r.renamed);
    if ctx.out.json {
        ctx.out.json(&json!({"set": name, "snapshot": id.to_hex(), "time": format_rfc3339(snap.time_ns), "target": target.display().to_string(), "files": r.files, "bytes": r.bytes, "errors": r.errors.len(), "renamed": renamed}));
    } else {
        ctx.out.line(format!(
            "✅ Restored {name} as of {} to {}",
            format_local(snap.time_ns),
            target.display()
        ));
        ctx.out
            .kv("Files", format!("{} ({})", r.files, bytes(r.bytes)));
        ctx.out.kv("Version", id.short());
    }
    Ok(Outcome {
        partial: !r.errors.is_empty() || !r.renamed.is_empty(),
    })
}

/// `<live>.restored-<stamp>`, or `…-2`, `-3`, … when that exists already (the same state
/// restored twice).
fn fresh_target(live: &Path, stamp: &str) -> PathBuf {
    (1..)
        .map(|n| {
            let mut t = live.as_os_str().to_os_string();
            t.push(format!(".restored-{stamp}"));
            if n > 1 {
                t.push(format!("-{n}"));
            }
            PathBuf::from(t)
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .expect("an unused name")
}

/// `restore NAME --path FILE --in-place|--beside`: one version back into the live folder.
fn restore_one(
    ctx: &Ctx,
    ep: &Endpoint,
    repo: &Repository,
    (id, snap): (&SnapshotId, &Snapshot),
    a: &RestoreArgs,
) -> Result<Outcome> {
    use crate::endpoint::restore::{Placement, restore_version};
    let name = &ep.cfg.name;
    let path: Vec<u8> = a
        .path
        .as_deref()
        .map(|p| crate::snapshot::components(p.as_bytes()).join(&b'/'))
        .unwrap_or_default();
    let placement = if a.in_place {
        Placement::InPlace
    } else {
        Placement::Beside
    };
    let written = restore_version(ep, repo, snap, &path, placement)?;
    let local = crate::endpoint::apply::local_path(&ep.cfg.local_path, &written);
    if ctx.out.json {
        ctx.out.json(&json!({"set": name, "snapshot": id.to_hex(), "time": format_rfc3339(snap.time_ns), "path": display_path(&path), "written": local.display().to_string(), "in_place": a.in_place}));
    } else {
        ctx.out.line(format!(
            "✅ Restored {} as of {} to {}",
            display_path(&path),
            format_local(snap.time_ns),
            local.display()
        ));
        ctx.out.kv("Version", id.short());
        ctx.out.line(format!(
            "💡 The next sync publishes it as a new version (prism-sync sync {name})"
        ));
    }
    Ok(Outcome::ok())
}

// ---- status ----------------------------------------------------------------------------------------

/// Names (on stderr, one line each) the keys of the set's config and rules file that are
/// accepted but not acted on. A rules file that does not load is reported by the step itself.
fn warn_ignored_keys(ctx: &Ctx, cfg: &SetConfig) {
    let file = crate::endpoint::config::RulesFile::load(&ctx.home).unwrap_or_default();
    for w in cfg.ignored_keys(&file) {
        ctx.out.warn(format!("{}: {w}", cfg.name));
    }
}

/// Once per set, after `*.log` became a built-in exclude: the set's shared state has `*.log`
/// files (synced before), which from now on stay as they are in each folder. Says how to bring
/// them back. Checked again (cheaply) while `*.log` is not excluded.
fn notice_log_exclude(ctx: &Ctx, ep: &Endpoint, repo: Option<&Repository>) {
    let marker = ctx.paths().set_marker(&ep.cfg.name, "log-exclude-noticed");
    if marker.exists() || ctx.out.json {
        return;
    }
    let Some(tree) = ep.state.meta().ok().and_then(|m| m.base_tree) else {
        return; // not synced yet: nothing of it is shared
    };
    let root = &ep.cfg.local_path;
    let ignore = std::fs::read_to_string(root.join(crate::sync::rules::IGNORE_FILE)).ok();
    let file = crate::endpoint::config::RulesFile::load(&ctx.home).unwrap_or_default();
    let Ok(rules) = crate::endpoint::config::build_rules(&ep.cfg, &file, ignore.as_deref()) else {
        return;
    };
    if !rules.excluded(b"x.log", false) {
        return; // `!*.log`: they still sync
    }
    let opened;
    let repo = match repo {
        Some(r) => r,
        None => match ctx.open_repo(&ep.cfg.repo) {
            Ok(r) => {
                opened = r;
                &opened
            }
            Err(_) => return,
        },
    };
    let mut logs: Vec<String> = Vec::new();
    let walked = walk(repo, &tree, &mut |p, n| {
        if !matches!(n.kind, NodeKind::Dir { .. })
            && p.ends_with(b".log")
            && rules.excluded(p, false)
        {
            logs.push(display_path(p));
        }
        Ok(true)
    });
    if walked.is_err() {
        return;
    }
    if let Some(first) = logs.first() {
        ctx.out.warn(format!(
            "{}: {} in the shared state (e.g. {first}) no longer sync{}: `*.log` is a built-in exclude now. Each folder keeps its copy as it is; to sync them again, add `!*.log` to the set's exclude_patterns (said once)",
            ep.cfg.name,
            count(logs.len() as u64, "*.log file", "*.log files"),
            if logs.len() == 1 { "s" } else { "" },
        ));
    }
    let _ = crate::fsx::private::write_atomic(&marker, b"");
}

pub fn status(ctx: &Ctx, name: Option<&str>) -> Result<Outcome> {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => SetConfig::list(&ctx.paths())?,
    };
    for n in &names {
        if let Ok(cfg) = SetConfig::load(&ctx.paths(), n) {
            warn_ignored_keys(ctx, &cfg);
        }
        if let Ok(ep) = Endpoint::open(&ctx.home, n) {
            notice_log_exclude(ctx, &ep, None);
        }
    }
    let daemon = crate::status::ask_daemon(&ctx.home);
    let creds = ctx.credentials()?;
    let all: Vec<SetStatus> = names
        .iter()
        .map(|n| crate::status::set_status(&ctx.home, n, &creds, daemon.as_ref()))
        .collect::<std::result::Result<_, _>>()?;
    if ctx.out.json {
        match name {
            Some(_) => ctx.out.json(&all[0]),
            None => ctx.out.json(&all),
        }
        return Ok(Outcome::ok());
    }
    if all.is_empty() {
        ctx.out
            .line("💡 No sync sets here yet: prism-sync init DIR");
        return Ok(Outcome::ok());
    }
    for s in &all {
        render_status(s);
    }
    Ok(Outcome::ok())
}

/// `🟢 laptop (this machine): connected (daemon pid 42) — laptop:/home/me/data`.
fn instance_line(i: &crate::status::InstanceView) -> String {
    let dot = match i.connected {
        Some(true) => "🟢",
        Some(false) => "🔴",
        None => "⚪",
    };
    let me = if i.here { " (this machine)" } else { "" };
    let place = match (&i.host, &i.folder) {
        (Some(h), Some(f)) => format!(" — {h}:{f}"),
        (None, Some(f)) => format!(" — {f}"),
        (Some(h), None) => format!(" — {h}"),
        (None, None) => String::new(),
    };
    format!("{dot} {}{me}: {}{place}", i.name, i.state)
}

/// The newest activity first, `↑` what this endpoint published, `↓` what it applied; the
/// action column is as wide as its longest entry, so none runs into the path.
fn activity_lines(activity: &[crate::status::ActivityLine]) -> Vec<String> {
    let shown: Vec<_> = activity.iter().rev().take(5).collect();
    let width = shown
        .iter()
        .map(|a| a.action.chars().count())
        .max()
        .unwrap_or(0);
    shown
        .iter()
        .map(|a| {
            // A settled conflict went the way of the version kept.
            let arrow = match (a.direction.as_str(), a.action.as_str()) {
                ("up", _) | (_, "conflict-kept-local") => "↑",
                ("down", _) | (_, "conflict-kept-remote") => "↓",
                (_, "conflict-kept-both") => "↕",
                _ => "•",
            };
            let size = if a.size > 0 {
                format!("{}, ", bytes(a.size))
            } else {
                String::new()
            };
            format!(
                "{arrow} {:<width$}  {}  ({size}{})",
                a.action, a.path, a.ago
            )
        })
        .collect()
}

fn render_status(s: &SetStatus) {
    let icon = match (s.in_sync, &s.halt) {
        (true, _) => "✅",
        (false, None) => "🔄",
        (false, Some(_)) => "❌",
    };
    println!("{icon} {}: {}", s.name, s.headline);
    let kv = |k: &str, v: String| println!("   {k}: {v}");
    for r in s.reasons.iter().skip(1) {
        println!("   ⚠️  {r}");
    }
    kv(
        "Folder",
        format!(
            "{} ({}, {})",
            s.folder,
            count(s.local.files, "file", "files"),
            bytes(s.local.bytes)
        ),
    );
    kv(
        "Shared",
        format!(
            "{}, {} in {}",
            count(s.shared.files, "file", "files"),
            bytes(s.shared.bytes),
            s.repository
        ),
    );
    kv(
        "Mode",
        format!("{}, conflicts: {}", s.mode, s.conflict_policy),
    );
    if let Some(ago) = &s.last_update_ago {
        kv("Last update", ago.clone());
    }
    if let Some(ago) = &s.last_step_ago {
        kv("Last check", ago.clone());
    }
    println!("   Instances:");
    for i in &s.instances {
        println!("     {}", instance_line(i));
    }
    let m = &s.maintenance;
    let mut retention = format!("{} (every version for that long)", m.retention);
    if !m
        .retention
        .trim_start()
        .starts_with(|c: char| c.is_ascii_digit())
    {
        retention = m.retention.clone();
    }
    match &m.retention_last_ago {
        Some(ago) => retention.push_str(&format!(
            "; last applied {ago}: kept {}, forgot {}",
            m.retention_kept, m.retention_forgotten
        )),
        None => retention.push_str("; not applied from here yet"),
    }
    kv("Retention", retention);
    if let Some(ago) = &m.prune_last_ago {
        kv(
            "Prune",
            format!(
                "last {ago}: freed {}, {} small pack(s) compacted",
                bytes(m.prune_freed_bytes),
                m.prune_packs_compacted
            ),
        );
    }
    if let Some(why) = &m.skipped {
        kv("Maintenance", format!("skipped: {why}"));
    }
    if let Some(who) = &m.lease_busy {
        kv(
            "Maintenance",
            format!("left to {who}, which held the lease"),
        );
    }
    if let Some(e) = &m.last_error {
        println!("   ⚠️  maintenance: {e}");
    }
    render_daemon(s);
    if s.paused {
        println!(
            "   ⏸️  paused: nothing is applied or published until `prism-sync resume {}`",
            s.name
        );
    }
    if let Some(e) = &s.repository_error {
        println!("   ⚠️  {e}");
    }
    if !s.activity.is_empty() {
        println!("   Recent activity:");
        for l in activity_lines(&s.activity) {
            println!("     {l}");
        }
    }
    if !s.large_files.is_empty() {
        let limit = s
            .warn_file_size
            .map(|w| format!(" ({})", bytes(w)))
            .unwrap_or_default();
        println!(
            "   ⚠️  {} over warn_file_size{limit}, synced anyway:",
            count(s.large_files.len() as u64, "file", "files")
        );
        for f in s.large_files.iter().take(10) {
            println!("     {}: {}", f.path, bytes(f.size));
        }
    }
    if !s.conflicts.is_empty() {
        println!(
            "   ⚠️  {} conflict(s): prism-sync conflicts {}",
            s.conflicts.len(),
            s.name
        );
    }
    if s.unsynced_total > 0 {
        println!("   ⚠️  {} path(s) not in sync:", s.unsynced_total);
        for u in s.unsynced.iter().take(10) {
            println!("     {}: {}", u.path, u.reason);
        }
    }
    if s.kept_here_total > 0 {
        println!(
            "   ⚠️  {} path(s) kept here, different from the shared state ({} mode):",
            s.kept_here_total, s.mode
        );
        for p in s.kept_here.iter().take(10) {
            println!("     {p}");
        }
    }
    if !s.skipped.is_empty() {
        println!("   ⚠️  {} file(s) skipped:", s.skipped.len());
        for x in s.skipped.iter().take(10) {
            println!("     {}: {}", x.path, x.reason);
        }
    }
}

fn render_daemon(s: &SetStatus) {
    let kv = |k: &str, v: String| println!("   {k}: {v}");
    let name = &s.name;
    let d = &s.daemon;
    match (&d.pid, &d.live) {
        (Some(pid), Some(live)) => {
            let state = serde_json::to_value(live.state).unwrap_or_default();
            let mut line = format!("running (pid {pid}), {}", state.as_str().unwrap_or(""));
            if live.pending_paths > 0 {
                line += &format!(", {} change(s) waiting", live.pending_paths);
            }
            kv("Daemon", line);
            kv(
                "Watching",
                if live.watching == "inotify" {
                    "yes (inotify)".into()
                } else {
                    live.watching.clone()
                },
            );
            if let Some(e) = &live.last_error {
                println!("   ⚠️  {e}");
            }
            if let Some(since) = &live.unreachable_since {
                println!(
                    "   ⚠️  repository unreachable since {since}; retrying every {} s",
                    live.next_check_ms / 1000
                );
            }
        }
        (Some(pid), None) => kv(
            "Daemon",
            format!("running (pid {pid}), but not for this set: prism-sync start {name}"),
        ),
        _ => kv(
            "Daemon",
            format!("not running (keep it in sync: prism-sync start {name})"),
        ),
    }
}

/// Starts `prism-sync maintain NAME --if-due` detached when retention or prune is due and no
/// daemon keeps the set (the daemon maintains it itself); returns its pid. Best effort: a
/// failure to look or to start is left for the next `sync`.
fn start_maintainer(ctx: &Ctx, ep: &Endpoint) -> Option<u32> {
    use crate::endpoint::maintain::{Intervals, due};
    let name = &ep.cfg.name;
    if crate::daemon::keeps_set(&ctx.home, name) {
        return None;
    }
    match due(ep, &Intervals::from_env(), crate::repository::now_ns()) {
        Ok((false, false)) | Err(_) => return None,
        Ok(_) => {}
    }
    let exe = std::env::current_exe().ok()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--home").arg(&ctx.home);
    if let Some(f) = &ctx.password_file {
        cmd.arg("--password-file").arg(f);
    }
    if let Some(f) = &ctx.rest_token_file {
        cmd.arg("--rest-token-file").arg(f);
    }
    cmd.args(["maintain", name, "--if-due"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Its own process group: a Ctrl-C meant for the terminal's next command leaves it alone.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().ok()?;
    Some(child.id())
}

/// `maintain NAME`: retention and prune (with compaction) now, or only what is due.
pub fn maintain(ctx: &Ctx, name: &str, if_due: bool) -> Result<Outcome> {
    use crate::endpoint::maintain::{Intervals, maintain};
    let (ep, repo) = open_set(ctx, name)?;
    let m = maintain(&ep, &repo, &Intervals::from_env(), !if_due)?;
    if ctx.out.json {
        ctx.out
            .json(&m.as_ref().map(maintenance_json).unwrap_or(Value::Null));
        return Ok(Outcome { partial: false });
    }
    match &m {
        None => ctx.out.line("Nothing is due."),
        Some(m) => maintenance_lines(ctx, m),
    }
    Ok(Outcome { partial: false })
}

fn maintenance_json(m: &crate::endpoint::maintain::MaintainReport) -> Value {
    json!({
        "skipped": m.skipped,
        "lease_busy": m.busy,
        "retention": m.retention.as_ref().map(|r| json!({
            "considered": r.considered, "kept": r.kept, "protected": r.protected,
            "forgotten": r.forget.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
        })),
        "prune": m.prune.as_ref().map(|p| json!({
            "freed_bytes": p.bytes_deleted, "packs_deleted": p.packs_deleted,
            "packs_compacted": p.packs_compacted, "packs_deferred": p.packs_deferred,
            "index_files": p.index_files,
        })),
    })
}

fn maintenance_lines(ctx: &Ctx, m: &crate::endpoint::maintain::MaintainReport) {
    if let Some(why) = &m.skipped {
        ctx.out.line(format!("   💡 Maintenance skipped: {why}"));
    }
    if let Some(who) = &m.busy {
        ctx.out.line(format!(
            "   💡 Retention and prune are left to {who}, which maintains the repository now"
        ));
    }
    if let Some(r) = &m.retention {
        ctx.out.line(format!(
            "   🧹 Retention: kept {} version(s), forgot {}",
            r.kept,
            r.forget.len()
        ));
    }
    if let Some(p) = &m.prune {
        ctx.out.line(format!(
            "   🧹 Prune: freed {}, {} small pack(s) compacted, {} index file(s) merged",
            bytes(p.bytes_deleted),
            p.packs_compacted,
            p.index_files
        ));
    }
}
