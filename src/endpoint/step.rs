//! The sync step (see the module docs of `endpoint` and `format-spec/sync.md`).

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::apply::{Failure, apply};
use super::config::{RulesFile, build_rules};
use super::state::{Activity, Commit, ConflictState, NodeSummary, SkippedFile};
use super::trees::{RepoTrees, node_at, patch, write_tree};
use super::{Endpoint, StepLock};
use crate::archiver::{
    ArchiveOptions, Filter, Progress, Reuse, ScanFilter, SoftError, Source, archive,
};
use crate::error::{Error, Result};
use crate::format::head::Head;
use crate::format::snapshot::{Snapshot, Summary};
use crate::id::{BlobId, SnapshotId};
use crate::repository::heads::{head_names, list_heads, publish};
use crate::repository::session::Session;
use crate::repository::{Packer, Repository, hostname, now_ns, username};
use crate::snapshot::diff::{Change, diff_trees};
use crate::snapshot::{Node, display_path};
use crate::sync::merge::{Action, ConflictRecord, Input, Outcome, TreeSource, merge};
use crate::sync::rules::{IGNORE_FILE, Rules};
use crate::sync::{Force, Policy, Role};

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
    /// this long ago, or while they were read (the daemon passes its settle window).
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
    pub local_files: u64,
    pub local_bytes: u64,
    /// Files left for the next step (still being written).
    pub deferred: Vec<Vec<u8>>,
    pub publish_deletes: u64,
    pub local_deletes: u64,
}

impl StepReport {
    /// Did the step change the folder or the shared state?
    pub fn changed(&self) -> bool {
        !self.actions.is_empty() || self.published.is_some()
    }
}

fn human(n: u64) -> String {
    crate::units::bytes(n)
}

fn summary_of(n: Option<&Node>) -> Option<NodeSummary> {
    n.map(|n| NodeSummary {
        kind: n.type_name().into(),
        size: n.size(),
        mtime_ns: n.mtime_ns,
    })
}

fn hex(id: BlobId) -> String {
    id.to_hex()
}

fn parse_blob(s: &Option<String>) -> Option<BlobId> {
    s.as_deref().and_then(BlobId::from_hex)
}

