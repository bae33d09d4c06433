//! `prune`: reclaims the space of blobs no snapshot uses, without locks.
//!
//! Safety rule (see `format-spec/repository.md`, "Prune and concurrent writers"): a pack is only
//! deleted when no writer that could refer to it is still running. Prune first *marks* unused
//! packs in a new index (writers stop deduplicating against marked packs as soon as they load
//! that index), then lists live sessions. Marked packs are deleted in this run only if no session
//! was live; otherwise the mark records the live sessions and a later prune deletes the pack once
//! they have all ended (or gone stale). Right before deleting, snapshots committed meanwhile are
//! read, and any pack they use is kept ("recovered").

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use super::prune_plan::{self, PlanLimits, PrunePlan, Settlement};
use crate::backend::Kind;
use crate::error::{Error, Result};
use crate::format::index::{DeletionMark, IndexFile, IndexPack};
use crate::id::{IndexId, PackId, SnapshotId};
use crate::repository::index::Index;
use crate::repository::reader::{Located, ReadOptions, plan_reads};
use crate::repository::session::{self, Session, list_sessions};
use crate::repository::{PACK_TARGET_BYTES, Packer, Repository, now_ns};
use crate::snapshot::tree::Reachable;

pub use prune_plan::{COMPACT_MIN_PACKS, WAIT_UNKNOWN};

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack partly used packs until unused space is at most this share of the repository.
    pub max_unused_percent: f64,
    /// Compaction: when at least [`COMPACT_MIN_PACKS`] packs of one kind are smaller than this,
    /// they are all repacked into full ones (0: off). Steps write small packs; this keeps their
    /// number O(data / pack size).
    pub compact_below_bytes: u64,
    pub dry_run: bool,
}

/// Packs below a quarter of the target size are "small" for compaction.
pub const COMPACT_BELOW_BYTES: u64 = PACK_TARGET_BYTES / 4;

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: 5.0,
            compact_below_bytes: 0,
            dry_run: false,
        }
    }
}

/// What prune does now, in order (for a progress display; see [`PruneProgress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrunePhase {
    /// Reading the index files and listing the snapshots.
    ReadIndex,
    /// Walking every snapshot's trees for the blobs in use (counts snapshots).
    FindUsed,
    /// Copying the used blobs of packs that go (counts packs and their bytes).
    Repack,
    /// Writing the index, listing sessions, reading snapshots committed meanwhile.
    Settle,
    /// Deleting packs (counts packs and their bytes).
    Delete,
}

impl PrunePhase {
    const ALL: [PrunePhase; 5] = [
        PrunePhase::ReadIndex,
        PrunePhase::FindUsed,
        PrunePhase::Repack,
        PrunePhase::Settle,
        PrunePhase::Delete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PrunePhase::ReadIndex => "read index and snapshots",
            PrunePhase::FindUsed => "find used data",
            PrunePhase::Repack => "repack",
            PrunePhase::Settle => "write index",
            PrunePhase::Delete => "delete",
        }
    }
}

/// Prune's counters for a progress display: the phase, and within it items (snapshots, packs)
/// and bytes done against their totals. Written by prune, read by anyone.
#[derive(Debug, Default)]
pub struct PruneProgress {
    /// Read the packs it repacks at most this fast (bytes per second); `None`: as fast as
    /// they come.
    pub read_bytes_per_s: Option<u64>,
    phase: AtomicU8,
    pub done: AtomicU64,
    pub total: AtomicU64,
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
}

impl PruneProgress {
    /// Counters for a prune that reads at most `read_bytes_per_s` (`None`: unlimited).
    pub fn limited(read_bytes_per_s: Option<u64>) -> Self {
        PruneProgress {
            read_bytes_per_s,
            ..Default::default()
        }
    }

    pub fn phase(&self) -> PrunePhase {
        let i = self.phase.load(Ordering::Relaxed) as usize;
        PrunePhase::ALL[i.min(PrunePhase::ALL.len() - 1)]
    }

    /// Enters `phase`, whose work is `total` items of `bytes_total` bytes.
    fn enter(&self, phase: PrunePhase, total: u64, bytes_total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.bytes_done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.bytes_total.store(bytes_total, Ordering::Relaxed);
        let i = PrunePhase::ALL
            .iter()
            .position(|p| *p == phase)
            .unwrap_or(0);
        self.phase.store(i as u8, Ordering::Relaxed);
    }

