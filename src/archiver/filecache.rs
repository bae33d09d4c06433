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

/// Memory redb may use to cache pages of the file cache.
const CACHE_MEMORY: usize = 16 << 20;

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
            crate::fsx::private::create_dir(dir).map_err(|e| Error::io(dir, e))?;
        }
        crate::fsx::private::touch(path).map_err(|e| Error::io(path, e))?;
        // redb caches what it reads up to 1 GiB by default: a no-change scan of a million files
        // would keep the whole cache file in memory. Lookups are in path order, so a small
        // cache serves them.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_MEMORY)
            .create(path)
            .map_err(|e| cache_err(path, e))?;
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
    /// Records the updates a scan collected (see [`PendingUpdates`]).
    pub fn write_pending(&self, pending: &mut PendingUpdates) -> Result<()> {
        let records = pending.records().map_err(|e| cache_err(&self.path, e))?;
        self.write_batches(records.map(|r| r.map_err(|e| cache_err(&self.path, e))))
    }

    /// Inserts in transactions of bounded size (a write transaction keeps its dirty pages in
    /// memory); only the last one is made durable, which makes the earlier ones durable too.
    fn write_batches(
        &self,
        mut records: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    ) -> Result<()> {
        const BATCH: usize = 20_000;
        let mut done = false;
        while !done {
            let mut txn = self
                .db
                .begin_write()
                .map_err(|e| cache_err(&self.path, e))?;
            {
                let mut t = txn
                    .open_table(TABLE)
                    .map_err(|e| cache_err(&self.path, e))?;
                for _ in 0..BATCH {
                    match records.next() {
                        Some(r) => {
                            let (k, v) = r?;
                            t.insert(k.as_slice(), v.as_slice())
                                .map_err(|e| cache_err(&self.path, e))?;
                        }
                        None => {
                            done = true;
                            break;
                        }
                    }
                }
            }
            if !done {
                txn.set_durability(redb::Durability::None)
                    .map_err(|e| cache_err(&self.path, e))?;
            }
            txn.commit().map_err(|e| cache_err(&self.path, e))?;
        }
        Ok(())
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

/// The cache entries of a scan, waiting for its snapshot to be committed. They are appended to an
/// unlinked temporary file beside the cache (length-prefixed key and value records), so memory
/// stays flat however many files a scan reads. Failing to keep them only costs speed: the next
/// scan reads those files again.
pub struct PendingUpdates {
    dir: Option<PathBuf>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    count: usize,
    broken: bool,
}

impl PendingUpdates {
    /// Updates kept in a temporary file in `dir`; `None` keeps nothing.
    pub fn new(dir: Option<&Path>) -> Self {
        PendingUpdates {
            dir: dir.map(Path::to_path_buf),
            file: None,
            count: 0,
            broken: false,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn open(dir: &Path) -> std::io::Result<std::fs::File> {
        crate::fsx::private::create_dir(dir)?;
        let name = dir.join(format!(
            ".pending-{}",
            crate::id::hex_encode(&crate::crypto::random_bytes::<8>())
        ));
        let f = crate::fsx::private::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&name)?;
        std::fs::remove_file(&name)?;
        Ok(f)
    }

    pub fn push(&mut self, key: &[u8], entry: &CacheEntry) {
        use std::io::Write;
        if self.broken {
            return;
        }
        let Some(dir) = &self.dir else { return };
        if self.file.is_none() {
            match Self::open(dir) {
                Ok(f) => self.file = Some(std::io::BufWriter::with_capacity(256 << 10, f)),
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
        let w = self.file.as_mut().expect("opened above");
        let value = entry.encode();
        let ok = w.write_all(&(key.len() as u32).to_le_bytes()).is_ok()
            && w.write_all(key).is_ok()
            && w.write_all(&(value.len() as u32).to_le_bytes()).is_ok()
            && w.write_all(&value).is_ok();
        if ok {
            self.count += 1;
        } else {
            self.broken = true;
        }
    }

    /// Reads the records back, from the start.
    fn records(
        &mut self,
    ) -> std::io::Result<impl Iterator<Item = std::io::Result<(Vec<u8>, Vec<u8>)>> + use<>> {
        use std::io::{Read, Seek};
        let mut remaining = if self.broken { 0 } else { self.count };
        let reader = match self.file.take() {
            Some(w) => {
                let mut f = w.into_inner().map_err(|e| e.into_error())?;
                f.rewind()?;
                Some(std::io::BufReader::with_capacity(256 << 10, f))
            }
            None => None,
        };
        let mut reader = reader;
        Ok(std::iter::from_fn(move || {
            if remaining == 0 {
                return None;
            }
            remaining -= 1;
            let r = reader.as_mut()?;
            let mut field = || -> std::io::Result<Vec<u8>> {
                let mut len = [0u8; 4];
                r.read_exact(&mut len)?;
                let mut v = vec![0u8; u32::from_le_bytes(len) as usize];
                r.read_exact(&mut v)?;
                Ok(v)
            };
            Some(field().and_then(|k| Ok((k, field()?))))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> CacheEntry {
        CacheEntry {
            size: i,
            mtime_ns: i as i64 * 7,
            ctime_ns: -(i as i64),
            ino: i + 1,
            dev: 3,
            racy: i.is_multiple_of(5),
            ids: (0..(i % 3)).map(|k| BlobId([(k + i) as u8; 32])).collect(),
        }
    }

    #[test]
    fn pending_updates_spill_to_disk_and_land_in_batches() {
        let t = tempfile::tempdir().unwrap();
        let cache = FileCache::open(&t.path().join("c.redb")).unwrap();
        let mut p = PendingUpdates::new(Some(t.path()));
        let n = 45_000u64; // more than two write batches
        for i in 0..n {
            p.push(format!("/data/f{i}").as_bytes(), &entry(i));
        }
        assert_eq!(p.len(), n as usize);
        // The spill file is unlinked: nothing but the cache is left in the directory.
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        cache.write_pending(&mut p).unwrap();
        let r = cache.reader().unwrap();
        for i in [0, 1, 19_999, 20_000, 20_001, 44_999] {
            assert_eq!(r.get(format!("/data/f{i}").as_bytes()), Some(entry(i)));
        }
        assert_eq!(r.get(b"/data/f45000"), None);
    }

    #[test]
    fn without_a_directory_nothing_is_kept() {
        let mut p = PendingUpdates::new(None);
        p.push(b"/x", &entry(1));
        assert!(p.is_empty());
    }
}
