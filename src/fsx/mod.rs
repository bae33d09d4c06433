//! Writes below a root directory through directory handles: the only way restore and sync apply
//! touch a folder.
//!
//! Owns: opening directories and files below a root without following symlinks, temp files
//! renamed into place inside a held directory handle, setting metadata through handles, and
//! probing what a file system folds (case, Unicode normalization; see [`fold`]). Must not touch:
//! the repository, trees, printing.
//!
//! Invariants (each has a test in `tests/path_safety.rs` or below):
//! - Only the root is resolved from a path string the kernel may follow symlinks in (the user
//!   named it). Everything below it is reached from a held directory handle: one component at a
//!   time with `O_NOFOLLOW | O_DIRECTORY`, or in one `openat2` call with `RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS` on Linux. A symlink where a directory is expected is a
//!   [`WalkError::Symlink`], never followed; the caller decides (restore replaces it, sync apply
//!   treats it as a local change).
//! - Names are single components: never empty, `.`, `..`, or holding `/` or NUL.
//! - A file is written to `.<name>.prism-tmp-<pid>-<hex>` in the directory that will hold it
//!   (the writer's process id, so a later step knows a leftover of a dead writer), created
//!   with `O_CREAT | O_EXCL | O_NOFOLLOW` (mode 0600), and renamed over the final name inside the
//!   same held handle: a partial file never appears under a real name, and the rename replaces
//!   whatever entry was there (a symlink is replaced, not followed). Temp names match the
//!   `*.prism-tmp-*` pattern every scan excludes.
//! - Metadata is set through handles: `fchmod`/`futimens`/`fchown` on a descriptor opened with
//!   `O_NOFOLLOW` (and checked to be the expected type), or `*at` calls with
//!   `AT_SYMLINK_NOFOLLOW`.
//!
//! The writer API for anything that produces file bytes (restore, sync apply, a parallel fetch
//! pipeline): reach the directory with [`Dir::open_root`] + [`Dir::open_path`], start the file
//! with [`Dir::new_file`], write ranges in any order through [`NewFile::file`]
//! (`write_all_at`), then [`NewFile::set_meta`] / [`NewFile::chown`], [`NewFile::sync`] and
//! [`NewFile::commit`]; dropping a [`NewFile`] before the commit removes the temp file.
//!
//! No `unsafe` here: the system calls come from `rustix`'s safe wrappers, the POSIX `*at` calls
//! that every Unix has. The two Linux-only shortcuts (`openat2`, `renameat2`) are asked of
//! [`crate::sys`], which says when they are not available; the portable walk and
//! check-then-rename are then used (and tested, in the `portable-sys` build).

pub mod fold;
pub(crate) mod private;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::crypto::random_bytes;
use crate::id::hex_encode;

/// What stopped a walk below the root, and where (the path relative to the root).
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{} is a symlink where a directory is expected: not followed", show(.0))]
    Symlink(Vec<u8>),
    #[error("{} is not a directory", show(.0))]
    NotADirectory(Vec<u8>),
    #[error("{} does not exist", show(.0))]
    Missing(Vec<u8>),
    #[error("{}: {}", show(.0), .1)]
    Io(Vec<u8>, io::Error),
}

fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        "the folder".into()
    } else {
        String::from_utf8_lossy(rel).into_owned()
    }
}

impl WalkError {
    /// Was something other than a directory (a symlink, a file) found in the way?
    pub fn is_in_the_way(&self) -> bool {
        matches!(self, WalkError::Symlink(_) | WalkError::NotADirectory(_))
    }
}

impl From<WalkError> for io::Error {
    fn from(e: WalkError) -> io::Error {
        match e {
            WalkError::Io(_, e) => e,
            WalkError::Missing(_) => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            other => io::Error::other(other.to_string()),
        }
    }
}

