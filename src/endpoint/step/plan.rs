//! Phase 3: the three-way merge of base, folder and shared state (a pure function, in
//! `sync::merge`) → merged tree, folder plan, conflicts.

use std::collections::BTreeMap;

use super::remote::Remote;
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
use crate::sync::merge::{MTree, TreeSource, same_content};

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
    let mut entries: Option<Vec<MTree>> = None;
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
        let e = entries.get_or_insert_with(|| {
            cx.trees
                .dir(&base_id)
                .map(|v| v.into_iter().map(MTree::Same).collect())
                .unwrap_or_default()
        });
        patch(&cx.trees, e, &c.path, ancestor)?;
        consumed.push((c.path.clone(), c.endpoint.clone()));
    }
    let Some(e) = entries else {
        return Ok((base, consumed));
    };
    let mut packer = Packer::new(cx.repo);
    let tree = write_tree(&mut packer, &e)?;
    cx.repo.write_index(packer.finish()?, vec![], vec![])?;
    Ok((Some(tree), consumed))
}
