//! Folder → snapshot: the backup pipeline.
//!
//! Owns: scanning, reading, chunking, dedup decisions, building trees, the file cache. Must not
//! touch: backends directly (it stores through the repository), printing.
//!
//! Stages, each on its own threads, joined by bounded channels (so memory does not grow with
//! file sizes or tree sizes):
//!
//! ```text
//! walker ──file jobs──▶ readers ──new chunks──▶ compressors ──full packs──▶ uploaders
//!   │ (main thread)     (read, cut, keyed hash,  (zstd, seal into          (store the packs;
//!   │                    dedup, claim)            their own pack)           several at once
//!   │                                                                      to a remote one)
//!   └──events (depth-first order)──▶ tree builder (waits for each file's chunk ids,
//!                                    writes tree blobs bottom-up)
//! ```
//!
//! A file's chunk ids are known as soon as it is hashed, before its chunks are stored; nothing
//! refers to them until the index and the snapshot are written, after every stage has finished.
//! Unreadable files are reported and left out; the rest is committed (exit code 3 in the CLI).

pub mod filecache;
pub mod prefetch;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::chunker::{Chunker, StreamChunker};
use crate::error::{Error, Result};
use crate::format::index::IndexPack;
use crate::format::pack::{BLOB_HEADER_LEN, BlobKind, TAG_LEN};
use crate::format::tree::valid_name;
use crate::id::{BlobId, SnapshotId};
use crate::repository::pack_codec::{Compressors, FinishedPack, PackWriter, compress_into};
use crate::repository::session::Session;
use crate::repository::{Packer, Repository, hostname, now_ns, username};
use crate::snapshot::tree::{write_content, write_dir};
use crate::snapshot::{Content, Node, NodeKind, Snapshot, Summary};
use filecache::{CacheEntry, CacheReader, FileCache, PendingUpdates};

/// Makes buffers of 256 KiB and more come from mmap and go back to the system when freed.
///
/// glibc otherwise raises this threshold after the first big free and serves later pack buffers
/// from per-thread heaps that keep their peak size: +60 % peak RSS in a backup. Not worth it
/// for a restore, whose short-lived blob buffers would then fault in their pages every time.
pub fn return_big_buffers() {
    crate::sys::return_big_buffers();
}

/// What the scan does with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Keep,
    /// Not stored and not reported (excluded by a rule).
    Exclude,
    /// Not stored, reported in `skipped` with the reason (e.g. over a size limit).
    Skip(String),
}

/// Decides per entry (path relative to the scanned root, `/`-separated, and its metadata).
pub type ScanFilter = Arc<dyn Fn(&[u8], &Metadata) -> Filter + Send + Sync>;

/// An event-driven scan: directories with no dirty path at or below them are taken whole from
/// the previous tree of the same folder instead of being listed again.
#[derive(Clone)]
pub struct Reuse {
    /// The folder's tree as of the previous scan.
    pub tree: BlobId,
    /// Paths (relative, `/`-separated) that may have changed since; they and their ancestors
    /// are scanned.
    pub dirty: Arc<std::collections::BTreeSet<Vec<u8>>>,
}

impl Reuse {
    fn dirty_at_or_below(&self, rel: &[u8]) -> bool {
        if self.dirty.contains(rel) {
            return true;
        }
        let mut prefix = rel.to_vec();
        prefix.push(b'/');
        self.dirty
            .range(prefix.clone()..)
            .next()
            .is_some_and(|d| d.starts_with(&prefix))
    }
}

/// Bounded queues between the stages.
const FILE_JOBS_QUEUE_MAX: usize = 256;
/// Data packs being uploaded at once to a remote repository (each holds its pack in memory:
/// 16 MiB by default): enough to keep a long link busy while the next pack fills.
pub const PACK_UPLOADS_MAX: usize = 4;
const EVENTS_QUEUE_MAX: usize = 4096;

/// Live counters for a progress display.
#[derive(Default, Debug)]
pub struct Progress {
    pub files: AtomicU64,
    pub dirs: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_cached: AtomicU64,
    pub bytes_stored: AtomicU64,
    pub errors: AtomicU64,
    /// What a sync step does now (a [`StepPhase`] as its number); backups leave it at 0.
    pub phase: std::sync::atomic::AtomicU8,
    /// How many changes a sync step applies to the folder (known from its merge on).
    pub actions_total: AtomicU64,
    /// Of those, how many are done (applied or failed).
    pub actions_done: AtomicU64,
    /// Bytes of the files a sync step writes into the folder (known from its merge on).
    pub apply_bytes_total: AtomicU64,
    /// Of those, how many are written so far.
    pub apply_bytes_done: AtomicU64,
}

/// The phases of a sync step, as [`Progress::phase`] holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StepPhase {
    /// Reading the folder; new data is compressed, encrypted and uploaded as it is read.
    Scan = 0,
    /// Reading the shared state and planning the merge.
    Merge = 1,
    /// Downloading and writing the changes from elsewhere into the folder.
    Apply = 2,
    /// Storing the merged state as a snapshot and a head.
    Publish = 3,
}

