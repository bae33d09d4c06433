//! What prune decides, as values computed without I/O: [`plan`] (from the index and what the
//! snapshots reach: which packs to mark, which to repack, which earlier marks to drop) and
//! [`settle`] (after the consolidated index is written and the live sessions listed: which
//! marked packs go now and which marks keep waiting). `prune.rs` reads their inputs from the
//! repository and carries them out in the order `format-spec/repository.md` gives.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::format::index::{DeletionMark, IndexPack};
use crate::format::pack::{BLOB_HEADER_LEN, BlobKind};
use crate::id::{BlobId, PackId};
use crate::snapshot::tree::Reachable;

/// Marks whose waiting list is unknown (a prune stopped between marking and listing sessions):
/// they wait until the mark is older than a session can live.
pub const WAIT_UNKNOWN: [u8; 32] = [0xff; 32];

/// Small packs of one kind that make compaction worth it.
pub const COMPACT_MIN_PACKS: usize = 8;

/// The limits a plan keeps to.
#[derive(Debug, Clone, Copy)]
pub struct PlanLimits {
    /// Repack partly used packs until unused space is at most this share of the repository.
    pub max_unused_percent: f64,
    /// Compaction: when at least [`COMPACT_MIN_PACKS`] packs of one kind are smaller than this,
    /// they are all repacked into full ones (0: off).
    pub compact_below_bytes: u64,
}

/// Which packs prune marks, repacks and recovers, and the numbers its report shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrunePlan {
    /// Packs with no used blob: marked for deletion as they are.
    pub mark: Vec<PackId>,
    /// Packs whose used blobs are copied into new packs, then marked: the most wasteful partly
    /// used ones first, then (compaction) the small ones. In the order to copy them.
    pub repack: Vec<PackId>,
    /// Packs an earlier prune marked that a snapshot uses again: their marks are dropped.
    pub recovered: HashSet<PackId>,
    /// Of [`PrunePlan::repack`], the packs taken because they were small.
    pub packs_compacted: usize,
    /// Stored bytes of the used blobs in the packs to repack (what repacking copies at most).
    pub bytes_repack_used: u64,
    pub packs_total: usize,
    pub bytes_total: u64,
    /// Blobs no snapshot uses (or a second copy of a used one), over all packs.
    pub blobs_unused: usize,
}

/// What one pack holds of used and unused blobs.
struct PackUse {
    used_bytes: u64,
    unused_bytes: u64,
    unused_blobs: usize,
}

fn blob_cost(length: u32) -> u64 {
    length as u64 + BLOB_HEADER_LEN as u64
}

/// Whether `reach` holds a blob of the given kind.
pub fn reaches(reach: &Reachable, kind: BlobKind, id: &BlobId) -> bool {
    match kind {
        BlobKind::Data => reach.data.contains(id),
        BlobKind::Tree => reach.trees.contains(id),
    }
}