/// The result of combining several heads into one.
pub struct Combined {
    pub snapshot: SnapshotId,
    pub tree: BlobId,
    pub head_name: String,
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

/// Combines several heads into one, deterministically: sorted by time, each merged into the
/// accumulated state on their common ancestor, conflicts kept both ways (the older version under
/// a conflict name), the result sealed with a content-derived salt. Two endpoints combining the
/// same heads therefore publish byte-identical heads under one name — they converge.
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
    let first = &sorted[0].1;
    let mut acc_tree = repo.load_snapshot(&first.snapshot)?.tree;
    let mut acc_ids = vec![first.snapshot];
    let (mut acc_endpoint, mut acc_time) = (first.endpoint.clone(), first.time_ns);
    let rules = Rules::everything(Policy::KeepBoth);
    let (parked, untracked) = (BTreeMap::new(), BTreeSet::new());
    let mut packer = Packer::new(repo);
    for (_, h) in &sorted[1..] {
        let base = match common_ancestor(repo, &acc_ids, h.snapshot)? {
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
            endpoint: &acc_endpoint,
            now_ns: acc_time,
            parked: &parked,
            untracked: &untracked,
            force: None,
        };
        let out = merge(trees, &inp)?;
        acc_tree = write_tree(&mut packer, &out.merged)?;
        // The next pass reads this tree back: its blobs must be stored and indexed first.
        repo.write_index(
            std::mem::replace(&mut packer, Packer::new(repo)).finish()?,
            vec![],
            vec![],
        )?;
        acc_ids.push(h.snapshot);
        acc_endpoint = h.endpoint.clone();
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
    let names: Vec<String> = heads.iter().map(|(n, _)| n.clone()).collect();
    let head = Head {
        set: set.to_string(),
        snapshot,
        endpoint: "merge".into(),
        time_ns: acc_time,
        merged: acc_ids,
        extra: vec![],
    };
    let head_name = publish(repo, &head, &names)?;
    Ok(Combined {
        snapshot,
        tree: acc_tree,
        head_name,
    })
}

fn halt(ep: &Endpoint, report: &mut StepReport, why: String) -> Result<()> {
    ep.state.update_meta(|m| m.halt = Some(why.clone()))?;
    report.halted = Some(why);
    Ok(())
}

/// Does the tree hold at least one file or symlink? Stops at the first one.
fn tree_has_files(trees: &RepoTrees, root: &BlobId) -> Result<bool> {
    let mut stack = vec![*root];
    while let Some(id) = stack.pop() {
        for n in trees.dir(&id)? {
            match n.kind {
                crate::snapshot::NodeKind::Dir { subtree } => stack.push(subtree),
                _ => return Ok(true),
            }
        }
    }
    Ok(false)
}

/// Counts files and bytes of a tree change list.
/// A change between two trees: path, kind, old node, new node.
type TreeChange = (Vec<u8>, Change, Option<Node>, Option<Node>);

fn count_delta(changes: &[TreeChange]) -> (i64, i64) {
    let (mut files, mut bytes) = (0i64, 0i64);
    for (_, _, old, new) in changes {
        for (n, sign) in [(old, -1i64), (new, 1)] {
            if let Some(n) = n
                && !n.is_dir()
            {
                files += sign;
                bytes += sign * n.size() as i64;
            }
        }
    }
    (files, bytes)
}

/// One sync step of the set at this endpoint.
pub fn step(ep: &Endpoint, repo: &Repository, opts: &StepOptions) -> Result<StepReport> {
    let _lock = StepLock::acquire(&ep.lock_path())?;
    let cfg = &ep.cfg;
    let root = &cfg.local_path;
    let now = now_ns();
    let mut report = StepReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if !root.is_dir() {
        let why = format!(
            "the folder {} is gone (deleted, moved or not mounted): nothing was synced. Bring it back, or recreate it from the shared state with `prism-sync force-sync {} --direction down`",
            root.display(),
            cfg.name
        );
        if opts.force != Some(Force::Down) || opts.dry_run {
            halt(ep, &mut report, why)?;
            return Ok(report);
        }
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    }
    let meta = ep.state.meta()?;
    let session = Session::begin(repo, "sync")?;
    repo.load_index()?;

    // Local: scan the folder under the set's rules.
    let ignore = std::fs::read_to_string(root.join(IGNORE_FILE)).ok();
    let rules = Arc::new(build_rules(
        cfg,
        &RulesFile::load(&ep.home)?,
        ignore.as_deref(),
    )?);
    let r2 = rules.clone();
    let filter: ScanFilter = Arc::new(move |rel: &[u8], md: &Metadata| {
        if r2.excluded(rel, md.is_dir()) {
            return Filter::Exclude;
        }
        if md.is_file()
            && let Some(limit) = r2.size_limit(rel)
            && md.len() > limit
        {
            return Filter::Skip(format!(
                "{} is over the size limit of {}",
                human(md.len()),
                human(limit)
            ));
        }
        Filter::Keep
    });
    let reuse = match (&opts.dirty, parse_blob(&meta.applied_tree)) {
        (Some(dirty), Some(tree)) if !dirty.contains(IGNORE_FILE.as_bytes()) => Some(Reuse {
            tree,
            dirty: Arc::new(dirty.clone()),
        }),
        _ => None, // no previous tree, or the rules file changed: scan everything
    };
    let archive_opts = ArchiveOptions {
        file_cache: Some(ep.cache_path()),
        normalize: true,
        filter: Some(filter),
        progress: opts.progress.clone().unwrap_or_default(),
        reuse,
        defer_recent_ns: opts.defer_recent.map(|d| d.as_nanos() as i64),
        ..Default::default()
    };
    let scan = archive(repo, &Source::Dir(root.clone()), &archive_opts)?;
    repo.write_index(scan.packs.clone(), vec![], vec![])?;
    let untracked: BTreeSet<Vec<u8>> = scan
        .errors
        .iter()
        .chain(&scan.skipped)
        .map(|e| e.rel.clone())
        .chain(scan.deferred.iter().cloned())
        .collect();
    report.deferred = scan.deferred.clone();
    report.scan_errors = scan.errors.clone();
    report.skipped = scan
        .skipped
        .iter()
        .map(|s| (s.rel.clone(), s.message.clone()))
        .collect();
    let s = &scan.summary;
    report.local_files = s.files_new + s.files_changed + s.files_unchanged;
    report.local_bytes = s.total_bytes;

    // Remote: the set's head, combining several if endpoints published concurrently.
    let trees = RepoTrees::new(repo);
    let heads = list_heads(repo, &cfg.name)?;
    let (remote_snap, remote_tree, replaced) = match heads.len() {
        0 => (None, None, vec![]),
        1 => {
            let (name, h) = &heads[0];
            (
                Some(h.snapshot),
                Some(repo.load_snapshot(&h.snapshot)?.tree),
                vec![name.clone()],
            )
        }
        n => {
            report.heads_combined = n;
            let c = combine_heads(repo, &trees, &cfg.name, &heads)?;
            (Some(c.snapshot), Some(c.tree), vec![c.head_name])
        }
    };
    let remote_summary = match remote_snap {
        Some(id) => Some(repo.load_snapshot(&id)?.summary),
        None => None,
    };

    // Merge.
    let stored = ep.state.conflicts()?;
    let parked: BTreeMap<Vec<u8>, Option<Policy>> = stored
        .iter()
        .map(|(p, c)| (p.clone(), c.resolution))
        .collect();
    let mut base_tree = parse_blob(&meta.base_tree);
    let mut applied_tree = parse_blob(&meta.applied_tree);
    let run_merge = |base: Option<BlobId>, applied: Option<BlobId>| {
        let inp = Input {
            applied,
            local: Some(scan.tree),
            base,
            remote: remote_tree,
            rules: &rules,
            role: cfg.role,
            endpoint: &cfg.endpoint,
            now_ns: now,
            parked: &parked,
            untracked: &untracked,
            force: opts.force,
        };
        merge(&trees, &inp)
    };
    let out = match run_merge(base_tree, applied_tree) {
        Ok(o) => o,
        // The last agreed trees were pruned away (a long-offline endpoint whose snapshots
        // expired): merge without them. Differences then become conflicts, never losses.
        Err(Error::Missing { .. }) => {
            base_tree = None;
            applied_tree = None;
            run_merge(None, None)?
        }
        Err(e) => return Err(e),
    };
    report.publish_deletes = out.publish_deletes;
    report.local_deletes = out.local_deletes;

    // Guards: an emptied folder, or too many deletions, halt the set.
    if opts.force.is_none() && !opts.allow_deletions {
        // No files left (empty directories do not count) where there were files last time.
        // Files the scan left for later (still being written, unreadable, oversized) count.
        let local_empty = untracked.is_empty() && !tree_has_files(&trees, &scan.tree)?;
        let had_files = meta.local_files > 0 && applied_tree.is_some();
        if local_empty && had_files {
            let why = format!(
                "the folder {} is empty but held files at the last sync: nothing was deleted anywhere. If you emptied it on purpose, run `prism-sync sync {} --allow-deletions`; to get the files back, `prism-sync force-sync {} --direction down`",
                root.display(),
                cfg.name,
                cfg.name
            );
            halt(ep, &mut report, why)?;
            return Ok(report);
        }
        // Deletions made in this folder, about to spread; moves are not deletions. Deletions
        // that arrive from elsewhere passed their own endpoint's guard, and what they delete
        // here is in the snapshots.
        let deletes = out.publish_deletes;
        let total = report
            .local_files
            .max(meta.local_files)
            .max(meta.remote_files)
            .max(1);
        let pct = deletes as f64 * 100.0 / total as f64;
        if deletes > cfg.max_delete_count || (deletes >= 10 && pct > cfg.max_delete_percent) {
            let why = format!(
                "this step would delete {deletes} of {total} files ({pct:.0}%; limits: {} files or {}%): nothing was changed. Preview with `prism-sync sync {} --dry-run --allow-deletions`; if that is intended, run `prism-sync sync {} --allow-deletions`",
                cfg.max_delete_count, cfg.max_delete_percent, cfg.name, cfg.name
            );
            halt(ep, &mut report, why)?;
            return Ok(report);
        }
    }
    report.actions = out.actions.clone();
    report.conflicts = out.conflicts.clone();
    report.resolved = out.resolved.clone();
    if opts.dry_run {
        session.end()?;
        return Ok(report);
    }

    // Local versions about to be overwritten or deleted that the shared state does not hold
    // (so possibly no snapshot does) are saved first: every version stays restorable.
    let mut unsaved = false;
    for a in &out.actions {
        let (path, expect) = match a {
            Action::Write {
                path,
                expect: Some(e),
                ..
            }
            | Action::Delete { path, expect: e } => (path, e),
            _ => continue,
        };
        if node_at(&trees, base_tree, path)?.as_ref() != Some(expect) {
            unsaved = true;
            break;
        }
    }
    if unsaved {
        let snap = Snapshot {
            time_ns: now,
            tree: scan.tree,
            host: hostname(),
            user: username(),
            paths: vec![root.as_os_str().as_bytes().to_vec()],
            tags: vec!["before-sync".into()],
            parents: vec![],
            sync_set: Some(cfg.name.clone()),
            endpoint: Some(cfg.endpoint.clone()),
            summary: scan.summary.clone(),
            program_version: concat!("prism-sync ", env!("CARGO_PKG_VERSION")).into(),
            extra: vec![],
        };
        repo.save_snapshot(&snap)?;
    }

    // Apply, with a re-check of every path right before it is touched.
    let results = apply(repo, root, &out.actions, opts.stop_after, cfg.folding())?;
    let (mut merged, mut applied) = (out.merged, out.applied);
    let mut base_entries: Option<Vec<crate::sync::merge::MTree>> = None;
    let mut activity = Vec::new();
    for (a, r) in out.actions.iter().zip(&results) {
        match r {
            Ok(()) => {
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
                    Action::Mkdir { .. } | Action::Rmdir { .. } => continue,
                };
                activity.push(Activity {
                    time_ns: now,
                    action: action.into(),
                    path: display_path(path),
                    size,
                    direction: "down".into(),
                });
            }
            Err(Failure::NotEmpty) => {
                // The directory stays (it holds files that do not sync): the folder has it.
                let path = a.path();
                patch(
                    &trees,
                    &mut applied,
                    path,
                    node_at(&trees, Some(scan.tree), path)?,
                )?;
            }
            Err(f) => {
                // Not done: the folder keeps what the scan saw, and the shared change stays
                // "new" for this endpoint (its base keeps the old state), so the next step
                // retries it — or, if the file was edited meanwhile, sees a conflict.
                let paths: Vec<&[u8]> = match a {
                    Action::Rename { from, to, .. } => vec![from, to],
                    other => vec![other.path()],
                };
                let base = base_entries.get_or_insert_with(|| merged.clone());
                for p in paths {
                    patch(
                        &trees,
                        &mut applied,
                        p,
                        node_at(&trees, Some(scan.tree), p)?,
                    )?;
                    patch(&trees, base, p, node_at(&trees, base_tree, p)?)?;
                }
                report.failures.push((a.path().to_vec(), f.to_string()));
            }
        }
    }