impl Progress {
    pub fn set_phase(&self, p: StepPhase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    pub fn phase(&self) -> StepPhase {
        match self.phase.load(Ordering::Relaxed) {
            1 => StepPhase::Merge,
            2 => StepPhase::Apply,
            3 => StepPhase::Publish,
            _ => StepPhase::Scan,
        }
    }
}

#[derive(Clone)]
pub struct ArchiveOptions {
    /// redb file cache; `None` reads every file.
    pub file_cache: Option<PathBuf>,
    pub ignore_ctime: bool,
    pub ignore_inode: bool,
    pub readers: usize,
    pub compressors: usize,
    pub filter: Option<ScanFilter>,
    /// Sync scans: zero owners and directory mtimes (they differ between machines and would
    /// make equal folders have different tree ids), and drop the setuid, setgid and sticky bits
    /// (a sync set never carries them from one machine to another).
    pub normalize: bool,
    /// Take untouched directories from a previous tree (see [`Reuse`]).
    pub reuse: Option<Reuse>,
    /// Leave out files modified less than this long ago (ns), reporting them in `deferred`
    /// instead (the daemon's settle window). `None`: no age limit.
    pub defer_recent_ns: Option<i64>,
    /// Leave out *empty* files modified less than this long ago (ns), like `defer_recent_ns`
    /// but longer: a file just created or truncated is about to be written, and a writer that
    /// is descheduled between its `open` and its first `write` leaves it empty for longer than
    /// the settle window. `None`: no such limit.
    pub defer_empty_recent_ns: Option<i64>,
    /// Leave out files whose size, mtime, ctime or inode changed while they were read,
    /// reporting them in `deferred` (sync: never publish a half-written file). `false`: store
    /// them as read with a warning (backups).
    pub defer_changing: bool,
    pub progress: Arc<Progress>,
    /// Read files at most this fast (bytes per second, all readers together); `None`: as fast
    /// as the disk goes. `backup` sets it from `PRISM_SYNC_READ_LIMIT_KIB`.
    pub read_bytes_per_s: Option<u64>,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        ArchiveOptions {
            file_cache: None,
            ignore_ctime: false,
            ignore_inode: false,
            readers: 2,
            compressors: cores,
            filter: None,
            normalize: false,
            reuse: None,
            defer_recent_ns: None,
            defer_empty_recent_ns: None,
            defer_changing: false,
            progress: Arc::new(Progress::default()),
            read_bytes_per_s: None,
        }
    }
}

/// A per-file problem: reported and counted, the run goes on.
#[derive(Debug, Clone)]
pub struct SoftError {
    pub path: PathBuf,
    /// The path inside the snapshot (`/`-separated, relative to its root).
    pub rel: Vec<u8>,
    pub message: String,
}

/// What to archive: the contents of one directory (it becomes the root), or several entries
/// placed in the root under their base names.
#[derive(Debug, Clone)]
pub enum Source {
    Dir(PathBuf),
    Entries(Vec<PathBuf>),
}

pub struct ArchiveResult {
    pub tree: BlobId,
    /// Every pack written (data and tree): the caller indexes them.
    pub packs: Vec<IndexPack>,
    pub summary: Summary,
    pub errors: Vec<SoftError>,
    pub warnings: Vec<SoftError>,
    /// Entries a filter skipped with a reason (not stored).
    pub skipped: Vec<SoftError>,
    /// Files left for the next scan (still being written).
    pub deferred: Vec<Vec<u8>>,
    cache_updates: Mutex<PendingUpdates>,
    cache: Option<FileCache>,
}

impl ArchiveResult {
    /// Records the files read in this run in the file cache. Call only after the snapshot that
    /// refers to their chunks is committed.
    pub fn save_cache(&self) -> Result<()> {
        match &self.cache {
            Some(c) => c.write_pending(&mut self.cache_updates.lock().expect("lock")),
            None => Ok(()),
        }
    }
}

enum FileContent {
    Cached(Vec<BlobId>),
    Pending {
        rx: Receiver<FileOutcome>,
        stat: CacheEntry,
        key: Vec<u8>,
        rel: Vec<u8>,
        /// The chunk ids the cache remembered for this path, if any.
        known: Option<Vec<BlobId>>,
    },
}

enum Event {
    Enter(Node),
    Leave,
    Entry(Node, Option<FileContent>),
    Error(SoftError),
    Warning(SoftError),
    Skipped(SoftError),
    Deferred(Vec<u8>),
}

struct FileJob {
    path: PathBuf,
    stat: CacheEntry,
    tx: Sender<FileOutcome>,
}

enum FileOutcome {
    Read {
        ids: Vec<BlobId>,
        size: u64,
        changed: bool,
    },
    Failed(String),
}

struct StoreJob {
    id: BlobId,
    data: Vec<u8>,
}

/// Chunk buffers passed from the readers to the compressors and back, so that a backup does
/// not allocate (and fault in) a fresh megabyte for every chunk.
struct BufferPool {
    spare: Mutex<Vec<Vec<u8>>>,
    max: usize,
    keep_capacity: usize,
}

impl BufferPool {
    fn filled_with(&self, bytes: &[u8]) -> Vec<u8> {
        let mut b = self.spare.lock().expect("lock").pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(bytes);
        b
    }

    /// Keeps the buffer for the next chunk unless the pool is full or it grew past twice the
    /// average chunk (the rare big chunk's memory goes back to the system).
    fn give_back(&self, b: Vec<u8>) {
        if b.capacity() > self.keep_capacity {
            return;
        }
        let mut spare = self.spare.lock().expect("lock");
        if spare.len() < self.max {
            spare.push(b);
        }
    }
}

struct Shared<'r> {
    repo: &'r Repository,
    buffers: BufferPool,
    chunker: Chunker,
    claimed: Mutex<HashSet<BlobId>>,
    abort: AtomicBool,
    fatal: Mutex<Option<Error>>,
    progress: Arc<Progress>,
    blobs_added: AtomicU64,
    bytes_added_raw: AtomicU64,
    bytes_added_stored: AtomicU64,
    /// The source is on a network file system: always the wide racy window.
    coarse_clock: bool,
    /// When the scan started (ns).
    now_ns: i64,
    defer_changing: bool,
    /// `read_bytes_per_s`, when the scan started, and bytes read since.
    read_limit: Option<(u64, Instant)>,
    read_total: AtomicU64,
}

