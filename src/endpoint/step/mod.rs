//! The sync step (see the module docs of `endpoint` and `format-spec/sync.md`), written as named
//! phases over a small context, in the order the spec gives them:
//!
//! 1. [`scan`]: the folder under the set's rules → a tree (plus what could not be tracked);
//! 2. [`remote`]: the set's head(s), combined into one if endpoints published concurrently;
//! 3. [`plan`]: the three-way merge → merged tree, folder plan, conflicts;
//! 4. [`guard`]: halts before anything is touched (vanished or emptied folder, deletions);
//! 5. [`execute`]: saves local versions that may be in no snapshot, applies the plan, and
//!    turns what did not happen into the trees to record; [`conflicts`] settles what is
//!    parked here and the set's conflict list;
//! 6. [`publish`]: stores the merged state as a snapshot and a head if it (or the set's
//!    conflict list) changed;
//! 7. [`record`]: the audit lines, then one redb transaction with the new base.
//!
//! Crash ordering, phase by phase: nothing touches the folder before the guards pass; a local
//! version is saved before it is overwritten; trees, then snapshot, then head; the audit log,
//! then the state. A crash anywhere before the state commit makes the next step redo the work.

mod conflicts;
mod counts;
mod execute;
mod guard;
mod plan;
mod publish;
mod record;
mod remote;
mod scan;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::state::{Activity, Meta};
use super::trees::RepoTrees;
use super::{Endpoint, StepLock};
use crate::archiver::{Progress, SoftError, StepPhase};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repository::heads::{head_names, read_heads};
use crate::repository::session::Session;
use crate::repository::{Repository, now_ns};
use crate::snapshot::Node;
use crate::snapshot::diff::Change;
use crate::sync::Force;
use crate::sync::merge::{Action, ConflictRecord};

pub use remote::combine_heads;

#[derive(Clone, Default)]
pub struct StepOptions {
    pub force: Option<Force>,
    /// Go ahead although the deletion guards would halt (the user emptied the folder or
    /// deleted many files on purpose). The merge is the normal one: only what this folder
    /// deleted is deleted elsewhere, and new files from elsewhere still arrive.
    pub allow_deletions: bool,
    /// Plan only: nothing is applied, published or recorded.
    pub dry_run: bool,
    /// Tests: stop after this many actions, as if killed.
    pub stop_after: Option<usize>,
    pub progress: Option<Arc<Progress>>,
    /// Event-driven scan: only these paths (and their ancestors) may have changed since the
    /// last step; every other directory is taken from the folder tree of that step. `None`:
    /// scan everything.
    pub dirty: Option<BTreeSet<Vec<u8>>>,
    /// Leave files that are still being written for the next step: files modified less than
    /// this long ago (the daemon passes its settle window). Files that change while they are
    /// read are always left for the next step.
    pub defer_recent: Option<std::time::Duration>,
}

#[derive(Debug, Default)]
pub struct StepReport {
    /// The step stopped before changing anything; why.
    pub halted: Option<String>,
    pub dry_run: bool,
    pub actions: Vec<Action>,
    pub failures: Vec<(Vec<u8>, String)>,
    pub conflicts: Vec<ConflictRecord>,
    pub resolved: Vec<Vec<u8>>,
    pub published: Option<SnapshotId>,
    /// Heads combined before merging (concurrent publishers).
    pub heads_combined: usize,
    /// Changes this step published: path and change code (`+`, `-`, `M`, `U`, `T`).
    pub uploads: Vec<(Vec<u8>, char)>,
    pub scan_errors: Vec<SoftError>,
    pub skipped: Vec<(Vec<u8>, String)>,
    /// Files this scan read that are over `warn_file_size`, with their size: synced anyway,
    /// named so a stray dump or dataset gets noticed.
    pub large: Vec<(Vec<u8>, u64)>,
    pub local_files: u64,
    pub local_bytes: u64,
    /// Files left for the next step (still being written).
    pub deferred: Vec<Vec<u8>>,
    /// Paths an event-driven scan must look at again although no event may name them: files
    /// this step could not track that it moved along with their directory (a conflict copy, a
    /// move), under their new paths. The folder tree of the step does not hold them.
    pub rescan: Vec<Vec<u8>>,
    pub publish_deletes: u64,
    pub local_deletes: u64,
    /// Stale temp files of killed writers this step removed.
    pub leftovers_removed: Vec<Vec<u8>>,
}