    // Write the trees, then publish if the shared state changed.
    let mut packer = Packer::new(repo);
    let merged_tree = write_tree(&mut packer, &merged)?;
    let new_base_tree = match &base_entries {
        Some(b) => write_tree(&mut packer, b)?,
        None => merged_tree,
    };
    merged.clear();
    let applied_tree_new = write_tree(&mut packer, &applied)?;
    applied.clear();
    repo.write_index(packer.finish()?, vec![], vec![])?;

    let (mut remote_files, mut remote_bytes) = match &remote_summary {
        Some(s) => (
            (s.files_new + s.files_changed + s.files_unchanged) as i64,
            s.total_bytes as i64,
        ),
        None => (0, 0),
    };
    let mut new_base_snapshot = remote_snap;
    let mut published_changes: Vec<TreeChange> = Vec::new();
    if remote_tree != Some(merged_tree) {
        let mut changes = Vec::new();
        match remote_tree {
            Some(rt) => diff_trees(repo, &rt, &merged_tree, &mut |d| {
                changes.push((d.path, d.change, d.old, d.new))
            })?,
            None => crate::snapshot::tree::walk(repo, &merged_tree, &mut |p, n| {
                changes.push((p.to_vec(), Change::Added, None, Some(n.clone())));
                Ok(true)
            })?,
        }
        let (df, db) = count_delta(&changes);
        remote_files += df;
        remote_bytes += db;
        let mut parents: Vec<SnapshotId> = meta
            .base_snapshot
            .as_deref()
            .and_then(SnapshotId::from_hex)
            .into_iter()
            .chain(remote_snap)
            .collect();
        parents.dedup();
        let snap = Snapshot {
            time_ns: now,
            tree: merged_tree,
            host: hostname(),
            user: username(),
            paths: vec![root.as_os_str().as_bytes().to_vec()],
            tags: vec![],
            parents,
            sync_set: Some(cfg.name.clone()),
            endpoint: Some(cfg.endpoint.clone()),
            summary: Summary {
                files_unchanged: remote_files.max(0) as u64,
                total_bytes: remote_bytes.max(0) as u64,
                blobs_added: scan.summary.blobs_added,
                bytes_added_raw: scan.summary.bytes_added_raw,
                bytes_added_stored: scan.summary.bytes_added_stored,
                duration_ns: (now_ns() - now).max(0) as u64,
                ..Default::default()
            },
            program_version: concat!("prism-sync ", env!("CARGO_PKG_VERSION")).into(),
            extra: vec![],
        };
        let sid = repo.save_snapshot(&snap)?;
        let head = Head {
            set: cfg.name.clone(),
            snapshot: sid,
            endpoint: cfg.endpoint.clone(),
            time_ns: now,
            merged: remote_snap.into_iter().collect(),
            extra: vec![],
        };
        publish(repo, &head, &replaced)?;
        new_base_snapshot = Some(sid);
        report.published = Some(sid);
        for (path, change, old, new) in &changes {
            if new.as_ref().or(old.as_ref()).is_some_and(|n| n.is_dir()) {
                continue;
            }
            let (action, size) = match change {
                Change::Removed => ("deleted", old.as_ref().map(|n| n.size()).unwrap_or(0)),
                _ => ("uploaded", new.as_ref().map(|n| n.size()).unwrap_or(0)),
            };
            report.uploads.push((path.clone(), change.code()));
            activity.push(Activity {
                time_ns: now,
                action: action.into(),
                path: display_path(path),
                size,
                direction: "up".into(),
            });
        }
        published_changes = changes;
    }

