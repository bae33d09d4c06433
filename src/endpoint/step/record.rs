//! Phase 7: what the step did, made durable — the audit lines first (appended and fsynced),
//! then one redb transaction with the new base, folder tree, conflicts, activity and skipped
//! list. A crash before the transaction repeats an audit line, never loses one.

use std::collections::{BTreeMap, BTreeSet};

use super::conflicts::Settled;
use super::execute::Done;
use super::plan::Plan;
use super::publish::Published;
use super::remote::Remote;
use super::{Cx, counts, guard, human};
use crate::endpoint::audit;
use crate::endpoint::state::{
    Commit, DeletionWindow, LARGE_KEPT, Meta, SkippedFile, UNSYNCED_KEPT, Unsynced,
};
use crate::endpoint::trees::node_at;
use crate::error::Result;
use crate::snapshot::diff::Change;
use crate::snapshot::display_path;
use crate::sync::merge::{Action, same_content};

/// The skipped list: files the scan skipped, and shared files over this endpoint's limit.
fn skipped(cx: &mut Cx, plan: &Plan) -> Vec<(Vec<u8>, SkippedFile)> {
    let mut skipped: Vec<(Vec<u8>, SkippedFile)> = cx
        .report
        .skipped
        .iter()
        .map(|(p, m)| (p.clone(), SkippedFile { reason: m.clone() }))
        .collect();
    for s in &plan.out.skipped {
        let reason = format!(
            "{} in the shared state is over this endpoint's size limit of {}",
            human(s.size),
            human(s.limit)
        );
        cx.report.skipped.push((s.path.clone(), reason.clone()));
        skipped.push((s.path.clone(), SkippedFile { reason }));
    }
    skipped
}

/// The folder's file and byte counts after the step: those of its folder tree (carried from
/// the previous one by their difference).
fn local_counts(cx: &mut Cx, done: &Done) -> Result<()> {
    let c = counts::count(cx, done.applied_tree, counts::previous(cx, true))?;
    cx.report.local_files = c.files;
    cx.report.local_bytes = c.bytes;
    Ok(())
}

/// Paths the step knowingly left out of sync: failed actions, files left for later, files that
/// could not be read.
fn unsynced(cx: &Cx) -> (Vec<Unsynced>, u64) {
    let r = &cx.report;
    let all = r
        .failures
        .iter()
        .map(|(p, why)| (p.as_slice(), why.clone()))
        .chain(r.deferred.iter().map(|p| {
            let why = "changed while it was read: left for the next step".to_string();
            (p.as_slice(), why)
        }))
        .chain(r.scan_errors.iter().map(|e| {
            let why = format!("could not be read: {}", e.message);
            (e.rel.as_slice(), why)
        }));
    let mut total = 0u64;
    let mut kept = Vec::new();
    for (p, reason) in all {
        total += 1;
        if kept.len() < UNSYNCED_KEPT {
            kept.push(Unsynced {
                path: display_path(p),
                reason,
            });
        }
    }
    (kept, total)
}

/// The deletion guard's window after this step. Deletions the user confirmed
/// (`--allow-deletions`, `force-sync`) start it afresh at the next step.
fn deletion_window(cx: &Cx, remote: &Remote, plan: &Plan) -> Option<DeletionWindow> {
    if cx.opts.allow_deletions || cx.opts.force.is_some() {
        return None;
    }
    let (here, shared) = guard::counted_deletions(cx, remote, plan);
    guard::window(cx, here + shared > 0)
}

/// Paths where the folder keeps its own version because of a one-way mode: those found now,
/// and those found before that still differ (the merge skips unchanged paths silently).
fn kept_here(cx: &Cx, plan: &Plan, done: &Done) -> Result<(Vec<Vec<u8>>, u64)> {
    let mut all: BTreeSet<Vec<u8>> = cx.meta.kept_here.iter().cloned().collect();
    all.extend(plan.out.kept_here.iter().cloned());
    let (mut kept, mut total) = (Vec::new(), 0u64);
    for p in all {
        let here = node_at(&cx.trees, Some(done.applied_tree), &p)?;
        let shared = node_at(&cx.trees, Some(done.merged_tree), &p)?;
        if same_content(here.as_ref(), shared.as_ref()) {
            continue;
        }
        total += 1;
        if kept.len() < UNSYNCED_KEPT {
            kept.push(p);
        }
    }
    Ok((kept, total))
}

/// Endpoints seen in heads, with the time of their last publish.
fn endpoints_seen(cx: &Cx, remote: &Remote) -> Vec<(String, i64)> {
    let mut endpoints: BTreeMap<String, i64> = cx.meta.endpoints_seen.iter().cloned().collect();
    for (_, h) in &remote.heads {
        let e = endpoints.entry(h.endpoint.clone()).or_default();
        *e = (*e).max(h.time_ns);
    }
    if cx.report.published.is_some() {
        endpoints.insert(cx.ep.cfg.endpoint.clone(), cx.now);
    }
    endpoints.remove("merge");
    endpoints.into_iter().collect()
}