impl StepReport {
    /// Did the step change the folder or the shared state?
    pub fn changed(&self) -> bool {
        !self.actions.is_empty() || self.published.is_some()
    }
}

/// A change between two trees: path, kind, old node, new node.
type TreeChange = (Vec<u8>, Change, Option<Node>, Option<Node>);

/// What every phase reads and adds to.
struct Cx<'a> {
    ep: &'a Endpoint,
    repo: &'a Repository,
    opts: &'a StepOptions,
    trees: RepoTrees<'a>,
    /// The step's time: of its snapshot, head, activity and audit lines.
    now: i64,
    /// The state as the previous step left it.
    meta: Meta,
    report: StepReport,
    activity: Vec<Activity>,
}

impl Cx<'_> {
    /// Stops the step: records why (the set stays halted until a step passes) and reports it.
    fn halt(mut self, why: String) -> Result<StepReport> {
        self.ep.state.update_meta(|m| m.halt = Some(why.clone()))?;
        self.report.halted = Some(why);
        Ok(self.report)
    }
}

/// One sync step of the set at this endpoint.
pub fn step(ep: &Endpoint, repo: &Repository, opts: &StepOptions) -> Result<StepReport> {
    let _lock = StepLock::acquire(&ep.lock_path())?;
    let cx = Cx {
        ep,
        repo,
        opts,
        trees: RepoTrees::new(repo),
        now: now_ns(),
        meta: ep.state.meta()?,
        report: StepReport {
            dry_run: opts.dry_run,
            ..Default::default()
        },
        activity: Vec::new(),
    };
    if let Some(why) = scan::folder_missing(&cx)? {
        return cx.halt(why);
    }
    run(cx)
}

fn run(mut cx: Cx) -> Result<StepReport> {
    let repo = cx.repo;
    // Remote latency: the session starts while the index loads and the set's heads (and their
    // snapshots, into the metadata cache) are read: one round trip of waiting instead of four in
    // a row. The heads are those this step merges; one published later is the next step's.
    let set = cx.ep.cfg.name.clone();
    let t = crate::timing::span("step: session, index, heads");
    let (session, index, heads) = std::thread::scope(|s| {
        let index = s.spawn(|| repo.load_index());
        let heads = s.spawn(|| {
            let listing = read_heads(repo, &set)?;
            for (_, h) in &listing.current {
                let _ = repo.load_snapshot(&h.snapshot);
            }
            Ok::<_, Error>(listing)
        });
        (
            Session::begin(repo, "sync"),
            index.join().expect("index loader"),
            heads.join().expect("heads reader"),
        )
    });
    let session = session?;
    index?;
    let heads = heads?;
    drop(t);
    let progress = cx.opts.progress.clone();
    let phase = |p: StepPhase| {
        if let Some(progress) = &progress {
            progress.set_phase(p);
        }
    };
    phase(StepPhase::Scan);
    let t = crate::timing::span("step: scan");
    let scanned = scan::scan(&mut cx)?;
    drop(t);
    phase(StepPhase::Merge);
    let t = crate::timing::span("step: read the shared state");
    let remote = remote::read(&mut cx, heads)?;
    drop(t);
    let t = crate::timing::span("step: guard and plan");
    if let Some(why) = guard::history(&cx, &remote)? {
        return cx.halt(why);
    }
    let plan = plan::plan(&mut cx, &scanned, &remote)?;
    if let Some(why) = guard::check(&cx, &scanned, &remote, &plan)? {
        return cx.halt(why);
    }
    cx.report.actions = plan.out.actions.clone();
    cx.report.conflicts = plan.out.conflicts.clone();
    cx.report.resolved = plan.out.resolved.clone();
    if cx.opts.dry_run {
        cx.report.uploads = dry_run_uploads(&cx, &scanned, &remote, &plan)?;
        session.end()?;
        return Ok(cx.report);
    }
    if let Some(progress) = &progress {
        let n = plan.out.actions.len() as u64;
        progress.actions_total.store(n, Ordering::Relaxed);
        let bytes = crate::endpoint::apply::bytes_to_write(&plan.out.actions);
        progress.apply_bytes_total.store(bytes, Ordering::Relaxed);
    }
    drop(t);
    phase(StepPhase::Apply);
    let t = crate::timing::span("step: apply, publish, record");
    execute::save_unsaved_versions(&cx, &scanned, &plan)?;
    let done = execute::execute(&mut cx, &scanned, &plan)?;
    let settled = conflicts::settle(&mut cx, &remote, &plan, &done)?;
    phase(StepPhase::Publish);
    let published = publish::publish(&mut cx, &scanned, &remote, &done, &settled)?;
    record::record(&mut cx, &remote, &plan, &done, &settled, &published)?;
    drop(t);
    let t = crate::timing::span("step: end session, save the file cache");
    session.end()?;
    let _ = scanned.result.save_cache();
    drop(t);
    Ok(cx.report)
}