/// A file whose mtime or ctime is this close to the scan's start is recorded in the file cache
/// as racy (never trusted): file systems keep coarse timestamps (whole seconds on some), so a
/// second same-size write within one tick would look unchanged. It is read again next time.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// The window for timestamps with a sub-second part on a local file system (ext4, xfs, btrfs
/// tick in at most a few ms): a copied-in tree is trusted from the next scan on.
pub const RACY_WINDOW_FINE_NS: i64 = 100_000_000;

impl Shared<'_> {
    /// With a read limit: sleeps until `n` more bytes are within it.
    fn pace_read(&self, n: u64) {
        let Some((per_s, start)) = self.read_limit else {
            return;
        };
        let total = self.read_total.fetch_add(n, Ordering::Relaxed) + n;
        let due = start + std::time::Duration::from_secs_f64(total as f64 / per_s as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }

    /// Whether a file just read must not be trusted by the next scan (see [`RACY_WINDOW_NS`]).
    fn racy(&self, stat: &CacheEntry) -> bool {
        let fine = !self.coarse_clock
            && (stat.mtime_ns % 1_000_000_000 != 0 || stat.ctime_ns % 1_000_000_000 != 0);
        let window = if fine {
            RACY_WINDOW_FINE_NS
        } else {
            RACY_WINDOW_NS
        };
        let after = self.now_ns - window;
        stat.mtime_ns >= after || stat.ctime_ns >= after
    }

    /// Stops every stage. The first real error is kept; `Interrupted` (a stage noticing that
    /// another one stopped) never hides it, whichever thread gets here first.
    fn fail(&self, e: Error) {
        self.abort.store(true, Ordering::SeqCst);
        if matches!(e, Error::Interrupted) {
            return;
        }
        let mut f = self.fatal.lock().expect("lock");
        if f.is_none() {
            *f = Some(e);
        }
    }
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }
}

