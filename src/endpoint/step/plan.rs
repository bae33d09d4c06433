//! Phase 3: the three-way merge of base, folder and shared state (a pure function, in
//! `sync::merge`) → merged tree, folder plan, conflicts.

use std::collections::{BTreeMap, BTreeSet};

use super::execute::held_by_unsynced;
use super::remote::{Remote, made_over};
use super::scan::Scanned;
use super::{Cx, is_missing};
use crate::endpoint::state::ConflictState;
use crate::endpoint::trees::{node_at, patch, write_tree};
use crate::error::Result;
use crate::format::head::ConflictState as SharedState;
use crate::id::BlobId;
use crate::repository::Packer;
use crate::sync::Policy;
use crate::sync::merge::{Input, Output, merge};
use crate::sync::merge::{MTree, TreeSource, same, same_content};

/// Conflicts of the set (path, endpoint) that this step met as conflicts of its own.
pub(super) type Consumed = Vec<(Vec<u8>, String)>;

pub(super) struct Plan {
    pub out: Output,
    /// Conflicts found when concurrent heads were combined whose version this endpoint's base
    /// held: the merge met them as conflicts here (path, endpoint of the record).
    pub consumed: Consumed,
    /// The base and folder trees the merge used (`None` when they were pruned away).
    pub base_tree: Option<BlobId>,
    pub applied_tree: Option<BlobId>,
    /// Conflicts parked here before this step.
    pub stored: Vec<(Vec<u8>, ConflictState)>,
}

pub(super) fn plan(cx: &mut Cx, scanned: &Scanned, remote: &Remote) -> Result<Plan> {
    let cfg = &cx.ep.cfg;
    let stored = cx.ep.state.conflicts()?;
    let parked: BTreeMap<Vec<u8>, Option<Policy>> = stored
        .iter()
        .map(|(p, c)| (p.clone(), c.resolution))
        .collect();
    let held = |p: &[u8]| held_by_unsynced(&cfg.local_path, p, &scanned.rules);
    let run = |base: Option<BlobId>, applied: Option<BlobId>| {
        let inp = Input {
            applied,
            local: Some(scanned.result.tree),
            base,
            remote: remote.tree,
            rules: &scanned.rules,
            role: cfg.role,
            endpoint: &cfg.endpoint,
            now_ns: cx.now,
            parked: &parked,
            untracked: &scanned.untracked,
            force: cx.opts.force,
            held: Some(&held),
        };
        merge(&cx.trees, &inp)
    };
    let base_tree = cx.meta.base_tree;
    let applied_tree = cx.meta.applied_tree;
    let (base_tree, consumed) = match rebase(cx, base_tree, remote) {
        Ok(r) => r,
        Err(e) if is_missing(&e) => (base_tree, vec![]),
        Err(e) => return Err(e),
    };
    let base_tree = match unchosen(cx, base_tree, applied_tree, scanned, remote, &parked) {
        Ok(b) => b,
        Err(e) if is_missing(&e) => base_tree,
        Err(e) => return Err(e),
    };
    let (out, base_tree, applied_tree) = match run(base_tree, applied_tree) {
        Ok(o) => (o, base_tree, applied_tree),
        // The last agreed trees were pruned away (a long-offline endpoint whose snapshots
        // expired): merge without them. Differences then become conflicts, never losses.
        Err(e) if is_missing(&e) => (run(None, None)?, None, None),
        Err(e) => return Err(e),
    };
    cx.report.publish_deletes = out.publish_deletes;
    cx.report.local_deletes = out.local_deletes;
    Ok(Plan {
        out,
        consumed,
        base_tree,
        applied_tree,
        stored,
    })
}

/// Where a combination of concurrent heads did not adopt a version that this endpoint's base
/// holds (its own publish, usually), the base takes the common ancestor's state at that path:
/// the merge then sees that both sides changed it, and this endpoint's policy decides (a
/// `user_prompt` set parks it) — the shared state's choice is never applied over it silently.
fn rebase(cx: &Cx, base: Option<BlobId>, remote: &Remote) -> Result<(Option<BlobId>, Consumed)> {
    let Some(base_id) = base else {
        return Ok((base, vec![]));
    };
    let mut edits = BaseEdits::new(cx, base_id);
    let mut consumed = Vec::new();
    for c in &remote.conflicts {
        let (SharedState::Unadopted, Some(version)) = (c.state, c.version) else {
            continue;
        };
        let version_tree = cx.repo.load_snapshot(&version)?.tree;
        let theirs = node_at(&cx.trees, Some(version_tree), &c.path)?;
        let ours = node_at(&cx.trees, Some(base_id), &c.path)?;
        if ours.is_none() || !same_content(ours.as_ref(), theirs.as_ref()) {
            continue;
        }
        let ancestor = match c.ancestor {
            Some(a) => node_at(&cx.trees, Some(cx.repo.load_snapshot(&a)?.tree), &c.path)?,
            None => None,
        };
        edits.set(&c.path, ancestor)?;
        consumed.push((c.path.clone(), c.endpoint.clone()));
    }
    Ok((edits.finish()?.or(base), consumed))
}

