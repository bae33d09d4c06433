//! Reading versions for people — the shared half of `mount` and `ui`: a live snapshot list,
//! cached directory and chunk reads, file contents at any offset, a path's history in a sync
//! set, and text diffs.
//!
//! Owns: [`Browser`] (one open repository with its caches), [`history`], [`textdiff`], the
//! [`cache::Lru`] both caches use. Must not touch: local folders, printing, repository formats
//! (it reads through [`Repository`] and [`crate::snapshot::tree`]).
//!
//! Invariants:
//! - The snapshot list is read again at most every [`Browser::refresh`] (one list call, and a
//!   read of each snapshot not seen before); when snapshots were added, the index is loaded
//!   again before they are shown, so their blobs are found.
//! - Caches are bounded: decoded directories by entries, data chunks by bytes; the least
//!   recently used go first. Every chunk is verified as every blob read is.

pub mod cache;
pub mod history;
pub mod textdiff;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::id::{BlobId, SnapshotId};
use crate::repository::Repository;
use crate::snapshot::tree::{file_blobs, read_dir};
use crate::snapshot::{Node, NodeKind, Snapshot, components};
use cache::Lru;

/// Decoded data chunks kept, at most (a few files' worth of average 1 MiB chunks).
pub const BLOB_CACHE_BYTES_MAX: u64 = 64 << 20;
/// Entries of decoded directories kept, at most (~200 bytes each).
pub const TREE_CACHE_NODES_MAX: u64 = 200_000;
/// How often the snapshot list may be read again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Chunks fetched ahead of a reader going through a file in order: over a link with a long
/// round trip, one request per chunk in turn leaves the link idle most of the time.
pub const READ_AHEAD_CHUNKS: u64 = 8;
/// Threads fetching chunks ahead (each on its own connection of a remote repository).
const PREFETCH_THREADS: usize = 8;
/// Chunks waiting to be fetched ahead, at most; more are dropped (they are read on demand).
const PREFETCH_QUEUE_MAX: usize = 64;

/// Where messages go that belong to no request (a damaged snapshot, an unreachable repository).
pub type Report = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub struct BrowseOptions {
    pub blob_cache_bytes_max: u64,
    pub tree_cache_nodes_max: u64,
    pub refresh: Duration,
}

impl Default for BrowseOptions {
    fn default() -> Self {
        BrowseOptions {
            blob_cache_bytes_max: BLOB_CACHE_BYTES_MAX,
            tree_cache_nodes_max: TREE_CACHE_NODES_MAX,
            refresh: REFRESH_INTERVAL,
        }
    }
}

/// Every readable snapshot, oldest first, as of one listing. `generation` grows whenever the
/// list changes.
#[derive(Debug, Default)]
pub struct Snapshots {
    pub generation: u64,
    pub list: Vec<(SnapshotId, Snapshot)>,
}

struct Known {
    last: Option<Instant>,
    snaps: HashMap<SnapshotId, Snapshot>,
    /// Unreadable snapshots, reported once and not read again.
    bad: HashSet<SnapshotId>,
    last_error: Option<String>,
}

/// A file's chunks and where each one ends in the file.
#[derive(Debug, Clone)]
pub struct FileChunks {
    pub blobs: Vec<BlobId>,
    pub ends: Vec<u64>,
}

impl FileChunks {
    pub fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }
}

/// One open repository, read for people.
pub struct Browser {
    repo: Arc<Repository>,
    opts: BrowseOptions,
    report: Report,
    known: Mutex<Known>,
    current: RwLock<Arc<Snapshots>>,
    trees: Lru<BlobId, Vec<Node>>,
    blobs: Arc<Lru<BlobId, Vec<u8>>>,
    /// Chunks to fetch ahead into `blobs`, for the prefetch threads (started on first use).
    ahead: Mutex<Option<crossbeam_channel::Sender<BlobId>>>,
}