fn mtime_ns(md: &Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

/// How long a scan waits to see whether a file whose size moved without its times is in the
/// middle of a truncation (see the archiver's walk).
const TRUNCATE_SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// Looks [`truncating`] takes at a file found *empty* with its old times: the truncation of a
/// big file on a loaded machine takes longer than one [`TRUNCATE_SETTLE`] (the randomized test,
/// seed 7402: a 1.7 MB file published empty, its old times still shown after the second look).
const EMPTIED_LOOKS: usize = 10;

/// Whether a file whose walk stat is `now` is in the middle of a truncation: its size differs
/// from the cache's `known` entry while its mtime, ctime and inode do not, and a look a moment
/// later (`again`, which waits first) finds it changed (or gone) — one look, or up to
/// [`EMPTIED_LOOKS`] while it shows empty. Holding still through them, it is read.
fn truncating(
    known: &CacheEntry,
    now: &CacheEntry,
    mut again: impl FnMut() -> Option<CacheEntry>,
) -> bool {
    let suspicious = known.size != now.size
        && known.mtime_ns == now.mtime_ns
        && known.ctime_ns == now.ctime_ns
        && known.ino == now.ino;
    if !suspicious {
        return false;
    }
    let looks = if now.size == 0 { EMPTIED_LOOKS } else { 1 };
    (0..looks).any(|_| {
        again().is_none_or(|a| {
            (a.size, a.mtime_ns, a.ctime_ns, a.ino)
                != (now.size, now.mtime_ns, now.ctime_ns, now.ino)
        })
    })
}

fn stat_entry(md: &Metadata) -> CacheEntry {
    CacheEntry {
        size: md.len(),
        mtime_ns: mtime_ns(md),
        ctime_ns: md
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(md.ctime_nsec()),
        ino: md.ino(),
        dev: md.dev(),
        racy: false,
        ids: Vec::new(),
    }
}

fn base_node(name: Vec<u8>, md: &Metadata, kind: NodeKind, normalize: bool) -> Node {
    let dir = matches!(kind, NodeKind::Dir { .. });
    Node {
        name,
        kind,
        mode: md.mode() & if normalize { 0o777 } else { 0o7777 },
        mtime_ns: if normalize && dir { 0 } else { mtime_ns(md) },
        uid: if normalize { 0 } else { md.uid() },
        gid: if normalize { 0 } else { md.gid() },
    }
}

/// Archives `source` into tree blobs and data packs. The result is not committed: the caller
/// writes the index for `packs` and then a snapshot.
pub fn archive(repo: &Repository, source: &Source, opts: &ArchiveOptions) -> Result<ArchiveResult> {
    let cache = match &opts.file_cache {
        Some(p) => FileCache::open(p).ok(), // a busy or broken cache only costs speed
        None => None,
    };
    let cache_reader = cache.as_ref().and_then(|c| c.reader().ok());
    let spill_dir = cache
        .as_ref()
        .and(opts.file_cache.as_deref())
        .and_then(Path::parent);
    let shared = Shared {
        repo,
        buffers: BufferPool {
            spare: Mutex::new(Vec::new()),
            // Every buffer that can be in flight: one per reader and compressor, and the queue.
            max: opts.readers.max(1) + 2 * opts.compressors.max(1),
            keep_capacity: 2 * repo.config().chunk_avg_bytes as usize,
        },
        chunker: repo.chunker(),
        claimed: Mutex::new(HashSet::new()),
        abort: AtomicBool::new(false),
        fatal: Mutex::new(None),
        progress: opts.progress.clone(),
        blobs_added: AtomicU64::new(0),
        bytes_added_raw: AtomicU64::new(0),
        bytes_added_stored: AtomicU64::new(0),
        coarse_clock: match source {
            Source::Dir(p) => crate::sys::any_on_network_fs([p.as_path()]),
            Source::Entries(ps) => crate::sys::any_on_network_fs(ps.iter().map(|p| p.as_path())),
        },
        now_ns: crate::repository::now_ns(),
        defer_changing: opts.defer_changing,
        read_limit: opts
            .read_bytes_per_s
            .filter(|&b| b > 0)
            .map(|b| (b, Instant::now())),
        read_total: AtomicU64::new(0),
    };
    let shared = &shared;
    let open_pack = &OpenPack {
        writer: Mutex::new(None),
        spare: Mutex::new(None),
        running: AtomicUsize::new(opts.compressors.max(1)),
    };
    let built = std::thread::scope(|s| {
        let (job_tx, job_rx) = bounded::<FileJob>(FILE_JOBS_QUEUE_MAX);
        let (store_tx, store_rx) = bounded::<StoreJob>(opts.compressors.max(1));
        let (pack_tx, pack_rx) = bounded::<FinishedPack>(0);
        let (ev_tx, ev_rx) = bounded::<Event>(EVENTS_QUEUE_MAX);

        // Several packs upload at once to a remote repository (the next one fills meanwhile);
        // a local disk gains nothing from more than one writer.
        let uploads = if repo.is_remote() {
            repo.backend().parallelism().clamp(1, PACK_UPLOADS_MAX)
        } else {
            1
        };
        let uploaders: Vec<_> = (0..uploads)
            .map(|_| {
                let pack_rx = pack_rx.clone();
                s.spawn(move || {
                    let mut stored = Vec::new();
                    for p in pack_rx {
                        if shared.aborted() {
                            continue;
                        }
                        match shared.repo.store_pack(&p) {
                            Ok(ip) => stored.push(ip),
                            Err(e) => shared.fail(e),
                        }
                        // The index now answers for these blobs: keep the claimed set to the
                        // ones in flight, so it does not grow with the backup. (A reader that
                        // checked the index just before may store a blob twice; the index
                        // allows duplicates.)
                        {
                            let mut claimed = shared.claimed.lock().expect("lock");
                            for e in &p.entries {
                                claimed.remove(&e.id);
                            }
                        }
                        *open_pack.spare.lock().expect("lock") = Some(p.bytes);
                    }
                    stored
                })
            })
            .collect();
        drop(pack_rx);
        for _ in 0..opts.compressors.max(1) {
            let (rx, tx) = (store_rx.clone(), pack_tx.clone());
            s.spawn(move || compressor(shared, open_pack, rx, tx));
        }
        drop((store_rx, pack_tx));
        for _ in 0..opts.readers.max(1) {
            let (rx, tx) = (job_rx.clone(), store_tx.clone());
            s.spawn(move || reader(shared, rx, tx));
        }
        drop((job_rx, store_tx));
        let builder = s.spawn(move || {
            build(shared, ev_rx, spill_dir).map_err(|e| {
                shared.fail(e);
                Error::Interrupted
            })
        });
        let walker = Walker {
            shared,
            opts,
            cache: cache_reader.as_ref(),
            jobs: job_tx,
            events: ev_tx,
        };
        if let Err(e) = walker.run(source) {
            shared.fail(e);
        }
        drop(walker);
        let built = builder.join().expect("tree builder thread");
        let data_packs: Vec<IndexPack> = uploaders
            .into_iter()
            .flat_map(|u| u.join().expect("uploader thread"))
            .collect();
        built.map(|b| (b, data_packs))
    });
    if let Some(e) = shared.fatal.lock().expect("lock").take() {
        return Err(e);
    }
    let (mut b, data_packs) = built?;
    b.packs.extend(data_packs);
    b.summary.blobs_added += shared.blobs_added.load(Ordering::SeqCst);
    b.summary.bytes_added_raw += shared.bytes_added_raw.load(Ordering::SeqCst);
    b.summary.bytes_added_stored += shared.bytes_added_stored.load(Ordering::SeqCst);
    Ok(ArchiveResult {
        tree: b.tree,
        packs: b.packs,
        summary: b.summary,
        errors: b.errors,
        warnings: b.warnings,
        skipped: b.skipped,
        deferred: b.deferred,
        cache_updates: Mutex::new(b.cache_updates),
        cache,
    })
}

// ---- walker ------------------------------------------------------------------------------------

struct Walker<'a, 'r> {
    shared: &'a Shared<'r>,
    opts: &'a ArchiveOptions,
    cache: Option<&'a CacheReader>,
    jobs: Sender<FileJob>,
    events: Sender<Event>,
}

fn sorted_names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names: Vec<OsString> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

impl Walker<'_, '_> {
    fn send(&self, ev: Event) -> Result<()> {
        self.events.send(ev).map_err(|_| Error::Interrupted)
    }

    fn soft(&self, path: &Path, rel: &[u8], message: String) -> Result<()> {
        self.shared.progress.errors.fetch_add(1, Ordering::Relaxed);
        self.send(Event::Error(SoftError {
            path: path.to_path_buf(),
            rel: rel.to_vec(),
            message,
        }))
    }

    fn run(&self, source: &Source) -> Result<()> {
        match source {
            Source::Dir(root) => {
                let md = fs::metadata(root).map_err(|e| Error::io(root, e))?;
                if !md.is_dir() {
                    return Err(Error::invalid(format!(
                        "{} is not a directory",
                        root.display()
                    )));
                }
                let names = sorted_names(root).map_err(|e| Error::io(root, e))?;
                let prev =
                    self.opts.reuse.as_ref().and_then(|r| {
                        crate::snapshot::tree::read_dir(self.shared.repo, &r.tree).ok()
                    });
                self.dir_entries(root, &[], names, prev)
            }
            Source::Entries(paths) => {
                let mut named: Vec<(Vec<u8>, &PathBuf)> = Vec::new();
                for p in paths {
                    let name = p
                        .file_name()
                        .map(|n| n.as_bytes().to_vec())
                        .ok_or_else(|| {
                            Error::invalid(format!(
                                "{} has no file name to store it under: name a file or directory",
                                p.display()
                            ))
                        })?;
                    named.push((name, p));
                }
                named.sort();
                if let Some(w) = named.windows(2).find(|w| w[0].0 == w[1].0) {
                    return Err(Error::invalid(format!(
                        "{} and {} have the same name; back them up separately",
                        w[0].1.display(),
                        w[1].1.display()
                    )));
                }
                for (name, p) in named {
                    if let Err(e) = fs::symlink_metadata(p) {
                        return Err(Error::io(p, e));
                    }
                    self.entry(p, name.clone(), &name, None)?;
                }
                Ok(())
            }
        }
    }

    /// `prev`: this directory's entries in the previous tree, when reusing one.
    fn dir_entries(
        &self,
        dir: &Path,
        rel: &[u8],
        names: Vec<OsString>,
        prev: Option<Vec<Node>>,
    ) -> Result<()> {
        for name in names {
            if self.shared.aborted() {
                return Err(Error::Interrupted);
            }
            let nb = name.as_bytes().to_vec();
            let child_rel = crate::snapshot::join(rel, &nb);
            let before = prev.as_ref().and_then(|p| p.iter().find(|n| n.name == nb));
            self.entry(&dir.join(&name), nb, &child_rel, before)?;
        }
        Ok(())
    }

    fn entry(&self, path: &Path, name: Vec<u8>, rel: &[u8], before: Option<&Node>) -> Result<()> {
        let md = match fs::symlink_metadata(path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()), // vanished meanwhile
            Err(e) => return self.soft(path, rel, e.to_string()),
        };
        let ft = md.file_type();
        match self.opts.filter.as_ref().map(|f| f(rel, &md)) {
            None | Some(Filter::Keep) => {}
            Some(Filter::Exclude) => return Ok(()),
            Some(Filter::Skip(message)) => {
                return self.send(Event::Skipped(SoftError {
                    path: path.to_path_buf(),
                    rel: rel.to_vec(),
                    message,
                }));
            }
        }
        let normalize = self.opts.normalize;
        if !valid_name(&name) {
            return self.soft(
                path,
                rel,
                "name cannot be stored (longer than 1024 bytes)".into(),
            );
        }
        let progress = &self.shared.progress;
        if ft.is_dir()
            && let Some(reuse) = &self.opts.reuse
            && let Some(b) = before.filter(|b| b.is_dir())
            && !reuse.dirty_at_or_below(rel)
        {
            // Nothing touched this directory since the previous scan: take it whole.
            progress.dirs.fetch_add(1, Ordering::Relaxed);
            return self.send(Event::Entry(b.clone(), None));
        }
        if ft.is_dir() {
            let names = match sorted_names(path) {
                Ok(n) => n,
                Err(e) => return self.soft(path, rel, format!("cannot list directory: {e}")),
            };
            progress.dirs.fetch_add(1, Ordering::Relaxed);
            self.send(Event::Enter(base_node(
                name,
                &md,
                NodeKind::Dir {
                    subtree: BlobId::default(),
                },
                normalize,
            )))?;
            let prev = match (&self.opts.reuse, before.map(|b| &b.kind)) {
                (Some(_), Some(NodeKind::Dir { subtree })) => {
                    crate::snapshot::tree::read_dir(self.shared.repo, subtree).ok()
                }
                _ => None,
            };
            self.dir_entries(path, rel, names, prev)?;
            self.send(Event::Leave)
        } else if ft.is_symlink() {
            let target = match fs::read_link(path) {
                Ok(t) => t.as_os_str().as_bytes().to_vec(),
                Err(e) => return self.soft(path, rel, format!("cannot read symlink: {e}")),
            };
            if target.is_empty() || target.len() > crate::format::tree::SYMLINK_TARGET_LEN_MAX {
                return self.soft(
                    path,
                    rel,
                    "symlink target is empty or longer than 4096 bytes".into(),
                );
            }
            progress.files.fetch_add(1, Ordering::Relaxed);
            self.send(Event::Entry(
                base_node(name, &md, NodeKind::Symlink { target }, normalize),
                None,
            ))
        } else if ft.is_file() {
            let stat = stat_entry(&md);
            // Still being written: modified less than `recent` before the scan started, or
            // after it started.
            let young = |recent: Option<i64>| {
                recent.is_some_and(|r| stat.mtime_ns > self.shared.now_ns - r)
            };
            if young(self.opts.defer_recent_ns)
                || (stat.size == 0 && young(self.opts.defer_empty_recent_ns))
            {
                return self.send(Event::Deferred(rel.to_vec()));
            }
            let key = path.as_os_str().as_bytes().to_vec();
            let cached = self.cache.and_then(|c| c.get(&key));
            // Being rewritten in place: the size moved and the times did not. On Linux (ext4
            // here) a concurrent stat sees the file emptied by `open(O_TRUNC)` before the
            // truncation updates its mtime and ctime, so it looks old and empty (found by the
            // randomized test: empty files published, the state inside a program's truncate).
            // Such a file is looked at again a moment later: still moving, it is left for the
            // next scan; holding still, it is read (a file is never deferred for good).
            if self.shared.defer_changing
                && let Some(c) = cached.as_ref()
                && truncating(c, &stat, || {
                    std::thread::sleep(TRUNCATE_SETTLE);
                    fs::symlink_metadata(path).ok().map(|md| stat_entry(&md))
                })
            {
                return self.send(Event::Deferred(rel.to_vec()));
            }
            let node = base_node(
                name,
                &md,
                NodeKind::File {
                    size: stat.size,
                    content: Content::Direct(vec![]),
                },
                normalize,
            );
            let known = cached.as_ref().map(|c| c.ids.clone());
            if let Some(c) =
                cached.filter(|c| c.matches(&stat, self.opts.ignore_ctime, self.opts.ignore_inode))
                && c.ids
                    .iter()
                    .all(|id| self.shared.repo.has_blob(BlobKind::Data, id))
            {
                progress.files.fetch_add(1, Ordering::Relaxed);
                progress
                    .bytes_cached
                    .fetch_add(stat.size, Ordering::Relaxed);
                return self.send(Event::Entry(node, Some(FileContent::Cached(c.ids))));
            }
            let (tx, rx) = bounded(1);
            self.jobs
                .send(FileJob {
                    path: path.to_path_buf(),
                    stat: stat.clone(),
                    tx,
                })
                .map_err(|_| Error::Interrupted)?;
            self.send(Event::Entry(
                node,
                Some(FileContent::Pending {
                    rx,
                    stat,
                    key,
                    rel: rel.to_vec(),
                    known,
                }),
            ))
        } else {
            let what = if ft.is_fifo() {
                "named pipe"
            } else if ft.is_socket() {
                "socket"
            } else {
                "device file"
            };
            self.send(Event::Warning(SoftError {
                path: path.to_path_buf(),
                rel: rel.to_vec(),
                message: format!("skipped: {what}s are not stored"),
            }))
        }
    }
}

