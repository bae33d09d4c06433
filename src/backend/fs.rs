//! A repository in a directory: a local disk, or an EFS/NFS mount.
//!
//! Every object is written once: a temp file in the target directory (same directory, so the
//! final step never crosses directories — 9p and some NFS setups break cross-directory renames),
//! fsync, `link(2)` to the final name (atomic create-if-absent, also on NFSv4), unlink of the temp
//! name, fsync of the directory. Where hard links are not supported, `rename` after an existence
//! check is used (create-only is then not atomic; see `format-spec/media.md`).
//!
//! Nothing inside the repository is followed: every directory below the root and every object is
//! reached through [`crate::fsx`] handles without following a symlink, and only regular files
//! are objects. A symlink planted in the repository (`keys/leak -> /etc/hostname`, `data/ab ->
//! /elsewhere`) is neither read nor written through.
//!
//! Permissions are restic's: directories 0700 and objects 0400 (read-only: written once), so no
//! other local or EFS user can read a key file. A repository made with group access (`repo init
//! --group-access`, for a shared EFS) uses 0750 and 0440; every writer tells which from the mode
//! of the config file, as restic does.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{
    BResult, Backend, BackendError, ErrorKind, Kind, ObjectInfo, object_name, valid_object_name,
};
use crate::fsx::{Dir, EntryKind, WalkError};
use crate::id::hex_encode;

/// Modes of a private repository (restic's): only the owner reads anything.
pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o400;
/// Modes of a repository made with group access (a shared EFS).
pub const GROUP_DIR_MODE: u32 = 0o750;
pub const GROUP_FILE_MODE: u32 = 0o440;

pub struct FsBackend {
    root: PathBuf,
    /// Recently read packs, kept open: restoring many small files reads many blobs from one
    /// pack, and an open per blob costs a path lookup each (a round trip on NFS/EFS).
    handles: Mutex<VecDeque<(String, Arc<File>)>>,
    /// Group access, once known (set at init, or read from the config file's mode).
    group: Mutex<Option<bool>>,
    /// [`FsBackend::names_tag`]'s last answer per kind, with the directory stamp it was read at.
    names_tags: Mutex<Vec<(Kind, String, String)>>,
    /// Directories whose names [`FsBackend::names_tag`] read (not answered from `names_tags`).
    names_read: AtomicU64,
}

/// Open pack handles kept by [`FsBackend`].
const OPEN_PACKS_MAX: usize = 32;

fn io_err(kind: Kind, name: &str, e: io::Error) -> BackendError {
    let k = match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            ErrorKind::Transient
        }
        _ => ErrorKind::Other,
    };
    let message = match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
            "a symlink or something else is where the object belongs: not followed".into()
        }
        _ => e.to_string(),
    };
    BackendError::new(k, object_name(kind, name), message)
}

fn walk_err(kind: Kind, name: &str, e: WalkError) -> BackendError {
    match e {
        WalkError::Missing(_) => BackendError::not_found(object_name(kind, name)),
        WalkError::Io(_, e) => io_err(kind, name, e),
        other => BackendError::new(ErrorKind::Other, object_name(kind, name), other.to_string()),
    }
}

/// The directory (relative to the root) an object lives in, and its name there.
fn split(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", rel),
    }
}

