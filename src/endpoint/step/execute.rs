//! Phase 5: the plan carried out in the folder. Local versions that may be in no snapshot are
//! saved first; every path is re-checked right before it is touched (`endpoint::apply`); what
//! did not happen is taken out of the trees the step records, so the next step retries it.

use std::os::unix::ffi::OsStrExt;

use super::Cx;
use super::plan::Plan;
use super::scan::Scanned;
use crate::endpoint::apply::{Failure, apply_counted};
use crate::endpoint::leftovers;
use crate::endpoint::state::Activity;
use crate::endpoint::trees::{node_at, patch, patch_entry, restore, write_tree};
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::id::BlobId;
use crate::repository::{Packer, hostname, username};
use crate::snapshot::display_path;
use crate::sync::merge::{Action, MTree};

/// The outcome of carrying out the plan.
pub(super) struct Done {
    /// One result per planned action.
    pub results: Vec<std::result::Result<(), Failure>>,
    /// The new shared state.
    pub merged_tree: BlobId,
    /// The new base: the shared state, except where an action failed (there the old base).
    pub base_tree: BlobId,
    /// What the folder holds now.
    pub applied_tree: BlobId,
}

/// Local versions about to be overwritten or deleted that the base does not hold (so possibly
/// no snapshot does) are saved first as a snapshot tagged `before-sync`: every version stays
/// restorable.
pub(super) fn save_unsaved_versions(cx: &Cx, scanned: &Scanned, plan: &Plan) -> Result<()> {
    let mut unsaved = false;
    for a in &plan.out.actions {
        let (path, expect) = match a {
            Action::Write {
                path,
                expect: Some(e),
                ..
            }
            | Action::Delete { path, expect: e } => (path, e),
            _ => continue,
        };
        if node_at(&cx.trees, plan.base_tree, path)?.as_ref() != Some(expect) {
            unsaved = true;
            break;
        }
    }
    if !unsaved {
        return Ok(());
    }
    let cfg = &cx.ep.cfg;
    let snap = Snapshot {
        time_ns: cx.now,
        tree: scanned.result.tree,
        host: hostname(),
        user: username(),
        paths: vec![cfg.local_path.as_os_str().as_bytes().to_vec()],
        tags: vec!["before-sync".into()],
        parents: vec![],
        sync_set: Some(cfg.name.clone()),
        endpoint: Some(cfg.endpoint.clone()),
        summary: scanned.result.summary.clone(),
        program_version: concat!("prism-sync ", env!("CARGO_PKG_VERSION")).into(),
        extra: vec![],
    };
    cx.repo.save_snapshot(&snap)?;
    Ok(())
}

/// The activity line of an action carried out, if it has one.
fn activity(now: i64, a: &Action) -> Option<Activity> {
    let (action, path, size) = match a {
        Action::Write {
            path,
            node,
            expect: None,
        } => ("downloaded", path, node.size()),
        Action::Write {
            path,
            node,
            expect: Some(_),
        } => ("updated", path, node.size()),
        Action::Delete { path, expect } => ("deleted", path, expect.size()),
        Action::Rename {
            to,
            expect,
            node: Some(_),
            ..
        } => ("moved", to, expect.size()),
        Action::Rename {
            to,
            expect,
            node: None,
            ..
        } => ("kept-both", to, expect.size()),
        Action::Mkdir { .. } | Action::Rmdir { .. } => return None,
    };
    Some(Activity {
        time_ns: now,
        action: action.into(),
        path: display_path(path),
        size,
        direction: "down".into(),
    })
}

