//! Handlers of the repository commands (`repo init`, `backup`, `snapshots`, `ls`, `diff`, `dump`,
//! `restore`, `forget`, `prune`, `check`, `key`, `stats`).

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::progress::{Bar, Reading};
use super::render::{bytes, count, seconds};
use super::{
    BackupArgs, CheckArgs, Ctx, ForgetArgs, InitArgs, KeyCommand, LsArgs, NewPasswordArgs, Outcome,
    PruneArgs, RestoreArgs, SnapshotFilter, SnapshotsArgs,
};
use crate::archiver::prefetch::Prefetch;
use crate::archiver::{self, ArchiveOptions, BackupOptions, Progress, SoftError};
use crate::backend::{self, Kind};
use crate::error::Error;
use crate::format::keyfile::Kdf;
use crate::format::pack::BlobKind;
use crate::id::{SnapshotId, hex_encode};
use crate::maintenance;
use crate::maintenance::check::{ReadData, parse_subset};
use crate::maintenance::prune::{PruneOptions, PrunePhase, PruneProgress};
use crate::repository::{self, InitOptions, Repository};
use crate::restorer::{self, RestoreOptions, RestoreProgress};
use crate::snapshot::diff::diff_trees;
use crate::snapshot::retention::{self, Policy};
use crate::snapshot::tree::{find, walk};
use crate::snapshot::{Node, NodeKind, Snapshot, display_path, select};
use crate::time::{format_local, format_rfc3339, parse_duration, parse_time};

pub fn open(ctx: &Ctx) -> Result<Repository> {
    let repo = ctx.open_repo(&ctx.repo_url())?;
    warn_unused_password(ctx, &repo);
    Ok(repo)
}

fn warn_unused_password(ctx: &Ctx, repo: &Repository) {
    if repo.password_unused() {
        ctx.out.warn(format!(
            "the password was not used: {} has no password, it opens with the local key file {} (add one with `prism-sync key add`)",
            repo.location(),
            ctx.credentials().map(|c| c.local_key_path(&repo.repo_id()).display().to_string()).unwrap_or_default()
        ));
    }
}

/// Snapshots that can be read; damaged ones are named in a warning and left out, so one
/// damaged snapshot never blocks the others (`check` reports it as an error).
fn readable_snapshots(ctx: &Ctx, repo: &Repository) -> Result<crate::repository::SnapshotList> {
    let (snaps, errors) = repo.snapshots_lenient()?;
    for e in errors {
        ctx.out
            .warn(format!("{e}; it is left out (run `prism-sync check`)"));
    }
    Ok(snaps)
}

fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> Value {
    let m = &s.summary;
    json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": format_rfc3339(s.time_ns),
        "tree": s.tree.to_hex(),
        "host": s.host,
        "user": s.user,
        "paths": s.paths.iter().map(|p| display_path(p)).collect::<Vec<_>>(),
        "tags": s.tags,
        "parents": s.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        "sync_set": s.sync_set,
        "endpoint": s.endpoint,
        "summary": {
            "files_new": m.files_new, "files_changed": m.files_changed, "files_unchanged": m.files_unchanged,
            "dirs": m.dirs, "total_bytes": m.total_bytes, "blobs_added": m.blobs_added,
            "bytes_added_raw": m.bytes_added_raw, "bytes_added_stored": m.bytes_added_stored,
            "duration_s": m.duration_ns as f64 / 1e9, "errors": m.errors,
        },
        "program_version": s.program_version,
    })
}

fn report_soft(ctx: &Ctx, what: &str, errors: &[SoftError], warnings: &[SoftError]) {
    for w in warnings {
        ctx.out.warn(format!("{}: {}", w.path.display(), w.message));
    }
    for e in errors {
        eprintln!("❌ {what} {}: {}", e.path.display(), e.message);
    }
}

/// Warns about entries a restore kept apart (names the target's file system cannot hold side by
/// side); their JSON form.
pub(super) fn report_renamed(ctx: &Ctx, renamed: &[(Vec<u8>, Vec<u8>)]) -> Vec<serde_json::Value> {
    for (from, to) in renamed {
        ctx.out.warn(format!(
            "{} restored as {}: this file system cannot hold both it and another name that differs only in case or Unicode form",
            display_path(from),
            display_path(to)
        ));
    }
    renamed
        .iter()
        .map(|(f, t)| json!({"path": display_path(f), "restored_as": display_path(t)}))
        .collect()
}

// ---- repo init ---------------------------------------------------------------------------------

pub fn init(ctx: &Ctx, a: &InitArgs) -> Result<Outcome> {
    let url = ctx.repo_url();
    if !(1..=1024).contains(&a.pack_size) {
        bail!(Error::invalid(format!(
            "--pack-size {} MiB is outside 1..=1024",
            a.pack_size
        )));
    }
    let mut creds = ctx.credentials()?;
    if creds.password.is_none()
        && let Some(pw) = super::prompt::new_password(
            "Password for the new repository (empty: none, a random key file kept under --home): ",
        )?
        && !pw.is_empty()
    {
        creds.password = Some(pw);
    }
    let opts = InitOptions {
        pack_target_bytes: a.pack_size << 20,
        zstd_level: a.compression,
        ..Default::default()
    };
    let b = crate::repository::open_backend(&url)?;
    if a.group_access {
        if backend::local_dir(&url).is_none() && !url.starts_with("efs:") {
            bail!(Error::invalid(format!(
                "--group-access applies to a repository in a directory; {url} is not one (for a served repository, init it on the server's machine)"
            )));
        }
        b.set_group_access(true);
    }
    let repo = Repository::init(b, &creds, &opts)?;
    let keyfile = creds.local_key_path(&repo.repo_id());
    let key_desc = if creds.password.is_some() {
        "password".to_string()
    } else {
        format!(
            "local key file {} (keep a copy somewhere safe: without it nobody can open the repository)",
            keyfile.display()
        )
    };
    if ctx.out.json {
        ctx.out.json(&json!({"repository": repo.location(), "id": hex_encode(&repo.repo_id()), "key": key_desc}));
    } else if ctx.out.quiet {
        println!("{}", hex_encode(&repo.repo_id()));
    } else {
        ctx.out
            .line(format!("✅ Repository created at {}", repo.location()));
        ctx.out.kv("ID", &hex_encode(&repo.repo_id())[..8]);
        ctx.out.kv("Key", key_desc);
        ctx.out.line(format!(
            "💡 Back up a folder: prism-sync backup --repo {} DIR",
            repo.location()
        ));
    }
    Ok(Outcome::ok())
}

