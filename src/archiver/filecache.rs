//! The file cache: a local redb database that remembers, per absolute path, the stat fields a
//! file had when it was last read and the chunk ids it gave. A file whose size, mtime, ctime and
//! inode (ctime and inode can be ignored for network file systems where they are unstable) match
//! is not read again. Entries are only trusted if every chunk id is still stored in the repository.
//!
//! Location: `$PRISM_HOME/sync/cache/<repository id>.redb`, table `files_v1`: key = path bytes,
//! value (LE) = size u64 | mtime ns i64 | ctime ns i64 | inode u64 | device u64 | flags u8 |
//! u32 n | n ids. Flag bit 0, *racy*: the file changed so close to the scan that a same-size
//! rewrite within one timestamp tick would be invisible; such an entry is never trusted, only
//! used to tell "re-read, unchanged" from "changed". It is a cache: deleting it only costs a
//! re-read.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::error::{Error, Result};
use crate::format::{Put, Reader};
use crate::id::BlobId;

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("files_v1");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    /// Never trusted: see the module docs.
    pub racy: bool,
    pub ids: Vec<BlobId>,
}

impl CacheEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(44 + 32 * self.ids.len());
        v.put_u64(self.size);
        v.put_i64(self.mtime_ns);
        v.put_i64(self.ctime_ns);
        v.put_u64(self.ino);
        v.put_u64(self.dev);
        v.put_u8(self.racy as u8);
        v.put_u32(crate::format::len_u32(self.ids.len()));
        for id in &self.ids {
            v.put(&id.0);
        }
        v
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader::new(b);
        let size = r.u64("cache").ok()?;
        let mtime_ns = r.i64("cache").ok()?;
        let ctime_ns = r.i64("cache").ok()?;
        let ino = r.u64("cache").ok()?;
        let dev = r.u64("cache").ok()?;
        let racy = match r.u8("cache").ok()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let n = r.count(32, "cache").ok()?;
        let ids = (0..n)
            .map(|_| r.array("cache").map(BlobId))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        r.finish().ok()?;
        Some(CacheEntry {
            size,
            mtime_ns,
            ctime_ns,
            ino,
            dev,
            racy,
            ids,
        })
    }

    /// Does a fresh stat describe the same file version?
    pub fn matches(&self, now: &CacheEntry, ignore_ctime: bool, ignore_inode: bool) -> bool {
        !self.racy
            && self.size == now.size
            && self.mtime_ns == now.mtime_ns
            && (ignore_ctime || self.ctime_ns == now.ctime_ns)
            && (ignore_inode || (self.ino == now.ino && self.dev == now.dev))
    }
}

pub struct FileCache {
    db: Database,
    path: PathBuf,
}

fn cache_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "file cache {}: {e} (it is safe to delete it)",
        path.display()
    ))
}

impl FileCache {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db = Database::create(path).map_err(|e| cache_err(path, e))?;
        Ok(FileCache {
            db,
            path: path.to_path_buf(),
        })
    }

    /// Looks entries up in one read transaction.
    pub fn reader(&self) -> Result<CacheReader> {
        let txn = self.db.begin_read().map_err(|e| cache_err(&self.path, e))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(cache_err(&self.path, e)),
        };
        Ok(CacheReader { table })
    }

    /// Writes entries in one transaction.
    pub fn write(&self, updates: &[(Vec<u8>, CacheEntry)]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let txn = self
            .db
            .begin_write()
            .map_err(|e| cache_err(&self.path, e))?;
        {
            let mut t = txn
                .open_table(TABLE)
                .map_err(|e| cache_err(&self.path, e))?;
            for (k, v) in updates {
                t.insert(k.as_slice(), v.encode().as_slice())
                    .map_err(|e| cache_err(&self.path, e))?;
            }
        }
        txn.commit().map_err(|e| cache_err(&self.path, e))
    }
}

pub struct CacheReader {
    table: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
}

impl CacheReader {
    pub fn get(&self, key: &[u8]) -> Option<CacheEntry> {
        let t = self.table.as_ref()?;
        let g = t.get(key).ok()??;
        CacheEntry::decode(g.value())
    }
}