    // Record: conflicts, activity, skipped files, the new base and applied trees.
    let mut commit = Commit::default();
    let known: HashMap<&Vec<u8>, &ConflictState> = stored.iter().map(|(p, c)| (p, c)).collect();
    for c in &report.conflicts {
        match &c.outcome {
            Outcome::Parked => commit.conflicts_set.push((
                c.path.clone(),
                ConflictState {
                    kind: c.kind.name().into(),
                    local: summary_of(c.local.as_ref()),
                    remote: summary_of(c.remote.as_ref()),
                    detected_ns: known.get(&c.path).map(|k| k.detected_ns).unwrap_or(now),
                    resolution: None,
                },
            )),
            other => {
                let action = match other {
                    Outcome::KeptLocal => "conflict-kept-local",
                    Outcome::KeptRemote => "conflict-kept-remote",
                    Outcome::KeptBoth { .. } => "conflict-kept-both",
                    _ => "change-beat-delete",
                };
                activity.push(Activity {
                    time_ns: now,
                    action: action.into(),
                    path: display_path(&c.path),
                    size: c
                        .local
                        .as_ref()
                        .or(c.remote.as_ref())
                        .map(|n| n.size())
                        .unwrap_or(0),
                    direction: "none".into(),
                });
            }
        }
    }
    // Parked conflicts stay until the merge reports them resolved (an unchanged parked path is
    // skipped by the merge without being mentioned).
    let parked_now: BTreeSet<&Vec<u8>> = commit.conflicts_set.iter().map(|(p, _)| p).collect();
    commit.conflicts_remove = report
        .resolved
        .iter()
        .filter(|p| !parked_now.contains(p))
        .cloned()
        .collect();
    // A parked path that exists neither here nor in the shared state any more (a parent was
    // resolved or replaced as a whole) has nothing left to decide.
    for (p, _) in &stored {
        if !parked_now.contains(p)
            && node_at(&trees, Some(applied_tree_new), p)?.is_none()
            && node_at(&trees, Some(merged_tree), p)?.is_none()
        {
            commit.conflicts_remove.push(p.clone());
        }
    }
    let mut skipped: Vec<(Vec<u8>, SkippedFile)> = report
        .skipped
        .iter()
        .map(|(p, m)| (p.clone(), SkippedFile { reason: m.clone() }))
        .collect();
    for s in &out.skipped {
        let reason = format!(
            "{} in the shared state is over this endpoint's size limit of {}",
            human(s.size),
            human(s.limit)
        );
        report.skipped.push((s.path.clone(), reason.clone()));
        skipped.push((s.path.clone(), SkippedFile { reason }));
    }
    commit.skipped = Some(skipped);
    let mut endpoints: BTreeMap<String, i64> = meta.endpoints_seen.iter().cloned().collect();
    for (_, h) in &heads {
        let e = endpoints.entry(h.endpoint.clone()).or_default();
        *e = (*e).max(h.time_ns);
    }
    if report.published.is_some() {
        endpoints.insert(cfg.endpoint.clone(), now);
    }
    endpoints.remove("merge");
    // The folder after the step. An event-driven scan reads only what changed, so the counts
    // are carried forward by the difference between the old and new folder trees (O(changes));
    // the first step counts its full scan.
    match applied_tree {
        Some(old) => {
            let mut changes: Vec<TreeChange> = Vec::new();
            diff_trees(repo, &old, &applied_tree_new, &mut |d| {
                changes.push((d.path, d.change, d.old, d.new))
            })?;
            let (df, db) = count_delta(&changes);
            report.local_files = (meta.local_files as i64 + df).max(0) as u64;
            report.local_bytes = (meta.local_bytes as i64 + db).max(0) as u64;
        }
        None => {
            for (a, r) in out.actions.iter().zip(&results) {
                if r.is_err() {
                    continue;
                }
                match a {
                    Action::Write { node, expect, .. } => {
                        let old = expect.as_ref().map(|e| e.size()).unwrap_or(0);
                        report.local_files += expect.is_none() as u64;
                        report.local_bytes = (report.local_bytes + node.size()).saturating_sub(old);
                    }
                    Action::Delete { expect, .. } => {
                        report.local_files = report.local_files.saturating_sub(1);
                        report.local_bytes = report.local_bytes.saturating_sub(expect.size());
                    }
                    _ => {}
                }
            }
        }
    }
    commit.meta = super::state::Meta {
        base_tree: Some(hex(new_base_tree)),
        base_snapshot: new_base_snapshot.map(|s| s.to_hex()),
        applied_tree: Some(hex(applied_tree_new)),
        last_step_ns: Some(now),
        last_change_ns: if report.changed() {
            Some(now)
        } else {
            meta.last_change_ns
        },
        halt: None,
        local_files: report.local_files,
        local_bytes: report.local_bytes,
        remote_files: remote_files.max(0) as u64,
        remote_bytes: remote_bytes.max(0) as u64,
        heads: head_names(repo, &cfg.name)?,
        last_error: None,
        endpoints_seen: endpoints.into_iter().collect(),
        paused: meta.paused,
    };
    // The audit trail first: a crash before the commit repeats a line, never loses one.
    let stamp = crate::time::format_rfc3339(now);
    let mut audit_lines = Vec::new();
    for (a, r) in out.actions.iter().zip(&results) {
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
        audit_lines.push(super::audit::entry(
            &stamp,
            &cfg.name,
            &cfg.endpoint,
            "down",
            action,
            &display_path(path),
            old,
            new,
        ));
    }
    for (path, change, old, new) in &published_changes {
        if new.as_ref().or(old.as_ref()).is_some_and(|n| n.is_dir()) {
            continue;
        }
        let action = match change {
            Change::Added => "created",
            Change::Removed => "deleted",
            _ => "updated",
        };
        let mut e = super::audit::entry(
            &stamp,
            &cfg.name,
            &cfg.endpoint,
            "up",
            action,
            &display_path(path),
            old.as_ref(),
            new.as_ref(),
        );
        e["snapshot"] = serde_json::json!(report.published.map(|s| s.to_hex()));
        audit_lines.push(e);
    }
    super::audit::append(&ep.audit_path(), &audit_lines)?;
    commit.activity = activity;
    ep.state.commit(commit)?;
    session.end()?;
    let _ = scan.save_cache();
    Ok(report)
}

/// Is the folder's shared state different from what this endpoint last saw? One list call.
pub fn heads_changed(ep: &Endpoint, repo: &Repository) -> Result<bool> {
    Ok(head_names(repo, &ep.cfg.name)? != ep.state.meta()?.heads)
}