// ---- readers and compressors -------------------------------------------------------------------

/// Opens for reading without updating the access time where allowed (see
/// [`crate::sys::open_noatime`]): reading for a backup is not an access by the user, and an atime
/// update would wake every watcher of the folder (including our own daemon).
fn open_noatime(path: &Path) -> std::io::Result<File> {
    crate::sys::open_noatime(path)
}

fn reader(shared: &Shared, jobs: Receiver<FileJob>, store: Sender<StoreJob>) {
    let mut buf = Vec::new();
    for job in jobs {
        let outcome = if shared.aborted() {
            FileOutcome::Failed("interrupted".into())
        } else {
            read_file(shared, &job, &store, &mut buf)
        };
        let _ = job.tx.send(outcome);
    }
}

fn read_file(
    shared: &Shared,
    job: &FileJob,
    store: &Sender<StoreJob>,
    buf: &mut Vec<u8>,
) -> FileOutcome {
    let f = match open_noatime(&job.path) {
        Ok(f) => f,
        Err(e) => return FileOutcome::Failed(e.to_string()),
    };
    let keys = shared.repo.keys();
    let mut sc =
        StreamChunker::with_buffer(&shared.chunker, &f, std::mem::take(buf), job.stat.size);
    let mut ids = Vec::new();
    let mut size = 0u64;
    loop {
        match sc.next_chunk() {
            Ok(Some(chunk)) => {
                let id = keys.blob_id(chunk);
                size += chunk.len() as u64;
                shared
                    .progress
                    .bytes_read
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                shared.pace_read(chunk.len() as u64);
                let new = !shared.repo.has_blob(BlobKind::Data, &id)
                    && shared.claimed.lock().expect("lock").insert(id);
                if new
                    && store
                        .send(StoreJob {
                            id,
                            data: shared.buffers.filled_with(chunk),
                        })
                        .is_err()
                {
                    *buf = sc.into_buffer();
                    return FileOutcome::Failed("interrupted".into());
                }
                ids.push(id);
            }
            Ok(None) => break,
            Err(e) => {
                *buf = sc.into_buffer();
                return FileOutcome::Failed(format!("read failed: {e}"));
            }
        }
    }
    *buf = sc.into_buffer();
    // Any sign of a write during the read: the bytes read may mix two versions.
    let changed = match f.metadata() {
        Ok(md) => {
            let now = stat_entry(&md);
            now.size != job.stat.size
                || now.mtime_ns != job.stat.mtime_ns
                || now.ctime_ns != job.stat.ctime_ns
                || now.ino != job.stat.ino
                || size != job.stat.size
        }
        Err(_) => true,
    };
    shared.progress.files.fetch_add(1, Ordering::Relaxed);
    FileOutcome::Read { ids, size, changed }
}

