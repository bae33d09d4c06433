//! Executes a sync plan in the local folder.
//!
//! Before touching a path, it is compared with what the scan saw (type, size, mtime, mode, link
//! target): if it changed since, the action is refused (the next step sees the change and treats
//! it as a conflict). Files are written to a temp file beside the target, fsynced and renamed over
//! it; every touched directory is fsynced before the caller records the step as done.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::repository::Repository;
use crate::repository::reader::{ReadOptions, with_prefetch};
use crate::restorer::{WriteOptions, prepare_file, write_file, write_symlink};
use crate::snapshot::tree::file_blobs;
use crate::snapshot::{Node, NodeKind};
use crate::sync::merge::Action;

/// Why an action was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The path changed since the scan; nothing was done to it.
    Changed(String),
    /// The file system refused (permissions, space, a name it cannot hold, …).
    Io(String),
    /// A directory still holds files that do not sync; it was kept.
    NotEmpty,
    /// On a case-insensitive file system, another entry differs from this name only by case.
    CaseCollision(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Changed(s) => write!(f, "changed since the scan, left alone: {s}"),
            Failure::Io(s) => f.write_str(s),
            Failure::NotEmpty => f.write_str("kept: it holds files that do not sync"),
            Failure::CaseCollision(other) => {
                write!(
                    f,
                    "not written: {other} differs only in case and this file system cannot hold both"
                )
            }
        }
    }
}

pub fn local_path(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(rel))
}

fn mtime_ns(md: &fs::Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

/// Does the path still hold what the scan saw?
fn still(path: &Path, expect: Option<&Node>) -> std::result::Result<(), Failure> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => Some(md),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Failure::Io(e.to_string())),
    };
    let ok = match (expect, &md) {
        (None, None) => true,
        (None, Some(_)) => return Err(Failure::Changed("it exists now".into())),
        (Some(_), None) => return Err(Failure::Changed("it is gone".into())),
        (Some(n), Some(md)) => match &n.kind {
            NodeKind::File { size, .. } => {
                md.is_file()
                    && md.len() == *size
                    && mtime_ns(md) == n.mtime_ns
                    && (md.mode() & 0o7777) == n.mode
            }
            NodeKind::Symlink { target } => {
                md.file_type().is_symlink()
                    && fs::read_link(path)
                        .is_ok_and(|t| t.as_os_str().as_bytes() == target.as_slice())
            }
            NodeKind::Dir { .. } => md.is_dir(),
        },
    };
    if ok {
        Ok(())
    } else {
        Err(Failure::Changed("modified".into()))
    }
}

fn set_meta(path: &Path, node: &Node) -> std::io::Result<()> {
    if !matches!(node.kind, NodeKind::Symlink { .. }) {
        fs::set_permissions(path, fs::Permissions::from_mode(node.mode))?;
    }
    if let NodeKind::File { .. } = node.kind {
        let t =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(node.mtime_ns.max(0) as u64);
        fs::File::options()
            .write(true)
            .open(path)?
            .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))?;
    }
    Ok(())
}

fn same_content(a: &Node, b: &Node) -> bool {
    match (&a.kind, &b.kind) {
        (
            NodeKind::File {
                size: s,
                content: c,
            },
            NodeKind::File {
                size: t,
                content: d,
            },
        ) => s == t && c == d,
        _ => false,
    }
}

fn io(e: Error) -> Failure {
    Failure::Io(e.to_string())
}

/// On a case-insensitive file system, would creating `path` land on another entry's name?
fn case_collision(path: &Path) -> Option<String> {
    let (dir, name) = (path.parent()?, path.file_name()?);
    let lower = name.to_string_lossy().to_lowercase();
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name())
        .find(|n| n != name && n.to_string_lossy().to_lowercase() == lower)
        .map(|n| n.to_string_lossy().into_owned())
}

