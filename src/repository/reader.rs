//! Reading many blobs at once — a restore, a sync step applying new files — at the speed of the
//! link instead of one round trip per blob.
//!
//! Owns: how blob bytes are fetched. Must not touch: where they are written (the restorer and
//! the sync apply consume blobs in order and write them through their own layer).
//!
//! Two halves, as a plan and its execution:
//! - [`plan_reads`] (pure): the blobs a consumer needs, located in the index, are grouped by pack,
//!   sorted by offset, and neighbouring ones (gap at most [`ReadOptions::gap_bytes_max`]) are
//!   coalesced into one ranged read of at most [`ReadOptions::range_bytes_max`]; the reads are
//!   ordered by the first moment the consumer needs one of their blobs.
//! - [`with_prefetch`]: up to [`ReadOptions::concurrency`] reads in flight (the backend's
//!   connections); a fetched read's sealed bytes stay until every blob in it has been taken. The
//!   consumer takes its files' blobs in order through [`Prefetch::file`], blocks only on a blob
//!   not fetched yet, and opens each (decrypts, decompresses, checks the id) on its own thread.
//!   Memory is bounded: a read starts only while the bytes in flight and fetched-but-not-taken
//!   stay within [`ReadOptions::buffer_bytes_max`] — except a read the consumer is waiting for,
//!   which always starts (so a full buffer of blobs needed later can never stall the consumer;
//!   the overshoot is at most one read per consumer thread).
//!
//! A blob needed several times (duplicate files, repeated chunks) is fetched once and kept until
//! its last use. A failed read fails only the blobs in it (their files report the error; the
//! rest goes on). Works the same over every backend: S3 and REST get ranged GETs, a directory
//! gets `pread`s.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::Repository;
use crate::backend::Kind;
use crate::error::{Error, Result};
use crate::format::pack::{BlobEntry, BlobKind};
use crate::id::{BlobId, PackId};

/// Blobs of one pack separated by at most this many unneeded bytes are read in one request: at
/// 40 ms round trip and 200 Mbit/s one round trip costs ~1 MB of transfer, so reading a gap of a
/// quarter of that is cheaper than another request.
pub const COALESCE_GAP_BYTES: u64 = 256 << 10;
/// One ranged read covers at most this many bytes (one blob bigger than that is read alone):
/// long enough that a request's round trip is small beside its transfer, short enough to spread
/// a pack over several connections.
pub const RANGE_BYTES_MAX: u64 = 4 << 20;
/// Bytes in flight plus fetched but not yet taken, at most, per read in flight (see the module
/// docs): half keeps every connection busy (8 connections on a 200 Mbit/s, 40 ms link need
/// ~32 MiB in flight), half lets blobs fetched ahead of their file wait without stalling the
/// reads. 64 MiB for a remote repository's 8 connections, 32 MiB for a directory.
pub const BUFFER_BYTES_PER_READ: u64 = 2 * RANGE_BYTES_MAX;
/// Env var overriding the buffer ([`BUFFER_BYTES_PER_READ`] × reads in flight), in MiB.
pub const READ_BUFFER_ENV: &str = "PRISM_SYNC_READ_BUFFER_MIB";

#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    pub gap_bytes_max: u64,
    pub range_bytes_max: u64,
    /// Reads in flight at once.
    pub concurrency: usize,
    pub buffer_bytes_max: u64,
}

impl ReadOptions {
    /// The defaults, with as many reads in flight as the repository's backend takes
    /// (`PRISM_SYNC_READ_BUFFER_MIB` overrides the buffer, for tuning on unusual links).
    pub fn for_repo(repo: &Repository) -> Self {
        let buffer = std::env::var(READ_BUFFER_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        let concurrency = repo.backend().parallelism().max(1);
        ReadOptions {
            gap_bytes_max: COALESCE_GAP_BYTES,
            range_bytes_max: RANGE_BYTES_MAX,
            concurrency,
            buffer_bytes_max: buffer.map_or(BUFFER_BYTES_PER_READ * concurrency as u64, |mib| {
                mib.clamp(4, 4096) << 20
            }),
        }
    }
}

/// A blob to read: where it is, and the consumer's position of its first use.
#[derive(Debug, Clone)]
pub struct Located {
    pub first_use: usize,
    pub pack: PackId,
    pub salt: [u8; 32],
    pub entry: BlobEntry,
}

/// One ranged read of a pack, covering neighbouring blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRead {
    pub pack: PackId,
    pub salt: [u8; 32],
    pub offset: u64,
    pub length: u64,
    /// The blobs inside, by offset.
    pub blobs: Vec<BlobEntry>,
    /// The earliest position at which the consumer needs one of them.
    pub first_use: usize,
}

