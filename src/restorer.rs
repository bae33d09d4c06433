//! Snapshot → files.
//!
//! Owns: writing trees out to a local directory. Must not touch: backends directly (it reads
//! through the repository), printing.
//!
//! Every file is written to a temp file beside its final name, each chunk verified (keyed hash)
//! as it is read, and renamed into place only when complete: a damaged or missing chunk fails
//! that file loudly and never leaves wrong bytes under a real name. All-zero chunks become holes
//! (sparse files stay sparse). Directories are created first and get their mode and mtime last,
//! deepest first. Files are restored by several workers in parallel, in batches whose blobs are
//! fetched by one read plan (`repository::reader`: grouped by pack, coalesced, in parallel).

use std::fs::{self, FileTimes, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::archiver::SoftError;
use crate::crypto::random_bytes;
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::id::{BlobId, hex_encode};
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
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            include: vec![],
            overwrite: false,
            workers: 4,
            progress: Arc::new(RestoreProgress::default()),
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
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// Sets mtime (and atime to the same) without following a symlink.
fn set_mtime_nofollow(path: &Path, ns: i64) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let t = [timespec(ns), timespec(ns)];
    // SAFETY: valid NUL-terminated path and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn chown_nofollow(path: &Path, uid: u32, gid: u32) {
    if is_root() {
        let _ = std::os::unix::fs::lchown(path, Some(uid), Some(gid));
    }
}

fn temp_path(dest: &Path) -> PathBuf {
    let mut name = b".".to_vec();
    name.extend_from_slice(dest.file_name().map(|n| n.as_bytes()).unwrap_or(b"file"));
    name.truncate(200);
    name.extend_from_slice(format!(".prism-tmp-{}", hex_encode(&random_bytes::<6>())).as_bytes());
    dest.with_file_name(std::ffi::OsStr::from_bytes(&name))
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

/// Writes one file node to `dest` via a temp file and rename. `blobs` are the file's data blob
/// ids, read one by one. On any error the temp file is removed and `dest` is left untouched.
/// Returns the bytes written.
pub fn write_file(
    repo: &Repository,
    node: &Node,
    blobs: &[BlobId],
    dest: &Path,
    opts: WriteOptions,
    progress: Option<&AtomicU64>,
) -> Result<u64> {
    let mut content = blobs.iter().map(|id| repo.read_blob(BlobKind::Data, id));
    write_file_from(node, &mut content, dest, opts, progress)
}

/// The file's content, blob by blob, in order (from `Prefetch::file`, or read one by one).
pub type Content<'a> = &'a mut dyn Iterator<Item = Result<Vec<u8>>>;

/// [`write_file`] with the content from `blobs` (e.g. `Prefetch::file`).
pub fn write_file_from(
    node: &Node,
    blobs: Content<'_>,
    dest: &Path,
    opts: WriteOptions,
    progress: Option<&AtomicU64>,
) -> Result<u64> {
    let (tmp, n) = prepare_file(node, blobs, dest, opts, progress)?;
    fs::rename(&tmp, dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(dest, e)
    })?;
    Ok(n)
}

