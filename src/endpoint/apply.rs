//! Executes a sync plan in the local folder.
//!
//! Every write goes through [`crate::fsx`]: an action's directory is opened from the folder's
//! handle without following any symlink, so a symlink where the plan expects a directory (made
//! by the user, or by a name this file system folds onto another) fails the action as a local
//! change — the next step sees it — and is never written through. After a directory could not be
//! made, nothing below it is attempted (each such action fails, naming it).
//!
//! Before touching a path, it is compared with what the scan saw (type, size, mtime, mode, link
//! target): if it changed since, the action is refused (the next step sees the change and treats
//! it as a conflict). Files are written to a temp file beside the target, fsynced and renamed over
//! it inside the held directory; every touched directory is fsynced before the caller records
//! the step as done.
//!
//! On a file system that folds case or Unicode normalization ([`Folding`]), names the plan would
//! create that land on another entry — one already in the folder, or one created earlier in the
//! same plan — are found before anything is written and fail as [`Failure::CaseCollision`]: the
//! shared state keeps both, this folder keeps the first.
//!
//! setuid, setgid and sticky bits are never applied ([`PERMISSION_BITS`]): a tree published
//! before they were dropped from sync scans, or a forged one, must not make a program here run
//! with its owner's rights.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::archiver::Progress;
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::fsx::fold::{self, Folding};
use crate::fsx::{Dir, EntryKind, WalkError};
use crate::repository::Repository;
use crate::repository::reader::{ReadOptions, with_prefetch};
use crate::restorer::{Content as Blobs, Target, WriteOptions, prepare_file, write_file_if};
use crate::snapshot::tree::file_blobs;
use crate::snapshot::{Content, Node, NodeKind, display_path};
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
    /// On a case-insensitive or normalizing file system, another entry's name differs from this
    /// one only by case or Unicode form.
    CaseCollision(String),
    /// A directory above it could not be made earlier in this step; nothing was attempted.
    ParentFailed(String),
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
                    "not written: {other} differs only in case or Unicode form and this file system cannot hold both"
                )
            }
            Failure::ParentFailed(dir) => {
                write!(f, "not written: its directory {dir} could not be made")
            }
        }
    }
}

pub fn local_path(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(rel))
}

/// `(parent, name)` of a relative path.
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

fn io(e: impl std::fmt::Display) -> Failure {
    Failure::Io(e.to_string())
}

/// The folder during one apply: its handle and what it folds.
struct Folder<'a> {
    repo: &'a Repository,
    root: &'a Path,
    top: Dir,
    folding: Folding,
    /// Directories (relative) whose entries changed: fsynced at the end.
    touched: BTreeSet<Vec<u8>>,
    /// Directories this apply could not make: nothing below them is attempted.
    failed_dirs: Vec<Vec<u8>>,
    /// On a folding file system: each directory's entries by folded name (read once per
    /// directory, then kept up to date as this apply creates and removes names), so a large
    /// download into one directory does not list it once per file.
    listings: HashMap<Vec<u8>, HashMap<Vec<u8>, Vec<u8>>>,
}

impl Folder<'_> {
    /// The held directory an action's path lives in, and its name there. A symlink or a file
    /// in the way is a local change.
    fn parent<'p>(&self, rel: &'p [u8]) -> std::result::Result<(Dir, &'p [u8]), Failure> {
        let (parent, name) = split(rel);
        let dir = self.top.open_path(parent).map_err(|e| match e {
            WalkError::Io(_, e) => io(e),
            in_the_way_or_gone => Failure::Changed(in_the_way_or_gone.to_string()),
        })?;
        Ok((dir, name))
    }

    fn under_failed_dir(&self, rel: &[u8]) -> Option<&Vec<u8>> {
        self.failed_dirs
            .iter()
            .find(|d| rel.starts_with(d) && rel.get(d.len()) == Some(&b'/'))
    }

    /// On a folding file system: another entry of `dir` (at `parent`) that `name` would land
    /// on.
    fn collision_on_disk(&mut self, parent: &[u8], dir: &Dir, name: &[u8]) -> Option<String> {
        if !self.folding.any() {
            return None;
        }
        let f = self.folding;
        if !self.listings.contains_key(parent) {
            let names = dir.names().ok()?;
            let by_key = names.into_iter().map(|n| (fold::key(&n, f), n)).collect();
            self.listings.insert(parent.to_vec(), by_key);
        }
        match self.listings[parent].get(&fold::key(name, f)) {
            Some(other) if other != name => Some(display_path(other)),
            _ => None,
        }
    }

    /// Keeps the listings in step with a name this apply made (`true`) or removed.
    fn note(&mut self, rel: &[u8], made: bool) {
        if !self.folding.any() {
            return;
        }
        let (parent, name) = split(rel);
        let k = fold::key(name, self.folding);
        if let Some(l) = self.listings.get_mut(parent) {
            if made {
                l.insert(k, name.to_vec());
            } else if l.get(&k).is_some_and(|n| n == name) {
                l.remove(&k);
            }
        }
    }
}