/// Groups located blobs into ranged reads (see the module docs); the result is ordered by
/// `first_use`, then pack and offset.
pub fn plan_reads(mut located: Vec<Located>, opts: &ReadOptions) -> Vec<PlannedRead> {
    located.sort_by(|a, b| {
        a.pack
            .cmp(&b.pack)
            .then(a.entry.offset.cmp(&b.entry.offset))
    });
    let mut reads: Vec<PlannedRead> = Vec::new();
    for l in located {
        let (off, len) = (l.entry.offset as u64, l.entry.length as u64);
        if let Some(r) = reads.last_mut()
            && r.pack == l.pack
        {
            let end = r.offset + r.length;
            // Overlapping or repeated entries cannot occur in a valid pack; never merge them.
            let joinable = off >= end
                && off - end <= opts.gap_bytes_max
                && off + len - r.offset <= opts.range_bytes_max;
            if joinable {
                r.length = off + len - r.offset;
                r.first_use = r.first_use.min(l.first_use);
                r.blobs.push(l.entry);
                continue;
            }
        }
        reads.push(PlannedRead {
            pack: l.pack,
            salt: l.salt,
            offset: off,
            length: len,
            blobs: vec![l.entry],
            first_use: l.first_use,
        });
    }
    reads.sort_by(|a, b| {
        a.first_use
            .cmp(&b.first_use)
            .then(a.pack.cmp(&b.pack))
            .then(a.offset.cmp(&b.offset))
    });
    reads
}

/// A planned blob's fate, kept until its last use.
enum Slot {
    /// In this planned read; fetched if `State::ranges` has its bytes.
    In(usize),
    /// Its read failed.
    Failed(Error),
}

struct BlobState {
    slot: Slot,
    entry: BlobEntry,
    /// Uses the consumer has not taken (or released) yet.
    uses: u32,
}

struct State {
    blobs: HashMap<BlobId, BlobState>,
    started: Vec<bool>,
    /// The sealed bytes of each fetched read, kept until every blob in it has been taken (the
    /// consumer opens its blobs: decrypting and decompressing happen on the consumer's threads
    /// and memory holds compressed, sealed bytes only).
    ranges: Vec<Option<Arc<Vec<u8>>>>,
    /// Blobs still wanted from each read.
    holders: Vec<usize>,
    /// The next read, in plan order, that may not have started.
    next: usize,
    /// Reads the consumer is waiting for.
    urgent: Vec<usize>,
    /// Bytes of reads in flight plus fetched reads still held.
    buffered: u64,
    /// The consumer is done: fetchers stop.
    done: bool,
}

/// Blobs being fetched for a consumer; see [`with_prefetch`].
pub struct Prefetch<'r> {
    repo: &'r Repository,
    kind: BlobKind,
    files: Vec<Vec<BlobId>>,
    reads: Vec<PlannedRead>,
    opts: ReadOptions,
    state: Mutex<State>,
    wake: Condvar,
}

/// A copy of an error for a second user of a failed blob (errors are not `Clone`: I/O errors).
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Missing { object } => Error::Missing {
            object: object.clone(),
        },
        Error::Corrupt { object, detail } => Error::Corrupt {
            object: object.clone(),
            detail: detail.clone(),
        },
        Error::Backend(b) => Error::Backend(b.clone()),
        other => Error::invalid(other.to_string()),
    }
}