/// The first half of [`write_file_from`]: the complete file (content, mode, times, owner if
/// asked, fsynced if durable) in a temp file beside `dest`, whose path is returned with the bytes
/// written. The caller renames it over `dest` — or removes it. On error nothing is left behind.
pub fn prepare_file(
    node: &Node,
    blobs: Content<'_>,
    dest: &Path,
    opts: WriteOptions,
    progress: Option<&AtomicU64>,
) -> Result<(PathBuf, u64)> {
    let NodeKind::File { size, .. } = node.kind else {
        return Err(Error::invalid(
            "write_file called for a node that is not a file",
        ));
    };
    let tmp = temp_path(dest);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    let r = (|| -> Result<u64> {
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
        f.set_permissions(fs::Permissions::from_mode(node.mode))
            .map_err(|e| Error::io(dest, e))?;
        f.set_times(
            FileTimes::new()
                .set_modified(system_time(node.mtime_ns))
                .set_accessed(system_time(node.mtime_ns)),
        )
        .map_err(|e| Error::io(dest, e))?;
        if opts.durable {
            f.sync_all().map_err(|e| Error::io(dest, e))?;
        }
        Ok(off)
    })();
    drop(f);
    match r {
        Ok(n) => {
            if opts.owner {
                chown_nofollow(&tmp, node.uid, node.gid);
            }
            Ok((tmp, n))
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Creates a symlink node at `dest` (replacing nothing: `dest` must not exist).
pub fn write_symlink(node: &Node, dest: &Path) -> Result<()> {
    let NodeKind::Symlink { target } = &node.kind else {
        return Err(Error::invalid(
            "write_symlink called for a node that is not a symlink",
        ));
    };
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), dest)
        .map_err(|e| Error::io(dest, e))?;
    chown_nofollow(dest, node.uid, node.gid);
    let _ = set_mtime_nofollow(dest, node.mtime_ns);
    Ok(())
}

fn dir_is_empty(p: &Path) -> Result<bool> {
    match fs::read_dir(p) {
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
    dest: PathBuf,
    blobs: Vec<BlobId>,
}

/// A restore writes files in batches of at most this many blob references (~100 bytes each of
/// plan): the reads of a batch are planned together (grouped by pack, coalesced, fetched in
/// parallel), and memory stays bounded however big the snapshot.
const BATCH_BLOBS_MAX: usize = 262_144;
/// ... and at most this many files.
const BATCH_FILES_MAX: usize = 65_536;

/// Writes a batch of files, their blobs fetched by a [`with_prefetch`] plan, on `workers`
/// threads taking files in plan order.
fn write_batch(
    repo: &Repository,
    jobs: Vec<FileJob>,
    opts: &RestoreOptions,
    done: &(dyn Fn(&FileJob, Result<u64>) + Sync),
) {
    let mut jobs = jobs;
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
                        let r = write_file_from(
                            &job.node,
                            &mut pf.file(i),
                            &job.dest,
                            WriteOptions {
                                durable: false,
                                owner: true,
                            },
                            Some(&opts.progress.bytes),
                        );
                        done(job, r);
                    }
                });
            }
        });
    });
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
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let mut report = RestoreReport::default();
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let errors = std::sync::Mutex::new(Vec::new());
    let soft = |path: &Path, e: Error| {
        opts.progress.errors.fetch_add(1, Ordering::Relaxed);
        let rel = path
            .strip_prefix(target)
            .map(|r| r.as_os_str().as_bytes().to_vec())
            .unwrap_or_default();
        errors.lock().expect("lock").push(SoftError {
            path: path.to_path_buf(),
            rel,
            message: e.to_string(),
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
        Err(e) => soft(&job.dest, e),
    };
    let mut batch: Vec<FileJob> = Vec::new();
    let mut batch_blobs = 0usize;
    // Depth-first walk: directories and symlinks here, files in batches.
    let mut stack = vec![(Vec::<u8>::new(), *root, target.to_path_buf())];
    while let Some((prefix, tree, dir)) = stack.pop() {
        let nodes = match read_dir(repo, &tree) {
            Ok(n) => n,
            Err(e) => {
                soft(&dir, e);
                continue;
            }
        };
        for node in nodes {
            let path = join(&prefix, &node.name);
            let (take, descend) = included(&include, &path);
            if !take {
                continue;
            }
            let dest = dir.join(std::ffi::OsStr::from_bytes(&node.name));
            match &node.kind {
                NodeKind::Dir { subtree } => {
                    match fs::create_dir(&dest) {
                        Ok(()) => {}
                        Err(e)
                            if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {}
                        Err(e) => {
                            soft(&dest, Error::io(&dest, e));
                            continue;
                        }
                    }
                    // Writable until the end, when the stored mode is applied.
                    let _ = fs::set_permissions(&dest, fs::Permissions::from_mode(0o700));
                    if descend {
                        stack.push((path, *subtree, dest.clone()));
                    }
                    dirs.push((dest, node));
                }
                NodeKind::Symlink { .. } => {
                    if opts.overwrite {
                        let _ = fs::remove_file(&dest);
                    }
                    match write_symlink(&node, &dest) {
                        Ok(()) => report.symlinks += 1,
                        Err(e) => soft(&dest, e),
                    }
                }
                NodeKind::File { content, .. } => match file_blobs(repo, content) {
                    Ok(blobs) => {
                        batch_blobs += blobs.len();
                        batch.push(FileJob { node, dest, blobs });
                        if batch_blobs >= BATCH_BLOBS_MAX || batch.len() >= BATCH_FILES_MAX {
                            write_batch(repo, std::mem::take(&mut batch), opts, &done);
                            batch_blobs = 0;
                        }
                    }
                    Err(e) => soft(&dest, e),
                },
            }
        }
    }
    write_batch(repo, batch, opts, &done);
    // Deepest first, so setting a parent's mtime comes after its children changed it.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (dest, node) in &dirs {
        chown_nofollow(dest, node.uid, node.gid);
        if let Err(e) = fs::set_permissions(dest, fs::Permissions::from_mode(node.mode)) {
            soft(dest, Error::io(dest, e));
        }
        if let Err(e) = set_mtime_nofollow(dest, node.mtime_ns) {
            soft(dest, Error::io(dest, e));
        }
    }
    report.dirs = dirs.len() as u64;
    report.files = files.into_inner();
    report.bytes = bytes.into_inner();
    report.errors = errors.into_inner().expect("lock");
    Ok(report)
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