/// Does the entry still hold what the scan saw?
/// The mode bits a sync applies: read, write and execute for owner, group and others; never
/// setuid (0o4000), setgid (0o2000) or sticky (0o1000).
pub const PERMISSION_BITS: u32 = 0o777;

/// `node` with only the mode bits a sync may apply.
fn without_special_bits(node: &Node) -> Node {
    let mut n = node.clone();
    n.mode &= PERMISSION_BITS;
    n
}

fn still(dir: &Dir, name: &[u8], expect: Option<&Node>) -> std::result::Result<(), Failure> {
    let en = dir.entry(name).map_err(io)?;
    let ok = match (expect, &en) {
        (None, None) => true,
        (None, Some(_)) => return Err(Failure::Changed("it exists now".into())),
        (Some(_), None) => return Err(Failure::Changed("it is gone".into())),
        (Some(n), Some(en)) => match &n.kind {
            NodeKind::File { size, .. } => {
                en.kind == EntryKind::File
                    && en.size == *size
                    && en.mtime_ns == n.mtime_ns
                    && (en.mode & PERMISSION_BITS) == (n.mode & PERMISSION_BITS)
            }
            NodeKind::Symlink { target } => {
                en.kind == EntryKind::Symlink && dir.read_link(name).is_ok_and(|t| t == *target)
            }
            NodeKind::Dir { .. } => en.kind == EntryKind::Dir,
        },
    };
    if ok {
        Ok(())
    } else {
        Err(Failure::Changed("modified".into()))
    }
}

