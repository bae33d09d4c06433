//! Snapshot → files.
//!
//! Owns: writing trees out to a local directory. Must not touch: backends directly (it reads
//! through the repository), printing.
//!
//! Every write goes through [`crate::fsx`]: directories are reached from held handles, never
//! through a symlink, so nothing a folder holds (an earlier restore's `d -> /elsewhere`) can send
//! a write outside the target. With `--overwrite`, a symlink or file found where the snapshot has
//! a directory is replaced; a directory that cannot be made or opened is reported, and nothing
//! below it is written. Names that the target's file system cannot keep apart (case or Unicode
//! normalization, probed first) are found per directory before any of its entries is written;
//! all but the first of a group are restored under `<stem>.name-conflict-<n><.ext>` and
//! reported.
//!
//! Every file is written to a temp file beside its final name, each chunk verified (keyed hash)
//! as it is read, and renamed into place only when complete: a damaged or missing chunk fails
//! that file loudly and never leaves wrong bytes under a real name. All-zero chunks become holes
//! (sparse files stay sparse). Directories are created first and get their mode and mtime last,
//! deepest first. Files are restored by several workers in parallel, in batches whose blobs are
//! fetched by one read plan (`repository::reader`: grouped by pack, coalesced, in parallel).

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::archiver::SoftError;
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::fsx::fold::{self, Folding};
use crate::fsx::{Dir, EntryKind};
use crate::id::BlobId;
use crate::repository::Repository;
use crate::repository::reader::{ReadOptions, with_prefetch};
use crate::snapshot::tree::{file_blobs, find, read_dir};
use crate::snapshot::{Node, NodeKind, components, join};

#[derive(Default, Debug)]
pub struct RestoreProgress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Clone)]
pub struct RestoreOptions {
    /// Paths inside the snapshot to restore (with everything below them); empty = everything.
    pub include: Vec<Vec<u8>>,
    /// Allow a non-empty target; existing files at restored paths are replaced.
    pub overwrite: bool,
    pub workers: usize,
    pub progress: Arc<RestoreProgress>,
    /// What the target's file system folds; `None`: probe it.
    pub folding: Option<Folding>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            include: vec![],
            overwrite: false,
            workers: 4,
            progress: Arc::new(RestoreProgress::default()),
            folding: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub errors: Vec<SoftError>,
    /// Entries kept apart because the target's file system cannot hold their names side by
    /// side: (path in the snapshot, path written).
    pub renamed: Vec<(Vec<u8>, Vec<u8>)>,
    /// What the target's file system folds.
    pub folding: Folding,
}

/// How [`write_file`] writes.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// fsync the file before the rename (sync replaces live files; a restore into a new folder
    /// skips it for speed).
    pub durable: bool,
    /// Apply the node's owner (restores as root); sync trees carry no owners.
    pub owner: bool,
}

/// Where [`write_file`] puts a file: the name in a held directory, and the path for messages.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub dir: &'a Dir,
    pub name: &'a [u8],
    pub shown: &'a Path,
}

/// Writes one file node into `at.dir` via a temp file and rename. `blobs` are the file's data
/// blob ids, read one by one. On any error the temp file is removed and the entry is left
/// untouched. Returns the bytes written.
pub fn write_file(
    repo: &Repository,
    node: &Node,
    blobs: &[BlobId],
    at: Target<'_>,
    opts: WriteOptions,
    progress: Option<&AtomicU64>,
) -> Result<u64> {
    write_file_if(repo, node, blobs, at, opts, progress, || true)
        .map(|n| n.expect("no check to fail"))
}

/// [`write_file`], asking `still_ok` right before the rename (after the whole download):
/// `false` leaves the entry as it is, removes the temp file and returns `None`. Sync uses it to
/// re-check the path it replaces as late as possible.
pub fn write_file_if(
    repo: &Repository,
    node: &Node,
    blobs: &[BlobId],
    at: Target<'_>,
    opts: WriteOptions,
    progress: Option<&AtomicU64>,
    still_ok: impl FnOnce() -> bool,
) -> Result<Option<u64>> {
    let mut content = blobs.iter().map(|id| repo.read_blob(BlobKind::Data, id));
    let nf = at
        .dir
        .new_file(at.name)
        .map_err(|e| Error::io(at.shown, e))?;
    let n = fill(&nf, node, &mut content, at.shown, opts, progress)?;
    if !still_ok() {
        return Ok(None); // dropping `nf` removes the temp file
    }
    nf.commit(at.name).map_err(|e| Error::io(at.shown, e))?;
    Ok(Some(n))
}

/// A file's content, blob by blob, in order (from `Prefetch::file`, or read one by one).
pub type Content<'a> = &'a mut dyn Iterator<Item = Result<Vec<u8>>>;

