//! Phase 6: if the merged state differs from the shared one, it is stored as a snapshot (its
//! trees were written by the previous phase) and published as a head that replaces the head(s)
//! this step read — in that order, so a head never names a state that is not stored.

use std::os::unix::ffi::OsStrExt;

use super::conflicts::Settled;
use super::execute::Done;
use super::remote::Remote;
use super::scan::Scanned;
use super::{Cx, TreeChange, counts};
use crate::endpoint::state::Activity;
use crate::error::Result;
use crate::format::head::Head;
use crate::format::snapshot::{Snapshot, Summary};
use crate::id::SnapshotId;
use crate::repository::heads::{delete_heads, publish as publish_head};
use crate::repository::{hostname, now_ns, username};
use crate::snapshot::diff::{Change, diff_trees};
use crate::snapshot::display_path;

pub(super) struct Published {
    /// The snapshot this step published, if it published.
    pub snapshot: Option<SnapshotId>,
    /// The head this step leaves as the set's state: the one it published, else the one it
    /// read (or combined). These — and only these — are the heads the step saw and merged.
    pub head: Option<String>,
    /// The snapshot the new base comes from: the published one, else the head's.
    pub base_snapshot: Option<SnapshotId>,
    /// What the published state changed in the shared one.
    pub changes: Vec<TreeChange>,
    pub remote_files: u64,
    pub remote_bytes: u64,
}

/// Every difference between the shared state and the merged one.
fn changes(cx: &Cx, remote: &Remote, done: &Done) -> Result<Vec<TreeChange>> {
    let mut changes = Vec::new();
    match remote.tree {
        Some(rt) => diff_trees(cx.repo, &rt, &done.merged_tree, &mut |d| {
            changes.push((d.path, d.change, d.old, d.new))
        })?,
        None => crate::snapshot::tree::walk(cx.repo, &done.merged_tree, &mut |p, n| {
            changes.push((p.to_vec(), Change::Added, None, Some(n.clone())));
            Ok(true)
        })?,
    }
    Ok(changes)
}

pub(super) fn publish(
    cx: &mut Cx,
    scanned: &Scanned,
    remote: &Remote,
    done: &Done,
    settled: &Settled,
) -> Result<Published> {
    let shared = counts::count(cx, done.merged_tree, counts::previous(cx, false))?;
    let (remote_files, remote_bytes) = (shared.files, shared.bytes);
    if remote.tree == Some(done.merged_tree) && remote.conflicts == settled.shared {
        delete_heads(cx.repo, &remote.superseded)?;
        return Ok(Published {
            snapshot: None,
            head: remote.name.clone(),
            base_snapshot: remote.snapshot,
            changes: vec![],
            remote_files,
            remote_bytes,
        });
    }
    let changes = changes(cx, remote, done)?;
    let cfg = &cx.ep.cfg;
    let mut parents: Vec<SnapshotId> = cx
        .meta
        .base_snapshot
        .into_iter()
        .chain(remote.snapshot)
        .collect();
    parents.dedup();
    let scan = &scanned.result.summary;
    let snap = Snapshot {
        time_ns: cx.now,
        tree: done.merged_tree,
        host: hostname(),
        user: username(),
        paths: vec![cfg.local_path.as_os_str().as_bytes().to_vec()],
        tags: vec![],
        parents,
        sync_set: Some(cfg.name.clone()),
        endpoint: Some(cfg.endpoint.clone()),
        summary: Summary {
            files_unchanged: remote_files,
            total_bytes: remote_bytes,
            blobs_added: scan.blobs_added,
            bytes_added_raw: scan.bytes_added_raw,
            bytes_added_stored: scan.bytes_added_stored,
            duration_ns: (now_ns() - cx.now).max(0) as u64,
            ..Default::default()
        },
        program_version: concat!("prism-sync ", env!("CARGO_PKG_VERSION")).into(),
        extra: vec![],
    };
    let sid = cx.repo.save_snapshot(&snap)?;
    let head = Head {
        set: cfg.name.clone(),
        snapshot: sid,
        endpoint: cfg.endpoint.clone(),
        time_ns: cx.now,
        merged: remote.snapshot.into_iter().collect(),
        conflicts: settled.shared.clone(),
        confirmed_deletions: if cx.opts.allow_deletions || cx.opts.force.is_some() {
            cx.report.publish_deletes
        } else {
            0
        },
        extra: vec![],
    };
    let replaces: Vec<String> = remote
        .name
        .iter()
        .chain(&remote.superseded)
        .cloned()
        .collect();
    let name = publish_head(cx.repo, &head, &replaces)?;
    cx.report.published = Some(sid);
    for (path, change, old, new) in &changes {
        if new.as_ref().or(old.as_ref()).is_some_and(|n| n.is_dir()) {
            continue;
        }
        let (action, size) = match change {
            Change::Removed => ("deleted", old.as_ref().map(|n| n.size()).unwrap_or(0)),
            _ => ("uploaded", new.as_ref().map(|n| n.size()).unwrap_or(0)),
        };
        cx.report.uploads.push((path.clone(), change.code()));
        cx.activity.push(Activity {
            time_ns: cx.now,
            action: action.into(),
            path: display_path(path),
            size,
            direction: "up".into(),
        });
    }
    Ok(Published {
        snapshot: Some(sid),
        head: Some(name),
        base_snapshot: Some(sid),
        changes,
        remote_files,
        remote_bytes,
    })
}
