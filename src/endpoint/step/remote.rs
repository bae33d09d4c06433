//! Phase 2: the set's current state — its head, or several heads combined into one when
//! endpoints published concurrently (see `format-spec/sync.md`, "Combining concurrent heads").

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use super::Cx;
use crate::endpoint::trees::{RepoTrees, node_at, write_tree};
use crate::error::{Error, Result};
use crate::format::head::{ConflictState, Head, SharedConflict};
use crate::format::snapshot::{Snapshot, Summary};
use crate::id::{BlobId, SnapshotId};
use crate::repository::heads::{HeadListing, head_name, publish};
use crate::repository::{Packer, Repository};
use crate::sync::merge::{Input, Outcome, merge, same_content};
use crate::sync::rules::Rules;
use crate::sync::shared_conflicts;
use crate::sync::{Policy, Role};

/// The shared state this step merges with.
pub(super) struct Remote {
    /// The heads read (superseded ones left out), oldest first.
    pub heads: Vec<(String, Head)>,
    /// The state they make: one head's snapshot, or the combination of several.
    pub snapshot: Option<SnapshotId>,
    pub tree: Option<BlobId>,
    /// That snapshot's parents (where its history goes on).
    pub parents: Vec<SnapshotId>,
    /// The name of the head of that state (the combined head's, when several were combined).
    pub name: Option<String>,
    /// Superseded heads seen (a publisher stopped before deleting them): this step deletes them.
    pub superseded: Vec<String>,
    /// Conflicts in the set, as the head (or the combination) carries them.
    pub conflicts: Vec<SharedConflict>,
}

/// The remote state from `listing` (the set's heads, read at the start of the step).
pub(super) fn read(cx: &mut Cx, listing: HeadListing) -> Result<Remote> {
    let (repo, set) = (cx.repo, &cx.ep.cfg.name);
    let heads = listing.current;
    let (snapshot, name, conflicts) = match heads.len() {
        0 => (None, None, vec![]),
        1 => (
            Some(heads[0].1.snapshot),
            Some(heads[0].0.clone()),
            heads[0].1.conflicts.clone(),
        ),
        n => {
            cx.report.heads_combined = n;
            let c = combine_heads(repo, &cx.trees, set, &heads)?;
            let name = if cx.opts.dry_run {
                head_name(repo, set, &c.snapshot)
            } else {
                let mut replaces: Vec<String> = heads.iter().map(|(n, _)| n.clone()).collect();
                replaces.extend(listing.superseded.iter().cloned());
                publish(repo, &c.head, &replaces)?
            };
            (Some(c.snapshot), Some(name), c.head.conflicts)
        }
    };
    let snap = snapshot.map(|id| repo.load_snapshot(&id)).transpose()?;
    Ok(Remote {
        heads,
        snapshot,
        tree: snap.as_ref().map(|s| s.tree),
        parents: snap.map(|s| s.parents).unwrap_or_default(),
        name,
        superseded: listing.superseded,
        conflicts,
    })
}

/// The result of combining several heads into one.
pub struct Combined {
    pub snapshot: SnapshotId,
    pub tree: BlobId,
    /// The head to publish for it, replacing the combined heads.
    pub head: Head,
}