// ---- backup ----------------------------------------------------------------------------------------

/// Opens the repository; without --repo, creates the embedded default on first use so that
/// `prism-sync backup DIR` works on a fresh machine.
fn open_or_create_default(ctx: &Ctx) -> Result<Repository> {
    match ctx.open_url(&ctx.repo_url()) {
        Err(Error::RepoNotFound { .. }) if ctx.repo.is_none() => {
            let repo = Repository::init(
                crate::repository::open_backend(&ctx.repo_url())?,
                &ctx.credentials()?,
                &InitOptions::default(),
            )?;
            ctx.out.line(format!(
                "✅ Created the embedded repository at {}",
                repo.location()
            ));
            Ok(repo)
        }
        Ok(repo) => {
            warn_unused_password(ctx, &repo);
            Ok(repo.with_cache(&ctx.paths().cache_root()))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn backup(ctx: &Ctx, a: &BackupArgs) -> Result<Outcome> {
    let (source, _) = archiver::source_for(&a.paths)?;
    let filter = super::exclude::Excludes::new(a, &source)?.map(|x| x.filter(&source));
    if a.dry_run {
        return backup_dry_run(ctx, &source, filter.as_ref());
    }
    archiver::return_big_buffers();
    // Metadata reads start now, overlapping the key derivation and the index load.
    let _prefetch = Prefetch::start(&a.paths, prefetch_threads());
    let repo = open_or_create_default(ctx)?;
    let progress = Arc::new(Progress::default());
    let archive = ArchiveOptions {
        file_cache: (!a.no_cache).then(|| ctx.paths().file_cache(&repo.repo_id())),
        ignore_ctime: a.ignore_ctime,
        ignore_inode: a.ignore_inode,
        progress: progress.clone(),
        filter,
        read_bytes_per_s: read_limit()?,
        ..Default::default()
    };
    let opts = BackupOptions {
        archive,
        host: a.host.clone(),
        // restic's `--tag a,b`: two tags.
        tags: a
            .tags
            .iter()
            .flat_map(|t| t.split(','))
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        ..Default::default()
    };
    let bar = backup_bar(ctx, &source, opts.archive.filter.clone(), progress);
    let report = archiver::backup(&repo, &a.paths, &opts);
    bar.finish(report.is_ok());
    let report = report?;
    report_soft(ctx, "could not back up", &report.errors, &report.warnings);
    let s = &report.snapshot.summary;
    if ctx.out.json {
        let mut v = snapshot_json(&report.id, &report.snapshot);
        v["errors"] = json!(
            report
                .errors
                .iter()
                .map(|e| json!({"path": e.path.display().to_string(), "error": e.message}))
                .collect::<Vec<_>>()
        );
        ctx.out.json(&v);
    } else if ctx.out.quiet {
        println!("{}", report.id);
    } else {
        ctx.out
            .line(format!("✅ Snapshot {} saved", report.id.short()));
        ctx.out.kv("ID", report.id);
        ctx.out.kv(
            "Files",
            format!(
                "{} new, {} changed, {} unchanged",
                s.files_new, s.files_changed, s.files_unchanged
            ),
        );
        ctx.out.kv("Dirs", s.dirs);
        ctx.out.kv(
            "Data",
            format!(
                "{} in {}; {} new to the repository ({} after compression and encryption)",
                bytes(s.total_bytes),
                count(
                    s.files_new + s.files_changed + s.files_unchanged,
                    "file",
                    "files"
                ),
                bytes(s.bytes_added_raw),
                bytes(s.bytes_added_stored)
            ),
        );
        ctx.out.kv("Duration", seconds(s.duration_ns));
        if !report.errors.is_empty() {
            ctx.out.line(format!(
                "⚠️  {} could not be read and {} not in the snapshot (listed above)",
                count(report.errors.len() as u64, "file", "files"),
                if report.errors.len() == 1 {
                    "is"
                } else {
                    "are"
                }
            ));
        }
    }
    Ok(Outcome {
        partial: !report.errors.is_empty(),
    })
}

/// `PRISM_SYNC_READ_LIMIT_KIB`: `backup` reads files, `check --read-data` and `prune` packs, at most this
/// many KiB per second (to leave the disk or the link to other work, and for tests of the
/// progress display).
fn read_limit() -> Result<Option<u64>> {
    match std::env::var("PRISM_SYNC_READ_LIMIT_KIB") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(k) if k > 0 => Ok(Some(k * 1024)),
            _ => bail!(Error::invalid(format!(
                "PRISM_SYNC_READ_LIMIT_KIB={v} is not a positive number of KiB per second: set a number such as 10240, or unset it"
            ))),
        },
        Err(_) => Ok(None),
    }
}

/// A backup's progress: files and bytes read (or found unchanged) against a pre-count of what
/// the backup will read, which runs beside it (as restic's does) while a terminal watches.
fn backup_bar(
    ctx: &Ctx,
    source: &archiver::Source,
    filter: Option<archiver::ScanFilter>,
    p: Arc<Progress>,
) -> Bar {
    let total: Arc<std::sync::OnceLock<(u64, u64)>> = Arc::default();
    if ctx.out.progress_allowed() {
        let (source, total) = (source.clone(), total.clone());
        std::thread::spawn(move || {
            if let Ok(r) = super::exclude::dry_run(&source, filter.as_ref(), false) {
                let _ = total.set((r.files, r.bytes));
            }
        });
    }
    Bar::start(&ctx.out, move || {
        let total = total.get().copied();
        Reading {
            op: "backup",
            phase: "backup".into(),
            counting: true,
            noun: "files",
            files_done: p.files.load(Ordering::Relaxed),
            files_total: total.map(|t| t.0),
            bytes_done: p.bytes_read.load(Ordering::Relaxed)
                + p.bytes_cached.load(Ordering::Relaxed),
            bytes_total: total.map(|t| t.1),
            note: Some(format!(
                "{} new stored",
                bytes(p.bytes_stored.load(Ordering::Relaxed))
            )),
            per_phase: false,
        }
    })
}

/// `backup --dry-run`: what the backup would read after the excludes; the repository is not
/// opened.
fn backup_dry_run(
    ctx: &Ctx,
    source: &archiver::Source,
    filter: Option<&archiver::ScanFilter>,
) -> Result<Outcome> {
    let list = ctx.out.verbose > 0 || ctx.out.json;
    let r = super::exclude::dry_run(source, filter, list)?;
    if ctx.out.json {
        ctx.out.json(&json!({
            "dry_run": true, "files": r.files, "dirs": r.dirs, "bytes": r.bytes,
            "excluded": r.excluded, "paths": r.listed,
        }));
        return Ok(Outcome::ok());
    }
    for p in &r.listed {
        ctx.out.line(format!("   would back up {p}"));
    }
    ctx.out.line(format!(
        "💡 Dry run: would back up {} ({}) in {}; {} excluded; nothing stored",
        count(r.files, "file", "files"),
        bytes(r.bytes),
        count(r.dirs, "directory", "directories"),
        count(r.excluded, "entry", "entries")
    ));
    Ok(Outcome::ok())
}

// ---- snapshots, ls, diff, dump ----------------------------------------------------------------------

/// The key `snapshots --latest` and `latest` group by: sync set, else host and paths.
fn host_paths(s: &Snapshot) -> (Option<&str>, &str, &[Vec<u8>]) {
    (s.sync_set.as_deref(), &s.host, &s.paths)
}

pub fn snapshots(ctx: &Ctx, a: &SnapshotsArgs) -> Result<Outcome> {
    let repo = open(ctx)?;
    let mut snaps = readable_snapshots(ctx, &repo)?;
    snaps.retain(|(_, s)| a.filter.matches(s));
    if let Some(n) = a.latest {
        // The newest N of each group, in the list's order (oldest first).
        let mut seen: std::collections::HashMap<_, usize> = std::collections::HashMap::new();
        let mut keep = vec![false; snaps.len()];
        for (i, (_, s)) in snaps.iter().enumerate().rev() {
            let c = seen.entry(host_paths(s)).or_default();
            if *c < n {
                *c += 1;
                keep[i] = true;
            }
        }
        let mut k = keep.into_iter();
        snaps.retain(|_| k.next().unwrap_or(false));
    }
    if ctx.out.json {
        ctx.out.json(&Value::Array(
            snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect(),
        ));
        return Ok(Outcome::ok());
    }
    if ctx.out.quiet {
        for (id, _) in &snaps {
            println!("{id}");
        }
        return Ok(Outcome::ok());
    }
    if snaps.is_empty() {
        if a.filter.is_empty() {
            ctx.out.line("💡 No snapshots yet: prism-sync backup DIR");
        } else {
            ctx.out
                .line("💡 No snapshot matches --host/--tag/--path (drop them to see all)");
        }
        return Ok(Outcome::ok());
    }
    let tags_width = snaps
        .iter()
        .map(|(_, s)| s.tags.join(",").chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "ID        Time                 Host              {:<tags_width$}        Size  Paths",
        "Tags"
    );
    for (id, s) in &snaps {
        let what = match &s.sync_set {
            Some(set) => format!("sync set {set}"),
            None => s
                .paths
                .iter()
                .map(|p| display_path(p))
                .collect::<Vec<_>>()
                .join(", "),
        };
        println!(
            "{:<8}  {:<19}  {:<16}  {:<tags_width$}  {:>10}  {}",
            id.short(),
            format_local(s.time_ns),
            s.host,
            s.tags.join(","),
            bytes(s.summary.total_bytes),
            what
        );
    }
    println!("{}", count(snaps.len() as u64, "snapshot", "snapshots"));
    Ok(Outcome::ok())
}

/// Resolves a snapshot argument. `latest` means the newest snapshot that matches the filter;
/// with `inner` (a path inside the snapshot, as `dump` and `ls` take), the newest snapshot of
/// the backed-up folder that holds it: the newest snapshot of each sync set or host and paths
/// is looked at, newest first, and the first one with `inner` in it wins, so a path deleted in
/// its folder's newest snapshot is never taken from an older one.
fn resolve_filtered(
    repo: &Repository,
    snaps: &[(SnapshotId, Snapshot)],
    spec: &str,
    filter: &SnapshotFilter,
    inner: Option<&[u8]>,
) -> Result<(SnapshotId, Snapshot)> {
    if spec != "latest" {
        let (id, s) = select::resolve(snaps, spec)?;
        return Ok((*id, s.clone()));
    }
    let cands: Vec<&(SnapshotId, Snapshot)> =
        snaps.iter().filter(|(_, s)| filter.matches(s)).collect();
    let Some(newest) = cands.last() else {
        if filter.is_empty() {
            bail!(Error::invalid(
                "the repository has no snapshots yet: run `prism-sync backup` first"
            ));
        }
        bail!(Error::invalid(
            "no snapshot matches --host/--tag/--path: see `prism-sync snapshots`"
        ));
    };
    let inner: Vec<u8> = crate::snapshot::components(inner.unwrap_or(b"")).join(&b'/');
    if inner.is_empty() {
        return Ok((newest.0, newest.1.clone()));
    }
    let mut seen = HashSet::new();
    for (id, s) in cands.iter().rev() {
        if seen.insert(host_paths(s)) && find(repo, &s.tree, &inner)?.is_some() {
            return Ok((*id, s.clone()));
        }
    }
    bail!(Error::invalid(format!(
        "{} is not in the newest snapshot of any backed-up folder: see `prism-sync snapshots`, or name a snapshot id",
        display_path(&inner)
    )))
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::Dir { .. } => 'd',
        NodeKind::Symlink { .. } => 'l',
        NodeKind::File { .. } => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let b = (n.mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn node_json(path: &[u8], n: &Node) -> Value {
    let mut v = json!({
        "path": format!("/{}", display_path(path)),
        "name": display_path(&n.name),
        "type": n.type_name(),
        "mode": format!("{:o}", n.mode),
        "mtime": format_rfc3339(n.mtime_ns),
        "uid": n.uid, "gid": n.gid,
    });
    match &n.kind {
        NodeKind::File { size, .. } => v["size"] = json!(size),
        NodeKind::Symlink { target } => v["target"] = json!(display_path(target)),
        NodeKind::Dir { .. } => {}
    }
    v
}

pub fn ls(ctx: &Ctx, a: &LsArgs) -> Result<Outcome> {
    let repo = open(ctx)?;
    let (id, snap) = super::with_index(&repo, || {
        let snaps = readable_snapshots(ctx, &repo)?;
        let inner = a.path.as_deref().map(|p| p.as_bytes());
        resolve_filtered(&repo, &snaps, &a.snapshot, &a.filter, inner)
    })?;
    let base = a
        .path
        .as_deref()
        .map(|p| p.as_bytes())
        .unwrap_or(b"")
        .to_vec();
    let base: Vec<u8> = crate::snapshot::components(&base).join(&b'/');
    let node = find(&repo, &snap.tree, &base)?.with_context(|| {
        Error::invalid(format!(
            "{} is not in snapshot {}",
            display_path(&base),
            id.short()
        ))
    })?;
    let mut entries: Vec<(Vec<u8>, Node)> = Vec::new();
    match &node.kind {
        NodeKind::Dir { subtree } => walk(&repo, subtree, &mut |p, n| {
            entries.push((crate::snapshot::join(&base, p), n.clone()));
            Ok(true)
        })?,
        _ => entries.push((base.clone(), node.clone())),
    }
    if ctx.out.json {
        ctx.out.json(&Value::Array(
            entries.iter().map(|(p, n)| node_json(p, n)).collect(),
        ));
        return Ok(Outcome::ok());
    }
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    for (p, n) in &entries {
        let shown = format!("/{}", display_path(p));
        if a.long {
            let extra = match &n.kind {
                NodeKind::Symlink { target } => format!(" -> {}", display_path(target)),
                _ => String::new(),
            };
            writeln!(
                w,
                "{} {:>12} {} {shown}{extra}",
                mode_string(n),
                n.size(),
                format_local(n.mtime_ns)
            )?;
        } else {
            writeln!(w, "{shown}")?;
        }
    }
    Ok(Outcome::ok())
}

pub fn diff(ctx: &Ctx, a: &str, b: &str, filter: &SnapshotFilter) -> Result<Outcome> {
    let repo = open(ctx)?;
    let snaps = super::with_index(&repo, || readable_snapshots(ctx, &repo))?;
    let (ia, sa) = resolve_filtered(&repo, &snaps, a, filter, None)?;
    let (ib, sb) = resolve_filtered(&repo, &snaps, b, filter, None)?;
    let mut changes = Vec::new();
    diff_trees(&repo, &sa.tree, &sb.tree, &mut |d| changes.push(d))?;
    if ctx.out.json {
        ctx.out.json(&json!({
            "from": ia.to_hex(), "to": ib.to_hex(),
            "changes": changes.iter().map(|d| json!({
                "path": format!("/{}", display_path(&d.path)),
                "change": d.change.code().to_string(),
                "type": d.new.as_ref().or(d.old.as_ref()).map(|n| n.type_name()),
            })).collect::<Vec<_>>(),
        }));
        return Ok(Outcome::ok());
    }
    for d in &changes {
        let dir = if d
            .new
            .as_ref()
            .or(d.old.as_ref())
            .is_some_and(|n| n.is_dir())
        {
            "/"
        } else {
            ""
        };
        println!("{}    /{}{dir}", d.change.code(), display_path(&d.path));
    }
    if ctx.out.human() {
        let count = |c: char| changes.iter().filter(|d| d.change.code() == c).count();
        println!(
            "🔄 {} → {}: {} added, {} removed, {} modified, {} metadata only, {} type changed",
            ia.short(),
            ib.short(),
            count('+'),
            count('-'),
            count('M'),
            count('U'),
            count('T')
        );
    }
    Ok(Outcome::ok())
}

pub fn dump(
    ctx: &Ctx,
    snapshot: &str,
    path: &std::ffi::OsStr,
    filter: &SnapshotFilter,
) -> Result<Outcome> {
    let shown = path.to_string_lossy();
    let repo = open(ctx)?;
    let (id, snap) = super::with_index(&repo, || {
        let snaps = readable_snapshots(ctx, &repo)?;
        resolve_filtered(&repo, &snaps, snapshot, filter, Some(path.as_bytes()))
    })?;
    let node = find(&repo, &snap.tree, path.as_bytes())?
        .with_context(|| Error::invalid(format!("{shown} is not in snapshot {}", id.short())))?;
    if node.is_dir() {
        bail!(Error::invalid(format!(
            "{shown} is a directory: dump prints one file; use restore --include for directories"
        )));
    }
    if let NodeKind::Symlink { target } = &node.kind {
        bail!(Error::invalid(format!(
            "{shown} is a symlink to {}: dump prints regular files",
            display_path(target)
        )));
    }
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    restorer::dump(&repo, &node, &mut w)?;
    w.flush()?;
    Ok(Outcome::ok())
}

// ---- restore ----------------------------------------------------------------------------------------

pub fn restore(ctx: &Ctx, a: &RestoreArgs) -> Result<Outcome> {
    let Some(target) = &a.target else {
        bail!(Error::invalid(
            "restore needs --target DIR: the directory to restore into"
        ));
    };
    let repo = open(ctx)?;
    let snaps = super::with_index(&repo, || readable_snapshots(ctx, &repo))?;
    let (id, snap) = match (&a.snapshot, &a.at) {
        (Some(_), Some(_)) => bail!(Error::invalid(
            "give either a SNAPSHOT or --at TIME, not both"
        )),
        (None, None) => bail!(Error::invalid(
            "name a SNAPSHOT (id, prefix or `latest`) or --at TIME"
        )),
        (Some(s), None) => {
            let filter = SnapshotFilter {
                hosts: a.hosts.clone(),
                tags: a.tags.clone(),
                paths: Vec::new(),
            };
            resolve_filtered(&repo, &snaps, s, &filter, None)?
        }
        (None, Some(t)) => {
            let (id, s) = select::at(&snaps, parse_time(t)?, t)?;
            (*id, s.clone())
        }
    };
    let id = &id;
    let progress = Arc::new(RestoreProgress::default());
    let opts = RestoreOptions {
        include: a.include.iter().map(|i| i.as_bytes().to_vec()).collect(),
        overwrite: a.overwrite,
        progress: progress.clone(),
        ..Default::default()
    };
    let started = Instant::now();
    // The snapshot's summary has the total of a whole restore; of a part, only as it goes.
    let whole = a.include.is_empty();
    let (files_total, bytes_total) = {
        let s = &snap.summary;
        (
            s.files_new + s.files_changed + s.files_unchanged,
            s.total_bytes,
        )
    };
    let p = progress.clone();
    let bar = Bar::start(&ctx.out, move || Reading {
        op: "restore",
        phase: "restore".into(),
        counting: true,
        noun: "files",
        files_done: p.files.load(Ordering::Relaxed),
        files_total: (whole && files_total > 0).then_some(files_total),
        bytes_done: p.bytes.load(Ordering::Relaxed),
        bytes_total: (whole && files_total > 0).then_some(bytes_total),
        note: None,
        per_phase: false,
    });
    let report = restorer::restore(&repo, &snap.tree, target, &opts);
    bar.finish(report.is_ok());
    let report = report?;
    report_soft(ctx, "could not restore", &report.errors, &[]);
    let renamed = report_renamed(ctx, &report.renamed);
    if ctx.out.json {
        ctx.out.json(&json!({
            "snapshot": id.to_hex(), "target": target.display().to_string(),
            "files": report.files, "dirs": report.dirs, "symlinks": report.symlinks, "bytes": report.bytes,
            "errors": report.errors.iter().map(|e| json!({"path": e.path.display().to_string(), "error": e.message})).collect::<Vec<_>>(),
            "renamed": renamed,
            "folds_case": report.folding.case, "folds_unicode": report.folding.unicode,
        }));
    } else {
        let icon = if report.errors.is_empty() {
            "✅"
        } else {
            "⚠️ "
        };
        ctx.out.line(format!(
            "{icon} Restored snapshot {} ({}) to {}",
            id.short(),
            format_local(snap.time_ns),
            target.display()
        ));
        ctx.out.kv(
            "Files",
            format!(
                "{} ({}), {} dirs, {} symlinks",
                report.files,
                bytes(report.bytes),
                report.dirs,
                report.symlinks
            ),
        );
        ctx.out
            .kv("Duration", seconds(started.elapsed().as_nanos() as u64));
        if !report.errors.is_empty() {
            ctx.out.line(format!("⚠️  {} path(s) could not be restored (listed above); nothing wrong was written under their names", report.errors.len()));
        }
    }
    Ok(Outcome {
        partial: !report.errors.is_empty() || !report.renamed.is_empty(),
    })
}

// ---- forget, prune ----------------------------------------------------------------------------------

pub fn forget(ctx: &Ctx, a: &ForgetArgs) -> Result<Outcome> {
    let policy = Policy {
        within_ns: a.keep_within.as_deref().map(parse_duration).transpose()?,
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
    };
    if policy.is_empty() {
        bail!(Error::invalid(
            "forget needs a policy: give at least one --keep-* option (e.g. --keep-within 30d or --keep-last 10); nothing was removed"
        ));
    }
    let group_by = GroupBy::parse(&a.group_by)?;
    let repo = open(ctx)?;
    let snaps = readable_snapshots(ctx, &repo)?;
    // The policy applies per group: the retention module groups by sync set, else by host and
    // paths, so each considered snapshot is handed over under its --group-by label.
    let grouped: Vec<(SnapshotId, Snapshot)> = snaps
        .iter()
        .filter(|(_, s)| a.filter.matches(s))
        .map(|(id, s)| (*id, group_by.relabel(s)))
        .collect();
    let decisions = retention::apply(&grouped, &policy, &jiff::tz::TimeZone::system());
    let by_id: std::collections::HashMap<SnapshotId, &Snapshot> =
        snaps.iter().map(|(i, s)| (*i, s)).collect();
    let mut removed = Vec::new();
    let mut groups_json = Vec::new();
    for (group, ds) in &decisions {
        let group = group.trim_end();
        let keep: Vec<_> = ds.iter().filter(|d| d.keep).collect();
        let remove: Vec<_> = ds.iter().filter(|d| !d.keep).collect();
        ctx.out.line(format!(
            "🔄 {group}: keep {}, remove {}",
            keep.len(),
            remove.len()
        ));
        if ctx.out.verbose > 0 {
            for d in &keep {
                ctx.out.line(format!(
                    "   keep   {}  {}  ({})",
                    d.id.short(),
                    format_local(by_id[&d.id].time_ns),
                    d.reasons.join(", ")
                ));
            }
        }
        for d in &remove {
            ctx.out.line(format!(
                "   remove {}  {}",
                d.id.short(),
                format_local(by_id[&d.id].time_ns)
            ));
            removed.push(d.id);
        }
        groups_json.push(json!({
            "group": group,
            "keep": keep.iter().map(|d| json!({"id": d.id.to_hex(), "reasons": d.reasons})).collect::<Vec<_>>(),
            "remove": remove.iter().map(|d| d.id.to_hex()).collect::<Vec<_>>(),
        }));
    }
    if !a.dry_run {
        for id in &removed {
            match repo.backend().delete(Kind::Snapshot, &id.to_hex()) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Error::from(e).into()),
            }
        }
    }
    let pruned = if a.prune && !a.dry_run && !removed.is_empty() {
        Some(run_prune(ctx, &repo, false, 5.0)?)
    } else {
        None
    };
    if ctx.out.json {
        ctx.out.json(&json!({"dry_run": a.dry_run, "groups": groups_json, "removed": removed.len(), "prune": pruned}));
    } else if a.dry_run {
        ctx.out.line(format!(
            "💡 Dry run: {} would be removed; nothing changed",
            count(removed.len() as u64, "snapshot", "snapshots")
        ));
    } else {
        ctx.out.line(format!(
            "✅ Removed {}",
            count(removed.len() as u64, "snapshot", "snapshots")
        ));
        if !a.prune && !removed.is_empty() {
            ctx.out
                .line("💡 Run prism-sync prune to reclaim their space");
        }
    }
    Ok(Outcome::ok())
}

/// `forget --group-by`: which fields make two snapshots one group.
struct GroupBy {
    host: bool,
    paths: bool,
    tags: bool,
}

impl GroupBy {
    fn parse(spec: &str) -> Result<GroupBy> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for f in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match f {
                "host" => g.host = true,
                "paths" | "path" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                other => bail!(Error::invalid(format!(
                    "--group-by {other:?}: use a comma-separated subset of host, paths, tags (or \"\" for one group)"
                ))),
            }
        }
        Ok(g)
    }

    /// The snapshot with its group label in `host` and no paths (a sync set's versions keep
    /// their own group).
    fn relabel(&self, s: &Snapshot) -> Snapshot {
        let mut label = Vec::new();
        if self.host {
            label.push(format!("host {}", s.host));
        }
        if self.paths {
            let p: Vec<String> = s.paths.iter().map(|p| display_path(p)).collect();
            label.push(format!("paths {}", p.join(",")));
        }
        if self.tags {
            let mut t = s.tags.clone();
            t.sort();
            label.push(format!("tags {}", t.join(",")));
        }
        if label.is_empty() {
            label.push("all snapshots".into());
        }
        let mut out = s.clone();
        out.host = label.join(", ");
        out.paths = Vec::new();
        out
    }
}