/// [`write_file`] with the content from `blobs` (e.g. `Prefetch::file`).
pub fn write_file_from(
    node: &Node,
    blobs: Content<'_>,
    at: Target<'_>,
    opts: WriteOptions,
    progress: Option<&AtomicU64>,
) -> Result<u64> {
    let nf = at
        .dir
        .new_file(at.name)
        .map_err(|e| Error::io(at.shown, e))?;
    let n = fill(&nf, node, blobs, at.shown, opts, progress)?;
    nf.commit(at.name).map_err(|e| Error::io(at.shown, e))?;
    Ok(n)
}

/// The first half of [`write_file_from`]: the complete file (content, owner if asked, mode,
/// times, fsynced if durable) under a temp name in `at.dir`, which is returned with the bytes
/// written. The caller renames it over `at.name` ([`Dir::rename`]) or removes it; on error
/// nothing is left behind.
pub fn prepare_file(
    node: &Node,
    blobs: Content<'_>,
    at: Target<'_>,
    opts: WriteOptions,
    progress: Option<&AtomicU64>,
) -> Result<(Vec<u8>, u64)> {
    let nf = at
        .dir
        .new_file(at.name)
        .map_err(|e| Error::io(at.shown, e))?;
    let n = fill(&nf, node, blobs, at.shown, opts, progress)?;
    Ok((nf.keep_temp(), n))
}

/// Writes a file's content and metadata into a new file.
fn fill(
    nf: &crate::fsx::NewFile<'_>,
    node: &Node,
    blobs: Content<'_>,
    dest: &Path,
    opts: WriteOptions,
    progress: Option<&AtomicU64>,
) -> Result<u64> {
    let NodeKind::File { size, .. } = node.kind else {
        return Err(Error::invalid(
            "write_file called for a node that is not a file",
        ));
    };
    let f = nf.file();
    let mut off = 0u64;
    for data in blobs {
        let data = data?;
        if !data.iter().all(|&b| b == 0) {
            f.write_all_at(&data, off).map_err(|e| Error::io(dest, e))?;
        }
        off += data.len() as u64;
        if let Some(p) = progress {
            p.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
    if off != size {
        return Err(Error::corrupt(
            format!("file {}", dest.display()),
            format!("its chunks hold {off} bytes but the snapshot says {size}"),
        ));
    }
    f.set_len(size).map_err(|e| Error::io(dest, e))?;
    if opts.owner {
        nf.chown(node.uid, node.gid)
            .map_err(|e| Error::io(dest, e))?;
    }
    nf.set_meta(node.mode, node.mtime_ns)
        .map_err(|e| Error::io(dest, e))?;
    if opts.durable {
        nf.sync().map_err(|e| Error::io(dest, e))?;
    }
    Ok(off)
}

/// Creates a symlink node as `at.name`; with `replace`, over a file or symlink there.
pub fn write_symlink(node: &Node, at: Target<'_>, replace: bool, owner: bool) -> Result<()> {
    let NodeKind::Symlink { target } = &node.kind else {
        return Err(Error::invalid(
            "write_symlink called for a node that is not a symlink",
        ));
    };
    let r = if replace {
        at.dir.symlink_replace(target, at.name)
    } else {
        at.dir.symlink(target, at.name)
    };
    r.map_err(|e| Error::io(at.shown, e))?;
    if owner {
        let _ = at.dir.chown_nofollow(at.name, node.uid, node.gid);
    }
    let _ = at.dir.set_times_nofollow(at.name, node.mtime_ns);
    Ok(())
}

fn dir_is_empty(p: &Path) -> Result<bool> {
    match std::fs::read_dir(p) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// Should the node at `path` be restored, and should a directory be descended into?
fn included(include: &[Vec<u8>], path: &[u8]) -> (bool, bool) {
    if include.is_empty() {
        return (true, true);
    }
    let mut take = false;
    let mut descend = false;
    for inc in include {
        let under =
            path == inc.as_slice() || (path.starts_with(inc) && path.get(inc.len()) == Some(&b'/'));
        let above = inc.starts_with(path) && inc.get(path.len()) == Some(&b'/');
        take |= under;
        descend |= under || above;
    }
    (take || descend, descend)
}

struct FileJob {
    node: Node,
    dir: Arc<Dir>,
    name: Vec<u8>,
    shown: PathBuf,
    blobs: Vec<BlobId>,
}

/// A restore writes files in batches: the reads of a batch are planned together (grouped by
/// pack, coalesced, fetched in parallel: `repository::reader`), and memory stays bounded however
/// big the snapshot. A batch holds at most this many blob references (~100 bytes of plan each),
const BATCH_BLOBS_MAX: usize = 262_144;
/// … this many files,
const BATCH_FILES_MAX: usize = 65_536;
/// … and files of at most this many directories (each an open handle until the batch is done).
const BATCH_DIRS_MAX: usize = 256;

/// Writes a batch of files, their blobs fetched by one read plan, on `workers` threads taking
/// the files in plan order.
fn write_batch(
    repo: &Repository,
    mut jobs: Vec<FileJob>,
    opts: &RestoreOptions,
    done: &(dyn Fn(&FileJob, Result<u64>) + Sync),
) {
    if jobs.is_empty() {
        return;
    }
    let lists: Vec<Vec<BlobId>> = jobs
        .iter_mut()
        .map(|j| std::mem::take(&mut j.blobs))
        .collect();
    let read_opts = ReadOptions::for_repo(repo);
    with_prefetch(repo, BlobKind::Data, lists, read_opts, |pf| {
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..opts.workers.max(1) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let at = Target {
                            dir: &job.dir,
                            name: &job.name,
                            shown: &job.shown,
                        };
                        let w = WriteOptions {
                            durable: false,
                            owner: true,
                        };
                        let r = write_file_from(
                            &job.node,
                            &mut pf.file(i),
                            at,
                            w,
                            Some(&opts.progress.bytes),
                        );
                        done(job, r);
                    }
                });
            }
        });
    });
}

