//! Phase 4: the deletion guards. They run after the merge and before anything is touched, so a
//! halted step changes nothing anywhere. `force-sync` and `--allow-deletions` pass them.

use super::Cx;
use super::plan::Plan;
use super::scan::Scanned;
use crate::endpoint::trees::RepoTrees;
use crate::error::Result;
use crate::id::BlobId;
use crate::snapshot::NodeKind;
use crate::sync::merge::TreeSource;

/// Does the tree hold at least one file or symlink? Stops at the first one.
fn tree_has_files(trees: &RepoTrees, root: &BlobId) -> Result<bool> {
    let mut stack = vec![*root];
    while let Some(id) = stack.pop() {
        for n in trees.dir(&id)? {
            match n.kind {
                NodeKind::Dir { subtree } => stack.push(subtree),
                _ => return Ok(true),
            }
        }
    }
    Ok(false)
}

/// Why the step must halt, if it must.
pub(super) fn check(cx: &Cx, scanned: &Scanned, plan: &Plan) -> Result<Option<String>> {
    if cx.opts.force.is_some() || cx.opts.allow_deletions {
        return Ok(None);
    }
    let cfg = &cx.ep.cfg;
    // No files left (empty directories do not count) where there were files last time. Files
    // the scan left for later (still being written, unreadable, oversized) count.
    let local_empty =
        scanned.untracked.is_empty() && !tree_has_files(&cx.trees, &scanned.result.tree)?;
    let had_files = cx.meta.local_files > 0 && plan.applied_tree.is_some();
    if local_empty && had_files {
        return Ok(Some(format!(
            "the folder {} is empty but held files at the last sync: nothing was deleted anywhere. If you emptied it on purpose, run `prism-sync sync {} --allow-deletions`; to get the files back, `prism-sync force-sync {} --direction down`",
            cfg.local_path.display(),
            cfg.name,
            cfg.name
        )));
    }
    // Deletions made in this folder, about to spread; moves are not deletions. Deletions that
    // arrive from elsewhere passed their own endpoint's guard, and what they delete here is in
    // the snapshots.
    let deletes = plan.out.publish_deletes;
    let total = cx
        .report
        .local_files
        .max(cx.meta.local_files)
        .max(cx.meta.remote_files)
        .max(1);
    let pct = deletes as f64 * 100.0 / total as f64;
    if deletes > cfg.max_delete_count || (deletes >= 10 && pct > cfg.max_delete_percent) {
        return Ok(Some(format!(
            "this step would delete {deletes} of {total} files ({pct:.0}%; limits: {} files or {}%): nothing was changed. Preview with `prism-sync sync {} --dry-run --allow-deletions`; if that is intended, run `prism-sync sync {} --allow-deletions`",
            cfg.max_delete_count, cfg.max_delete_percent, cfg.name, cfg.name
        )));
    }
    Ok(None)
}