fn run_prune(ctx: &Ctx, repo: &Repository, dry_run: bool, max_unused: f64) -> Result<Value> {
    let progress = Arc::new(PruneProgress::limited(read_limit()?));
    let bar = prune_bar(ctx, progress.clone());
    let r = maintenance::prune::prune_with_progress(
        repo,
        &PruneOptions {
            max_unused_percent: max_unused,
            compact_below_bytes: 0,
            dry_run,
        },
        &progress,
    );
    bar.finish(r.is_ok());
    let r = r?;
    if ctx.out.human() {
        let verb = if dry_run { "Would reclaim" } else { "Pruned" };
        ctx.out
            .line(format!("✅ {verb}: {} unused blob(s)", r.blobs_unused));
        ctx.out.kv(
            "Packs",
            format!(
                "{} total, {} repacked, {} marked, {} deleted",
                r.packs_total, r.packs_repacked, r.packs_marked, r.packs_deleted
            ),
        );
        ctx.out.kv("Freed", bytes(r.bytes_deleted));
        if r.packs_deferred > 0 {
            ctx.out.line(format!(
                "💡 {} pack(s) wait for {} running backup/sync session(s); the next prune deletes them",
                r.packs_deferred, r.live_sessions
            ));
        }
    }
    Ok(json!({
        "dry_run": dry_run, "packs_total": r.packs_total, "bytes_total": r.bytes_total, "blobs_unused": r.blobs_unused,
        "packs_repacked": r.packs_repacked, "bytes_repacked": r.bytes_repacked, "packs_marked": r.packs_marked,
        "packs_deleted": r.packs_deleted, "bytes_deleted": r.bytes_deleted, "packs_deferred": r.packs_deferred,
        "packs_recovered": r.packs_recovered, "orphans_deleted": r.orphans_deleted, "live_sessions": r.live_sessions,
    }))
}