fn run(
    repo: &Repository,
    root: &Path,
    a: &Action,
    fold_case: bool,
    touched: &mut BTreeSet<PathBuf>,
) -> std::result::Result<(), Failure> {
    let parent = |p: &Path| {
        p.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.to_path_buf())
    };
    let creates = match a {
        Action::Mkdir { path, .. }
        | Action::Write {
            path, expect: None, ..
        } => Some(path),
        Action::Rename { to, .. } => Some(to),
        _ => None,
    };
    if fold_case
        && let Some(p) = creates
        && let Some(other) = case_collision(&local_path(root, p))
    {
        return Err(Failure::CaseCollision(other));
    }
    match a {
        Action::Mkdir { path, node } => {
            let p = local_path(root, path);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => return Ok(()),
                Ok(_) => return Err(Failure::Changed("something else is there".into())),
                Err(_) => {}
            }
            fs::create_dir(&p).map_err(|e| Failure::Io(e.to_string()))?;
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(node.mode | 0o700));
            touched.insert(parent(&p));
        }
        Action::Write { path, node, expect } => {
            let p = local_path(root, path);
            still(&p, expect.as_ref())?;
            match &node.kind {
                NodeKind::File { content, .. } => {
                    if let Some(old) = expect.as_ref().filter(|old| same_content(old, node)) {
                        // Only mode or mtime changed: no need to fetch anything.
                        let _ = old;
                        set_meta(&p, node).map_err(|e| Failure::Io(e.to_string()))?;
                    } else {
                        file_blobs(repo, content)
                            .and_then(|ids| write_file(repo, node, &ids, &p, DURABLE, None))
                            .map_err(io)?;
                    }
                }
                NodeKind::Symlink { .. } => {
                    // Create beside it, then rename over: never a moment without the path.
                    let tmp = p.with_file_name(format!(".{}.prism-tmp-link", std::process::id()));
                    let _ = fs::remove_file(&tmp);
                    write_symlink(node, &tmp).map_err(io)?;
                    fs::rename(&tmp, &p).map_err(|e| Failure::Io(e.to_string()))?;
                }
                NodeKind::Dir { .. } => {
                    return Err(Failure::Io("internal: write of a directory".into()));
                }
            }
            touched.insert(parent(&p));
        }
        Action::Rename {
            from,
            to,
            expect,
            node,
        } => {
            let (f, t) = (local_path(root, from), local_path(root, to));
            still(&f, Some(expect))?;
            still(&t, None)?;
            fs::rename(&f, &t).map_err(|e| Failure::Io(e.to_string()))?;
            if let Some(n) = node {
                set_meta(&t, n).map_err(|e| Failure::Io(e.to_string()))?;
            }
            touched.insert(parent(&f));
            touched.insert(parent(&t));
        }
        Action::Delete { path, expect } => {
            let p = local_path(root, path);
            still(&p, Some(expect))?;
            fs::remove_file(&p).map_err(|e| Failure::Io(e.to_string()))?;
            touched.insert(parent(&p));
        }
        Action::Rmdir { path } => {
            let p = local_path(root, path);
            match fs::remove_dir(&p) {
                Ok(()) => {
                    touched.insert(parent(&p));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                    return Err(Failure::NotEmpty);
                }
                Err(e) => return Err(Failure::Io(e.to_string())),
            }
        }
    }
    Ok(())
}

/// Files the plan writes are prepared — temp file beside the target, content, fsync — on this
/// many threads at once (fsyncs in flight together share the file system's journal commits),
/// and renamed into place in plan order.
const PREPARE_THREADS: usize = 16;
/// Prepared files waiting for their rename, at most (each is an open temp file's worth of work).
const PREPARED_AHEAD_MAX: usize = 256;

/// How sync writes files: durable before the rename (it replaces live files), no owners.
const DURABLE: WriteOptions = WriteOptions {
    durable: true,
    owner: false,
};

/// A file being prepared for action `action`.
struct Pending {
    action: usize,
    done: Receiver<Result<PathBuf>>,
}

/// Renames a prepared file into place: right before, the target must still hold what the scan
/// saw (and not collide by case); otherwise the temp file goes and the action fails.
fn commit(
    root: &Path,
    a: &Action,
    prepared: Result<PathBuf>,
    fold_case: bool,
    touched: &mut BTreeSet<PathBuf>,
) -> std::result::Result<(), Failure> {
    let Action::Write { path, expect, .. } = a else {
        return Err(Failure::Io("internal: commit of a non-write".into()));
    };
    let tmp = prepared.map_err(io)?;
    let p = local_path(root, path);
    let check = || {
        if fold_case
            && expect.is_none()
            && let Some(other) = case_collision(&p)
        {
            return Err(Failure::CaseCollision(other));
        }
        still(&p, expect.as_ref())?;
        fs::rename(&tmp, &p).map_err(|e| Failure::Io(e.to_string()))
    };
    match check() {
        Ok(()) => {
            touched.insert(
                p.parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| root.to_path_buf()),
            );
            Ok(())
        }
        Err(f) => {
            let _ = fs::remove_file(&tmp);
            Err(f)
        }
    }
}