    fn tick(&self, bytes: u64) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[derive(Debug, Default, Clone)]
pub struct PruneReport {
    pub packs_total: usize,
    pub bytes_total: u64,
    pub blobs_unused: usize,
    pub packs_repacked: usize,
    pub bytes_repacked: u64,
    /// Of the packs repacked, those taken because they were small (compaction).
    pub packs_compacted: usize,
    /// Index files read (and replaced by one).
    pub index_files: usize,
    pub packs_marked: usize,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    pub packs_deferred: usize,
    pub packs_recovered: usize,
    pub orphans_deleted: usize,
    pub live_sessions: usize,
}

/// Everything reachable from the given snapshots; any unreadable tree aborts prune, because
/// deleting data a damaged snapshot might still need is not recoverable.
fn reachable(
    repo: &Repository,
    snaps: &[(SnapshotId, crate::snapshot::Snapshot)],
    reach: &mut Reachable,
    progress: &PruneProgress,
) -> Result<()> {
    for (id, s) in snaps {
        progress.tick(0);
        let mut first: Option<Error> = None;
        reach.add_tree(repo, &s.tree, &mut |_, e| {
            first.get_or_insert(e);
        });
        if let Some(e) = first {
            return Err(Error::invalid(format!(
                "snapshot {} cannot be read completely ({e}); prune stops so it deletes nothing that snapshot may need: run `prism-sync check`",
                id.short()
            )));
        }
    }
    Ok(())
}

/// Prunes: reads the index and every snapshot, [plans](prune_plan::plan), repacks, writes one
/// consolidated index with the new marks, [settles](prune_plan::settle) the marks against the
/// live sessions and the snapshots committed meanwhile, then writes the final index and deletes.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    prune_with_progress(repo, opts, &PruneProgress::default())
}