impl FsBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsBackend {
            root: root.into(),
            handles: Mutex::new(VecDeque::new()),
            group: Mutex::new(None),
            names_tags: Mutex::new(Vec::new()),
            names_read: AtomicU64::new(0),
        }
    }

    /// The listing tag of `kind`'s names (`listing_tag` of what `list` returns), as a server
    /// compares it with a client's `known` tag many times a minute. The directory's names are
    /// read (no `stat` per object) only when it changed since the last answer or changed within
    /// [`STAMP_SETTLED`]; otherwise the answer is remembered by the directory's change stamp: one
    /// `fstat` for a directory of any size. Packs and the config are listed each time.
    pub fn names_tag(&self, kind: Kind) -> BResult<String> {
        if matches!(kind, Kind::Config | Kind::Pack) {
            let names: Vec<String> = self.list(kind)?.into_iter().map(|o| o.name).collect();
            return Ok(super::listing_tag(&names));
        }
        let root = match self.root_dir() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(super::listing_tag(&[])),
            Err(e) => return Err(io_err(kind, "*", e)),
        };
        let dir = match root.open_path(kind.dir().as_bytes()) {
            Ok(d) => d,
            Err(WalkError::Missing(_)) => return Ok(super::listing_tag(&[])),
            Err(e) => return Err(walk_err(kind, "*", e)),
        };
        let stamp = stamp_tag(&dir).map_err(|e| io_err(kind, "*", e))?;
        if let Some(stamp) = &stamp {
            let known = self.names_tags.lock().expect("lock");
            if let Some((_, _, tag)) = known.iter().find(|(k, s, _)| *k == kind && s == stamp) {
                return Ok(tag.clone());
            }
        }
        self.names_read.fetch_add(1, Ordering::Relaxed);
        let names = object_names(&dir, kind)?;
        let tag = super::listing_tag(&names);
        // The stamp was taken before the names were read: a change in between gives the
        // directory a new stamp, so a tag remembered here is never served for other names.
        if let Some(stamp) = stamp {
            let mut known = self.names_tags.lock().expect("lock");
            known.retain(|(k, _, _)| *k != kind);
            known.push((kind, stamp, tag.clone()));
        }
        Ok(tag)
    }

    /// How many times [`FsBackend::names_tag`] read a directory's names.
    pub fn names_read(&self) -> u64 {
        self.names_read.load(Ordering::Relaxed)
    }

    /// Makes a new repository group-accessible (call before `prepare`).
    pub fn set_group_access(&self, on: bool) {
        *self.group.lock().expect("lock") = Some(on);
    }

    /// Does this repository give its group read access? Told at init, else read from the config
    /// file's mode (group-readable config: group modes).
    fn group_access(&self) -> bool {
        let mut g = self.group.lock().expect("lock");
        if let Some(v) = *g {
            return v;
        }
        match fs::symlink_metadata(self.root.join("config")) {
            Ok(m) => {
                let v = m.mode() & 0o040 != 0;
                *g = Some(v);
                v
            }
            Err(_) => false,
        }
    }

    fn modes(&self) -> (u32, u32) {
        if self.group_access() {
            (GROUP_DIR_MODE, GROUP_FILE_MODE)
        } else {
            (DIR_MODE, FILE_MODE)
        }
    }

    fn root_dir(&self) -> io::Result<Dir> {
        Dir::open_root(&self.root)
    }

    fn open_read(&self, kind: Kind, name: &str) -> BResult<Arc<File>> {
        let rel = self.rel(kind, name)?;
        let open = || -> BResult<File> {
            let root = self.root_dir().map_err(|e| io_err(kind, name, e))?;
            root.open_file_path(rel.as_bytes())
                .map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => BackendError::not_found(object_name(kind, name)),
                    _ => io_err(kind, name, e),
                })
        };
        if kind != Kind::Pack {
            return open().map(Arc::new);
        }
        {
            let mut h = self.handles.lock().expect("lock");
            if let Some(i) = h.iter().position(|(n, _)| n == name) {
                let entry = h.remove(i).expect("present");
                let f = entry.1.clone();
                h.push_front(entry);
                return Ok(f);
            }
        }
        let f = Arc::new(open()?);
        let mut h = self.handles.lock().expect("lock");
        h.push_front((name.to_string(), f.clone()));
        h.truncate(OPEN_PACKS_MAX);
        Ok(f)
    }

    fn forget_handle(&self, name: &str) {
        self.handles
            .lock()
            .expect("lock")
            .retain(|(n, _)| n != name);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The object's path relative to the root.
    fn rel(&self, kind: Kind, name: &str) -> BResult<String> {
        if kind != Kind::Config && !valid_object_name(name) {
            return Err(BackendError::new(
                ErrorKind::Other,
                object_name(kind, name),
                "invalid object name",
            ));
        }
        Ok(kind.path(name))
    }

    /// Size of a regular-file object; `None` if absent (or not a regular file).
    pub fn size(&self, kind: Kind, name: &str) -> BResult<Option<u64>> {
        let rel = self.rel(kind, name)?;
        let (d, n) = split(&rel);
        let root = match self.root_dir() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(kind, name, e)),
        };
        let dir = match root.open_path(d.as_bytes()) {
            Ok(dir) => dir,
            Err(WalkError::Missing(_)) => return Ok(None),
            Err(e) => return Err(walk_err(kind, name, e)),
        };
        match dir.entry(n.as_bytes()) {
            Ok(Some(e)) if e.kind == EntryKind::File => Ok(Some(e.size)),
            Ok(_) => Ok(None),
            Err(e) => Err(io_err(kind, name, e)),
        }
    }

    /// Opens an object for streaming (a regular file, never through a symlink).
    pub fn open(&self, kind: Kind, name: &str) -> BResult<File> {
        let rel = self.rel(kind, name)?;
        let root = self.root_dir().map_err(|e| io_err(kind, name, e))?;
        root.open_file_path(rel.as_bytes())
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => BackendError::not_found(object_name(kind, name)),
                _ => io_err(kind, name, e),
            })
    }

    /// Makes `rel` (a repository directory) with the repository's directory mode if missing.
    fn make_dir(root: &Dir, rel: &str, mode: u32) -> io::Result<()> {
        let (d, n) = split(rel);
        let parent = root.open_path(d.as_bytes())?;
        match parent.mkdir(n.as_bytes(), mode) {
            Ok(()) => parent
                .open_dir(n.as_bytes())?
                .set_own_meta(mode, None, None),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn write_temp<'d>(
        dir: &'d Dir,
        data: &[u8],
        mode: u32,
    ) -> io::Result<(Vec<u8>, crate::fsx::NewFile<'d>)> {
        let nf = dir.new_file(b"object")?;
        let mut f = nf.file();
        f.write_all(data)?;
        nf.set_mode(mode)?;
        nf.sync()?;
        let tmp = nf.temp_name().to_vec();
        Ok((tmp, nf))
    }

    fn create_inner(&self, rel: &str, data: &[u8]) -> io::Result<()> {
        let (dir_mode, file_mode) = self.modes();
        let root = self.root_dir()?;
        let (d, n) = split(rel);
        let dir = match root.open_path(d.as_bytes()) {
            Ok(dir) => dir,
            // A data/xx directory lost to a bad copy: remake it (only the exact layout names
            // reach here).
            Err(WalkError::Missing(_)) if !d.is_empty() => {
                let mut done = String::new();
                for part in d.split('/') {
                    if !done.is_empty() {
                        done.push('/');
                    }
                    done.push_str(part);
                    Self::make_dir(&root, &done, dir_mode)?;
                }
                root.open_path(d.as_bytes())?
            }
            Err(e) => return Err(e.into()),
        };
        let (tmp, nf) = Self::write_temp(&dir, data, file_mode)?;
        let linked = match dir.link(&tmp, &dir, n.as_bytes()) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::EMLINK)
                ) =>
            {
                if dir.entry(n.as_bytes())?.is_some() {
                    Err(io::Error::from(io::ErrorKind::AlreadyExists))
                } else {
                    // Renamed into place: the temp name is gone, nothing left to remove.
                    return nf.commit(n.as_bytes()).and_then(|_| dir.sync());
                }
            }
            Err(e) => Err(e),
        };
        drop(nf); // removes the temp name
        linked?;
        dir.sync()
    }
}