/// Where the endpoints of the heads read sync (host and folder of each head's snapshot, read
/// at the start of the step, so from the cache), added to what earlier steps saw.
fn endpoint_places(cx: &Cx, remote: &Remote) -> Vec<(String, String, String)> {
    let mut places: BTreeMap<String, (String, String)> = cx
        .meta
        .endpoint_places
        .iter()
        .map(|(e, h, f)| (e.clone(), (h.clone(), f.clone())))
        .collect();
    for (_, h) in &remote.heads {
        if h.endpoint == "merge" {
            continue;
        }
        if let Ok(s) = cx.repo.load_snapshot(&h.snapshot) {
            let folder = s.paths.first().map(|p| display_path(p)).unwrap_or_default();
            places.insert(h.endpoint.clone(), (s.host, folder));
        }
    }
    places.into_iter().map(|(e, (h, f))| (e, h, f)).collect()
}

/// One audit line per change applied here or published from here.
fn audit_lines(cx: &Cx, plan: &Plan, done: &Done, published: &Published) -> Vec<serde_json::Value> {
    let cfg = &cx.ep.cfg;
    let stamp = crate::time::format_rfc3339(cx.now);
    let mut lines = Vec::new();
    for (a, r) in plan.out.actions.iter().zip(&done.results) {
        if r.is_err() {
            continue;
        }
        let (action, path, old, new) = match a {
            Action::Write {
                path,
                node,
                expect: None,
            } => ("created", path, None, Some(node)),
            Action::Write {
                path,
                node,
                expect: Some(e),
            } => ("updated", path, Some(e), Some(node)),
            Action::Delete { path, expect } => ("deleted", path, Some(expect), None),
            Action::Rename {
                to,
                expect,
                node: Some(n),
                ..
            } => ("moved", to, Some(expect), Some(n)),
            Action::Rename {
                to,
                expect,
                node: None,
                ..
            } => ("kept-both", to, Some(expect), Some(expect)),
            Action::Mkdir { .. } | Action::Rmdir { .. } => continue,
        };
        let path = display_path(path);
        lines.push(audit::entry(
            &stamp,
            &cfg.name,
            &cfg.endpoint,
            "down",
            action,
            &path,
            old,
            new,
        ));
    }
    for (path, change, old, new) in &published.changes {
        if new.as_ref().or(old.as_ref()).is_some_and(|n| n.is_dir()) {
            continue;
        }
        let action = match change {
            Change::Added => "created",
            Change::Removed => "deleted",
            _ => "updated",
        };
        let mut e = audit::entry(
            &stamp,
            &cfg.name,
            &cfg.endpoint,
            "up",
            action,
            &display_path(path),
            old.as_ref(),
            new.as_ref(),
        );
        e["snapshot"] = serde_json::json!(published.snapshot.map(|s| s.to_hex()));
        lines.push(e);
    }
    lines
}

pub(super) fn record(
    cx: &mut Cx,
    remote: &Remote,
    plan: &Plan,
    done: &Done,
    settled: &Settled,
    published: &Published,
) -> Result<()> {
    let mut commit = Commit {
        conflicts_set: settled.set.clone(),
        conflicts_remove: settled.remove.clone(),
        ..Default::default()
    };
    commit.skipped = Some(skipped(cx, plan));
    let deletion_window = deletion_window(cx, remote, plan);
    local_counts(cx, done)?;
    let (unsynced, unsynced_total) = unsynced(cx);
    let (kept_here, kept_here_total) = kept_here(cx, plan, done)?;
    commit.meta = Meta {
        base_tree: Some(done.base_tree),
        base_snapshot: published.base_snapshot,
        applied_tree: Some(done.applied_tree),
        last_step_ns: Some(cx.now),
        last_change_ns: if cx.report.changed() {
            Some(cx.now)
        } else {
            cx.meta.last_change_ns
        },
        halt: None,
        local_files: cx.report.local_files,
        local_bytes: cx.report.local_bytes,
        remote_files: published.remote_files,
        remote_bytes: published.remote_bytes,
        heads: published.head.iter().cloned().collect(),
        last_error: None,
        endpoints_seen: endpoints_seen(cx, remote),
        paused: cx.meta.paused,
        unsynced,
        unsynced_total,
        deletion_window,
        shared_conflicts: settled.shared_view(),
        local_counted_tree: Some(done.applied_tree),
        shared_counted_tree: Some(done.merged_tree),
        kept_here,
        kept_here_total,
        large_files: large_files(cx),
        endpoint_places: endpoint_places(cx, remote),
    };
    audit::append(&cx.ep.audit_path(), &audit_lines(cx, plan, done, published))?;
    commit.activity = std::mem::take(&mut cx.activity);
    cx.ep.state.commit(commit)
}

/// The files over `warn_file_size` for `status`: those this scan read, and — after a scan of
/// the changed directories only — the previous step's list outside them.
fn large_files(cx: &Cx) -> Vec<(String, u64)> {
    let mut all: BTreeMap<String, u64> = cx
        .report
        .large
        .iter()
        .map(|(p, n)| (display_path(p), *n))
        .collect();
    if let Some(dirty) = &cx.opts.dirty {
        let untouched = |p: &str| {
            let parent = p.rsplit_once('/').map_or("", |(d, _)| d);
            !dirty.contains(p.as_bytes()) && !dirty.contains(parent.as_bytes())
        };
        for (p, n) in &cx.meta.large_files {
            if untouched(p) {
                all.entry(p.clone()).or_insert(*n);
            }
        }
    }
    let mut v: Vec<(String, u64)> = all.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(LARGE_KEPT);
    v
}