/// What an entry is, as `lstat` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i64,
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Entry {
    // The `stat` field types differ between platforms: the casts are no-ops only on some.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &rustix::fs::Stat) -> Entry {
        let kind = match FileType::from_raw_mode(st.st_mode as _) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        Entry {
            kind,
            size: st.st_size as u64,
            mode: st.st_mode as u32 & 0o7777,
            mtime_ns: (st.st_mtime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }
}

/// Checks that `name` is one path component we may create or open.
pub fn check_name(name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{:?} is not a usable file name",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    Ok(())
}

fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

fn ts(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as _,
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

fn times(mtime_ns: i64) -> Timestamps {
    Timestamps {
        last_access: ts(mtime_ns),
        last_modification: ts(mtime_ns),
    }
}

/// True when this process may give files away (restores as root apply owners).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC);

/// A held directory: the handle everything below it is reached from.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Opens the root directory. Its own path may hold symlinks (the user named it); nothing
    /// below it will be followed.
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir { fd })
    }

    /// Opens the directory `name` in this one; a symlink there is an error, never followed.
    pub fn open_dir(&self, name: &[u8]) -> io::Result<Dir> {
        check_name(name)?;
        let fd = rustix::fs::openat(&self.fd, os(name), DIR_FLAGS, Mode::empty())?;
        Ok(Dir { fd })
    }

    /// Opens the directory at `rel` (components separated by `/`; empty = this one) below this
    /// one without following any symlink on the way.
    pub fn open_path(&self, rel: &[u8]) -> Result<Dir, WalkError> {
        let parts: Vec<&[u8]> = rel
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        for p in &parts {
            check_name(p).map_err(|e| WalkError::Io(rel.to_vec(), e))?;
        }
        if parts.is_empty() {
            return self.try_clone().map_err(|e| WalkError::Io(Vec::new(), e));
        }
        if parts.len() > 1 {
            let joined = parts.join(&b'/');
            // Anything but success: walk, which names the component in the way (or succeeds
            // if the folder changed meanwhile).
            if let Some(Ok(fd)) = crate::sys::open_dir_beneath(&self.fd, &joined, DIR_FLAGS) {
                return Ok(Dir { fd });
            }
        }
        let mut cur: Option<Dir> = None;
        let mut done: Vec<u8> = Vec::new();
        for p in parts {
            if !done.is_empty() {
                done.push(b'/');
            }
            done.extend_from_slice(p);
            let parent = cur.as_ref().unwrap_or(self);
            match parent.open_dir(p) {
                Ok(d) => cur = Some(d),
                Err(e) => return Err(parent.classify(p, done, e)),
            }
        }
        Ok(cur.expect("at least one component"))
    }

    /// Explains why opening `name` as a directory failed.
    fn classify(&self, name: &[u8], rel: Vec<u8>, e: io::Error) -> WalkError {
        match self.entry(name) {
            Ok(Some(en)) if en.kind == EntryKind::Symlink => WalkError::Symlink(rel),
            Ok(Some(en)) if en.kind != EntryKind::Dir => WalkError::NotADirectory(rel),
            Ok(None) => WalkError::Missing(rel),
            _ => WalkError::Io(rel, e),
        }
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
        })
    }

    /// `lstat` of `name`; `None` if nothing is there.
    pub fn entry(&self, name: &[u8]) -> io::Result<Option<Entry>> {
        check_name(name)?;
        match rustix::fs::statat(&self.fd, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Entry::of(&st))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// This directory's own `fstat`.
    pub fn own_entry(&self) -> io::Result<Entry> {
        Ok(Entry::of(&rustix::fs::fstat(&self.fd)?))
    }

    pub fn read_link(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        check_name(name)?;
        Ok(rustix::fs::readlinkat(&self.fd, os(name), Vec::new())?.into_bytes())
    }

    /// The names in this directory (without `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(&self.fd)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(n.to_vec());
            }
        }
        Ok(out)
    }

    /// What changes whenever an entry is added to or removed from this directory: its
    /// (device, inode, mtime, ctime) from `fstat`, times in nanoseconds.
    pub fn change_stamp(&self) -> io::Result<(u64, u64, i64, i64)> {
        let st = rustix::fs::fstat(&self.fd)?;
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        #[allow(clippy::unnecessary_cast)]
        Ok((
            st.st_dev as u64,
            st.st_ino as u64,
            ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        ))
    }

    /// The names of the regular files in this directory, from the directory entries' types
    /// (an `lstat` only where the file system does not give the type).
    pub fn file_names(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(&self.fd)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            let file = match e.file_type() {
                rustix::fs::FileType::RegularFile => true,
                rustix::fs::FileType::Unknown => {
                    self.entry(n)?.is_some_and(|en| en.kind == EntryKind::File)
                }
                _ => false,
            };
            if file {
                out.push(n.to_vec());
            }
        }
        Ok(out)
    }

    /// Creates the directory `name` (mode `mode`, less the umask). `AlreadyExists` if any
    /// entry has that name.
    pub fn mkdir(&self, name: &[u8], mode: u32) -> io::Result<()> {
        check_name(name)?;
        rustix::fs::mkdirat(&self.fd, os(name), Mode::from_raw_mode(mode as _))?;
        Ok(())
    }

    /// Removes the file or symlink `name` (never a directory).
    pub fn remove_file(&self, name: &[u8]) -> io::Result<()> {
        check_name(name)?;
        rustix::fs::unlinkat(&self.fd, os(name), AtFlags::empty())?;
        Ok(())
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &[u8]) -> io::Result<()> {
        check_name(name)?;
        rustix::fs::unlinkat(&self.fd, os(name), AtFlags::REMOVEDIR)?;
        Ok(())
    }

    /// Renames `from` in this directory to `to` in `dest`, replacing what is there (a symlink
    /// at `to` is replaced, never followed).
    pub fn rename(&self, from: &[u8], dest: &Dir, to: &[u8]) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        rustix::fs::renameat(&self.fd, os(from), &dest.fd, os(to))?;
        Ok(())
    }

    /// Like [`Dir::rename`], but fails with `AlreadyExists` instead of replacing anything (where
    /// the kernel offers it; elsewhere a check right before).
    pub fn rename_noreplace(&self, from: &[u8], dest: &Dir, to: &[u8]) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        if let Some(r) = crate::sys::rename_noreplace(&self.fd, from, &dest.fd, to) {
            return r;
        }
        if dest.entry(to)?.is_some() {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        self.rename(from, dest, to)
    }

    /// Links the entry `from` of this directory as `to` in `dest` (never following `from` if it
    /// is a symlink); `AlreadyExists` if `to` exists: an atomic create-if-absent.
    pub fn link(&self, from: &[u8], dest: &Dir, to: &[u8]) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        rustix::fs::linkat(&self.fd, os(from), &dest.fd, os(to), AtFlags::empty())?;
        Ok(())
    }

    /// Opens the regular file at `rel` (components separated by `/`) below this directory
    /// without following any symlink on the way or at the end.
    pub fn open_file_path(&self, rel: &[u8]) -> io::Result<File> {
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        if parent.is_empty() {
            return self.open_file(name);
        }
        self.open_path(parent)?.open_file(name)
    }

    /// Makes the symlink `name` → `target`, replacing a file or symlink there: created under a
    /// temp name, then renamed over (the path is never missing).
    pub fn symlink_replace(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let tmp = temp_name(name);
        rustix::fs::symlinkat(os(target), &self.fd, os(&tmp))?;
        self.rename(&tmp, self, name).inspect_err(|_| {
            let _ = self.remove_file(&tmp);
        })
    }

    /// Makes the symlink `name` → `target`; `AlreadyExists` if anything has that name.
    pub fn symlink(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        check_name(name)?;
        rustix::fs::symlinkat(os(target), &self.fd, os(name))?;
        Ok(())
    }

    /// Sets a symlink's (or any entry's) times without following it.
    pub fn set_times_nofollow(&self, name: &[u8], mtime_ns: i64) -> io::Result<()> {
        check_name(name)?;
        rustix::fs::utimensat(
            &self.fd,
            os(name),
            &times(mtime_ns),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Sets an entry's owner without following it (only as root; elsewhere a no-op).
    pub fn chown_nofollow(&self, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
        check_name(name)?;
        if !is_root() {
            return Ok(());
        }
        rustix::fs::chownat(
            &self.fd,
            os(name),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Opens the regular file `name` for reading without following a symlink (and without
    /// blocking on a FIFO someone put there); anything but a regular file is refused.
    pub fn open_file(&self, name: &[u8]) -> io::Result<File> {
        check_name(name)?;
        let fd = rustix::fs::openat(
            &self.fd,
            os(name),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode as _) != FileType::RegularFile {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(File::from(fd))
    }

    /// Sets mode and times of the regular file `name` through a handle (never through a
    /// symlink).
    pub fn set_file_meta(&self, name: &[u8], mode: u32, mtime_ns: i64) -> io::Result<()> {
        let f = self.open_file(name)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode as _))?;
        rustix::fs::futimens(&f, &times(mtime_ns))?;
        Ok(())
    }

    /// Sets this directory's own mode (and times and owner, when given).
    pub fn set_own_meta(
        &self,
        mode: u32,
        mtime_ns: Option<i64>,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        if let Some((uid, gid)) = owner
            && is_root()
        {
            rustix::fs::fchown(
                &self.fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )?;
        }
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode as _))?;
        if let Some(t) = mtime_ns {
            rustix::fs::futimens(&self.fd, &times(t))?;
        }
        Ok(())
    }

    /// fsync of the directory (its entries are durable afterwards). File systems that refuse
    /// fsync on directories (CIFS, some FUSE) are accepted as they are.
    pub fn sync(&self) -> io::Result<()> {
        match rustix::fs::fsync(&self.fd) {
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOTSUP) => Ok(()),
            r => Ok(r?),
        }
    }

    /// Starts a new file that will be named `name` in this directory: a temp file beside it.
    pub fn new_file(&self, name: &[u8]) -> io::Result<NewFile<'_>> {
        check_name(name)?;
        let tmp = temp_name(name);
        let fd = rustix::fs::openat(
            &self.fd,
            os(&tmp),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(NewFile {
            dir: self,
            tmp,
            file: Some(File::from(fd)),
        })
    }
}