/// A directory still to restore: its path in the snapshot, its path in the target (they differ
/// below a name kept apart), its tree.
struct DirJob {
    snap: Vec<u8>,
    disk: Vec<u8>,
    tree: BlobId,
}

/// Makes `name` a directory in `dir`. With `overwrite`, a file or symlink in the way is
/// replaced (never followed); an existing directory is used.
fn make_dir(dir: &Dir, name: &[u8], overwrite: bool) -> std::io::Result<()> {
    match dir.mkdir(name, 0o700) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match dir.entry(name)? {
            Some(en) if en.kind == EntryKind::Dir => Ok(()),
            Some(_) if overwrite => {
                dir.remove_file(name)?;
                dir.mkdir(name, 0o700)
            }
            _ => Err(e),
        },
        r => r,
    }
}

/// Restores the tree `root` (or the part `include` selects) into `target`.
pub fn restore(
    repo: &Repository,
    root: &BlobId,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    if !opts.overwrite && !dir_is_empty(target)? {
        return Err(Error::invalid(format!(
            "target {} is not empty: choose an empty or new directory, or pass --overwrite",
            target.display()
        )));
    }
    let include: Vec<Vec<u8>> = opts
        .include
        .iter()
        .map(|i| components(i).join(&b'/'))
        .collect();
    for inc in &include {
        if find(repo, root, inc)?.is_none() {
            return Err(Error::invalid(format!(
                "{} is not in the snapshot: see `prism-sync ls`",
                crate::snapshot::display_path(inc)
            )));
        }
    }
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let top = Dir::open_root(target).map_err(|e| Error::io(target, e))?;
    let folding = match opts.folding {
        Some(f) => f,
        None => fold::probe(&top).map_err(|e| Error::io(target, e))?,
    };
    let mut report = RestoreReport {
        folding,
        ..Default::default()
    };
    let mut dirs: Vec<(Vec<u8>, Node)> = Vec::new();
    let errors = std::sync::Mutex::new(Vec::new());
    let shown = |rel: &[u8]| {
        if rel.is_empty() {
            target.to_path_buf()
        } else {
            target.join(std::ffi::OsStr::from_bytes(rel))
        }
    };
    let soft = |rel: &[u8], message: String| {
        opts.progress.errors.fetch_add(1, Ordering::Relaxed);
        errors.lock().expect("lock").push(SoftError {
            path: shown(rel),
            rel: rel.to_vec(),
            message,
        });
    };
    let files = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let done = |job: &FileJob, r: Result<u64>| match r {
        Ok(n) => {
            files.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(n, Ordering::Relaxed);
            opts.progress.files.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            let rel = job.shown.strip_prefix(target).unwrap_or(&job.shown);
            soft(rel.as_os_str().as_bytes(), e.to_string())
        }
    };
    let mut batch: Vec<FileJob> = Vec::new();
    let (mut batch_blobs, mut batch_dirs) = (0usize, 0usize);
    // Depth-first walk: directories and symlinks here, files in batches. Each directory is
    // opened from the target's handle when its turn comes, and held while its files wait.
    let mut stack = vec![DirJob {
        snap: Vec::new(),
        disk: Vec::new(),
        tree: *root,
    }];
    while let Some(job) = stack.pop() {
        let dir = match top.open_path(&job.disk) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                soft(&job.disk, format!("{e}: nothing below it was restored"));
                continue;
            }
        };
        if !job.disk.is_empty() {
            // Writable until the end, when the stored mode is applied.
            let _ = dir.set_own_meta(0o700, None, None);
        }
        let nodes = match read_dir(repo, &job.tree) {
            Ok(n) => n,
            Err(e) => {
                soft(&job.disk, e.to_string());
                continue;
            }
        };
        let disk_names = names_apart(&nodes, folding);
        let mut holds_files = false;
        for (node, disk_name) in nodes.into_iter().zip(disk_names) {
            let path = join(&job.snap, &node.name);
            let (take, descend) = included(&include, &path);
            if !take {
                continue;
            }
            let disk_path = join(&job.disk, &disk_name);
            if disk_name != node.name {
                report.renamed.push((path.clone(), disk_path.clone()));
            }
            let at_shown = shown(&disk_path);
            match &node.kind {
                NodeKind::Dir { subtree } => {
                    if let Err(e) = make_dir(&dir, &disk_name, opts.overwrite) {
                        soft(&disk_path, format!("{e}: nothing below it was restored"));
                        continue;
                    }
                    if descend {
                        stack.push(DirJob {
                            snap: path,
                            disk: disk_path.clone(),
                            tree: *subtree,
                        });
                    }
                    dirs.push((disk_path, node));
                }
                NodeKind::Symlink { .. } => {
                    let at = Target {
                        dir: &dir,
                        name: &disk_name,
                        shown: &at_shown,
                    };
                    match write_symlink(&node, at, opts.overwrite, true) {
                        Ok(()) => report.symlinks += 1,
                        Err(e) => soft(&disk_path, e.to_string()),
                    }
                }
                NodeKind::File { content, .. } => match file_blobs(repo, content) {
                    Ok(blobs) => {
                        holds_files = true;
                        batch_blobs += blobs.len();
                        batch.push(FileJob {
                            node,
                            dir: dir.clone(),
                            name: disk_name,
                            shown: at_shown,
                            blobs,
                        });
                        if batch_blobs >= BATCH_BLOBS_MAX || batch.len() >= BATCH_FILES_MAX {
                            write_batch(repo, std::mem::take(&mut batch), opts, &done);
                            (batch_blobs, batch_dirs) = (0, 0);
                        }
                    }
                    Err(e) => soft(&disk_path, e.to_string()),
                },
            }
        }
        batch_dirs += holds_files as usize;
        if batch_dirs >= BATCH_DIRS_MAX {
            write_batch(repo, std::mem::take(&mut batch), opts, &done);
            (batch_blobs, batch_dirs) = (0, 0);
        }
    }
    write_batch(repo, batch, opts, &done);
    // Deepest first, so setting a parent's mtime comes after its children changed it.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
    for (rel, node) in &dirs {
        let r = top
            .open_path(rel)
            .map_err(std::io::Error::from)
            .and_then(|d| {
                d.set_own_meta(node.mode, Some(node.mtime_ns), Some((node.uid, node.gid)))
            });
        if let Err(e) = r {
            soft(rel, e.to_string());
        }
    }
    report.dirs = dirs.len() as u64;
    report.files = files.into_inner();
    report.bytes = bytes.into_inner();
    report.errors = errors.into_inner().expect("lock");
    Ok(report)
}