/// What a dry run would publish: the files this folder changed since its last sync (all of
/// them on a first sync) that differ from the shared state, less the paths the plan parks in
/// conflict or keeps here only (one-way modes). The real step publishes the merged tree; for the
/// paths the plan neither parks nor keeps, that is the folder's version.
fn dry_run_uploads(
    cx: &Cx,
    scanned: &scan::Scanned,
    remote: &remote::Remote,
    plan: &plan::Plan,
) -> Result<Vec<(Vec<u8>, char)>> {
    use crate::snapshot::diff::diff_trees;
    let local_tree = scanned.result.tree;
    let files_of = |from: Option<crate::id::BlobId>| -> Result<Vec<(Vec<u8>, Change)>> {
        let mut out = Vec::new();
        match from {
            Some(t) => diff_trees(cx.repo, &t, &local_tree, &mut |d| {
                if !d
                    .new
                    .as_ref()
                    .or(d.old.as_ref())
                    .is_some_and(|n| n.is_dir())
                {
                    out.push((d.path, d.change));
                }
            })?,
            None => crate::snapshot::tree::walk(cx.repo, &local_tree, &mut |p, n| {
                if !n.is_dir() {
                    out.push((p.to_vec(), Change::Added));
                }
                Ok(true)
            })?,
        }
        Ok(out)
    };
    let changed_here: std::collections::HashSet<Vec<u8>> = files_of(plan.base_tree)?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let parked: std::collections::HashSet<&[u8]> = plan
        .out
        .conflicts
        .iter()
        .map(|c| c.path.as_slice())
        .chain(plan.out.kept_here.iter().map(|p| p.as_slice()))
        .collect();
    Ok(files_of(remote.tree)?
        .into_iter()
        .filter(|(p, _)| changed_here.contains(p) && !parked.contains(p.as_slice()))
        .map(|(p, c)| (p, c.code()))
        .collect())
}

/// Is the folder's shared state different from what this endpoint last saw? One list call.
pub fn heads_changed(ep: &Endpoint, repo: &Repository) -> Result<bool> {
    Ok(head_names(repo, &ep.cfg.name)? != ep.state.meta()?.heads)
}

fn human(n: u64) -> String {
    crate::units::bytes(n)
}

/// A missing tree makes the merge fall back to no base (see [`plan::plan`]).
fn is_missing(e: &Error) -> bool {
    matches!(e, Error::Missing { .. })
}