/// `.<name>.prism-tmp-<pid>-<12 hex>`: hidden, unique, excluded by every scan, and naming the
/// process writing it (`endpoint::leftovers` removes those of dead writers).
pub fn temp_name(name: &[u8]) -> Vec<u8> {
    let mut t = b".".to_vec();
    // Stay below NAME_MAX (255) whatever the name's length.
    t.extend_from_slice(&name[..name.len().min(200)]);
    t.extend_from_slice(
        format!(
            ".prism-tmp-{}-{}",
            std::process::id(),
            hex_encode(&random_bytes::<6>())
        )
        .as_bytes(),
    );
    t
}

/// A file being written under a temp name inside a held directory; [`NewFile::commit`] renames
/// it into place, dropping it without a commit removes it.
pub struct NewFile<'d> {
    dir: &'d Dir,
    tmp: Vec<u8>,
    file: Option<File>,
}

impl NewFile<'_> {
    /// The open file, for writing (`write_all_at`, `set_len`, `set_permissions`, …).
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("open until committed")
    }

    /// Sets the owner (only as root; elsewhere a no-op).
    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        if is_root() {
            std::os::unix::fs::fchown(self.file(), Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// The temp name it is written under.
    pub fn temp_name(&self) -> &[u8] {
        &self.tmp
    }

    /// Sets the mode only.
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        rustix::fs::fchmod(self.file(), Mode::from_raw_mode(mode as _))?;
        Ok(())
    }

    /// Sets mode and times.
    pub fn set_meta(&self, mode: u32, mtime_ns: i64) -> io::Result<()> {
        rustix::fs::fchmod(self.file(), Mode::from_raw_mode(mode as _))?;
        rustix::fs::futimens(self.file(), &times(mtime_ns))?;
        Ok(())
    }

    /// fsync of the file's data and metadata.
    pub fn sync(&self) -> io::Result<()> {
        self.file().sync_all()
    }

    /// Leaves the complete file under its temp name and returns that name: the caller renames
    /// it into place later ([`Dir::rename`] within the same directory) or removes it. Lets a
    /// file be prepared on one thread and put in place on another, in a chosen order.
    pub fn keep_temp(mut self) -> Vec<u8> {
        self.file = None;
        std::mem::take(&mut self.tmp)
    }

    /// Renames the file to `name` in its directory, replacing the entry there (a file or a
    /// symlink; a directory there makes it fail).
    pub fn commit(mut self, name: &[u8]) -> io::Result<()> {
        self.file = None;
        self.dir.rename(&self.tmp, self.dir, name)?;
        self.tmp.clear();
        Ok(())
    }
}