/// Mode (and, for files, times) of an entry, through a handle.
fn set_meta(dir: &Dir, name: &[u8], node: &Node) -> std::io::Result<()> {
    match node.kind {
        NodeKind::File { .. } => dir.set_file_meta(name, node.mode, node.mtime_ns),
        NodeKind::Dir { .. } => dir.open_dir(name)?.set_own_meta(node.mode, None, None),
        NodeKind::Symlink { .. } => Ok(()),
    }
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

/// The bytes of file content `actions` write (a change of mode or mtime only writes none).
pub fn bytes_to_write(actions: &[Action]) -> u64 {
    actions
        .iter()
        .map(|a| match a {
            Action::Write { node, expect, .. }
                if matches!(node.kind, NodeKind::File { .. })
                    && !expect.as_ref().is_some_and(|old| same_content(old, node)) =>
            {
                node.size()
            }
            _ => 0,
        })
        .sum()
}

/// The path an action creates, if it creates one.
fn creates(a: &Action) -> Option<&Vec<u8>> {
    match a {
        Action::Mkdir { path, .. }
        | Action::Write {
            path, expect: None, ..
        } => Some(path),
        Action::Rename { to, .. } => Some(to),
        _ => None,
    }
}

/// On a folding file system: the creating actions whose path lands on the path of an earlier
/// creating action, with that path. Found before anything is written.
fn colliding_creates(actions: &[Action], f: Folding) -> HashMap<usize, Vec<u8>> {
    let mut out = HashMap::new();
    if !f.any() {
        return out;
    }
    let key = |p: &[u8]| -> Vec<u8> {
        p.split(|&b| b == b'/')
            .map(|c| fold::key(c, f))
            .collect::<Vec<_>>()
            .join(&b'/')
    };
    let mut first: HashMap<Vec<u8>, &Vec<u8>> = HashMap::new();
    for (i, a) in actions.iter().enumerate() {
        let Some(p) = creates(a) else { continue };
        match first.get(&key(p)) {
            Some(other) if *other != p => {
                out.insert(i, (*other).clone());
            }
            Some(_) => {}
            None => {
                first.insert(key(p), p);
            }
        }
    }
    out
}

fn run(folder: &mut Folder<'_>, a: &Action) -> std::result::Result<(), Failure> {
    for p in [Some(a.path()), creates(a).map(Vec::as_slice)]
        .into_iter()
        .flatten()
    {
        if let Some(d) = folder.under_failed_dir(p) {
            return Err(Failure::ParentFailed(display_path(d)));
        }
    }
    if let Some(p) = creates(a) {
        let (dir, name) = folder.parent(p)?;
        if let Some(other) = folder.collision_on_disk(split(p).0, &dir, name) {
            return Err(Failure::CaseCollision(other));
        }
    }
    match a {
        Action::Mkdir { path, node } => {
            let node = &without_special_bits(node);
            let (dir, name) = folder.parent(path)?;
            match dir.entry(name).map_err(io)? {
                Some(en) if en.kind == EntryKind::Dir => return Ok(()),
                Some(_) => return Err(Failure::Changed("something else is there".into())),
                None => {}
            }
            dir.mkdir(name, 0o700).map_err(io)?;
            folder.note(path, true);
            dir.open_dir(name)
                .and_then(|d| d.set_own_meta(node.mode | 0o700, None, None))
                .map_err(io)?;
            folder.touched.insert(split(path).0.to_vec());
        }
        Action::Write { path, node, expect } => {
            let node = &without_special_bits(node);
            let (dir, name) = folder.parent(path)?;
            still(&dir, name, expect.as_ref())?;
            match &node.kind {
                NodeKind::File { content, .. } => {
                    if expect.as_ref().is_some_and(|old| same_content(old, node)) {
                        // Only mode or mtime changed: no need to fetch anything.
                        set_meta(&dir, name, node).map_err(io)?;
                    } else {
                        let blobs = match content {
                            Content::Direct(ids) => ids.clone(),
                            c => file_blobs(folder.repo, c).map_err(io)?,
                        };
                        let shown = local_path(folder.root, path);
                        let at = Target {
                            dir: &dir,
                            name,
                            shown: &shown,
                        };
                        let w = WriteOptions {
                            durable: true,
                            owner: false,
                        };
                        // Checked again after the download, right before the rename: an
                        // edit made while a big file was fetched is never replaced.
                        let mut changed = None;
                        let check = || match still(&dir, name, expect.as_ref()) {
                            Ok(()) => true,
                            Err(f) => {
                                changed = Some(f);
                                false
                            }
                        };
                        let written = write_file_if(folder.repo, node, &blobs, at, w, None, check)
                            .map_err(io)?;
                        if written.is_none() {
                            return Err(changed.unwrap_or(Failure::Changed("modified".into())));
                        }
                    }
                }
                NodeKind::Symlink { target } => {
                    // Made beside it, then renamed over: never a moment without the path.
                    dir.symlink_replace(target, name).map_err(io)?;
                    let _ = dir.set_times_nofollow(name, node.mtime_ns);
                }
                NodeKind::Dir { .. } => {
                    return Err(Failure::Io("internal: write of a directory".into()));
                }
            }
            if expect.is_none() {
                folder.note(path, true);
            }
            folder.touched.insert(split(path).0.to_vec());
        }
        Action::Rename {
            from,
            to,
            expect,
            node,
        } => {
            let (fd, fname) = folder.parent(from)?;
            let (td, tname) = folder.parent(to)?;
            still(&fd, fname, Some(expect))?;
            still(&td, tname, None)?;
            fd.rename_noreplace(fname, &td, tname).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Failure::Changed("something appeared at the new name".into())
                } else {
                    io(e)
                }
            })?;
            folder.note(from, false);
            folder.note(to, true);
            if let Some(n) = node {
                set_meta(&td, tname, &without_special_bits(n)).map_err(io)?;
            }
            folder.touched.insert(split(from).0.to_vec());
            folder.touched.insert(split(to).0.to_vec());
        }
        Action::Delete { path, expect } => {
            let (dir, name) = folder.parent(path)?;
            still(&dir, name, Some(expect))?;
            dir.remove_file(name).map_err(io)?;
            folder.note(path, false);
            folder.touched.insert(split(path).0.to_vec());
        }
        Action::Rmdir { path } => {
            let (dir, name) = match folder.parent(path) {
                Ok(x) => x,
                Err(Failure::Changed(_)) if folder.top.open_path(split(path).0).is_err() => {
                    // Its parent is gone (or no directory): so is it, as far as this folder goes.
                    return Ok(());
                }
                Err(f) => return Err(f),
            };
            match dir.remove_dir(name) {
                Ok(()) => {
                    folder.note(path, false);
                    folder.touched.insert(split(path).0.to_vec());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                    return Err(Failure::NotEmpty);
                }
                Err(e) => return Err(io(e)),
            }
        }
    }
    Ok(())
}