/// Leftovers of interrupted writes: ours (`….prism-tmp-…`) and older versions' (`.tmp-…`).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(".tmp-") || (name.starts_with('.') && name.contains(".prism-tmp-"))
}

/// How long a directory must have been left alone before its change stamp stands for its names
/// (timestamps have a granularity: two changes within one tick look alike).
pub const STAMP_SETTLED: Duration = Duration::from_secs(2);

/// The names in an object directory that are object names (temp files and strays left out).
fn object_names(dir: &Dir, kind: Kind) -> BResult<Vec<String>> {
    Ok(dir
        .file_names()
        .map_err(|e| io_err(kind, "*", e))?
        .into_iter()
        .filter_map(|raw| String::from_utf8(raw).ok())
        .filter(|n| valid_object_name(n))
        .collect())
}

/// The tag of a directory that has not changed for [`STAMP_SETTLED`]: lowercase hex of the
/// first 16 bytes of BLAKE3("prism-sync directory stamp" ‖ dev ‖ ino ‖ mtime ‖ ctime), little
/// endian, prefixed `ff` so it never equals a names' tag of the same length; `None` while the
/// directory changed too recently (or its times are in the future).
fn stamp_tag(dir: &Dir) -> io::Result<Option<String>> {
    let (dev, ino, mtime, ctime) = dir.change_stamp()?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let settled = STAMP_SETTLED.as_nanos() as i64;
    if now.saturating_sub(mtime.max(ctime)) < settled {
        return Ok(None);
    }
    let mut h = blake3::Hasher::new();
    h.update(b"prism-sync directory stamp");
    h.update(&dev.to_le_bytes());
    h.update(&ino.to_le_bytes());
    h.update(&mtime.to_le_bytes());
    h.update(&ctime.to_le_bytes());
    Ok(Some(format!(
        "ff{}",
        hex_encode(&h.finalize().as_bytes()[..16])
    )))
}