impl Drop for NewFile<'_> {
    fn drop(&mut self) {
        self.file = None;
        if !self.tmp.is_empty() {
            let _ = self.dir.remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlinked_directory_is_never_walked_through() {
        let t = tempfile::tempdir().unwrap();
        let (root, outside) = (t.path().join("root"), t.path().join("outside"));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        symlink(&outside, root.join("a/link")).unwrap();
        std::fs::write(root.join("a/file"), b"x").unwrap();
        let r = Dir::open_root(&root).unwrap();
        assert!(r.open_path(b"a/b").is_ok());
        assert!(matches!(r.open_path(b"a/link"), Err(WalkError::Symlink(p)) if p == b"a/link"));
        assert!(matches!(r.open_path(b"a/link/x"), Err(WalkError::Symlink(p)) if p == b"a/link"));
        assert!(matches!(
            r.open_path(b"a/file/x"),
            Err(WalkError::NotADirectory(_))
        ));
        assert!(matches!(r.open_path(b"a/nope/x"), Err(WalkError::Missing(p)) if p == b"a/nope"));
        assert!(r.open_path(b"a/../a").is_err());
        assert!(r.open_dir(b"a/b").is_err(), "one component only");
    }

    #[test]
    fn a_new_file_replaces_a_symlink_and_never_writes_through_it() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        symlink(&victim, root.join("f")).unwrap();
        let d = Dir::open_root(&root).unwrap();
        let nf = d.new_file(b"f").unwrap();
        use std::os::unix::fs::FileExt;
        nf.file().write_all_at(b"new", 0).unwrap();
        nf.set_meta(0o640, 1_000_000_000).unwrap();
        nf.commit(b"f").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let md = std::fs::symlink_metadata(root.join("f")).unwrap();
        assert!(md.is_file());
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"new");
        // A dropped new file leaves nothing behind.
        drop(d.new_file(b"g").unwrap());
        assert_eq!(d.names().unwrap(), vec![b"f".to_vec()]);
        // Metadata through a handle refuses the symlink.
        symlink(&victim, root.join("l")).unwrap();
        assert!(d.set_file_meta(b"l", 0o777, 0).is_err());
        use std::os::unix::fs::PermissionsExt;
        assert_ne!(
            std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o777
        );
    }

    #[test]
    fn rename_noreplace_refuses_an_existing_target() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"a").unwrap();
        std::fs::write(t.path().join("b"), b"b").unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        let e = d.rename_noreplace(b"a", &d, b"b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        d.rename_noreplace(b"a", &d, b"c").unwrap();
        assert_eq!(std::fs::read(t.path().join("c")).unwrap(), b"a");
    }
}