/// Runs the actions in order; returns one result per action run. `stop_after` (tests) stops
/// after that many actions as if the process had been killed: no fsync of directories, and the
/// caller must not record anything. `fold_case`: the folder's file system ignores case.
///
/// The content of every file the plan writes is fetched by one read plan (grouped by pack,
/// coalesced, in parallel: `repository::reader`), and the files are prepared on
/// [`PREPARE_THREADS`] threads while the plan goes on; each is renamed into place in plan order
/// after the re-check, before any later action other than a new directory runs.
pub fn apply(
    repo: &Repository,
    root: &Path,
    actions: &[Action],
    stop_after: Option<usize>,
    fold_case: bool,
) -> Result<Vec<std::result::Result<(), Failure>>> {
    let mut file_of: Vec<Option<usize>> = vec![None; actions.len()];
    let mut lists = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        if let Action::Write { node, expect, .. } = a
            && let NodeKind::File { content, .. } = &node.kind
            && !expect.as_ref().is_some_and(|old| same_content(old, node))
            // A content list that cannot be read fails that write, with the reason, in run().
            && let Ok(ids) = file_blobs(repo, content)
        {
            file_of[i] = Some(lists.len());
            lists.push(ids);
        }
    }
    let read_opts = ReadOptions::for_repo(repo);
    with_prefetch(repo, BlobKind::Data, lists, read_opts, |pf| {
        std::thread::scope(|s| {
            let (jobs, jobs_rx) =
                bounded::<(usize, &Node, PathBuf, Sender<Result<PathBuf>>)>(PREPARE_THREADS);
            for _ in 0..PREPARE_THREADS {
                let jobs_rx = jobs_rx.clone();
                s.spawn(move || {
                    for (f, node, dest, done) in jobs_rx {
                        let r = prepare_file(node, &mut pf.file(f), &dest, DURABLE, None);
                        let _ = done.send(r.map(|(tmp, _)| tmp));
                    }
                });
            }
            drop(jobs_rx);
            let mut touched = BTreeSet::new();
            let mut results: Vec<Option<std::result::Result<(), Failure>>> =
                vec![None; actions.len()];
            let mut pending: VecDeque<Pending> = VecDeque::new();
            let commit_front = |pending: &mut VecDeque<Pending>,
                                results: &mut Vec<_>,
                                touched: &mut BTreeSet<PathBuf>| {
                if let Some(p) = pending.pop_front() {
                    let prepared = p.done.recv().unwrap_or(Err(Error::Interrupted));
                    results[p.action] = Some(commit(
                        root,
                        &actions[p.action],
                        prepared,
                        fold_case,
                        touched,
                    ));
                }
            };
            for (i, a) in actions.iter().enumerate() {
                if stop_after == Some(i) {
                    while !pending.is_empty() {
                        commit_front(&mut pending, &mut results, &mut touched);
                    }
                    return Err(Error::Interrupted);
                }
                match (file_of[i], a) {
                    (Some(f), Action::Write { path, node, .. }) => {
                        if pending.len() >= PREPARED_AHEAD_MAX {
                            commit_front(&mut pending, &mut results, &mut touched);
                        }
                        let (done, rx) = bounded(1);
                        if jobs.send((f, node, local_path(root, path), done)).is_err() {
                            return Err(Error::Interrupted);
                        }
                        pending.push_back(Pending {
                            action: i,
                            done: rx,
                        });
                    }
                    // A new directory does not touch files being prepared (they are in
                    // directories made before them); anything else waits for their renames.
                    (_, Action::Mkdir { .. }) => {
                        results[i] = Some(run(repo, root, a, fold_case, &mut touched));
                    }
                    _ => {
                        while !pending.is_empty() {
                            commit_front(&mut pending, &mut results, &mut touched);
                        }
                        results[i] = Some(run(repo, root, a, fold_case, &mut touched));
                    }
                }
            }
            while !pending.is_empty() {
                commit_front(&mut pending, &mut results, &mut touched);
            }
            drop(jobs);
            for d in touched {
                if let Ok(f) = fs::File::open(&d) {
                    f.sync_all().map_err(|e| Error::io(&d, e))?;
                }
            }
            Ok(results
                .into_iter()
                .map(|r| r.expect("every action ran"))
                .collect())
        })
    })
}