impl Backend for FsBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn prepare(&self) -> BResult<()> {
        let e = |e: io::Error| BackendError::new(ErrorKind::Other, self.location(), e.to_string());
        // Never scatter repository files among someone's data.
        if let Ok(mut rd) = fs::read_dir(&self.root)
            && rd.next().is_some()
        {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                self.location(),
                "the directory is not empty and holds no repository: choose an empty or new directory",
            ));
        }
        let (dir_mode, _) = self.modes();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(dir_mode)
            .create(&self.root)
            .and_then(|_| fs::set_permissions(&self.root, fs::Permissions::from_mode(dir_mode)))
            .map_err(e)?;
        let root = self.root_dir().map_err(e)?;
        for kind in Kind::ALL {
            if kind != Kind::Config {
                Self::make_dir(&root, kind.dir(), dir_mode).map_err(e)?;
            }
        }
        for i in 0..=255u8 {
            Self::make_dir(&root, &format!("data/{}", hex_encode(&[i])), dir_mode).map_err(e)?;
        }
        root.sync().map_err(e)
    }

    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
        let rel = self.rel(kind, name)?;
        self.create_inner(&rel, data)
            .map_err(|e| io_err(kind, name, e))
    }

    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
        let f = self.open(kind, name)?;
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut &f, &mut v).map_err(|e| io_err(kind, name, e))?;
        Ok(v)
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        let f = self.open_read(kind, name)?;
        let mut buf = vec![0u8; length as usize];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                BackendError::new(
                    ErrorKind::Other,
                    object_name(kind, name),
                    format!("shorter than {} bytes", offset + length),
                )
            } else {
                io_err(kind, name, e)
            }
        })?;
        Ok(buf)
    }

    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        if kind == Kind::Config {
            return match self.size(Kind::Config, "")? {
                Some(size) => Ok(vec![ObjectInfo {
                    name: "config".into(),
                    size,
                }]),
                None => Ok(vec![]),
            };
        }
        let root = match self.root_dir() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io_err(kind, "*", e)),
        };
        let base = match root.open_path(kind.dir().as_bytes()) {
            Ok(d) => d,
            Err(WalkError::Missing(_)) => return Ok(vec![]),
            Err(e) => return Err(walk_err(kind, "*", e)),
        };
        // Packs live one level down, in the 256 `data/xx` directories (exactly those).
        let dirs: Vec<Dir> = if kind == Kind::Pack {
            let mut v = Vec::new();
            for n in base.names().map_err(|e| io_err(kind, "*", e))? {
                let is_shard = n.len() == 2
                    && n.iter()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
                if !is_shard {
                    continue;
                }
                match base.open_dir(&n) {
                    Ok(d) => v.push(d),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // A symlink or file planted where a shard belongs: not a place for packs.
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {}
                    Err(e) => return Err(io_err(kind, "*", e)),
                }
            }
            v
        } else {
            vec![base]
        };
        let mut out = Vec::new();
        for d in dirs {
            for raw in d.names().map_err(|e| io_err(kind, "*", e))? {
                let Ok(name) = String::from_utf8(raw) else {
                    continue;
                };
                if !valid_object_name(&name) {
                    continue;
                }
                match d.entry(name.as_bytes()) {
                    Ok(Some(e)) if e.kind == EntryKind::File => {
                        out.push(ObjectInfo { name, size: e.size })
                    }
                    Ok(_) => {}
                    Err(e) => return Err(io_err(kind, &name, e)),
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// What a snapshot catalog asks before every use. Snapshots: when the directory has not
    /// changed for [`STAMP_SETTLED`], the tag is a digest of the directory's change stamp
    /// (device, inode, mtime, ctime — any entry added or removed changes them), so an unchanged
    /// directory is one `fstat`, not a listing; a directory changed more recently gets the
    /// names' tag (a change within the same timestamp tick could go unseen). Otherwise, and for
    /// the names, the directory entries (their types, no `stat` per object).
    fn list_unless(&self, kind: Kind, known: &str) -> BResult<Option<super::Listing>> {
        if matches!(kind, Kind::Config | Kind::Pack) {
            let names: Vec<String> = self.list(kind)?.into_iter().map(|o| o.name).collect();
            let tag = super::listing_tag(&names);
            return Ok((tag != known).then_some(super::Listing { names, tag }));
        }
        let root = match self.root_dir() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tag = super::listing_tag(&[]);
                return Ok((tag != known).then_some(super::Listing { names: vec![], tag }));
            }
            Err(e) => return Err(io_err(kind, "*", e)),
        };
        let dir = match root.open_path(kind.dir().as_bytes()) {
            Ok(d) => d,
            Err(WalkError::Missing(_)) => {
                let tag = super::listing_tag(&[]);
                return Ok((tag != known).then_some(super::Listing { names: vec![], tag }));
            }
            Err(e) => return Err(walk_err(kind, "*", e)),
        };
        let stamp_tag = if kind == Kind::Snapshot {
            stamp_tag(&dir).map_err(|e| io_err(kind, "*", e))?
        } else {
            None
        };
        if stamp_tag.as_deref() == Some(known) {
            return Ok(None);
        }
        let names = object_names(&dir, kind)?;
        let tag = stamp_tag.unwrap_or_else(|| super::listing_tag(&names));
        Ok((tag != known).then_some(super::Listing { names, tag }))
    }

    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        let rel = self.rel(kind, name)?;
        self.forget_handle(name);
        let (d, n) = split(&rel);
        let root = self.root_dir().map_err(|e| io_err(kind, name, e))?;
        let dir = root
            .open_path(d.as_bytes())
            .map_err(|e| walk_err(kind, name, e))?;
        dir.remove_file(n.as_bytes())
            .map_err(|e| io_err(kind, name, e))?;
        dir.sync().map_err(|e| io_err(kind, name, e))
    }

    fn remove_stale_temp(&self, max_age: Duration) -> BResult<usize> {
        let mut removed = 0;
        let Ok(root) = self.root_dir() else {
            return Ok(0);
        };
        let mut dirs = vec![String::new()];
        for kind in Kind::ALL {
            if kind != Kind::Config {
                dirs.push(kind.dir().to_string());
            }
        }
        for i in 0..=255u8 {
            dirs.push(format!("data/{}", hex_encode(&[i])));
        }
        let now = SystemTime::now();
        for rel in dirs {
            let Ok(d) = root.open_path(rel.as_bytes()) else {
                continue;
            };
            let Ok(names) = d.names() else { continue };
            for n in names {
                if !std::str::from_utf8(&n).is_ok_and(is_temp_name) {
                    continue;
                }
                let old = d.entry(&n).ok().flatten().is_some_and(|e| {
                    e.kind != EntryKind::Dir
                        && now
                            .duration_since(
                                SystemTime::UNIX_EPOCH
                                    + Duration::from_nanos(e.mtime_ns.max(0) as u64),
                            )
                            .unwrap_or_default()
                            > max_age
                });
                if old && d.remove_file(&n).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn set_group_access(&self, on: bool) {
        FsBackend::set_group_access(self, on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn objects_are_private_like_restics_unless_the_repository_shares_with_its_group() {
        let t = tempfile::tempdir().unwrap();
        for (group, dm, fm) in [(false, 0o700, 0o400), (true, 0o750, 0o440)] {
            let root = t.path().join(format!("r-{group}"));
            let b = FsBackend::new(&root);
            b.set_group_access(group);
            b.prepare().unwrap();
            b.create(Kind::Config, "", b"c").unwrap();
            b.create(Kind::Pack, &"ab".repeat(32), b"p").unwrap();
            assert_eq!(mode(&root), dm);
            assert_eq!(mode(&root.join("data/ab")), dm);
            assert_eq!(mode(&root.join("config")), fm);
            assert_eq!(mode(&root.join("data/ab").join("ab".repeat(32))), fm);
            // A later writer learns the modes from the config file.
            let again = FsBackend::new(&root);
            again.create(Kind::Key, &"cd".repeat(32), b"k").unwrap();
            assert_eq!(mode(&root.join("keys").join("cd".repeat(32))), fm);
        }
    }

    #[test]
    fn symlinks_inside_the_repository_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("r");
        let b = FsBackend::new(&root);
        b.prepare().unwrap();
        let secret = t.path().join("secret");
        fs::write(&secret, b"not yours").unwrap();
        let leak = "ef".repeat(32);
        symlink(&secret, root.join("keys").join(&leak)).unwrap();
        assert!(b.read(Kind::Key, &leak).is_err());
        assert!(b.read_range(Kind::Key, &leak, 0, 3).is_err());
        assert_eq!(b.size(Kind::Key, &leak).unwrap(), None);
        assert!(b.list(Kind::Key).unwrap().is_empty());
        // A shard directory replaced by a symlink is neither listed, read nor written through.
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join("12".repeat(32)), b"planted").unwrap();
        fs::remove_dir(root.join("data/12")).unwrap();
        symlink(&elsewhere, root.join("data/12")).unwrap();
        assert!(b.list(Kind::Pack).unwrap().is_empty());
        assert!(b.read(Kind::Pack, &"12".repeat(32)).is_err());
        assert!(
            b.create(Kind::Pack, &format!("{}34", "12".repeat(31)), b"x")
                .is_err()
        );
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 1);
    }

    #[test]
    fn the_names_tag_is_read_once_while_the_directory_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let b = FsBackend::new(t.path().join("r"));
        b.prepare().unwrap();
        let listed = |b: &FsBackend| -> String {
            let names: Vec<String> = b
                .list(Kind::Snapshot)
                .unwrap()
                .into_iter()
                .map(|o| o.name)
                .collect();
            super::super::listing_tag(&names)
        };
        for i in 0..3u8 {
            b.create(Kind::Snapshot, &format!("{i:02x}").repeat(32), b"s")
                .unwrap();
        }
        // Changed just now: the names are read every time.
        assert_eq!(b.names_tag(Kind::Snapshot).unwrap(), listed(&b));
        assert_eq!(b.names_tag(Kind::Snapshot).unwrap(), listed(&b));
        assert_eq!(b.names_read(), 2);
        // Left alone: read once more, then answered from the directory's stamp.
        std::thread::sleep(STAMP_SETTLED + Duration::from_millis(200));
        let tag = b.names_tag(Kind::Snapshot).unwrap();
        assert_eq!(tag, listed(&b));
        for _ in 0..5 {
            assert_eq!(b.names_tag(Kind::Snapshot).unwrap(), tag);
        }
        assert_eq!(b.names_read(), 3);
        // A snapshot added, then removed, is seen at once (by another writer too).
        let other = FsBackend::new(t.path().join("r"));
        other
            .create(Kind::Snapshot, &"aa".repeat(32), b"s")
            .unwrap();
        let added = b.names_tag(Kind::Snapshot).unwrap();
        assert_ne!(added, tag);
        assert_eq!(added, listed(&b));
        other.delete(Kind::Snapshot, &"aa".repeat(32)).unwrap();
        assert_eq!(b.names_tag(Kind::Snapshot).unwrap(), tag);
        assert_eq!(b.names_read(), 5);
        // Another kind is not answered from the snapshots' tag; an empty directory has the empty
        // list's tag.
        assert_eq!(
            b.names_tag(Kind::Lease).unwrap(),
            super::super::listing_tag(&[])
        );
    }
}