/// The newest snapshot that is an ancestor of (or equal to) one of `a` and of `b`: a walk of
/// both histories, newest first, that stops at the first snapshot reached from both sides.
fn common_ancestor(
    repo: &Repository,
    a: &[SnapshotId],
    b: SnapshotId,
) -> Result<Option<SnapshotId>> {
    const WALK_MAX: usize = 100_000;
    let mut seen: HashMap<SnapshotId, u8> = HashMap::new();
    let mut queue: BinaryHeap<(i64, SnapshotId, u8)> = BinaryHeap::new();
    let mut times: HashMap<SnapshotId, (i64, Vec<SnapshotId>)> = HashMap::new();
    let mut load = |id: SnapshotId| -> Result<Option<(i64, Vec<SnapshotId>)>> {
        if let Some(v) = times.get(&id) {
            return Ok(Some(v.clone()));
        }
        match repo.load_snapshot(&id) {
            Ok(s) => {
                times.insert(id, (s.time_ns, s.parents.clone()));
                Ok(Some((s.time_ns, s.parents)))
            }
            Err(Error::Missing { .. }) => Ok(None), // forgotten by retention: a dead end
            Err(e) => Err(e),
        }
    };
    for (ids, side) in [(a.to_vec(), 1u8), (vec![b], 2u8)] {
        for id in ids {
            if let Some((t, _)) = load(id)? {
                queue.push((t, id, side));
            }
        }
    }
    let mut steps = 0;
    while let Some((_, id, side)) = queue.pop() {
        let mask = seen.entry(id).or_default();
        if *mask & side != 0 {
            continue;
        }
        *mask |= side;
        if *mask == 3 {
            return Ok(Some(id));
        }
        steps += 1;
        if steps > WALK_MAX {
            break;
        }
        if let Some((_, parents)) = load(id)? {
            for p in parents {
                if let Some((t, _)) = load(p)? {
                    queue.push((t, p, side));
                }
            }
        }
    }
    Ok(None)
}

/// Snapshots [`origin`] reads at most from each start.
const ORIGIN_WALK_MAX: usize = 64;

/// Where the version `node` of `path` first appeared, walking back from those of `starts`
/// that hold it through parents that hold it too: the earliest such snapshot's (time, id,
/// endpoint — `merge` for a combination). `None` if no start holds it. A bounded walk: a
/// version older than the walk counts from where the walk stopped.
fn origin(
    repo: &Repository,
    trees: &RepoTrees,
    starts: &[SnapshotId],
    path: &[u8],
    node: Option<&crate::snapshot::Node>,
) -> Result<Option<(i64, SnapshotId, String)>> {
    let mut best: Option<(i64, SnapshotId, String)> = None;
    for start in starts {
        let Some((id, s)) = first_appearance(repo, trees, *start, path, node, |_| true)? else {
            continue;
        };
        let here = (
            s.time_ns,
            id,
            s.endpoint.clone().unwrap_or_else(|| "merge".into()),
        );
        if best.as_ref().is_none_or(|b| (here.0, here.1) < (b.0, b.1)) {
            best = Some(here);
        }
    }
    Ok(best)
}