/// Files the plan writes are prepared — temp file beside the target, content, fsync — on this
/// many threads at once (fsyncs in flight together share the file system's journal commits:
/// 10,000 new files no longer wait for 10,000 commits one after another).
const PREPARE_THREADS: usize = 16;
/// Prepared files waiting for their rename, at most.
const PREPARED_AHEAD_MAX: usize = 256;

/// How sync writes files: durable before the rename (it replaces live files), no owners.
const DURABLE: WriteOptions = WriteOptions {
    durable: true,
    owner: false,
};

/// A file prepared for a write action: its directory, its name there, its temp name.
struct Prepared {
    dir: Dir,
    name: Vec<u8>,
    tmp: Vec<u8>,
}

type PrepareResult = std::result::Result<Prepared, Failure>;

/// A write action whose file is being prepared.
struct Pending {
    action: usize,
    done: Receiver<PrepareResult>,
}

/// The worker half of a write: opens the parent (never through a symlink) and writes the
/// complete file under a temp name there.
fn prepare(
    top: &Dir,
    root: &Path,
    path: &[u8],
    node: &Node,
    blobs: Blobs<'_>,
    written: Option<&AtomicU64>,
) -> PrepareResult {
    let (parent, name) = split(path);
    let dir = top.open_path(parent).map_err(|e| match e {
        WalkError::Io(_, e) => io(e),
        in_the_way_or_gone => Failure::Changed(in_the_way_or_gone.to_string()),
    })?;
    let shown = local_path(root, path);
    let at = Target {
        dir: &dir,
        name,
        shown: &shown,
    };
    let node = &without_special_bits(node);
    let (tmp, _) = prepare_file(node, blobs, at, DURABLE, written).map_err(io)?;
    Ok(Prepared {
        dir,
        name: name.to_vec(),
        tmp,
    })
}

impl Folder<'_> {
    /// The plan-order half of a write: right before the rename, the path must still hold what
    /// the scan saw (and a new name must not land on another by folding); otherwise the temp
    /// file goes and the action fails.
    fn commit(&mut self, a: &Action, prepared: PrepareResult) -> std::result::Result<(), Failure> {
        let Action::Write { path, expect, .. } = a else {
            return Err(Failure::Io("internal: commit of a non-write".into()));
        };
        let p = prepared?;
        let r = (|| {
            if expect.is_none()
                && let Some(other) = self.collision_on_disk(split(path).0, &p.dir, &p.name)
            {
                return Err(Failure::CaseCollision(other));
            }
            still(&p.dir, &p.name, expect.as_ref())?;
            p.dir.rename(&p.tmp, &p.dir, &p.name).map_err(io)
        })();
        match r {
            Ok(()) => {
                if expect.is_none() {
                    self.note(path, true);
                }
                self.touched.insert(split(path).0.to_vec());
                Ok(())
            }
            Err(f) => {
                let _ = p.dir.remove_file(&p.tmp);
                Err(f)
            }
        }
    }
}