pub(super) fn execute(cx: &mut Cx, scanned: &Scanned, plan: &Plan) -> Result<Done> {
    let (repo, cfg) = (cx.repo, &cx.ep.cfg);
    // Temp files of killed writers go first: they would keep a removed directory alive.
    let cleaned = leftovers::clean(&cfg.local_path, &scanned.temp_files, cx.now);
    cx.report.leftovers_removed = cleaned.removed;
    let results = apply_counted(
        repo,
        &cfg.local_path,
        &plan.out.actions,
        cx.opts.stop_after,
        cfg.folding(),
        cx.opts.progress.as_deref(),
    )?;
    let (mut merged, mut applied) = (plan.out.merged.clone(), plan.out.applied.clone());
    let scan_tree = Some(scanned.result.tree);
    // Directories that stayed hold files that do not sync. They are in the folder, without
    // what synced (shallowest first, so that a kept parent is there for a kept child). Held by
    // excluded files, that is how it stays; held by a temp file still being written, the
    // removal is retried like a failed action.
    let mut kept: Vec<&[u8]> = plan
        .out
        .actions
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r, Err(Failure::NotEmpty)))
        .map(|(a, _)| a.path())
        .collect();
    kept.sort_by_key(|p| p.iter().filter(|&&b| b == b'/').count());
    let mut base: Option<Vec<MTree>> = None;
    for path in kept {
        if let Some(node) = node_at(&cx.trees, scan_tree, path)? {
            patch_entry(
                &cx.trees,
                &mut applied,
                path,
                Some(MTree::Dir(node, vec![])),
            )?;
        }
        let inside =
            |t: &&(Vec<u8>, String)| t.0.starts_with(path) && t.0.get(path.len()) == Some(&b'/');
        let why = if let Some((temp, why)) = cleaned.kept.iter().find(inside) {
            format!(
                "kept although removed elsewhere: it holds {} ({why}); retried",
                display_path(temp)
            )
        } else if !held_by_unsynced(&cfg.local_path, path, &scanned.rules) {
            // B12: held by something made while the step ran (or by nothing by now): recorded
            // as kept, the directory would stay here for good once that is gone — the folder
            // tree holds it, the base does not, and neither side "changes" it again.
            "kept although removed elsewhere: something appeared in it during the step; retried"
                .to_string()
        } else {
            continue;
        };
        let base = base.get_or_insert_with(|| merged.clone());
        patch(
            &cx.trees,
            base,
            path,
            node_at(&cx.trees, plan.base_tree, path)?,
        )?;
        cx.report.failures.push((path.to_vec(), why));
    }
    for (a, r) in plan.out.actions.iter().zip(&results) {
        match r {
            Ok(()) => cx.activity.extend(activity(cx.now, a)),
            Err(Failure::NotEmpty) => {}
            Err(f) => {
                // Not done: the folder keeps what the scan saw, and the shared change stays
                // "new" for this endpoint (its base keeps the old state), so the next step
                // retries it — or, if the file was edited meanwhile, sees a conflict.
                let paths: Vec<&[u8]> = match a {
                    Action::Rename { from, to, .. } => vec![from, to],
                    other => vec![other.path()],
                };
                let base = base.get_or_insert_with(|| merged.clone());
                for p in paths {
                    restore(&cx.trees, &mut applied, p, scan_tree)?;
                    restore(&cx.trees, base, p, plan.base_tree)?;
                }
                cx.report.failures.push((a.path().to_vec(), f.to_string()));
            }
        }
    }
    // Paths the scan could not track keep what they hold in the folder; the merge left the
    // shared version in the merged tree there. The base keeps its old state at them, so that a
    // shared change stays new for this folder until the path is tracked again (recording it as
    // seen made base == head and folder == folder tree: nothing to do, for good).
    if !scanned.untracked.is_empty() {
        let base = base.get_or_insert_with(|| merged.clone());
        for u in &scanned.untracked {
            patch(&cx.trees, base, u, node_at(&cx.trees, plan.base_tree, u)?)?;
        }
    }
    cx.report.rescan = moved_untracked(&scanned.untracked, &plan.out.actions, &results);
    // A directory kept as a conflict copy moves with whatever its files hold by then: a file
    // written between the scan and the rename is under the copy now, and the watcher named it
    // at its old path (seed 4603). Every file of the copy is looked at again.
    let mut copied = Vec::new();
    for (a, r) in plan.out.actions.iter().zip(&results) {
        if let (
            Action::Rename {
                to,
                expect,
                node: None,
                ..
            },
            Ok(()),
        ) = (a, r)
            && let crate::snapshot::NodeKind::Dir { subtree } = expect.kind
        {
            crate::snapshot::tree::walk(repo, &subtree, &mut |p, n| {
                if !n.is_dir() {
                    let mut at = to.clone();
                    at.push(b'/');
                    at.extend_from_slice(p);
                    copied.push(at);
                }
                Ok(true)
            })?;
        }
    }
    cx.report.rescan.extend(copied);
    let mut packer = Packer::new(repo);
    let merged_tree = write_tree(&mut packer, &merged)?;
    let base_tree = match &base {
        Some(b) => write_tree(&mut packer, b)?,
        None => merged_tree,
    };
    merged.clear();
    let applied_tree = write_tree(&mut packer, &applied)?;
    applied.clear();
    repo.write_index(packer.finish()?, vec![], vec![])?;
    Ok(Done {
        results,
        merged_tree,
        base_tree,
        applied_tree,
    })
}

/// Untracked paths the step moved along with a directory (a directory kept as a conflict copy,
/// a move made elsewhere), under their new paths. Neither the folder tree nor any event names
/// them there, so an event-driven scan would take their new directory from the folder tree,
/// without them, and never look at them again.
fn moved_untracked(
    untracked: &std::collections::BTreeSet<Vec<u8>>,
    actions: &[Action],
    results: &[std::result::Result<(), Failure>],
) -> Vec<Vec<u8>> {
    let renames: Vec<(&[u8], &[u8])> = actions
        .iter()
        .zip(results)
        .filter_map(|(a, r)| match (a, r) {
            (Action::Rename { from, to, .. }, Ok(())) => Some((from.as_slice(), to.as_slice())),
            _ => None,
        })
        .collect();
    if renames.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for u in untracked {
        let mut at = u.clone();
        for (from, to) in &renames {
            if at.starts_with(from) && at.get(from.len()) == Some(&b'/') {
                let mut moved = to.to_vec();
                moved.extend_from_slice(&at[from.len()..]);
                at = moved;
            }
        }
        if at != *u {
            out.push(at);
        }
    }
    out
}

/// Does the directory at `rel` hold something, and only entries that do not sync (excluded by
/// the rules, or temp files of a writer), at any depth? That is how a directory removed
/// elsewhere stays here. Unreadable: assumed so (it stays, as before).
pub(super) fn held_by_unsynced(
    root: &std::path::Path,
    rel: &[u8],
    rules: &crate::sync::rules::Rules,
) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let dir = root.join(std::ffi::OsStr::from_bytes(rel));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return true;
    };
    let mut any = false;
    for e in entries {
        let Ok(e) = e else { return true };
        let Ok(ft) = e.file_type() else { return true };
        let name = e.file_name();
        let mut sub = rel.to_vec();
        sub.push(b'/');
        sub.extend_from_slice(name.as_bytes());
        any = true;
        let unsynced = rules.excluded(&sub, ft.is_dir())
            || (!ft.is_dir() && leftovers::is_temp_name(name.as_bytes()))
            || (ft.is_dir() && held_by_unsynced(root, &sub, rules));
        if !unsynced {
            return false;
        }
    }
    any
}