/// Plans reads of the blobs of `files` (each a list of blob ids, consumed file after file, each
/// file's blobs in order), fetches them on background threads, and runs `consume` with access
/// to them. Returns what `consume` returns; the fetchers stop when it does.
pub fn with_prefetch<R>(
    repo: &Repository,
    kind: BlobKind,
    files: Vec<Vec<BlobId>>,
    opts: ReadOptions,
    consume: impl FnOnce(&Prefetch) -> R,
) -> R {
    let mut blobs: HashMap<BlobId, BlobState> = HashMap::new();
    let mut located = Vec::new();
    let mut first_use: HashMap<BlobId, usize> = HashMap::new();
    let mut pos = 0usize;
    for ids in &files {
        for id in ids {
            first_use.entry(*id).or_insert(pos);
            pos += 1;
        }
    }
    for (id, first) in first_use {
        // A blob the index does not know is left to the consumer's direct read, which reports
        // it as missing.
        let Some((pack, salt, entry, _)) = repo.locate(kind, &id) else {
            continue;
        };
        blobs.insert(
            id,
            BlobState {
                slot: Slot::In(usize::MAX),
                entry,
                uses: 0,
            },
        );
        located.push(Located {
            first_use: first,
            pack,
            salt,
            entry,
        });
    }
    for ids in &files {
        for id in ids {
            if let Some(b) = blobs.get_mut(id) {
                b.uses += 1;
            }
        }
    }
    let reads = plan_reads(located, &opts);
    let mut holders = vec![0usize; reads.len()];
    for (i, r) in reads.iter().enumerate() {
        for e in &r.blobs {
            if let Some(b) = blobs.get_mut(&e.id) {
                b.slot = Slot::In(i);
                holders[i] += 1;
            }
        }
    }
    let n = reads.len();
    let pf = Prefetch {
        repo,
        kind,
        files,
        reads,
        opts,
        state: Mutex::new(State {
            blobs,
            started: vec![false; n],
            ranges: vec![None; n],
            holders,
            next: 0,
            urgent: Vec::new(),
            buffered: 0,
            done: false,
        }),
        wake: Condvar::new(),
    };
    let threads = pf.opts.concurrency.clamp(1, n.max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| pf.fetcher());
        }
        let r = consume(&pf);
        pf.lock().done = true;
        pf.wake.notify_all();
        r
    })
}

impl Prefetch<'_> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("prefetch state")
    }

    /// How many reads the plan has (for tests and progress).
    pub fn planned_reads(&self) -> usize {
        self.reads.len()
    }

    /// The blobs of file `i` (as passed to [`with_prefetch`]), in order. Blobs not taken when
    /// the iterator is dropped are released (a file that failed or was skipped).
    pub fn file(&self, i: usize) -> FileBlobs<'_> {
        FileBlobs {
            pf: self,
            ids: self.files.get(i).map(Vec::as_slice).unwrap_or(&[]),
            pos: 0,
        }
    }

    /// The next read to start, marked started (under the same lock: two fetchers never take
    /// one read); `None` when the fetcher should wait.
    fn pick(&self, st: &mut State) -> Option<usize> {
        let i = self.next_read(st)?;
        st.started[i] = true;
        st.buffered += self.reads[i].length;
        Some(i)
    }

    fn next_read(&self, st: &mut State) -> Option<usize> {
        while let Some(i) = st.urgent.pop() {
            if !st.started[i] {
                return Some(i);
            }
        }
        while st.next < self.reads.len() {
            let i = st.next;
            if st.started[i] {
                st.next += 1;
                continue;
            }
            // Nobody needs this read any more (its files were skipped): drop it.
            if st.holders[i] == 0 {
                st.started[i] = true;
                st.next += 1;
                continue;
            }
            let len = self.reads[i].length;
            if st.buffered == 0 || st.buffered + len <= self.opts.buffer_bytes_max {
                return Some(i);
            }
            return None;
        }
        None
    }

    fn fetcher(&self) {
        loop {
            let i = {
                let mut st = self.lock();
                loop {
                    if st.done {
                        return;
                    }
                    if let Some(i) = self.pick(&mut st) {
                        break i;
                    }
                    if st.next >= self.reads.len() && st.urgent.is_empty() {
                        return; // every read has started
                    }
                    st = self.wake.wait(st).expect("prefetch state");
                }
            };
            let read = &self.reads[i];
            let r = self.repo.backend().read_range(
                Kind::Pack,
                &read.pack.to_hex(),
                read.offset,
                read.length,
            );
            let mut st = self.lock();
            match r {
                Ok(bytes) if st.holders[i] > 0 => st.ranges[i] = Some(Arc::new(bytes)),
                Ok(_) => st.buffered -= read.length, // every blob of it was released meanwhile
                Err(err) => {
                    st.buffered -= read.length;
                    st.holders[i] = 0;
                    for e in &read.blobs {
                        if let Some(b) = st.blobs.get_mut(&e.id) {
                            let what = format!("{} blob {}", self.kind.name(), e.id.short());
                            b.slot =
                                Slot::Failed(super::missing_pack(err.clone(), &read.pack, &what));
                        }
                    }
                }
            }
            drop(st);
            self.wake.notify_all();
        }
    }

    /// One use of a blob is over: the blob, and then its read's bytes, may go.
    fn used(&self, st: &mut State, id: &BlobId) {
        let Some(b) = st.blobs.get_mut(id) else {
            return;
        };
        b.uses = b.uses.saturating_sub(1);
        if b.uses > 0 {
            return;
        }
        let Some(BlobState { slot, .. }) = st.blobs.remove(id) else {
            return;
        };
        if let Slot::In(r) = slot
            && r < st.holders.len()
        {
            st.holders[r] = st.holders[r].saturating_sub(1);
            if st.holders[r] == 0 && st.ranges[r].take().is_some() {
                st.buffered -= self.reads[r].length;
            }
        }
    }

    /// Takes one use of a blob, waiting for its read if needed, and opens it (on this thread).
    fn take(&self, id: &BlobId) -> Result<Vec<u8>> {
        let mut st = self.lock();
        let (range, read, entry) = loop {
            let Some(b) = st.blobs.get(id) else {
                drop(st);
                return self.repo.read_blob(self.kind, id);
            };
            match &b.slot {
                Slot::Failed(e) => {
                    let e = copy_error(e);
                    self.used(&mut st, id);
                    return Err(e);
                }
                Slot::In(r) => {
                    let (r, entry) = (*r, b.entry);
                    if let Some(range) = st.ranges[r].clone() {
                        break (range, r, entry);
                    }
                    if !st.started[r] && !st.urgent.contains(&r) {
                        st.urgent.push(r);
                        self.wake.notify_all();
                    }
                    st = self.wake.wait(st).expect("prefetch state");
                }
            }
        };
        self.used(&mut st, id);
        drop(st);
        self.wake.notify_all();
        let p = &self.reads[read];
        let what = format!("{} blob {}", self.kind.name(), id.short());
        let start = (entry.offset as u64 - p.offset) as usize;
        match range.get(start..start + entry.length as usize) {
            Some(sealed) => self.repo.open_blob(&p.pack, &p.salt, &entry, sealed, &what),
            None => Err(Error::corrupt(
                format!("pack {}", p.pack.short()),
                "shorter than the index says",
            )),
        }
    }

    /// Gives up uses of blobs that will not be taken.
    fn release(&self, ids: &[BlobId]) {
        if ids.is_empty() {
            return;
        }
        let mut st = self.lock();
        for id in ids {
            self.used(&mut st, id);
        }
        drop(st);
        self.wake.notify_all();
    }
}