impl Browser {
    /// Wraps an open repository and lists its snapshots (an unreachable repository fails here).
    pub fn new(repo: Repository, opts: BrowseOptions, report: Report) -> Result<Browser> {
        let b = Browser {
            repo: Arc::new(repo),
            opts,
            report,
            known: Mutex::new(Known {
                last: None,
                snaps: HashMap::new(),
                bad: HashSet::new(),
                last_error: None,
            }),
            current: RwLock::new(Arc::new(Snapshots::default())),
            trees: Lru::new(opts.tree_cache_nodes_max, |v: &Vec<Node>| {
                v.len().max(1) as u64
            }),
            blobs: Arc::new(Lru::new(opts.blob_cache_bytes_max, |v: &Vec<u8>| {
                v.len() as u64
            })),
            ahead: Mutex::new(None),
        };
        let mut k = b.known.lock().expect("known lock");
        b.reload(&mut k)?;
        drop(k);
        Ok(b)
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// The current snapshot list, read again first when it is older than the refresh interval
    /// (by one thread; the others use the current one meanwhile). A failed listing is reported
    /// (once per distinct message) and the last good list stays.
    pub fn snapshots(&self) -> Arc<Snapshots> {
        if let Ok(mut k) = self.known.try_lock()
            && k.last.is_none_or(|t| t.elapsed() >= self.opts.refresh)
        {
            match self.reload(&mut k) {
                Ok(()) => k.last_error = None,
                Err(e) => {
                    let msg = format!("cannot list new snapshots: {e}");
                    if k.last_error.as_deref() != Some(msg.as_str()) {
                        (self.report)(&msg);
                    }
                    k.last_error = Some(msg);
                }
            }
        }
        self.current.read().expect("snapshots lock").clone()
    }

    fn reload(&self, k: &mut Known) -> Result<()> {
        k.last = Some(Instant::now());
        let ids = self.repo.snapshot_ids()?;
        let listed: HashSet<SnapshotId> = ids.iter().copied().collect();
        let before = k.snaps.len();
        k.snaps.retain(|id, _| listed.contains(id));
        let mut changed = k.snaps.len() != before;
        let mut added = false;
        for id in ids {
            if k.snaps.contains_key(&id) || k.bad.contains(&id) {
                continue;
            }
            match self.repo.load_snapshot(&id) {
                Ok(s) => {
                    k.snaps.insert(id, s);
                    added = true;
                }
                Err(Error::Missing { .. }) => {} // forgotten meanwhile
                Err(e) => {
                    (self.report)(&format!("{e}; it is left out (run `prism-sync check`)"));
                    k.bad.insert(id);
                }
            }
        }
        if added {
            self.repo.load_index()?;
            changed = true;
        }
        let generation = self.current.read().expect("snapshots lock").generation;
        if changed || generation == 0 {
            let mut list: Vec<(SnapshotId, Snapshot)> =
                k.snaps.iter().map(|(i, s)| (*i, s.clone())).collect();
            list.sort_by(|a, b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
            *self.current.write().expect("snapshots lock") = Arc::new(Snapshots {
                generation: generation + 1,
                list,
            });
        }
        Ok(())
    }

    /// A directory's entries in name order (cached).
    pub fn dir(&self, tree: &BlobId) -> Result<Arc<Vec<Node>>> {
        self.trees.get_or_fetch(tree, || read_dir(&self.repo, tree))
    }

    /// The node at `path` below a root tree (`None`: no such path). The empty path is the root,
    /// as a directory node named "".
    pub fn find(&self, root: &BlobId, path: &[u8]) -> Result<Option<Node>> {
        let mut node = Node {
            name: Vec::new(),
            kind: NodeKind::Dir { subtree: *root },
            mode: 0o755,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
        };
        for comp in components(path) {
            let NodeKind::Dir { subtree } = node.kind else {
                return Ok(None);
            };
            let entries = self.dir(&subtree)?;
            match entries.binary_search_by(|n| n.name.as_slice().cmp(comp)) {
                Ok(i) => node = entries[i].clone(),
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    /// Where a file's chunks are; checks that they add up to its size.
    pub fn chunks(&self, node: &Node, shown: &str) -> Result<FileChunks> {
        let NodeKind::File { size, content } = &node.kind else {
            return Err(Error::invalid(format!("{shown} is not a file")));
        };
        let blobs = file_blobs(&self.repo, content)?;
        let index = self.repo.index();
        let mut ends = Vec::with_capacity(blobs.len());
        let mut end = 0u64;
        for id in &blobs {
            let loc = index
                .lookup(BlobKind::Data, id)
                .ok_or_else(|| Error::Missing {
                    object: format!("data blob {} (of {shown})", id.short()),
                })?;
            end += loc.entry.raw_length as u64;
            ends.push(end);
        }
        if end != *size {
            return Err(Error::corrupt(
                format!("file {shown}"),
                format!("its chunks hold {end} bytes but the snapshot says {size}"),
            ));
        }
        Ok(FileChunks { blobs, ends })
    }

    /// One data chunk (cached).
    pub fn blob(&self, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        self.blobs
            .get_or_fetch(id, || self.repo.read_blob(BlobKind::Data, id))
    }

    /// Starts fetching the [`READ_AHEAD_CHUNKS`] chunks after the one holding `offset` into the
    /// cache (a reader going through the file in order needs them next). Chunks already kept or
    /// on their way are skipped; errors are left for the reader to meet.
    pub fn read_ahead(&self, f: &FileChunks, offset: u64) {
        let first = f.ends.partition_point(|&e| e <= offset) + 1;
        let last = (first + READ_AHEAD_CHUNKS as usize).min(f.blobs.len());
        if first >= last {
            return;
        }
        let mut ahead = self.ahead.lock().expect("prefetch lock");
        let tx = ahead.get_or_insert_with(|| {
            let (tx, rx) = crossbeam_channel::bounded::<BlobId>(PREFETCH_QUEUE_MAX);
            for _ in 0..PREFETCH_THREADS {
                let (rx, repo, blobs) = (rx.clone(), self.repo.clone(), self.blobs.clone());
                std::thread::Builder::new()
                    .name("prism-read-ahead".into())
                    .spawn(move || {
                        // Ends when the browser (the sender) is dropped.
                        for id in rx {
                            let _ = blobs.get_or_fetch(&id, || repo.read_blob(BlobKind::Data, &id));
                        }
                    })
                    .expect("spawn a read-ahead thread");
            }
            tx
        });
        for id in &f.blobs[first..last] {
            if !self.blobs.contains(id) {
                let _ = tx.try_send(*id);
            }
        }
    }

    /// Up to `len` bytes of a file from `offset` (fewer at its end).
    pub fn read_at(&self, f: &FileChunks, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(f.size());
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        let mut i = f.ends.partition_point(|&e| e <= offset);
        while pos < end && i < f.blobs.len() {
            let start = if i == 0 { 0 } else { f.ends[i - 1] };
            let data = self.blob(&f.blobs[i])?;
            if data.len() as u64 != f.ends[i] - start {
                return Err(Error::corrupt(
                    format!("data blob {}", f.blobs[i].short()),
                    format!(
                        "it holds {} bytes, the index says {}",
                        data.len(),
                        f.ends[i] - start
                    ),
                ));
            }
            let from = (pos - start) as usize;
            let to = (end.min(f.ends[i]) - start) as usize;
            out.extend_from_slice(&data[from..to]);
            pos = start + to as u64;
            i += 1;
        }
        Ok(out)
    }
}