/// Prune's progress: the phase, and in each phase what it counts (snapshots walked, packs
/// repacked or deleted with their bytes) against the phase's total, with rate and ETA from the
/// phase's start; the summary counts what the last phase did (packs deleted, bytes freed).
fn prune_bar(ctx: &Ctx, p: Arc<PruneProgress>) -> Bar {
    Bar::start(&ctx.out, move || {
        let phase = p.phase();
        let known = |n: u64| (n > 0).then_some(n);
        let noun = match phase {
            PrunePhase::FindUsed => "snapshots",
            PrunePhase::Repack => "packs repacked",
            PrunePhase::Delete => "packs deleted",
            PrunePhase::ReadIndex | PrunePhase::Settle => "",
        };
        Reading {
            op: "prune",
            phase: format!("prune: {}", phase.name()),
            counting: !noun.is_empty(),
            noun,
            files_done: p.done.load(Ordering::Relaxed),
            files_total: Some(p.total.load(Ordering::Relaxed)),
            bytes_done: p.bytes_done.load(Ordering::Relaxed),
            bytes_total: known(p.bytes_total.load(Ordering::Relaxed)),
            note: None,
            per_phase: true,
        }
    })
}

pub fn prune(ctx: &Ctx, a: &PruneArgs) -> Result<Outcome> {
    let pct: f64 = a
        .max_unused
        .trim()
        .trim_end_matches('%')
        .parse()
        .ok()
        .filter(|v: &f64| (0.0..=100.0).contains(v))
        .with_context(|| {
            Error::invalid(format!(
                "--max-unused {:?}: write a percentage such as 5%",
                a.max_unused
            ))
        })?;
    let repo = open(ctx)?;
    let v = run_prune(ctx, &repo, a.dry_run, pct)?;
    if ctx.out.json {
        ctx.out.json(&v);
    }
    Ok(Outcome::ok())
}