/// Runs the actions in order; returns one result per action run. `stop_after` (tests) stops
/// after that many actions as if the process had been killed: no fsync of directories, and the
/// caller must not record anything. `folding`: what the folder's file system folds.
///
/// Remote speed: the content of every file the plan writes is fetched by one read plan
/// (grouped by pack, coalesced, in parallel: `repository::reader`), and the files are prepared
/// on [`PREPARE_THREADS`] threads while the plan goes on; each is renamed into place in plan
/// order ([`Folder::commit`]), before any later action other than a new directory runs.
pub fn apply(
    repo: &Repository,
    root: &Path,
    actions: &[Action],
    stop_after: Option<usize>,
    folding: Folding,
) -> Result<Vec<std::result::Result<(), Failure>>> {
    apply_counted(repo, root, actions, stop_after, folding, None)
}

/// [`apply`], counting into `progress` the actions done (`actions_done`) and the bytes of
/// file content written (`apply_bytes_done`) as it goes.
pub fn apply_counted(
    repo: &Repository,
    root: &Path,
    actions: &[Action],
    stop_after: Option<usize>,
    folding: Folding,
    progress: Option<&Progress>,
) -> Result<Vec<std::result::Result<(), Failure>>> {
    let written = progress.map(|p| &p.apply_bytes_done);
    let one_done = || {
        if let Some(p) = progress {
            p.actions_done.fetch_add(1, Ordering::Relaxed);
        }
    };
    let top = Dir::open_root(root).map_err(|e| Error::io(root, e))?;
    let worker_tops = (0..PREPARE_THREADS)
        .map(|_| top.try_clone())
        .collect::<std::io::Result<Vec<Dir>>>()
        .map_err(|e| Error::io(root, e))?;
    let mut folder = Folder {
        repo,
        root,
        top,
        folding,
        touched: BTreeSet::new(),
        failed_dirs: Vec::new(),
        listings: HashMap::new(),
    };
    let clashes = colliding_creates(actions, folding);
    let mut file_of: Vec<Option<usize>> = vec![None; actions.len()];
    let mut lists = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        if let Action::Write { node, expect, .. } = a
            && let NodeKind::File { content, .. } = &node.kind
            && !clashes.contains_key(&i)
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
                bounded::<(usize, &[u8], &Node, Sender<PrepareResult>)>(PREPARE_THREADS);
            for top in worker_tops {
                let jobs_rx = jobs_rx.clone();
                s.spawn(move || {
                    for (f, path, node, done) in jobs_rx {
                        let _ =
                            done.send(prepare(&top, root, path, node, &mut pf.file(f), written));
                    }
                });
            }
            drop(jobs_rx);
            let mut results: Vec<Option<std::result::Result<(), Failure>>> =
                vec![None; actions.len()];
            let mut pending: VecDeque<Pending> = VecDeque::new();
            let commit_front = |folder: &mut Folder<'_>,
                                pending: &mut VecDeque<Pending>,
                                results: &mut Vec<Option<_>>| {
                if let Some(p) = pending.pop_front() {
                    let prepared = p
                        .done
                        .recv()
                        .unwrap_or_else(|_| Err(Failure::Io("interrupted".into())));
                    results[p.action] = Some(folder.commit(&actions[p.action], prepared));
                    one_done();
                }
            };
            for (i, a) in actions.iter().enumerate() {
                if stop_after == Some(i) {
                    while !pending.is_empty() {
                        commit_front(&mut folder, &mut pending, &mut results);
                    }
                    return Err(Error::Interrupted);
                }
                if let Some(other) = clashes.get(&i) {
                    if let Action::Mkdir { path, .. } = a {
                        folder.failed_dirs.push(path.clone());
                    }
                    results[i] = Some(Err(Failure::CaseCollision(display_path(other))));
                    one_done();
                    continue;
                }
                match (file_of[i], a) {
                    (Some(f), Action::Write { path, node, .. }) => {
                        if let Some(d) = folder.under_failed_dir(path) {
                            results[i] = Some(Err(Failure::ParentFailed(display_path(d))));
                            one_done();
                            continue;
                        }
                        if pending.len() >= PREPARED_AHEAD_MAX {
                            commit_front(&mut folder, &mut pending, &mut results);
                        }
                        let (done, rx) = bounded(1);
                        if jobs.send((f, path.as_slice(), node, done)).is_err() {
                            return Err(Error::Interrupted);
                        }
                        pending.push_back(Pending {
                            action: i,
                            done: rx,
                        });
                    }
                    // A new directory does not touch files being prepared (they are in
                    // directories made before them); anything else waits for their renames.
                    (_, Action::Mkdir { path, .. }) => {
                        let r = run(&mut folder, a);
                        if r.is_err() {
                            folder.failed_dirs.push(path.clone());
                        }
                        results[i] = Some(r);
                        one_done();
                    }
                    _ => {
                        while !pending.is_empty() {
                            commit_front(&mut folder, &mut pending, &mut results);
                        }
                        results[i] = Some(run(&mut folder, a));
                        one_done();
                    }
                }
            }
            while !pending.is_empty() {
                commit_front(&mut folder, &mut pending, &mut results);
            }
            drop(jobs);
            for rel in &folder.touched {
                if let Ok(d) = folder.top.open_path(rel) {
                    d.sync().map_err(|e| Error::io(local_path(root, rel), e))?;
                }
            }
            Ok(results
                .into_iter()
                .map(|r| r.expect("every action ran"))
                .collect())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkdir(p: &str) -> Action {
        Action::Mkdir {
            path: p.as_bytes().to_vec(),
            node: Node {
                name: p.rsplit('/').next().unwrap().as_bytes().to_vec(),
                kind: NodeKind::Dir {
                    subtree: crate::id::BlobId([0; 32]),
                },
                mode: 0o755,
                mtime_ns: 0,
                uid: 0,
                gid: 0,
            },
        }
    }

    #[test]
    fn names_created_twice_under_folding_are_found_before_anything_is_written() {
        let actions = vec![
            mkdir("a"),
            mkdir("A"),
            mkdir("b"),
            mkdir("a/x"),
            mkdir("A/X"),
        ];
        let none = colliding_creates(&actions, Folding::default());
        assert!(none.is_empty());
        let f = Folding {
            case: true,
            unicode: false,
        };
        let c = colliding_creates(&actions, f);
        assert_eq!(c.len(), 2);
        assert_eq!(c[&1], b"a");
        assert_eq!(c[&4], b"a/x");
    }

    /// A tree published before sync scans dropped the special bits (or a forged one) must not
    /// create a setuid program or a setgid/sticky directory here.
    #[test]
    fn special_mode_bits_in_a_shared_tree_are_not_applied() {
        use crate::backend::MemoryBackend;
        use crate::repository::{Credentials, InitOptions};
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let creds = Credentials {
            password: None,
            local_keys_dir: tmp.path().join("keys"),
        };
        let repo = Repository::init(
            std::sync::Arc::new(MemoryBackend::new()),
            &creds,
            &InitOptions::default(),
        )
        .unwrap();
        let root = tmp.path().join("folder");
        std::fs::create_dir(&root).unwrap();
        let node = |name: &str, kind: NodeKind, mode: u32| Node {
            name: name.into(),
            kind,
            mode,
            mtime_ns: 1_700_000_000_000_000_000,
            uid: 0,
            gid: 0,
        };
        let empty = NodeKind::File {
            size: 0,
            content: Content::Direct(vec![]),
        };
        let dir = NodeKind::Dir {
            subtree: crate::id::BlobId::default(),
        };
        let actions = vec![
            Action::Mkdir {
                path: b"d".to_vec(),
                node: node("d", dir, 0o3775),
            },
            Action::Write {
                path: b"d/tool".to_vec(),
                node: node("tool", empty, 0o6755),
                expect: None,
            },
        ];
        let results = apply(&repo, &root, &actions, None, Folding::default()).unwrap();
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        let mode = |p: &str| std::fs::metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("d/tool"), 0o755);
        assert_eq!(mode("d") & 0o7000, 0);
    }
}
