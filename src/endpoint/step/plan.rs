//! Phase 3: the three-way merge of base, folder and shared state (a pure function, in
//! `sync::merge`) → merged tree, folder plan, conflicts.

use std::collections::BTreeMap;

use super::remote::Remote;
use super::scan::Scanned;
use super::{Cx, is_missing};
use crate::endpoint::state::ConflictState;
use crate::error::Result;
use crate::id::BlobId;
use crate::sync::Policy;
use crate::sync::merge::{Input, Output, merge};

pub(super) struct Plan {
    pub out: Output,
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
    let base_tree = cx.meta.base_tree.as_deref().and_then(BlobId::from_hex);
    let applied_tree = cx.meta.applied_tree.as_deref().and_then(BlobId::from_hex);
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
        base_tree,
        applied_tree,
        stored,
    })
}
