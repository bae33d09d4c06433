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

use crate::repository::session::{self, Session, list_sessions};
use crate::repository::{PACK_TARGET_BYTES, Packer, Repository, now_ns};
use crate::backend::Kind;
use crate::error::{Error, Result};
use crate::format::index::{DeletionMark, IndexFile, IndexPack};
use crate::format::pack::{BLOB_HEADER_LEN, BlobKind};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::Index;
use crate::snapshot::tree::Reachable;

/// Marks whose waiting list is unknown (a prune stopped between marking and listing sessions):
/// they wait until the mark is older than a session can live.
pub const WAIT_UNKNOWN: [u8; 32] = [0xff; 32];

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

/// Small packs of one kind that make compaction worth it.
pub const COMPACT_MIN_PACKS: usize = 8;

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

struct PackUse {
    used_bytes: u64,
    unused_bytes: u64,
    unused_blobs: usize,
}

fn blob_cost(length: u32) -> u64 {
    length as u64 + BLOB_HEADER_LEN as u64
}

/// Everything reachable from the given snapshots; any unreadable tree aborts prune, because
/// deleting data a damaged snapshot might still need is not recoverable.
fn reachable(
    repo: &Repository,
    snaps: &[(SnapshotId, crate::snapshot::Snapshot)],
    reach: &mut Reachable,
) -> Result<()> {
    for (id, s) in snaps {
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

pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
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
    reachable(repo, &snaps, &mut reach)?;
    let used = |kind: BlobKind, id: &BlobId| match kind {
        BlobKind::Data => reach.data.contains(id),
        BlobKind::Tree => reach.trees.contains(id),
    };

    // Which packs hold used blobs; a blob stored twice counts in one pack only.
    let mut report = PruneReport::default();
    let mut counted: HashSet<(BlobKind, BlobId)> = HashSet::new();
    let mut usage: HashMap<PackId, PackUse> = HashMap::new();
    for p in &full {
        report.packs_total += 1;
        report.bytes_total += p.length as u64;
        let mut u = PackUse {
            used_bytes: 0,
            unused_bytes: 0,
            unused_blobs: 0,
        };
        for b in &p.blobs {
            if used(p.kind, &b.id)
                && !old_marks.contains_key(&p.id)
                && counted.insert((p.kind, b.id))
            {
                u.used_bytes += blob_cost(b.length);
            } else {
                u.unused_bytes += blob_cost(b.length);
                u.unused_blobs += 1;
            }
        }
        usage.insert(p.id, u);
    }
    // Marked packs whose blobs are used again (and not stored elsewhere) are recovered.
    let mut recovered: HashSet<PackId> = HashSet::new();
    for p in full.iter().filter(|p| old_marks.contains_key(&p.id)) {
        if p.blobs
            .iter()
            .any(|b| used(p.kind, &b.id) && counted.insert((p.kind, b.id)))
        {
            recovered.insert(p.id);
        }
    }
    report.packs_recovered = recovered.len();
    report.blobs_unused = usage.values().map(|u| u.unused_blobs).sum();

    // Fully unused packs are marked; partly used ones are repacked, most wasteful first, until
    // the unused share is below the limit.
    let mut to_mark: Vec<PackId> = Vec::new();
    let mut partly: Vec<(&IndexPack, f64)> = Vec::new();
    let mut unused_left: u64 = 0;
    for p in &full {
        if old_marks.contains_key(&p.id) && !recovered.contains(&p.id) {
            continue;
        }
        let u = &usage[&p.id];
        if recovered.contains(&p.id) {
            continue;
        }
        if u.used_bytes == 0 {
            to_mark.push(p.id);
        } else if u.unused_bytes > 0 {
            unused_left += u.unused_bytes;
            partly.push((
                p,
                u.unused_bytes as f64 / (u.used_bytes + u.unused_bytes) as f64,
            ));
        }
    }
    partly.sort_by(|a, b| b.1.total_cmp(&a.1));
    let limit = (report.bytes_total as f64 * opts.max_unused_percent / 100.0) as u64;
    let mut repack: Vec<&IndexPack> = Vec::new();
    for (p, _) in partly {
        if unused_left <= limit {
            break;
        }
        unused_left -= usage[&p.id].unused_bytes;
        repack.push(p);
    }
    // Compaction: small packs of one kind, all repacked together once there are enough.
    if opts.compact_below_bytes > 0 {
        for kind in [BlobKind::Data, BlobKind::Tree] {
            let small: Vec<&IndexPack> = full
                .iter()
                .filter(|p| {
                    p.kind == kind
                        && (p.length as u64) < opts.compact_below_bytes
                        && !old_marks.contains_key(&p.id)
                        && !recovered.contains(&p.id)
                        && !to_mark.contains(&p.id)
                        && !repack.iter().any(|r| r.id == p.id)
                })
                .collect();
            if small.len() >= COMPACT_MIN_PACKS {
                report.packs_compacted += small.len();
                repack.extend(small);
            }
        }
    }
    report.index_files = old_files.len();
    report.packs_repacked = repack.len();
    report.packs_marked = to_mark.len() + repack.len();
    if opts.dry_run {
        report.bytes_repacked = repack.iter().map(|p| usage[&p.id].used_bytes).sum();
        session.end()?;
        return Ok(report);
    }

    // Repack: copy the used blobs (verified on read) into new packs.
    let repack_ids: HashSet<PackId> = repack.iter().map(|p| p.id).collect();
    // A copy in a pack that stays (not marked before, not repacked, not marked now) spares
    // the copy.
    let going: HashSet<PackId> = repack_ids.iter().chain(to_mark.iter()).copied().collect();
    let mut packer = Packer::new(repo);
    for p in &repack {
        for b in &p.blobs {
            let elsewhere = index
                .locations(p.kind, &b.id)
                .any(|l| !l.pack.marked && !going.contains(&l.pack.id));
            if !used(p.kind, &b.id) || elsewhere {
                continue;
            }
            let data = repo.read_blob(p.kind, &b.id)?;
            packer.add_unchecked(p.kind, b.id, &data)?;
        }
    }
    report.bytes_repacked = packer.stats.bytes_added_stored;
    let new_packs = packer.finish()?;

    // One consolidated index: every pack, the new marks, superseding all index files read.
    let now = now_ns();
    let mut marks: Vec<DeletionMark> = old_marks
        .values()
        .filter(|m| !recovered.contains(&m.pack))
        .cloned()
        .collect();
    for id in to_mark.iter().chain(repack_ids.iter()) {
        marks.push(DeletionMark {
            pack: *id,
            marked_ns: now,
            wait_for: vec![WAIT_UNKNOWN],
        });
    }
    let mut packs = full.clone();
    packs.extend(new_packs);
    let first = repo.write_index(packs.clone(), old_files.clone(), marks.clone())?;
    delete_all(repo, Kind::Index, old_files.iter().map(|i| i.to_hex()))?;

    // Who could still refer to marked packs? Sessions live now (except ours and stale ones).
    let (sessions, _) = list_sessions(repo)?;
    let live: Vec<[u8; 32]> = sessions
        .iter()
        .filter(|s| s.id != own && !s.is_stale(now))
        .map(|s| s.id)
        .collect();
    report.live_sessions = live.len();
    let live_set: HashSet<[u8; 32]> = live.iter().copied().collect();

    // Snapshots committed since we looked: whatever they use is kept.
    let (snaps_now, _) = repo.snapshots_lenient()?;
    let newer: Vec<_> = snaps_now
        .into_iter()
        .filter(|(id, _)| !seen.contains(id))
        .collect();
    reachable(repo, &newer, &mut reach)?;
    let pack_of: HashMap<PackId, &IndexPack> = packs.iter().map(|p| (p.id, p)).collect();
    // Blobs that stay in a pack nobody marked (the copies repacking made, and the one copy of a
    // blob stored twice that counted as used): a marked pack holding such a blob is not needed
    // for it.
    let marked_ids: HashSet<PackId> = marks.iter().map(|m| m.pack).collect();
    let kept_blobs: HashSet<(BlobKind, BlobId)> = packs
        .iter()
        .filter(|p| !marked_ids.contains(&p.id))
        .flat_map(|p| p.blobs.iter().map(|b| (p.kind, b.id)))
        .collect();
    let mut deletable: Vec<PackId> = Vec::new();
    let mut kept_marks: Vec<DeletionMark> = Vec::new();
    for mut m in marks {
        let Some(p) = pack_of.get(&m.pack) else {
            continue;
        };
        // A marked pack goes unless a snapshot (one committed meanwhile included) uses a blob
        // of it that no unmarked pack holds. A pack whose blobs all have a kept copy elsewhere
        // goes: treating such a pack as still used (because its blobs are reachable) kept every
        // duplicate pack forever, so compaction never brought the pack count down (regression
        // test: tests/compaction_crash.rs).
        let still_used = p.blobs.iter().any(|b| {
            let reached = match p.kind {
                BlobKind::Data => reach.data.contains(&b.id),
                BlobKind::Tree => reach.trees.contains(&b.id),
            };
            reached && !kept_blobs.contains(&(p.kind, b.id))
        });
        if still_used {
            report.packs_recovered += 1;
            continue;
        }
        let fresh = m.marked_ns == now;
        let free = if fresh {
            live.is_empty()
        } else if m.wait_for == [WAIT_UNKNOWN] {
            now - m.marked_ns > session::SESSION_STALE_AFTER.as_nanos() as i64
                || live.is_empty()
        } else {
            m.wait_for.iter().all(|s| !live_set.contains(s))
        };
        if free {
            deletable.push(m.pack);
        } else {
            if fresh || m.wait_for == [WAIT_UNKNOWN] {
                m.wait_for = if live.is_empty() {
                    vec![WAIT_UNKNOWN]
                } else {
                    live.clone()
                };
            }
            kept_marks.push(m);
        }
    }
    report.packs_deferred = kept_marks.len();

    // Packs in no index: from crashed or running backups. Only when nobody is writing.
    let mut orphans: Vec<String> = Vec::new();
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
            .map(|o| o.name)
            .filter(|n| !indexed.contains(n) && !all.contains(n))
            .collect();
        let _ = repo
            .backend()
            .remove_stale_temp(std::time::Duration::from_secs(3600));
    }

    // The final index first (no longer listing what is deleted), then the deletions.
    let deleted: HashSet<PackId> = deletable.iter().copied().collect();
    report.bytes_deleted = pack_of
        .iter()
        .filter(|(id, _)| deleted.contains(id))
        .map(|(_, p)| p.length as u64)
        .sum();
    drop(pack_of);
    let remaining: Vec<IndexPack> = packs
        .into_iter()
        .filter(|p| !deleted.contains(&p.id))
        .collect();
    repo.write_index(remaining, first.clone(), kept_marks)?;
    delete_all(repo, Kind::Index, first.iter().map(|i| i.to_hex()))?;
    report.packs_deleted = delete_all(repo, Kind::Pack, deleted.iter().map(|p| p.to_hex()))?;
    report.orphans_deleted = delete_all(repo, Kind::Pack, orphans.into_iter())?;
    repo.load_index()?;
    session.end()?;
    Ok(report)
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
