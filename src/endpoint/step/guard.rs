//! Phase 4: the guards. They run before anything is touched, so a halted step changes nothing
//! anywhere:
//!
//! - [`history`] (right after the heads are read): a set with no head although this endpoint
//!   has a base, or a head that does not descend from this endpoint's base (an older head put
//!   back, a replaced history), is never read as "the shared state is empty" or "everything
//!   changed back";
//! - [`check`] (after the merge): an emptied folder, and every file the step would delete here
//!   or publish as deleted — whatever the cause — counted per step; and over a rolling window
//!   of [`DELETION_WINDOW`] across steps (kept in the state, so restarts do not reset it), the
//!   net loss: files that existed when the window began and are gone from the shared state or
//!   the folder after the step. Files made and removed within the window (build outputs,
//!   checkpoints, scratch files) never count, a file deleted here and elsewhere counts once, and
//!   a file moved (its content found at a new path) is no loss.
//!
//! `force-sync` passes them all; `--allow-deletions` passes all but the history guard for a
//! non-descending head (there, only `force-sync` says which side is right).

use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::time::Duration;

use super::Cx;
use super::plan::Plan;
use super::remote::Remote;
use super::scan::Scanned;
use crate::endpoint::state::DeletionWindow;
use crate::endpoint::trees::RepoTrees;
use crate::error::{Error, Result};
use crate::format::tree::Content;
use crate::id::{BlobId, SnapshotId};
use crate::repository::Repository;
use crate::snapshot::{Node, NodeKind};
use crate::sync::Force;
use crate::sync::merge::MTree;
use crate::sync::merge::TreeSource;

/// The rolling window of the deletion guard: its limits apply to every step and to the sum
/// of the steps within this long.
pub const DELETION_WINDOW: Duration = Duration::from_secs(10 * 60);

/// How far behind another machine's clock may be: a snapshot that descends from the base may
/// carry a time this much earlier than the base's, so the history walk looks that far back.
const CLOCK_SKEW_MAX: Duration = Duration::from_secs(24 * 3600);

/// Snapshots the history walk reads at most before giving up (the answer is then unknown).
const HISTORY_WALK_MAX: usize = 100_000;

/// Whether the shared state's history contains this endpoint's base.
#[derive(Debug, PartialEq, Eq)]
enum Descent {
    Yes,
    No,
    /// Part of the history is forgotten (retention) or too long to walk: not provable.
    Unknown,
}