/// The plan for the indexed `packs` (each once), the marks earlier prunes left, and what the
/// snapshots reach.
pub fn plan(
    packs: &[IndexPack],
    marks: &HashMap<PackId, DeletionMark>,
    reach: &Reachable,
    limits: &PlanLimits,
) -> PrunePlan {
    let mut out = PrunePlan::default();
    // Which packs hold used blobs; a blob stored twice counts in one pack only.
    let mut counted: HashSet<(BlobKind, BlobId)> = HashSet::new();
    let mut usage: HashMap<PackId, PackUse> = HashMap::new();
    for p in packs {
        out.packs_total += 1;
        out.bytes_total += p.length as u64;
        let mut u = PackUse {
            used_bytes: 0,
            unused_bytes: 0,
            unused_blobs: 0,
        };
        for b in &p.blobs {
            if reaches(reach, p.kind, &b.id)
                && !marks.contains_key(&p.id)
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
    for p in packs.iter().filter(|p| marks.contains_key(&p.id)) {
        if p.blobs
            .iter()
            .any(|b| reaches(reach, p.kind, &b.id) && counted.insert((p.kind, b.id)))
        {
            out.recovered.insert(p.id);
        }
    }
    out.blobs_unused = usage.values().map(|u| u.unused_blobs).sum();

    // Fully unused packs are marked; partly used ones are repacked, most wasteful first, until
    // the unused share is below the limit.
    let mut partly: Vec<(PackId, f64)> = Vec::new();
    let mut unused_left: u64 = 0;
    for p in packs {
        if marks.contains_key(&p.id) || out.recovered.contains(&p.id) {
            continue;
        }
        let u = &usage[&p.id];
        if u.used_bytes == 0 {
            out.mark.push(p.id);
        } else if u.unused_bytes > 0 {
            unused_left += u.unused_bytes;
            partly.push((
                p.id,
                u.unused_bytes as f64 / (u.used_bytes + u.unused_bytes) as f64,
            ));
        }
    }
    partly.sort_by(|a, b| b.1.total_cmp(&a.1));
    let limit = (out.bytes_total as f64 * limits.max_unused_percent / 100.0) as u64;
    for (id, _) in partly {
        if unused_left <= limit {
            break;
        }
        unused_left -= usage[&id].unused_bytes;
        out.repack.push(id);
    }
    // Compaction: small packs of one kind, all repacked together once there are enough.
    if limits.compact_below_bytes > 0 {
        for kind in [BlobKind::Data, BlobKind::Tree] {
            let small: Vec<PackId> = packs
                .iter()
                .filter(|p| {
                    p.kind == kind
                        && (p.length as u64) < limits.compact_below_bytes
                        && !marks.contains_key(&p.id)
                        && !out.recovered.contains(&p.id)
                        && !out.mark.contains(&p.id)
                        && !out.repack.contains(&p.id)
                })
                .map(|p| p.id)
                .collect();
            if small.len() >= COMPACT_MIN_PACKS {
                out.packs_compacted += small.len();
                out.repack.extend(small);
            }
        }
    }
    out.bytes_repack_used = out.repack.iter().map(|id| usage[id].used_bytes).sum();
    out
}

/// Which marked packs go now, and which marks stay (with whom they wait for).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settlement {
    /// Marked packs to delete now.
    pub delete: Vec<PackId>,
    /// Marks that stay in the final index.
    pub keep: Vec<DeletionMark>,
    /// Marked packs a snapshot (one committed meanwhile included) still needs: unmarked.
    pub recovered: usize,
}

/// Settles every mark of the consolidated index (`packs`, `marks`), made at `now` or before:
/// a marked pack goes unless a snapshot reaches (`reach`, snapshots committed meanwhile
/// included) a blob of it that no unmarked pack holds; it goes now only if no session that
/// could still refer to it is `live`, else its mark keeps waiting for those sessions.
pub fn settle(
    packs: &[IndexPack],
    marks: Vec<DeletionMark>,
    reach: &Reachable,
    live: &[[u8; 32]],
    now: i64,
    stale_after: Duration,
) -> Settlement {
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
    let live_set: HashSet<[u8; 32]> = live.iter().copied().collect();
    let mut out = Settlement::default();
    for mut m in marks {
        let Some(p) = pack_of.get(&m.pack) else {
            continue;
        };
        // A pack whose blobs all have a kept copy elsewhere goes: treating such a pack as still
        // used (because its blobs are reachable) kept every duplicate pack forever, so
        // compaction never brought the pack count down (regression test:
        // tests/compaction_crash.rs).
        let still_used = p
            .blobs
            .iter()
            .any(|b| reaches(reach, p.kind, &b.id) && !kept_blobs.contains(&(p.kind, b.id)));
        if still_used {
            out.recovered += 1;
            continue;
        }
        let fresh = m.marked_ns == now;
        let free = if fresh {
            live.is_empty()
        } else if m.wait_for == [WAIT_UNKNOWN] {
            now - m.marked_ns > stale_after.as_nanos() as i64 || live.is_empty()
        } else {
            m.wait_for.iter().all(|s| !live_set.contains(s))
        };
        if free {
            out.delete.push(m.pack);
        } else {
            if fresh || m.wait_for == [WAIT_UNKNOWN] {
                m.wait_for = if live.is_empty() {
                    vec![WAIT_UNKNOWN]
                } else {
                    live.to_vec()
                };
            }
            out.keep.push(m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexBlob;

    const HOUR_NS: i64 = 3_600_000_000_000;

    fn blob(n: u8, length: u32) -> IndexBlob {
        IndexBlob {
            id: BlobId([n; 32]),
            offset: 0,
            length,
            raw_length: length,
        }
    }

    /// A pack `n` of `kind` holding the blobs numbered `blobs`, each `blob_len` bytes.
    fn pack(n: u8, kind: BlobKind, blobs: &[u8], blob_len: u32) -> IndexPack {
        let blobs: Vec<IndexBlob> = blobs.iter().map(|&b| blob(b, blob_len)).collect();
        IndexPack {
            id: PackId([n; 32]),
            kind,
            length: blobs.iter().map(|b| blob_cost(b.length) as u32).sum(),
            salt: [0; 32],
            blobs,
        }
    }

    fn reach(data: &[u8], trees: &[u8]) -> Reachable {
        let mut r = Reachable::new();
        r.data.extend(data.iter().map(|&n| BlobId([n; 32])));
        r.trees.extend(trees.iter().map(|&n| BlobId([n; 32])));
        r
    }

    fn mark(n: u8, marked_ns: i64, wait_for: Vec<[u8; 32]>) -> DeletionMark {
        DeletionMark {
            pack: PackId([n; 32]),
            marked_ns,
            wait_for,
        }
    }

    const NO_COMPACTION: PlanLimits = PlanLimits {
        max_unused_percent: 5.0,
        compact_below_bytes: 0,
    };

    #[test]
    fn an_unused_pack_is_marked_a_used_one_stays() {
        let packs = [
            pack(1, BlobKind::Data, &[10, 11], 1000),
            pack(2, BlobKind::Data, &[20, 21], 1000),
            pack(3, BlobKind::Tree, &[30], 100),
        ];
        let p = plan(
            &packs,
            &HashMap::new(),
            &reach(&[10, 11], &[30]),
            &NO_COMPACTION,
        );
        assert_eq!(p.mark, [PackId([2; 32])]);
        assert!(p.repack.is_empty());
        assert_eq!(p.packs_total, 3);
        assert_eq!(p.blobs_unused, 2);
        assert_eq!(
            p.bytes_total,
            packs.iter().map(|p| p.length as u64).sum::<u64>()
        );
    }

    #[test]
    fn partly_used_packs_are_repacked_most_wasteful_first_until_under_the_limit() {
        // Pack 1 is 3/4 unused, pack 2 1/4 unused; 10 full packs make the total large enough
        // that repacking pack 1 alone brings the unused share under 5 %.
        let mut packs = vec![
            pack(1, BlobKind::Data, &[10, 11, 12, 13], 1000),
            pack(2, BlobKind::Data, &[20, 21, 22, 23], 1000),
        ];
        let mut used = vec![10, 20, 21, 22];
        for n in 0..10u8 {
            let ids: Vec<u8> = (0..4).map(|i| 100 + n * 4 + i).collect();
            used.extend(&ids);
            packs.push(pack(50 + n, BlobKind::Data, &ids, 1000));
        }
        let p = plan(&packs, &HashMap::new(), &reach(&used, &[]), &NO_COMPACTION);
        assert_eq!(p.repack, [PackId([1; 32])]);
        assert!(p.mark.is_empty());
        assert_eq!(p.bytes_repack_used, blob_cost(1000));

        // With no room for waste, both are repacked, the emptier one first.
        let strict = PlanLimits {
            max_unused_percent: 0.0,
            ..NO_COMPACTION
        };
        let p = plan(&packs, &HashMap::new(), &reach(&used, &[]), &strict);
        assert_eq!(p.repack, [PackId([1; 32]), PackId([2; 32])]);
    }

    #[test]
    fn a_blob_stored_twice_counts_in_one_pack_only() {
        let packs = [
            pack(1, BlobKind::Data, &[10], 1000),
            pack(2, BlobKind::Data, &[10], 1000),
        ];
        let p = plan(&packs, &HashMap::new(), &reach(&[10], &[]), &NO_COMPACTION);
        assert_eq!(p.mark, [PackId([2; 32])]);
    }

    #[test]
    fn small_packs_are_compacted_once_there_are_enough_of_one_kind() {
        let limits = PlanLimits {
            max_unused_percent: 5.0,
            compact_below_bytes: 10_000,
        };
        let few: Vec<IndexPack> = (1..COMPACT_MIN_PACKS as u8)
            .map(|n| pack(n, BlobKind::Data, &[n], 100))
            .collect();
        let used: Vec<u8> = (1..=COMPACT_MIN_PACKS as u8).collect();
        let p = plan(&few, &HashMap::new(), &reach(&used, &[]), &limits);
        assert!(p.repack.is_empty(), "fewer than COMPACT_MIN_PACKS: {p:?}");

        let mut enough = few.clone();
        let n = COMPACT_MIN_PACKS as u8;
        enough.push(pack(n, BlobKind::Data, &[n], 100));
        // A small tree pack is of another kind: not counted with the data packs.
        enough.push(pack(200, BlobKind::Tree, &[200], 100));
        let p = plan(&enough, &HashMap::new(), &reach(&used, &[200]), &limits);
        assert_eq!(p.packs_compacted, COMPACT_MIN_PACKS);
        assert_eq!(p.repack.len(), COMPACT_MIN_PACKS);
        assert!(!p.repack.contains(&PackId([200; 32])));
    }

    #[test]
    fn a_marked_pack_used_again_is_recovered_not_marked_twice() {
        let packs = [
            pack(1, BlobKind::Data, &[10], 1000),
            pack(2, BlobKind::Data, &[20], 1000),
        ];
        let marks: HashMap<PackId, DeletionMark> = [mark(1, 0, vec![]), mark(2, 0, vec![])]
            .into_iter()
            .map(|m| (m.pack, m))
            .collect();
        let p = plan(&packs, &marks, &reach(&[10], &[]), &NO_COMPACTION);
        assert_eq!(p.recovered, HashSet::from([PackId([1; 32])]));
        assert!(p.mark.is_empty() && p.repack.is_empty());
    }

    #[test]
    fn a_fresh_mark_goes_at_once_only_when_nobody_writes() {
        let packs = [pack(1, BlobKind::Data, &[10], 1000)];
        let now = 100 * HOUR_NS;
        let stale = Duration::from_secs(3600);
        let s = settle(
            &packs,
            vec![mark(1, now, vec![WAIT_UNKNOWN])],
            &reach(&[], &[]),
            &[],
            now,
            stale,
        );
        assert_eq!(s.delete, [PackId([1; 32])]);
        assert!(s.keep.is_empty());

        let writer = [7u8; 32];
        let s = settle(
            &packs,
            vec![mark(1, now, vec![WAIT_UNKNOWN])],
            &reach(&[], &[]),
            &[writer],
            now,
            stale,
        );
        assert!(s.delete.is_empty());
        assert_eq!(s.keep, [mark(1, now, vec![writer])]);
    }

    #[test]
    fn an_older_mark_waits_for_its_sessions_or_for_staleness() {
        let packs = [
            pack(1, BlobKind::Data, &[10], 1000),
            pack(2, BlobKind::Data, &[20], 1000),
            pack(3, BlobKind::Data, &[30], 1000),
        ];
        let now = 100 * HOUR_NS;
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let marks = vec![
            // Waits for `a`, which has ended: goes.
            mark(1, now - HOUR_NS, vec![a]),
            // Waits for `b`, still live: stays.
            mark(2, now - HOUR_NS, vec![b]),
            // Unknown list, older than a session lives: goes even with `b` live.
            mark(3, now - 3 * HOUR_NS, vec![WAIT_UNKNOWN]),
        ];
        let s = settle(
            &packs,
            marks,
            &reach(&[], &[]),
            &[b],
            now,
            Duration::from_secs(2 * 3600),
        );
        assert_eq!(s.delete, [PackId([1; 32]), PackId([3; 32])]);
        assert_eq!(s.keep, [mark(2, now - HOUR_NS, vec![b])]);
    }

    #[test]
    fn a_marked_pack_goes_when_every_blob_it_holds_has_an_unmarked_copy() {
        // Pack 1 (marked) and pack 2 (the repacked copy) hold blob 10, which a snapshot uses;
        // pack 3 (marked) alone holds blob 30, which a snapshot committed meanwhile uses.
        let packs = [
            pack(1, BlobKind::Data, &[10], 1000),
            pack(2, BlobKind::Data, &[10], 1000),
            pack(3, BlobKind::Data, &[30], 1000),
        ];
        let now = HOUR_NS;
        let s = settle(
            &packs,
            vec![mark(1, now, vec![]), mark(3, now, vec![])],
            &reach(&[10, 30], &[]),
            &[],
            now,
            Duration::from_secs(3600),
        );
        assert_eq!(s.delete, [PackId([1; 32])]);
        assert_eq!(s.recovered, 1);
        assert!(s.keep.is_empty());
    }
}
