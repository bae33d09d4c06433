//! The local cache of immutable repository metadata: index files, snapshots and tree packs of a
//! remote repository, kept under `$PRISM_HOME/sync/cache/<repository id>/` (specified in
//! `format-spec/local-state.md`), so that a process start or a sync step does not fetch again
//! what this machine has already seen or written.
//!
//! Owns: the cache directory, its layout and modes (directories 0700, files 0600), writing
//! entries atomically (temp file and rename) and dropping entries the repository no longer has.
//! Must not touch: keys, decoding, backends — the [`Repository`](super::Repository) decides what
//! to cache and verifies every entry it reads back.
//!
//! Nothing here is trusted: every cached object is named by the BLAKE3 hash of its bytes (index
//! files, snapshots, packs), and the repository checks that hash (or, for a blob read from a
//! cached tree pack, the blob's authentication tag and keyed id) before using it. A damaged,
//! truncated or foreign entry is therefore detected on use, deleted and fetched again. A cache
//! that cannot be written (full disk, read-only home) only costs speed: every error here is
//! swallowed and the repository reads the backend instead.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::crypto::random_bytes;
use crate::id::hex_encode;

/// What the cache holds; each kind is a directory of files named by object name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// Index files (`index/<name>`), the stored (sealed) bytes.
    Index,
    /// Snapshots (`snapshots/<name>`), the stored (sealed) bytes.
    Snapshot,
    /// Whole tree packs (`trees/<pack id>`): every tree blob of the pack is then read locally.
    TreePack,
}

impl CacheKind {
    pub const ALL: [CacheKind; 3] = [CacheKind::Index, CacheKind::Snapshot, CacheKind::TreePack];

    fn dir(self) -> &'static str {
        match self {
            CacheKind::Index => "index",
            CacheKind::Snapshot => "snapshots",
            CacheKind::TreePack => "trees",
        }
    }
}

/// A repository's metadata cache directory.
#[derive(Debug, Clone)]
pub struct MetaCache {
    dir: PathBuf,
}

/// True for names the cache may hold: 64 lowercase hex digits (every cached object is named by
/// its hash), so a name can never climb out of the cache directory.
fn valid_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn mkdir_private(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // `recursive` leaves an existing directory's mode alone: tighten it.
    let md = fs::symlink_metadata(dir)?;
    if !md.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if md.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

impl MetaCache {
    /// The cache of the repository `repo_id` below `root` (`$PRISM_HOME/sync/cache`); creates
    /// the directories (mode 0700).
    pub fn open(root: &Path, repo_id: &[u8; 32]) -> io::Result<MetaCache> {
        let dir = root.join(hex_encode(repo_id));
        mkdir_private(root)?;
        mkdir_private(&dir)?;
        for k in CacheKind::ALL {
            mkdir_private(&dir.join(k.dir()))?;
        }
        Ok(MetaCache { dir })
    }

    /// The directory of this repository's cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, kind: CacheKind, name: &str) -> Option<PathBuf> {
        valid_name(name).then(|| self.dir.join(kind.dir()).join(name))
    }

    /// The bytes of an entry, if it is there (unverified: the caller checks them).
    pub fn get(&self, kind: CacheKind, name: &str) -> Option<Vec<u8>> {
        fs::read(self.path(kind, name)?).ok()
    }

    /// `length` bytes at `offset` of an entry, if it is there and that long (unverified).
    pub fn get_range(
        &self,
        kind: CacheKind,
        name: &str,
        offset: u64,
        length: usize,
    ) -> Option<Vec<u8>> {
        let f = File::open(self.path(kind, name)?).ok()?;
        let mut buf = vec![0u8; length];
        f.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }

    /// True if an entry is there (nothing is read).
    pub fn contains(&self, kind: CacheKind, name: &str) -> bool {
        self.path(kind, name).is_some_and(|p| p.is_file())
    }

    /// Stores an entry: a temp file (mode 0600) renamed into place, so a reader sees a whole
    /// entry or none. Not fsynced: a torn entry after a power loss fails verification and is
    /// fetched again. Errors are ignored (the cache only saves round trips).
    pub fn put(&self, kind: CacheKind, name: &str, bytes: &[u8]) {
        let Some(path) = self.path(kind, name) else {
            return;
        };
        if path.is_file() {
            return;
        }
        let tmp = self
            .dir
            .join(kind.dir())
            .join(format!(".tmp-{}", hex_encode(&random_bytes::<8>())));
        let r = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|_| fs::rename(&tmp, &path));
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Deletes an entry (it failed verification, or the repository dropped the object).
    pub fn remove(&self, kind: CacheKind, name: &str) {
        if let Some(p) = self.path(kind, name) {
            let _ = fs::remove_file(p);
        }
    }

    /// Names of the entries of a kind.
    pub fn names(&self, kind: CacheKind) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.dir.join(kind.dir())) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_name(n))
            .collect()
    }

    /// Drops the entries of a kind that are not in `live` (objects the repository no longer
    /// has: forgotten snapshots, superseded index files, pruned packs), and leftover temp files.
    /// Returns how many entries were dropped.
    pub fn retain(&self, kind: CacheKind, live: &HashSet<String>) -> usize {
        let Ok(rd) = fs::read_dir(self.dir.join(kind.dir())) else {
            return 0;
        };
        let mut dropped = 0;
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let stale_temp = name.starts_with(".tmp-")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600));
            if stale_temp {
                let _ = fs::remove_file(e.path());
            } else if valid_name(&name)
                && !live.contains(name.as_ref())
                && fs::remove_file(e.path()).is_ok()
            {
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_private_whole_and_named_by_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cache");
        let c = MetaCache::open(&root, &[7; 32]).unwrap();
        for d in [root.clone(), c.dir().to_path_buf(), c.dir().join("trees")] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let name = "ab".repeat(32);
        c.put(CacheKind::Index, &name, b"hello");
        assert_eq!(
            c.get(CacheKind::Index, &name).as_deref(),
            Some(&b"hello"[..])
        );
        let mode = fs::metadata(c.dir().join("index").join(&name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            c.get_range(CacheKind::Index, &name, 1, 3).as_deref(),
            Some(&b"ell"[..])
        );
        assert_eq!(c.get_range(CacheKind::Index, &name, 3, 3), None);
        // Names that are not hashes are refused, so nothing can escape the directory.
        for bad in ["../../etc/passwd", "", "AB", &"g".repeat(64)] {
            c.put(CacheKind::Snapshot, bad, b"x");
            assert_eq!(c.get(CacheKind::Snapshot, bad), None);
        }
        assert!(c.names(CacheKind::Snapshot).is_empty());
        let other = "cd".repeat(32);
        c.put(CacheKind::Index, &other, b"x");
        let live: HashSet<String> = [other.clone()].into();
        assert_eq!(c.retain(CacheKind::Index, &live), 1);
        assert_eq!(c.names(CacheKind::Index), vec![other]);
    }

    #[test]
    fn an_open_tightens_a_loose_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cache");
        fs::create_dir_all(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        MetaCache::open(&root, &[1; 32]).unwrap();
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