/// The snapshot where the version `node` of `path` held by `start` first appeared: `start`
/// itself, or the earliest reached walking back through first parents that hold it too (at
/// most [`ORIGIN_WALK_MAX`] of them; `reach` is asked about each parent before the walk goes
/// there, and `false` stops it). `None` if `start` is forgotten or does not hold `node`.
fn first_appearance(
    repo: &Repository,
    trees: &RepoTrees,
    start: SnapshotId,
    path: &[u8],
    node: Option<&crate::snapshot::Node>,
    mut reach: impl FnMut(SnapshotId) -> bool,
) -> Result<Option<(SnapshotId, Snapshot)>> {
    let mut s = match repo.load_snapshot(&start) {
        Ok(s) => s,
        Err(Error::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !same_content(node_at(trees, Some(s.tree), path)?.as_ref(), node) {
        return Ok(None);
    }
    let mut id = start;
    for _ in 0..ORIGIN_WALK_MAX {
        let Some((p, ps)) = parent_holding(repo, trees, &s, path, node)? else {
            break;
        };
        if !reach(p) {
            break;
        }
        (id, s) = (p, ps);
    }
    Ok(Some((id, s)))
}

/// Snapshots [`made_over`] reads at most.
const MADE_OVER_READS: usize = 1024;

/// Whether the version `node` of `path` in the snapshot `start` descends from the version
/// `before` through deliberate replacements: the snapshot where it first appeared (walking back
/// through parents that hold it, as [`origin`] does) is an endpoint's step, and a parent of that
/// step held `before` — or held a version that itself descends from `before` that way (a chain
/// of edits, each made by an endpoint that had the previous one). A version that first appeared
/// in a combination of concurrent heads, or whose chain never reaches `before` (within
/// [`MADE_OVER_READS`] snapshots), replaced nothing it saw: it is concurrent with `before`.
pub(super) fn made_over(
    repo: &Repository,
    trees: &RepoTrees,
    start: SnapshotId,
    path: &[u8],
    node: Option<&crate::snapshot::Node>,
    before: Option<&crate::snapshot::Node>,
) -> Result<bool> {
    let mut reads = 0usize;
    let mut seen: BTreeSet<SnapshotId> = BTreeSet::new();
    let mut todo: Vec<(SnapshotId, Option<crate::snapshot::Node>)> = vec![(start, node.cloned())];
    while let Some((id, version)) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some((_, s)) = first_appearance(repo, trees, id, path, version.as_ref(), |p| {
            reads += 1;
            reads <= MADE_OVER_READS && seen.insert(p)
        })?
        else {
            continue;
        };
        if reads > MADE_OVER_READS {
            return Ok(false);
        }
        if s.endpoint.as_deref().is_none_or(|e| e == "merge") {
            continue;
        }
        for p in &s.parents {
            reads += 1;
            if reads > MADE_OVER_READS {
                return Ok(false);
            }
            let ps = match repo.load_snapshot(p) {
                Ok(ps) => ps,
                Err(Error::Missing { .. }) => continue,
                Err(e) => return Err(e),
            };
            let previous = node_at(trees, Some(ps.tree), path)?;
            if same_content(previous.as_ref(), before) {
                return Ok(true);
            }
            if previous.is_some() {
                todo.push((*p, previous));
            }
        }
    }
    Ok(false)
}

/// The first parent of `s` (forgotten ones skipped) that holds the same content at `path`.
fn parent_holding(
    repo: &Repository,
    trees: &RepoTrees,
    s: &Snapshot,
    path: &[u8],
    node: Option<&crate::snapshot::Node>,
) -> Result<Option<(SnapshotId, Snapshot)>> {
    for p in &s.parents {
        let ps = match repo.load_snapshot(p) {
            Ok(ps) => ps,
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        if same_content(node_at(trees, Some(ps.tree), path)?.as_ref(), node) {
            return Ok(Some((*p, ps)));
        }
    }
    Ok(None)
}

/// Snapshots [`author`] reads at most.
const AUTHOR_WALK_MAX: usize = 16;

/// The endpoint whose version of `path` a head holds: its publisher, or for a combined state
/// the publisher of the parent that version came from (a short walk; `merge` if unknown).
fn author(repo: &Repository, trees: &RepoTrees, head: &Head, path: &[u8]) -> Result<String> {
    let (mut id, mut endpoint) = (head.snapshot, head.endpoint.clone());
    for _ in 0..AUTHOR_WALK_MAX {
        if endpoint != "merge" {
            break;
        }
        let s = repo.load_snapshot(&id)?;
        let node = node_at(trees, Some(s.tree), path)?;
        let Some((p, ps)) = parent_holding(repo, trees, &s, path, node.as_ref())? else {
            break;
        };
        (id, endpoint) = (p, ps.endpoint.unwrap_or_else(|| "merge".into()));
    }
    Ok(endpoint)
}

/// Combines several heads into one, deterministically: sorted by time, each merged into the
/// accumulated state on their common ancestor. Where two heads changed a path differently, the
/// version that appeared first ([`origin`]) is adopted — as if its publisher had won the race —
/// and the other is recorded as a conflict in the combined head (`Unadopted`, naming the
/// endpoint whose version it is, a snapshot holding it and the common ancestor): every endpoint whose base
/// holds that version then meets it as a conflict of its own and applies its own policy
/// (`user_prompt` parks it at once; nothing is settled for it here). The heads' conflict lists
/// are combined by [`shared_conflicts::combine`] (a join: order and repetition do not matter).
/// The result is sealed with
/// a content-derived salt, so two endpoints combining the same heads publish byte-identical
/// heads under one name — they converge. The snapshot is stored; publishing its head is the
/// caller's.
pub fn combine_heads(
    repo: &Repository,
    trees: &RepoTrees,
    set: &str,
    heads: &[(String, Head)],
) -> Result<Combined> {
    let mut sorted: Vec<&(String, Head)> = heads.iter().collect();
    sorted.sort_by(|a, b| {
        a.1.time_ns
            .cmp(&b.1.time_ns)
            .then(a.1.snapshot.cmp(&b.1.snapshot))
    });
    let mut conflicts: Vec<SharedConflict> = sorted
        .iter()
        .flat_map(|(_, h)| h.conflicts.iter().cloned())
        .collect();
    let first = &sorted[0].1;
    let mut acc_tree = repo.load_snapshot(&first.snapshot)?.tree;
    let mut acc_ids = vec![first.snapshot];
    let mut acc_time = first.time_ns;
    let rules = Rules::everything(Policy::KeepLocal);
    let (parked, untracked) = (BTreeMap::new(), BTreeSet::new());
    let mut packer = Packer::new(repo);
    for (_, h) in &sorted[1..] {
        let ancestor = common_ancestor(repo, &acc_ids, h.snapshot)?;
        let base = match ancestor {
            Some(id) => Some(repo.load_snapshot(&id)?.tree),
            None => None,
        };
        let remote = repo.load_snapshot(&h.snapshot)?.tree;
        let inp = Input {
            applied: base,
            local: Some(acc_tree),
            base,
            remote: Some(remote),
            rules: &rules,
            role: Role::Local,
            endpoint: "merge",
            now_ns: acc_time,
            parked: &parked,
            untracked: &untracked,
            force: None,
            held: None,
        };
        let mut out = merge(trees, &inp)?;
        for c in out
            .conflicts
            .iter()
            .filter(|c| c.outcome == Outcome::KeptLocal)
        {
            // The version published first wins, wherever it is now: a head's own time says
            // when its publisher stepped, not when the version at this path appeared, and
            // combining by head times let different combinations adopt each version in turn
            // (seed 7003: a directory and the file that replaced it, adopted alternately,
            // until one endpoint applied the other's version over its own).
            let theirs = origin(repo, trees, &[h.snapshot], &c.path, c.remote.as_ref())?;
            let ours = origin(repo, trees, &acc_ids, &c.path, c.local.as_ref())?;
            let swap = match (&theirs, &ours) {
                (Some(t), Some(o)) => (t.0, t.1) < (o.0, o.1),
                _ => false,
            };
            if swap {
                let (time_ns, version, endpoint) = ours.expect("compared");
                crate::endpoint::trees::patch(trees, &mut out.merged, &c.path, c.remote.clone())?;
                conflicts.push(SharedConflict {
                    path: c.path.clone(),
                    endpoint,
                    state: ConflictState::Unadopted,
                    time_ns,
                    version: Some(version),
                    ancestor,
                    extra: vec![],
                });
                continue;
            }
            let endpoint = author(repo, trees, h, &c.path)?;
            conflicts.push(SharedConflict {
                path: c.path.clone(),
                endpoint,
                state: ConflictState::Unadopted,
                time_ns: h.time_ns,
                version: Some(h.snapshot),
                ancestor,
                extra: vec![],
            });
        }
        acc_tree = write_tree(&mut packer, &out.merged)?;
        // The next pass reads this tree back: its blobs must be stored and indexed first.
        repo.write_index(
            std::mem::replace(&mut packer, Packer::new(repo)).finish()?,
            vec![],
            vec![],
        )?;
        acc_ids.push(h.snapshot);
        acc_time = h.time_ns;
    }
    repo.write_index(packer.finish()?, vec![], vec![])?;
    acc_ids.sort();
    let snap = Snapshot {
        time_ns: acc_time,
        tree: acc_tree,
        host: String::new(),
        user: String::new(),
        paths: vec![],
        tags: vec![],
        parents: acc_ids.clone(),
        sync_set: Some(set.to_string()),
        endpoint: Some("merge".into()),
        summary: Summary::default(),
        program_version: "prism-sync merge v1".into(),
        extra: vec![],
    };
    let snapshot = repo.save_snapshot_deterministic(&snap)?;
    let head = Head {
        set: set.to_string(),
        snapshot,
        endpoint: "merge".into(),
        time_ns: acc_time,
        merged: acc_ids,
        conflicts: shared_conflicts::combine(conflicts),
        confirmed_deletions: 0,
        extra: vec![],
    };
    Ok(Combined {
        snapshot,
        tree: acc_tree,
        head,
    })
}