// ---- check --------------------------------------------------------------------------------------------

pub fn check(ctx: &Ctx, a: &CheckArgs) -> Result<Outcome> {
    let how = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => parse_subset(s)?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let repo = open(ctx)?;
    let progress = Arc::new(maintenance::check::ReadProgress {
        read_bytes_per_s: read_limit()?,
        ..Default::default()
    });
    let bar = (how != ReadData::None).then(|| {
        let p = progress.clone();
        Bar::start(&ctx.out, move || {
            let known = |n: u64| (n > 0).then_some(n);
            let total = known(p.packs_total.load(Ordering::Relaxed));
            Reading {
                op: "check --read-data",
                phase: if total.is_some() {
                    "check: read data"
                } else {
                    "check: structure"
                }
                .into(),
                counting: total.is_some(),
                noun: "packs",
                files_done: p.packs_done.load(Ordering::Relaxed),
                files_total: total,
                bytes_done: p.bytes_done.load(Ordering::Relaxed),
                bytes_total: known(p.bytes_total.load(Ordering::Relaxed)),
                note: None,
                per_phase: false,
            }
        })
    });
    let r = maintenance::check::check_with_progress(&repo, &how, &progress);
    if let Some(bar) = bar {
        bar.finish(r.is_ok());
    }
    let r = r?;
    if ctx.out.json {
        ctx.out.json(&json!({
            "ok": r.errors.is_empty(), "errors": r.errors, "warnings": r.warnings,
            "snapshots": r.snapshots, "packs": r.packs, "blobs": r.blobs, "packs_read": r.packs_read,
        }));
    } else {
        for w in &r.warnings {
            ctx.out.warn(w);
        }
        for e in &r.errors {
            eprintln!("❌ {e}");
        }
        if r.errors.is_empty() {
            ctx.out
                .line(format!("✅ No errors found in {}", repo.location()));
            ctx.out.kv("Snapshots", r.snapshots);
            ctx.out.kv(
                "Packs",
                format!("{} ({} read and verified)", r.packs, r.packs_read),
            );
            ctx.out.kv("Blobs", r.blobs);
        }
    }
    if !r.errors.is_empty() {
        bail!(Error::invalid(format!(
            "check found {} error(s) in {} (listed above)",
            r.errors.len(),
            repo.location()
        )));
    }
    Ok(Outcome::ok())
}