/// One file's blobs, in order (see [`Prefetch::file`]).
pub struct FileBlobs<'p> {
    pf: &'p Prefetch<'p>,
    ids: &'p [BlobId],
    pos: usize,
}

impl Iterator for FileBlobs<'_> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let id = self.ids.get(self.pos)?;
        self.pos += 1;
        Some(self.pf.take(id))
    }
}

impl Drop for FileBlobs<'_> {
    fn drop(&mut self) {
        self.pf.release(&self.ids[self.pos..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(first_use: usize, pack: u8, offset: u32, length: u32) -> Located {
        Located {
            first_use,
            pack: PackId([pack; 32]),
            salt: [0; 32],
            entry: BlobEntry {
                kind: BlobKind::Data,
                compressed: false,
                offset,
                length,
                raw_length: length,
                id: BlobId([(offset % 251) as u8; 32]),
            },
        }
    }

    fn opts(gap: u64, range: u64) -> ReadOptions {
        ReadOptions {
            gap_bytes_max: gap,
            range_bytes_max: range,
            concurrency: 4,
            buffer_bytes_max: 1 << 30,
        }
    }

    #[test]
    fn neighbours_coalesce_within_the_gap_and_the_range_limit() {
        let located = vec![
            at(5, 1, 1000, 100),
            at(0, 1, 0, 100),
            at(1, 1, 150, 100), // gap 50
            at(2, 1, 600, 100), // gap 350: too far for a 300-byte gap
            at(3, 2, 0, 100),   // another pack
        ];
        let reads = plan_reads(located, &opts(300, 10_000));
        let spans: Vec<(u8, u64, u64, usize, usize)> = reads
            .iter()
            .map(|r| (r.pack.0[0], r.offset, r.length, r.blobs.len(), r.first_use))
            .collect();
        assert_eq!(
            spans,
            vec![(1, 0, 250, 2, 0), (1, 600, 500, 2, 2), (2, 0, 100, 1, 3)]
        );
        // A range limit cuts runs of adjacent blobs.
        let located = (0..10).map(|i| at(i, 1, i as u32 * 100, 100)).collect();
        let reads = plan_reads(located, &opts(0, 300));
        assert_eq!(reads.len(), 4);
        assert!(reads.iter().all(|r| r.length <= 300));
        // A blob bigger than the range limit is read alone.
        let reads = plan_reads(vec![at(0, 1, 0, 1000)], &opts(0, 300));
        assert_eq!(reads[0].length, 1000);
    }
}