/// The data pack being filled, shared by the compressors so that at most one is open at a time
/// (memory: one open pack, one being handed over, one being stored).
struct OpenPack {
    writer: Mutex<Option<PackWriter>>,
    /// The bytes of the last pack stored, reused for the next one.
    spare: Mutex<Option<Vec<u8>>>,
    /// Compressors still running; the last one out seals the final pack.
    running: AtomicUsize,
}

fn compressor(
    shared: &Shared,
    open: &OpenPack,
    jobs: Receiver<StoreJob>,
    packs: Sender<FinishedPack>,
) {
    let repo = shared.repo;
    let target = repo.config().pack_target_bytes as usize;
    let mut z = Compressors::new(repo.config().zstd_level as i32);
    let mut out = Vec::new();
    for job in jobs {
        if shared.aborted() {
            continue;
        }
        let raw_len = job.data.len();
        let compressed = compress_into(z.for_len(raw_len), &job.data, &mut out);
        let body = if compressed { &out[..] } else { &job.data[..] };
        let stored = (body.len() + TAG_LEN + BLOB_HEADER_LEN) as u64;
        let mut slot = open.writer.lock().expect("lock");
        let w = slot.get_or_insert_with(|| {
            let buf = open.spare.lock().expect("lock").take();
            let buf = buf.unwrap_or_else(|| Vec::with_capacity(target + (1 << 20)));
            PackWriter::reusing(repo.keys(), BlobKind::Data, buf)
        });
        w.add_slice(job.id, raw_len, compressed, body);
        shared.blobs_added.fetch_add(1, Ordering::Relaxed);
        shared
            .bytes_added_raw
            .fetch_add(raw_len as u64, Ordering::Relaxed);
        shared
            .bytes_added_stored
            .fetch_add(stored, Ordering::Relaxed);
        shared
            .progress
            .bytes_stored
            .fetch_add(stored, Ordering::Relaxed);
        if w.len() >= target {
            let p = slot.take().expect("pack").finish();
            // Handed over while holding the slot: the other compressors wait instead of
            // opening more packs than the uploader can take.
            if packs.send(p).is_err() {
                return;
            }
        }
        drop(slot);
        shared.buffers.give_back(job.data);
    }
    if open.running.fetch_sub(1, Ordering::SeqCst) == 1 {
        let last = open.writer.lock().expect("lock").take();
        if let Some(w) = last.filter(|w| !w.is_empty())
            && !shared.aborted()
        {
            let _ = packs.send(w.finish());
        }
    }
}