// ---- key ------------------------------------------------------------------------------------------------

fn new_password(a: &NewPasswordArgs) -> Result<Vec<u8>> {
    let pw = match (
        &a.new_password_file,
        std::env::var_os("PRISM_SYNC_NEW_PASSWORD"),
    ) {
        (Some(f), _) => super::read_password_file(f)?,
        (None, Some(p)) => p.into_encoded_bytes(),
        (None, None) => match super::prompt::new_password("New password: ")? {
            Some(pw) => pw,
            None => bail!(Error::invalid(
                "no new password: set PRISM_SYNC_NEW_PASSWORD or pass --new-password-file FILE (or run it on a terminal to be asked)"
            )),
        },
    };
    if pw.is_empty() {
        bail!(Error::invalid(
            "the new password is empty: choose a non-empty password"
        ));
    }
    Ok(pw)
}

pub fn key(ctx: &Ctx, cmd: KeyCommand) -> Result<Outcome> {
    let repo = open(ctx)?;
    match cmd {
        KeyCommand::Add(a) => {
            let id = repository::add_key(&repo, &new_password(&a)?)?;
            if ctx.out.json {
                ctx.out.json(&json!({"added": id.to_hex()}));
            } else {
                ctx.out.line(format!("✅ Key {} added", id.short()));
            }
        }
        KeyCommand::List => {
            let keys = repository::list_keys(&repo)?;
            if ctx.out.json {
                ctx.out.json(&Value::Array(
                    keys.iter()
                        .map(|k| json!({
                            "id": k.id.to_hex(), "current": k.current, "host": k.host, "user": k.user,
                            "created": format_rfc3339(k.created_ns),
                            "kdf": match k.kdf { Kdf::Raw => "local key file".to_string(), Kdf::Argon2id { memory_kib, iterations, lanes } => format!("argon2id m={memory_kib}KiB t={iterations} p={lanes}") },
                        }))
                        .collect(),
                ));
            } else {
                println!(" ID        Host              User          Created              Kind");
                for k in keys {
                    let kind = match k.kdf {
                        Kdf::Raw => "local key file",
                        Kdf::Argon2id { .. } => "password",
                    };
                    println!(
                        "{}{:<8}  {:<16}  {:<12}  {:<19}  {kind}",
                        if k.current { "*" } else { " " },
                        k.id.short(),
                        k.host,
                        k.user,
                        format_local(k.created_ns)
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let keys = repository::list_keys(&repo)?;
            let matches: Vec<_> = keys
                .iter()
                .filter(|k| k.id.to_hex().starts_with(&id.to_ascii_lowercase()))
                .collect();
            let k = match matches.as_slice() {
                [k] => k.id,
                [] => bail!(Error::invalid(format!(
                    "no key {id}: see `prism-sync key list`"
                ))),
                _ => bail!(Error::invalid(format!(
                    "key prefix {id} is ambiguous: give more digits"
                ))),
            };
            repository::remove_key(&repo, &k)?;
            ctx.out.line(format!("✅ Key {} removed", k.short()));
        }
        KeyCommand::Passwd(a) => {
            let new = repository::add_key(&repo, &new_password(&a)?)?;
            let old = repo.key_id();
            repo.backend()
                .delete(Kind::Key, &old.to_hex())
                .map_err(Error::from)?;
            ctx.out.line(format!(
                "✅ Password changed: key {} replaces {}",
                new.short(),
                old.short()
            ));
        }
    }
    Ok(Outcome::ok())
}

// ---- stats ----------------------------------------------------------------------------------------------

pub fn stats(ctx: &Ctx) -> Result<Outcome> {
    let repo = open(ctx)?;
    let index = repo.load_index()?;
    let snaps = readable_snapshots(ctx, &repo)?;
    let (mut data_blobs, mut tree_blobs, mut raw, mut stored) = (0u64, 0u64, 0u64, 0u64);
    let mut seen = HashSet::new();
    for loc in index.iter() {
        if !seen.insert((loc.pack.kind, loc.entry.id)) {
            continue;
        }
        match loc.pack.kind {
            BlobKind::Data => data_blobs += 1,
            BlobKind::Tree => tree_blobs += 1,
        }
        raw += loc.entry.raw_length as u64;
        stored += loc.entry.length as u64;
    }
    let pack_bytes: u64 = index.packs().iter().map(|p| p.length as u64).sum();
    let latest = snaps
        .last()
        .map(|(_, s)| s.summary.total_bytes)
        .unwrap_or(0);
    let ratio = if stored > 0 {
        raw as f64 / stored as f64
    } else {
        1.0
    };
    if ctx.out.json {
        ctx.out.json(&json!({
            "repository": repo.location(), "snapshots": snaps.len(), "packs": index.packs().len(), "pack_bytes": pack_bytes,
            "data_blobs": data_blobs, "tree_blobs": tree_blobs, "raw_bytes": raw, "stored_bytes": stored,
            "compression_ratio": ratio, "latest_snapshot_bytes": latest,
        }));
    } else {
        ctx.out.line(format!("📊 Repository {}", repo.location()));
        ctx.out.kv("Snapshots", snaps.len());
        ctx.out.kv(
            "Packs",
            format!("{} ({})", index.packs().len(), bytes(pack_bytes)),
        );
        ctx.out
            .kv("Blobs", format!("{data_blobs} data, {tree_blobs} tree"));
        ctx.out.kv(
            "Unique data",
            format!(
                "{} raw, {} stored (compression {ratio:.2}x)",
                bytes(raw),
                bytes(stored)
            ),
        );
        ctx.out.kv("Latest snapshot", bytes(latest));
    }
    Ok(Outcome::ok())
}

/// Threads warming the metadata cache before a backup (`PRISM_SYNC_PREFETCH_THREADS`, 0 = off).
fn prefetch_threads() -> usize {
    std::env::var("PRISM_SYNC_PREFETCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}