/// The names a directory's nodes are written under: their own, except for names that collide
/// on a file system folding `f` with an earlier one — those are kept apart.
fn names_apart(nodes: &[Node], f: Folding) -> Vec<Vec<u8>> {
    let names: Vec<&[u8]> = nodes.iter().map(|n| n.name.as_slice()).collect();
    let clash = fold::colliding(&names, f);
    let mut out: Vec<Vec<u8>> = names.iter().map(|n| n.to_vec()).collect();
    if clash.is_empty() {
        return out;
    }
    let mut taken: HashSet<Vec<u8>> = names.iter().map(|n| fold::key(n, f)).collect();
    for i in clash {
        out[i] = fold::apart_name(names[i], &mut taken, f);
    }
    out
}

/// Writes one file's content to `out` (for `dump`), verifying every chunk.
pub fn dump(repo: &Repository, node: &Node, out: &mut dyn std::io::Write) -> Result<u64> {
    let NodeKind::File { content, .. } = &node.kind else {
        return Err(Error::invalid(
            "not a file: dump prints the content of one file",
        ));
    };
    let mut n = 0;
    for id in file_blobs(repo, content)? {
        let data = repo.read_blob(BlobKind::Data, &id)?;
        out.write_all(&data)
            .map_err(|e| Error::io("standard output", e))?;
        n += data.len() as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::included;

    #[test]
    fn include_selects_paths_below_and_descends_through_ancestors() {
        let inc = vec![b"a/b".to_vec()];
        assert_eq!(included(&inc, b"a"), (true, true));
        assert_eq!(included(&inc, b"a/b"), (true, true));
        assert_eq!(included(&inc, b"a/b/c"), (true, true));
        assert_eq!(included(&inc, b"a/bc"), (false, false));
        assert_eq!(included(&inc, b"x"), (false, false));
    }
}