// ---- tree builder --------------------------------------------------------------------------------

struct Built {
    tree: BlobId,
    packs: Vec<IndexPack>,
    summary: Summary,
    errors: Vec<SoftError>,
    warnings: Vec<SoftError>,
    skipped: Vec<SoftError>,
    deferred: Vec<Vec<u8>>,
    cache_updates: PendingUpdates,
}

fn build(shared: &Shared, events: Receiver<Event>, spill_dir: Option<&Path>) -> Result<Built> {
    let mut packer = Packer::new(shared.repo);
    let mut stack: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut root: Vec<Node> = Vec::new();
    let mut summary = Summary::default();
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let mut cache_updates = PendingUpdates::new(spill_dir);
    let mut skipped = Vec::new();
    let mut deferred = Vec::new();
    for ev in events {
        match ev {
            Event::Enter(node) => stack.push((node, Vec::new())),
            Event::Leave => {
                let (mut node, children) = stack.pop().ok_or(Error::Interrupted)?;
                node.kind = NodeKind::Dir {
                    subtree: write_dir(&mut packer, children)?,
                };
                summary.dirs += 1;
                stack
                    .last_mut()
                    .map(|s| &mut s.1)
                    .unwrap_or(&mut root)
                    .push(node);
            }
            Event::Entry(mut node, content) => {
                match content {
                    None => {}
                    Some(FileContent::Cached(ids)) => {
                        summary.files_unchanged += 1;
                        summary.total_bytes += node.size();
                        let size = node.size();
                        node.kind = NodeKind::File {
                            size,
                            content: write_content(&mut packer, ids)?,
                        };
                    }
                    Some(FileContent::Pending {
                        rx,
                        mut stat,
                        key,
                        rel,
                        known,
                    }) => {
                        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&key));
                        match rx.recv().map_err(|_| Error::Interrupted)? {
                            FileOutcome::Read { ids, size, changed } => {
                                if changed && shared.defer_changing {
                                    deferred.push(rel);
                                    continue;
                                }
                                if changed {
                                    warnings.push(SoftError {
                                        path,
                                        rel,
                                        message: "changed while it was read; stored as read".into(),
                                    });
                                } else {
                                    stat.racy = shared.racy(&stat);
                                    stat.ids = ids.clone();
                                    cache_updates.push(&key, &stat);
                                }
                                match known {
                                    Some(k) if k == ids => summary.files_unchanged += 1,
                                    Some(_) => summary.files_changed += 1,
                                    None => summary.files_new += 1,
                                }
                                summary.total_bytes += size;
                                node.kind = NodeKind::File {
                                    size,
                                    content: write_content(&mut packer, ids)?,
                                };
                            }
                            FileOutcome::Failed(msg) => {
                                if shared.aborted() {
                                    return Err(Error::Interrupted);
                                }
                                shared.progress.errors.fetch_add(1, Ordering::Relaxed);
                                errors.push(SoftError {
                                    path,
                                    rel,
                                    message: msg,
                                });
                                continue;
                            }
                        }
                    }
                }
                stack
                    .last_mut()
                    .map(|s| &mut s.1)
                    .unwrap_or(&mut root)
                    .push(node);
            }
            Event::Error(e) => errors.push(e),
            Event::Warning(w) => warnings.push(w),
            Event::Skipped(w) => skipped.push(w),
            Event::Deferred(rel) => deferred.push(rel),
        }
    }
    if shared.aborted() || !stack.is_empty() {
        return Err(Error::Interrupted);
    }
    let tree = write_dir(&mut packer, root)?;
    let stats = packer.stats;
    summary.blobs_added += stats.blobs_added;
    summary.bytes_added_raw += stats.bytes_added_raw;
    summary.bytes_added_stored += stats.bytes_added_stored;
    summary.errors = errors.len() as u64;
    let packs = packer.finish()?;
    Ok(Built {
        tree,
        packs,
        summary,
        errors,
        warnings,
        skipped,
        deferred,
        cache_updates,
    })
}

// ---- backup ----------------------------------------------------------------------------------------

#[derive(Clone, Default)]
pub struct BackupOptions {
    pub archive: ArchiveOptions,
    pub host: Option<String>,
    pub tags: Vec<String>,
    /// Parents to record; `None` = the newest snapshot of the same host and paths.
    pub parents: Option<Vec<SnapshotId>>,
    pub sync_set: Option<String>,
    pub endpoint: Option<String>,
}