/// At a path the set's conflict list names (parked, not adopted or resolved — a resolution is
/// carried for an hour), a change in the shared state replaces this folder's version only if
/// whoever made it had that version ([`made_over`]). Otherwise it is concurrent with it: an
/// endpoint that parked the path publishes the shared version as it was, not a choice of its
/// own, and combining its head with one that still holds this version would otherwise turn it
/// into a plain change (the randomized test, seed 7005: a directory turned into a symlink here
/// while others edited inside it; the directory came back that way after this endpoint's
/// parked conflict had settled, and the symlink was lost). There the base forgets its version,
/// so the merge sees both sides changed and this endpoint's policy decides.
fn unchosen(
    cx: &Cx,
    base: Option<BlobId>,
    applied: Option<BlobId>,
    scanned: &Scanned,
    remote: &Remote,
    parked: &BTreeMap<Vec<u8>, Option<Policy>>,
) -> Result<Option<BlobId>> {
    let (Some(base_id), Some(remote_snap)) = (base, remote.snapshot) else {
        return Ok(base);
    };
    let paths: BTreeSet<&Vec<u8>> = remote.conflicts.iter().map(|c| &c.path).collect();
    let mut edits = BaseEdits::new(cx, base_id);
    for p in paths {
        let mode = scanned.rules.mode(p);
        let role = cx.ep.cfg.role;
        if parked.contains_key(p) || !mode.publishes(role) || !mode.applies(role) {
            continue;
        }
        let l = node_at(&cx.trees, Some(scanned.result.tree), p)?;
        let b = node_at(&cx.trees, Some(base_id), p)?;
        let r = node_at(&cx.trees, remote.tree, p)?;
        let plain_incoming = l.is_some()
            && r.is_some()
            && same(node_at(&cx.trees, applied, p)?.as_ref(), l.as_ref())
            && same_content(l.as_ref(), b.as_ref())
            && !same_content(b.as_ref(), r.as_ref());
        let both_dirs =
            b.as_ref().is_some_and(|n| n.is_dir()) && r.as_ref().is_some_and(|n| n.is_dir());
        if !plain_incoming || both_dirs {
            continue;
        }
        if made_over(cx.repo, &cx.trees, remote_snap, p, r.as_ref(), b.as_ref())? {
            continue;
        }
        edits.set(p, None)?;
    }
    Ok(edits.finish()?.or(base))
}

/// Edits of a base tree, path by path, written once at the end: nothing is written when no
/// path was edited.
struct BaseEdits<'a> {
    cx: &'a Cx<'a>,
    base: BlobId,
    entries: Option<Vec<MTree>>,
}

impl<'a> BaseEdits<'a> {
    fn new(cx: &'a Cx<'a>, base: BlobId) -> Self {
        BaseEdits {
            cx,
            base,
            entries: None,
        }
    }

    /// The base holds `node` at `path` (`None`: nothing there).
    fn set(&mut self, path: &[u8], node: Option<crate::snapshot::Node>) -> Result<()> {
        let (trees, base) = (&self.cx.trees, self.base);
        let e = self.entries.get_or_insert_with(|| {
            trees
                .dir(&base)
                .map(|v| v.into_iter().map(MTree::Same).collect())
                .unwrap_or_default()
        });
        patch(trees, e, path, node)
    }

    /// The edited tree, stored; `None` if nothing was edited.
    fn finish(self) -> Result<Option<BlobId>> {
        let Some(e) = self.entries else {
            return Ok(None);
        };
        let mut packer = Packer::new(self.cx.repo);
        let tree = write_tree(&mut packer, &e)?;
        self.cx.repo.write_index(packer.finish()?, vec![], vec![])?;
        Ok(Some(tree))
    }
}