/// [`prune`], counting its work into `progress`.
pub fn prune_with_progress(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &PruneProgress,
) -> Result<PruneReport> {
    progress.enter(PrunePhase::ReadIndex, 0, 0);
    let session = Session::begin(repo, "prune")?;
    let own = session.info.id;
    let (files, errors) = repo.index_files_lenient()?;
    if let Some(e) = errors.into_iter().next() {
        return Err(Error::invalid(format!(
            "{e}; prune needs every index file: run `prism-sync check`"
        )));
    }
    let old_files: Vec<IndexId> = files.iter().map(|(id, _)| *id).collect();
    let full: Vec<IndexPack> = collect_packs(&files);
    let old_marks: HashMap<PackId, DeletionMark> = Index::from_files(files.clone()).marks().clone();
    let index = repo.load_index()?;

    let (snaps, snap_errors) = repo.snapshots_lenient()?;
    if let Some(e) = snap_errors.into_iter().next() {
        return Err(Error::invalid(format!(
            "{e}; prune needs every snapshot: run `prism-sync check`"
        )));
    }
    let seen: HashSet<SnapshotId> = snaps.iter().map(|(id, _)| *id).collect();
    let mut reach = Reachable::new();
    progress.enter(PrunePhase::FindUsed, snaps.len() as u64, 0);
    reachable(repo, &snaps, &mut reach, progress)?;

    let limits = PlanLimits {
        max_unused_percent: opts.max_unused_percent,
        compact_below_bytes: opts.compact_below_bytes,
    };
    let plan = prune_plan::plan(&full, &old_marks, &reach, &limits);
    let mut report = PruneReport {
        packs_total: plan.packs_total,
        bytes_total: plan.bytes_total,
        blobs_unused: plan.blobs_unused,
        packs_repacked: plan.repack.len(),
        packs_compacted: plan.packs_compacted,
        index_files: old_files.len(),
        packs_marked: plan.mark.len() + plan.repack.len(),
        packs_recovered: plan.recovered.len(),
        ..PruneReport::default()
    };
    if opts.dry_run {
        report.bytes_repacked = plan.bytes_repack_used;
        session.end()?;
        return Ok(report);
    }

    let (bytes_repacked, new_packs) = repack(repo, &index, &full, &plan, &reach, progress)?;
    progress.enter(PrunePhase::Settle, 0, 0);
    report.bytes_repacked = bytes_repacked;

    // One consolidated index: every pack, the new marks, superseding all index files read.
    let now = now_ns();
    let mut marks: Vec<DeletionMark> = old_marks
        .values()
        .filter(|m| !plan.recovered.contains(&m.pack))
        .cloned()
        .collect();
    for id in plan.mark.iter().chain(plan.repack.iter()) {
        marks.push(DeletionMark {
            pack: *id,
            marked_ns: now,
            wait_for: vec![WAIT_UNKNOWN],
        });
    }
    let mut packs = full;
    packs.extend(new_packs);
    let first = repo.write_index(packs.clone(), old_files.clone(), marks.clone())?;
    delete_all(repo, Kind::Index, old_files.iter().map(|i| i.to_hex()))?;

    // Who could still refer to marked packs? Sessions live now (except ours and stale ones).
    let (sessions, _) = list_sessions(repo)?;
    let live: Vec<[u8; 32]> = sessions
        .iter()
        .filter(|s| s.id != own && !session::is_stale(s, now))
        .map(|s| s.id)
        .collect();
    report.live_sessions = live.len();

    // Snapshots committed since we looked: whatever they use is kept.
    let (snaps_now, _) = repo.snapshots_lenient()?;
    let newer: Vec<_> = snaps_now
        .into_iter()
        .filter(|(id, _)| !seen.contains(id))
        .collect();
    reachable(repo, &newer, &mut reach, &PruneProgress::default())?;
    let Settlement {
        delete,
        keep,
        recovered,
    } = prune_plan::settle(
        &packs,
        marks,
        &reach,
        &live,
        now,
        session::SESSION_STALE_AFTER,
    );
    report.packs_recovered += recovered;
    report.packs_deferred = keep.len();

    // Packs in no index: from crashed or running backups. Only when nobody is writing.
    let mut orphans: Vec<(String, u64)> = Vec::new();
    if live.is_empty() {
        let (files_now, _) = repo.index_files_lenient()?;
        let indexed: HashSet<String> = collect_packs(&files_now)
            .iter()
            .map(|p| p.id.to_hex())
            .collect();
        let all: HashSet<String> = packs.iter().map(|p| p.id.to_hex()).collect();
        orphans = repo
            .backend()
            .list(Kind::Pack)?
            .into_iter()
            .filter(|o| !indexed.contains(&o.name) && !all.contains(&o.name))
            .map(|o| (o.name, o.size))
            .collect();
        let _ = repo
            .backend()
            .remove_stale_temp(std::time::Duration::from_secs(3600));
    }

    // The final index first (no longer listing what is deleted), then the deletions.
    let deleted: HashSet<PackId> = delete.into_iter().collect();
    let going: Vec<(String, u64)> = packs
        .iter()
        .filter(|p| deleted.contains(&p.id))
        .map(|p| (p.id.to_hex(), p.length as u64))
        .collect();
    report.bytes_deleted = going.iter().map(|(_, n)| n).sum();
    let remaining: Vec<IndexPack> = packs
        .into_iter()
        .filter(|p| !deleted.contains(&p.id))
        .collect();
    repo.write_index(remaining, first.clone(), keep)?;
    delete_all(repo, Kind::Index, first.iter().map(|i| i.to_hex()))?;
    progress.enter(
        PrunePhase::Delete,
        (going.len() + orphans.len()) as u64,
        report.bytes_deleted + orphans.iter().map(|(_, n)| n).sum::<u64>(),
    );
    report.packs_deleted = delete_packs(repo, going.into_iter(), progress)?;
    report.orphans_deleted = delete_packs(repo, orphans.into_iter(), progress)?;
    repo.load_index()?;
    session.end()?;
    Ok(report)
}