pub struct BackupReport {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub errors: Vec<SoftError>,
    pub warnings: Vec<SoftError>,
}

/// The source a list of backup paths describes: one directory becomes the root; anything else
/// is placed in the root under its base name.
pub fn source_for(paths: &[PathBuf]) -> Result<(Source, Vec<PathBuf>)> {
    if paths.is_empty() {
        return Err(Error::invalid("nothing to back up: name at least one PATH"));
    }
    let mut abs = Vec::new();
    for p in paths {
        let a = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
        let a: PathBuf = a.components().collect(); // normalizes `a/./b` and trailing slashes
        fs::symlink_metadata(&a).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::invalid(format!("{} does not exist: check the path", p.display()))
            }
            _ => Error::io(&a, e),
        })?;
        abs.push(a);
    }
    let single_dir = abs.len() == 1 && fs::metadata(&abs[0]).map(|m| m.is_dir()).unwrap_or(false);
    let src = if single_dir {
        Source::Dir(abs[0].clone())
    } else {
        Source::Entries(abs.clone())
    };
    Ok((src, abs))
}

/// A backup: archive, then index, then snapshot (the commit), then the file cache.
pub fn backup(repo: &Repository, paths: &[PathBuf], opts: &BackupOptions) -> Result<BackupReport> {
    let started = Instant::now();
    let time_ns = now_ns();
    let (source, abs) = source_for(paths)?;
    let session = Session::begin(repo, "backup")?;
    let host = opts.host.clone().unwrap_or_else(hostname);
    let path_bytes: Vec<Vec<u8>> = abs
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    // The index (after the session: prune's rule) and the parent snapshot, side by side.
    let (index, parents) = std::thread::scope(|s| {
        let index = s.spawn(|| repo.load_index());
        let parents = match &opts.parents {
            Some(p) => Ok(p.clone()),
            None => repo.snapshots_lenient().map(|(snaps, _)| {
                snaps
                    .iter()
                    .rev()
                    .find(|(_, s)| {
                        s.host == host && s.paths == path_bytes && s.sync_set == opts.sync_set
                    })
                    .map(|(id, _)| vec![*id])
                    .unwrap_or_default()
            }),
        };
        (index.join().expect("index loader"), parents)
    });
    index?;
    let parents = parents?;
    let result = archive(repo, &source, &opts.archive)?;
    repo.write_index(result.packs.clone(), vec![], vec![])?;
    let mut summary = result.summary.clone();
    summary.duration_ns = started.elapsed().as_nanos() as u64;
    let snapshot = Snapshot {
        time_ns,
        tree: result.tree,
        host,
        user: username(),
        paths: path_bytes,
        tags: opts.tags.clone(),
        parents,
        sync_set: opts.sync_set.clone(),
        endpoint: opts.endpoint.clone(),
        summary,
        program_version: concat!("prism-sync ", env!("CARGO_PKG_VERSION")).to_string(),
        extra: vec![],
    };
    let id = repo.save_snapshot(&snapshot)?;
    session.end()?;
    // The cache is only a speed-up: failing to write it must not fail a committed backup.
    let mut warnings = result.warnings.clone();
    if let Err(e) = result.save_cache() {
        warnings.push(SoftError {
            rel: Vec::new(),
            path: PathBuf::from("(file cache)"),
            message: e.to_string(),
        });
    }
    Ok(BackupReport {
        id,
        snapshot,
        errors: result.errors.clone(),
        warnings,
    })
}

#[cfg(test)]
mod truncating_tests {
    use super::{CacheEntry, truncating};

    fn e(size: u64, mtime_ns: i64, ctime_ns: i64) -> CacheEntry {
        CacheEntry {
            size,
            mtime_ns,
            ctime_ns,
            ino: 7,
            dev: 1,
            racy: false,
            ids: vec![],
        }
    }

    #[test]
    fn a_file_emptied_with_its_old_times_and_moving_is_in_a_truncation() {
        let known = e(1000, 5, 5);
        let now = e(0, 5, 5);
        // A moment later the truncation completed (times moved) or the content is there.
        assert!(truncating(&known, &now, || Some(e(0, 9, 9))));
        assert!(truncating(&known, &now, || Some(e(1200, 9, 9))));
        assert!(truncating(&known, &now, || None));
        // Holding still: read it (never deferred for good), after up to ten looks while empty
        // and one otherwise.
        let mut looks = 0;
        assert!(!truncating(&known, &now, || {
            looks += 1;
            Some(e(0, 5, 5))
        }));
        assert_eq!(looks, super::EMPTIED_LOOKS);
        let mut looks = 0;
        assert!(!truncating(&known, &e(400, 5, 5), || {
            looks += 1;
            Some(e(400, 5, 5))
        }));
        assert_eq!(looks, 1);
    }

    #[test]
    fn a_slow_truncation_is_caught_by_a_later_look() {
        let known = e(1_733_419, 5, 5);
        let mut looks = 0;
        assert!(truncating(&known, &e(0, 5, 5), || {
            looks += 1;
            Some(if looks < 4 { e(0, 5, 5) } else { e(0, 9, 9) })
        }));
        assert_eq!(looks, 4, "stops at the first look that sees it move");
    }

    #[test]
    fn a_completed_change_is_not_looked_at_twice() {
        let known = e(1000, 5, 5);
        let mut looked = false;
        assert!(!truncating(&known, &e(0, 9, 9), || {
            looked = true;
            None
        }));
        assert!(!truncating(&known, &e(1000, 5, 5), || {
            looked = true;
            None
        }));
        assert!(!looked);
    }
}