/// Does one of `from` (or their history) hold `base`? A newest-first walk that does not go
/// below the base's time less [`CLOCK_SKEW_MAX`].
fn descends(repo: &Repository, from: &[SnapshotId], base: SnapshotId) -> Result<Descent> {
    if from.contains(&base) {
        return Ok(Descent::Yes);
    }
    let load = |id: &SnapshotId| match repo.load_snapshot(id) {
        Ok(s) => Ok(Some(s)),
        Err(Error::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    };
    let Some(b) = load(&base)? else {
        return Ok(Descent::Unknown);
    };
    let floor = b.time_ns.saturating_sub(CLOCK_SKEW_MAX.as_nanos() as i64);
    let mut unknown = false;
    let mut seen: HashSet<SnapshotId> = from.iter().copied().collect();
    let mut queue = BinaryHeap::new();
    for id in from {
        match load(id)? {
            Some(s) => queue.push((s.time_ns, *id, s.parents)),
            None => unknown = true,
        }
    }
    let mut read = 0;
    while let Some((time, _, parents)) = queue.pop() {
        if time < floor {
            continue;
        }
        for p in parents {
            if p == base {
                return Ok(Descent::Yes);
            }
            if !seen.insert(p) {
                continue;
            }
            read += 1;
            if read > HISTORY_WALK_MAX {
                return Ok(Descent::Unknown);
            }
            match load(&p)? {
                Some(s) => queue.push((s.time_ns, p, s.parents)),
                None => unknown = true,
            }
        }
    }
    Ok(if unknown {
        Descent::Unknown
    } else {
        Descent::No
    })
}

/// Why the step must halt before merging, if it must: the shared state's history.
pub(super) fn history(cx: &Cx, remote: &Remote) -> Result<Option<String>> {
    let Some(base) = cx.meta.base_snapshot else {
        return Ok(None); // never synced here: nothing to compare with
    };
    let name = &cx.ep.cfg.name;
    let Some(head) = remote.snapshot else {
        if cx.opts.force == Some(Force::Up) || (cx.opts.allow_deletions && cx.opts.force.is_none())
        {
            return Ok(None);
        }
        return Ok(Some(format!(
            "the shared state of {name} has no head in the repository, though this endpoint synced it before (version {}): nothing was changed here. Someone may have deleted it, or this is not the repository the set was synced with. To publish this folder as the shared state again: `prism-sync force-sync {name} --direction up`; if the set was deleted on purpose and this folder is to be emptied too: `prism-sync sync {name} --allow-deletions`",
            base.short()
        )));
    };
    if cx.opts.force.is_some() || head == base {
        return Ok(None);
    }
    let mut from = remote.parents.clone();
    from.push(head);
    if descends(cx.repo, &from, base)? != Descent::No {
        return Ok(None);
    }
    let (endpoint, time) = remote
        .heads
        .iter()
        .find(|(_, h)| h.snapshot == head)
        .map(|(_, h)| (h.endpoint.clone(), crate::time::format_rfc3339(h.time_ns)))
        .unwrap_or_else(|| ("merge".into(), String::new()));
    Ok(Some(format!(
        "the shared state of {name} (version {} from {endpoint}, {time}) does not descend from the version this endpoint last synced ({}): an older state was put back, or the history was replaced. Nothing was changed here. To publish this folder as the shared state: `prism-sync force-sync {name} --direction up`; to take the shared state as it is: `prism-sync force-sync {name} --direction down` (try it with --dry-run first)",
        head.short(),
        base.short()
    )))
}

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

/// The window this step is judged by: the current one — or, while the set is halted, the one
/// it halted in (a halt lasts until a step passes, not until the window moves on) — or, if
/// this step deletes anything, one beginning now at this endpoint's base (the state before the
/// step). `None` before the first sync, and between windows while nothing is deleted.
pub(super) fn window(cx: &Cx, deletes: bool) -> Option<DeletionWindow> {
    let since = cx.now - DELETION_WINDOW.as_nanos() as i64;
    match &cx.meta.deletion_window {
        Some(w) if w.start_ns > since || cx.meta.halt.is_some() => Some(w.clone()),
        _ if !deletes => None,
        _ => cx.meta.base_tree.map(|tree| DeletionWindow {
            start_ns: cx.now,
            tree,
            files: files_before(cx),
        }),
    }
}

/// Files in the folder or the shared state before this step (the larger).
pub(super) fn files_before(cx: &Cx) -> u64 {
    cx.report
        .local_files
        .max(cx.meta.local_files)
        .max(cx.meta.remote_files)
}

/// The deletions the guard counts: (in this folder, in the shared state). Deletions arriving
/// in a head whose publisher confirmed at least as many, taken straight from this endpoint's
/// base (the head replaced exactly the state this endpoint had), were confirmed by a user
/// already and are not counted again.
pub(super) fn counted_deletions(cx: &Cx, remote: &Remote, plan: &Plan) -> (u64, u64) {
    let (here, shared) = (plan.out.local_deletes, plan.out.publish_deletes);
    let base = cx.meta.base_snapshot;
    let vouched = match remote.heads.as_slice() {
        [(_, h)] => h.confirmed_deletions >= here && base.is_some_and(|b| h.merged.contains(&b)),
        _ => false,
    };
    (if vouched { 0 } else { here }, shared)
}

/// Why the step must halt after the merge, if it must.
pub(super) fn check(
    cx: &Cx,
    scanned: &Scanned,
    remote: &Remote,
    plan: &Plan,
) -> Result<Option<String>> {
    if cx.opts.force.is_some() || cx.opts.allow_deletions {
        return Ok(None);
    }
    let cfg = &cx.ep.cfg;
    let name = &cfg.name;
    // No files left (empty directories do not count) where there were files last time. Files
    // the scan left for later (still being written, unreadable, oversized) count.
    let local_empty =
        scanned.untracked.is_empty() && !tree_has_files(&cx.trees, &scanned.result.tree)?;
    let had_files = cx.meta.local_files > 0 && plan.applied_tree.is_some();
    if local_empty && had_files {
        return Ok(Some(format!(
            "the folder {} is empty but held files at the last sync: nothing was deleted anywhere. If you emptied it on purpose, run `prism-sync sync {name} --allow-deletions`; to get the files back, `prism-sync force-sync {name} --direction down`",
            cfg.local_path.display()
        )));
    }
    let (here, shared) = counted_deletions(cx, remote, plan);
    let deletes = here + shared;
    if deletes == 0 {
        return Ok(None);
    }
    let over = |n: u64, total: u64| {
        let pct = n as f64 * 100.0 / total.max(1) as f64;
        (n > cfg.max_delete_count || (n >= 10 && pct > cfg.max_delete_percent)).then_some(pct)
    };
    let limits = format!(
        "limits: {} files or {}%",
        cfg.max_delete_count, cfg.max_delete_percent
    );
    let confirm = format!(
        "Nothing was changed. Preview with `prism-sync sync {name} --dry-run --allow-deletions`; if that is intended, run `prism-sync sync {name} --allow-deletions`"
    );
    let total = files_before(cx).max(1);
    if let Some(pct) = over(deletes, total) {
        return Ok(Some(format!(
            "this step would delete {deletes} of {total} files ({pct:.0}%; {here} in this folder, {shared} in the shared state; {limits}). {confirm}"
        )));
    }
    let Some(w) = window(cx, true) else {
        return Ok(None);
    };
    let lost = match lost_since(&cx.trees, w.tree, plan) {
        Ok(n) => n,
        // The window's first state is gone (pruned): judged by this step alone, as above.
        Err(e) if super::is_missing(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let window_total = w.files.max(1);
    if let Some(pct) = over(lost, window_total) {
        let minutes = ((cx.now - w.start_ns).max(0) / 60_000_000_000).max(1);
        return Ok(Some(format!(
            "{lost} of the {window_total} files there were {minutes} minute(s) ago would be gone after this step, which deletes {deletes} ({pct:.0}%; {here} in this folder, {shared} in the shared state; {limits} per step and per {} minutes). {confirm}",
            DELETION_WINDOW.as_secs() / 60
        )));
    }
    Ok(None)
}

/// A file's content, to tell a move from a loss: size and data blobs (empty files never
/// match), or a symlink's target.
#[derive(PartialEq, Eq, Hash)]
enum Key {
    File(u64, Content),
    Link(Vec<u8>),
}

fn key(n: &Node) -> Option<Key> {
    match &n.kind {
        NodeKind::File { size, content } if *size > 0 => Some(Key::File(*size, content.clone())),
        NodeKind::Symlink { target } => Some(Key::Link(target.clone())),
        _ => None,
    }
}

/// The files of `start` gone from the plan's merged tree or its folder tree, less those whose
/// content is found at a path new in that tree (moves): one count per path.
fn lost_since(trees: &RepoTrees, start: BlobId, plan: &Plan) -> Result<u64> {
    let before = trees.dir(&start)?;
    let mut lost: HashSet<Vec<u8>> = HashSet::new();
    for after in [&plan.out.merged, &plan.out.applied] {
        let mut w = LossWalk {
            trees,
            gone: Vec::new(),
            new: HashSet::new(),
            new_dirs: Vec::new(),
        };
        w.diff(&mut Vec::new(), &before, after)?;
        if w.gone.is_empty() {
            continue;
        }
        for d in std::mem::take(&mut w.new_dirs) {
            w.all_new(&d)?;
        }
        for (p, k) in w.gone {
            if k.is_none_or(|k| !w.new.contains(&k)) {
                lost.insert(p);
            }
        }
    }
    Ok(lost.len() as u64)
}

/// One walk of the window's first tree against a tree being built.
struct LossWalk<'t, 'r> {
    trees: &'t RepoTrees<'r>,
    /// Files of the first tree gone here: path and content.
    gone: Vec<(Vec<u8>, Option<Key>)>,
    /// Contents at paths new here.
    new: HashSet<Key>,
    /// New directories taken whole, read only if something is gone.
    new_dirs: Vec<BlobId>,
}

impl LossWalk<'_, '_> {
    fn diff(&mut self, path: &mut Vec<u8>, before: &[Node], after: &[MTree]) -> Result<()> {
        let mut names: BTreeMap<&[u8], (Option<&Node>, Option<&MTree>)> = BTreeMap::new();
        for n in before {
            names.entry(&n.name).or_default().0 = Some(n);
        }
        for m in after {
            names.entry(m.name()).or_default().1 = Some(m);
        }
        for (name, (b, a)) in names {
            let len = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            match (b, a) {
                (Some(b), None) => self.all_gone(path, b)?,
                (None, Some(a)) => self.new_entry(a),
                (Some(b), Some(a)) => match (&b.kind, a) {
                    (NodeKind::Dir { subtree: s }, MTree::Same(n)) if n.is_dir() => {
                        if let NodeKind::Dir { subtree: t } = n.kind
                            && *s != t
                        {
                            let (x, y) = (self.trees.dir(s)?, self.trees.dir(&t)?);
                            let y: Vec<MTree> = y.into_iter().map(MTree::Same).collect();
                            self.diff(path, &x, &y)?;
                        }
                    }
                    (NodeKind::Dir { subtree: s }, MTree::Dir(_, children)) => {
                        let x = self.trees.dir(s)?;
                        self.diff(path, &x, children)?;
                    }
                    (NodeKind::Dir { .. }, _) => {
                        self.all_gone(path, b)?;
                        self.new_entry(a);
                    }
                    (_, a) if a.node().is_dir() => {
                        self.all_gone(path, b)?;
                        self.new_entry(a);
                    }
                    _ => {} // a file then and now (changed or not): no loss
                },
                (None, None) => {}
            }
            path.truncate(len);
        }
        Ok(())
    }

    /// Every file at or below `n` (at `path`) is gone.
    fn all_gone(&mut self, path: &mut Vec<u8>, n: &Node) -> Result<()> {
        let NodeKind::Dir { subtree } = n.kind else {
            self.gone.push((path.clone(), key(n)));
            return Ok(());
        };
        for c in self.trees.dir(&subtree)? {
            let len = path.len();
            path.push(b'/');
            path.extend_from_slice(&c.name);
            self.all_gone(path, &c)?;
            path.truncate(len);
        }
        Ok(())
    }

    fn new_entry(&mut self, m: &MTree) {
        match m {
            MTree::Dir(_, children) => children.iter().for_each(|c| self.new_entry(c)),
            MTree::Same(n) => match n.kind {
                NodeKind::Dir { subtree } => self.new_dirs.push(subtree),
                _ => self.new.extend(key(n)),
            },
        }
    }

    fn all_new(&mut self, dir: &BlobId) -> Result<()> {
        for c in self.trees.dir(dir)? {
            match c.kind {
                NodeKind::Dir { subtree } => self.all_new(&subtree)?,
                _ => self.new.extend(key(&c)),
            }
        }
        Ok(())
    }
}