/// Copies the used blobs of the packs the plan repacks (verified on read) into new packs,
/// skipping those a pack that stays (not marked before, not repacked, not marked now) already
/// holds. Returns the bytes stored and the new packs.
fn repack(
    repo: &Repository,
    index: &Index,
    packs: &[IndexPack],
    plan: &PrunePlan,
    reach: &Reachable,
    progress: &PruneProgress,
) -> Result<(u64, Vec<IndexPack>)> {
    let going: HashSet<PackId> = plan.repack.iter().chain(&plan.mark).copied().collect();
    let pack_of: HashMap<PackId, &IndexPack> = packs.iter().map(|p| (p.id, p)).collect();
    let bytes_total = plan.repack.iter().map(|id| pack_of[id].length as u64).sum();
    progress.enter(PrunePhase::Repack, plan.repack.len() as u64, bytes_total);
    let mut packer = Packer::new(repo);
    let (started, mut read) = (std::time::Instant::now(), 0u64);
    // Reads at most `read_bytes_per_s`, blob by blob.
    let throttle = |read: u64| {
        if let Some(per_s) = progress.read_bytes_per_s.filter(|&b| b > 0) {
            let due = started + std::time::Duration::from_secs_f64(read as f64 / per_s as f64);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
    };
    let read_opts = ReadOptions::for_repo(repo);
    for id in &plan.repack {
        let p = pack_of[id];
        let keep: Vec<Located> = p
            .blobs
            .iter()
            .filter(|b| {
                let elsewhere = index
                    .locations(p.kind, &b.id)
                    .any(|l| !l.pack.marked && !going.contains(&l.pack.id));
                prune_plan::reaches(reach, p.kind, &b.id) && !elsewhere
            })
            .map(|b| Located {
                first_use: 0,
                pack: p.id,
                salt: p.salt,
                entry: b.entry(p.kind),
            })
            .collect();
        // The blobs kept, read as a restore reads them: neighbours in one ranged read (a step's
        // small pack in one request, instead of one round trip per blob over a slow link).
        let mut counted = 0u64;
        for r in plan_reads(keep, &read_opts) {
            read += r.length;
            throttle(read);
            let sealed =
                repo.backend()
                    .read_range(Kind::Pack, &p.id.to_hex(), r.offset, r.length)?;
            for e in &r.blobs {
                let at = (e.offset as u64 - r.offset) as usize;
                let what = format!("{} blob {}", p.kind.name(), e.id.short());
                let bytes = sealed.get(at..at + e.length as usize).ok_or_else(|| {
                    Error::corrupt(
                        format!("pack {}", p.id.short()),
                        format!("shorter than the index says ({what})"),
                    )
                })?;
                let data = repo.open_blob(&p.id, &p.salt, e, bytes, &what)?;
                packer.add_unchecked(p.kind, e.id, &data)?;
                counted += e.length as u64;
                progress
                    .bytes_done
                    .fetch_add(e.length as u64, Ordering::Relaxed);
            }
        }
        // The rest of the pack (blobs not copied, headers): the pack is done.
        progress.tick((p.length as u64).saturating_sub(counted));
    }
    let bytes = packer.stats.bytes_added_stored;
    Ok((bytes, packer.finish()?))
}

/// Packs of the given (non-superseded) index files, each once.
fn collect_packs(files: &[(IndexId, IndexFile)]) -> Vec<IndexPack> {
    let superseded: HashSet<IndexId> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (id, f) in files {
        if superseded.contains(id) {
            continue;
        }
        for p in &f.packs {
            if seen.insert(p.id) {
                out.push(p.clone());
            }
        }
    }
    out
}

/// Counts one item into the progress when dropped (after the work, whichever way it ends).
struct Tick<'a>(&'a PruneProgress, u64);

impl Drop for Tick<'_> {
    fn drop(&mut self) {
        self.0.tick(self.1);
    }
}

/// Deletes packs (name, length), counting each into `progress`; returns how many were there.
fn delete_packs(
    repo: &Repository,
    packs: impl Iterator<Item = (String, u64)>,
    progress: &PruneProgress,
) -> Result<usize> {
    let mut n = 0;
    for (name, length) in packs {
        let _counted = Tick(progress, length);
        match repo.backend().delete(Kind::Pack, &name) {
            Ok(()) => n += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

fn delete_all(repo: &Repository, kind: Kind, names: impl Iterator<Item = String>) -> Result<usize> {
    let mut n = 0;
    for name in names {
        match repo.backend().delete(kind, &name) {
            Ok(()) => n += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}
