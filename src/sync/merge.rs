//! The merge: (applied, local, base, remote, rules, policy) → merged tree + local plan +
//! conflicts. Pure: trees are read through [`TreeSource`], nothing is written anywhere.
//!
//! Per path, with `a` = applied, `l` = local scan, `b` = base, `r` = remote head:
//! - local changed = `a ≠ l`, remote changed = `b ≠ r` (files compare type, content, mode and
//!   mtime; directories compare subtree ids, so unchanged subtrees are skipped whole);
//! - equal content on both sides is never a conflict (the newer mtime wins);
//! - a change beats a deletion, on either side; a directory deleted on one side keeps whatever
//!   was edited inside it on the other;
//! - both changed differently: one-way modes keep the receiving side's own version and publish
//!   the sending side's; otherwise the path's conflict policy decides. Where the folder already
//!   held a version the shared state did not (`a ≠ b`: parked, or a receiving side's own edit),
//!   a remote change counts as meeting a local change;
//! - excluded, oversized and unreadable paths are untracked: never published, never deleted.
//!
//! The outputs: `merged` (the new shared state), `applied` (what the folder will hold after the
//! plan runs), `actions` (in an order that is safe to execute), conflict records.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::rules::Rules;
use super::{ConflictKind, Force, Policy, Role, conflict_name};
use crate::error::Result;
use crate::id::BlobId;
use crate::snapshot::{Content, Node, NodeKind, join};

/// Where the merge reads directory listings from (the repository, or memory in tests).
pub trait TreeSource {
    fn dir(&self, id: &BlobId) -> Result<Vec<Node>>;
}

/// A tree being built: an existing node taken whole (a file, a symlink, or a directory with its
/// subtree id), or a directory whose entries changed.
#[derive(Debug, Clone, PartialEq)]
pub enum MTree {
    Same(Node),
    Dir(Node, Vec<MTree>),
}

impl MTree {
    pub fn name(&self) -> &[u8] {
        match self {
            MTree::Same(n) | MTree::Dir(n, _) => &n.name,
        }
    }
    pub fn node(&self) -> &Node {
        match self {
            MTree::Same(n) | MTree::Dir(n, _) => n,
        }
    }
}

/// One change to make in the local folder. `expect` is the node the scan saw there: the
/// executor re-checks it right before acting and refuses if the path changed since.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Mkdir {
        path: Vec<u8>,
        node: Node,
    },
    /// Create or overwrite a file or symlink with `node`.
    Write {
        path: Vec<u8>,
        node: Node,
        expect: Option<Node>,
    },
    /// Move a file (a detected move, or a conflict copy); `node`, if given, is the metadata the
    /// moved file must end up with.
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
        expect: Node,
        node: Option<Node>,
    },
    Delete {
        path: Vec<u8>,
        expect: Node,
    },
    /// Remove a directory if it is empty (untracked files keep it).
    Rmdir {
        path: Vec<u8>,
    },
}

impl Action {
    pub fn path(&self) -> &[u8] {
        match self {
            Action::Mkdir { path, .. }
            | Action::Write { path, .. }
            | Action::Delete { path, .. }
            | Action::Rmdir { path } => path,
            Action::Rename { to, .. } => to,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Left for the user (`user_prompt`): both sides keep their own version.
    Parked,
    KeptLocal,
    KeptRemote,
    /// The local version was kept under this name beside the remote one.
    KeptBoth {
        copy: Vec<u8>,
    },
    /// A change met a deletion; the change was kept.
    ChangeKept,
}

#[derive(Debug, Clone)]
pub struct ConflictRecord {
    pub path: Vec<u8>,
    pub kind: ConflictKind,
    pub local: Option<Node>,
    pub remote: Option<Node>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: Vec<u8>,
    pub size: u64,
    pub limit: u64,
}

/// Whether the folder's directory at a path holds entries that do not sync.
pub type HeldBy<'a> = dyn Fn(&[u8]) -> bool + 'a;

pub struct Input<'a> {
    pub applied: Option<BlobId>,
    pub local: Option<BlobId>,
    pub base: Option<BlobId>,
    pub remote: Option<BlobId>,
    pub rules: &'a Rules,
    pub role: Role,
    /// Name and time used for conflict copies of the local side's versions.
    pub endpoint: &'a str,
    pub now_ns: i64,
    /// Parked paths: `None` = unresolved, `Some(policy)` = the user chose.
    pub parked: &'a BTreeMap<Vec<u8>, Option<Policy>>,
    /// Local paths the scan could not read or skipped: their current state is unknown.
    pub untracked: &'a BTreeSet<Vec<u8>>,
    pub force: Option<Force>,
    /// Whether the folder's directory at a path holds entries that do not sync (excluded
    /// files, temp files of a writer): such a directory stays when the shared state removed
    /// it. `None`: never asked (directories the shared state removed stay while they are kept).
    pub held: Option<&'a HeldBy<'a>>,
}

#[derive(Debug, Default)]
pub struct Output {
    pub merged: Vec<MTree>,
    pub applied: Vec<MTree>,
    pub actions: Vec<Action>,
    pub conflicts: Vec<ConflictRecord>,
    /// Previously parked paths that are no longer in conflict.
    pub resolved: Vec<Vec<u8>>,
    pub skipped: Vec<Skipped>,
    /// Files this step deletes from the shared state.
    pub publish_deletes: u64,
    /// Local files this step deletes.
    pub local_deletes: u64,
    /// Paths where the folder keeps its own version, different from the shared one, because of
    /// a one-way mode (a receiving side's own edit, a change a sending side does not apply).
    pub kept_here: Vec<Vec<u8>>,
}

type Opt<'n> = Option<&'n Node>;

/// Same state: type, content, mode and mtime for files; target for symlinks; subtree for dirs.
pub fn same(x: Opt, y: Opt) -> bool {
    match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => match (&x.kind, &y.kind) {
            (NodeKind::Dir { subtree: s }, NodeKind::Dir { subtree: t }) => s == t,
            _ => x.kind == y.kind && x.mode == y.mode && x.mtime_ns == y.mtime_ns,
        },
        _ => false,
    }
}

/// Same content, times aside (two sides that made the same edit agree).
pub fn same_content(x: Opt, y: Opt) -> bool {
    match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => match (&x.kind, &y.kind) {
            (NodeKind::Dir { subtree: s }, NodeKind::Dir { subtree: t }) => s == t,
            _ => x.kind == y.kind && x.mode == y.mode,
        },
        _ => false,
    }
}

fn content_key(n: &Node) -> Option<(u64, &Content)> {
    match &n.kind {
        NodeKind::File { size, content } if *size > 0 => Some((*size, content)),
        _ => None,
    }
}

fn parent_and_name(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&b""[..], p),
    }
}

struct Merger<'a> {
    src: &'a dyn TreeSource,
    inp: &'a Input<'a>,
    out: Output,
    /// Content of files this step removes from, and adds to, the shared state: a removal whose
    /// content is added elsewhere is a move, not a deletion (for the deletion guard).
    published_removed: Vec<(u64, Content)>,
    published_added: HashMap<(u64, Content), usize>,
}

/// Runs the merge of the whole tree.
pub fn merge(src: &dyn TreeSource, inp: &Input) -> Result<Output> {
    let root = |id: Option<BlobId>| {
        id.map(|subtree| Node {
            name: Vec::new(),
            kind: NodeKind::Dir { subtree },
            mode: 0o755,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
        })
    };
    let (a, l, b, r) = (
        root(inp.applied),
        root(inp.local),
        root(inp.base),
        root(inp.remote),
    );
    let mut m = Merger {
        src,
        inp,
        out: Output::default(),
        published_removed: Vec::new(),
        published_added: HashMap::new(),
    };
    let (merged, applied, _, _) =
        m.merge_dir(&[], a.as_ref(), l.as_ref(), b.as_ref(), r.as_ref())?;
    m.out.merged = merged;
    m.out.applied = applied;
    detect_moves(&mut m.out.actions);
    // Deletions the guard counts: not moves.
    let mut added = std::mem::take(&mut m.published_added);
    m.out.publish_deletes = m
        .published_removed
        .iter()
        .filter(|k| match added.get_mut(k) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .count() as u64;
    // Local files this step removes: deleted, or overwritten by another type (a file by a
    // symlink, say; a directory's files are deleted one by one).
    m.out.local_deletes = m
        .out
        .actions
        .iter()
        .filter(|a| match a {
            Action::Delete { .. } => true,
            Action::Write {
                node,
                expect: Some(e),
                ..
            } => std::mem::discriminant(&node.kind) != std::mem::discriminant(&e.kind),
            _ => false,
        })
        .count() as u64;
    Ok(m.out)
}

fn push(v: &mut Vec<MTree>, n: Opt) {
    if let Some(n) = n {
        v.push(MTree::Same(n.clone()));
    }
}

impl<'a> Merger<'a> {
    /// Whether any of `entries`, at any depth, is something other than a directory.
    fn holds_files(&self, entries: &[MTree]) -> Result<bool> {
        for e in entries {
            let found = match e {
                MTree::Dir(_, children) => self.holds_files(children)?,
                MTree::Same(n) if n.is_dir() => {
                    let children: Vec<MTree> = self
                        .children(Some(n))?
                        .into_iter()
                        .map(MTree::Same)
                        .collect();
                    self.holds_files(&children)?
                }
                MTree::Same(_) => true,
            };
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn children(&self, n: Opt) -> Result<Vec<Node>> {
        match n.map(|n| &n.kind) {
            Some(NodeKind::Dir { subtree }) => self.src.dir(subtree),
            _ => Ok(Vec::new()),
        }
    }

    /// Merges the entries of one directory; returns merged and applied entries and whether each
    /// equals the remote (resp. local) listing unchanged.
    fn merge_dir(
        &mut self,
        path: &[u8],
        a: Opt,
        l: Opt,
        b: Opt,
        r: Opt,
    ) -> Result<(Vec<MTree>, Vec<MTree>, bool, bool)> {
        let lists = [
            self.children(a)?,
            self.children(l)?,
            self.children(b)?,
            self.children(r)?,
        ];
        let mut by_name: BTreeMap<Vec<u8>, [Option<Node>; 4]> = BTreeMap::new();
        for (side, list) in lists.iter().enumerate() {
            for n in list {
                by_name.entry(n.name.clone()).or_default()[side] = Some(n.clone());
            }
        }
        let taken: BTreeSet<Vec<u8>> = by_name.keys().cloned().collect();
        let (mut merged, mut applied) = (Vec::new(), Vec::new());
        for (name, [a, l, b, r]) in &by_name {
            let p = join(path, name);
            self.entry(
                &p,
                a.as_ref(),
                l.as_ref(),
                b.as_ref(),
                r.as_ref(),
                &taken,
                &mut merged,
                &mut applied,
            )?;
        }
        merged.sort_by(|x, y| x.name().cmp(y.name()));
        applied.sort_by(|x, y| x.name().cmp(y.name()));
        let unchanged = |v: &[MTree], list: &[Node]| {
            v.len() == list.len()
                && v.iter()
                    .zip(list)
                    .all(|(m, n)| matches!(m, MTree::Same(x) if x == n))
        };
        let m_same = unchanged(&merged, &lists[3]);
        let a_same = unchanged(&applied, &lists[1]);
        Ok((merged, applied, m_same, a_same))
    }

    /// True if a parked path at or below `p` has a resolution waiting (no shortcuts then).
    fn resolution_at_or_below(&self, p: &[u8]) -> bool {
        let mut lo = p.to_vec();
        if !lo.is_empty() {
            lo.push(b'/');
        }
        self.inp.parked.get(p).is_some_and(|r| r.is_some())
            || self
                .inp
                .parked
                .range(lo.clone()..)
                .take_while(|(k, _)| k.starts_with(&lo))
                .any(|(_, r)| r.is_some())
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        p: &[u8],
        a: Opt,
        l: Opt,
        b: Opt,
        r: Opt,
        taken: &BTreeSet<Vec<u8>>,
        merged: &mut Vec<MTree>,
        applied: &mut Vec<MTree>,
    ) -> Result<()> {
        let inp = self.inp;
        let is_dir = l.or(r).or(a).or(b).is_some_and(|n| n.is_dir());
        // Untracked here: excluded by rules (dropped from applied), or unknown to the scan
        // (unreadable or oversized: assumed unchanged). The shared state keeps its version.
        if inp.rules.excluded(p, is_dir) {
            push(merged, r);
            return Ok(());
        }
        if inp.untracked.contains(p) {
            push(merged, r);
            push(applied, a);
            return Ok(());
        }
        if let Some(rn) = r
            && let NodeKind::File { size, .. } = rn.kind
            && let Some(limit) = inp.rules.size_limit(p)
            && size > limit
        {
            self.out.skipped.push(Skipped {
                path: p.to_vec(),
                size,
                limit,
            });
            push(merged, r);
            push(applied, l);
            return Ok(());
        }
        let mode = inp.rules.mode(p);
        let (pubs, apps) = (mode.publishes(inp.role), mode.applies(inp.role));
        if let Some(f) = inp.force {
            return self.forced(p, f, a, l, b, r, merged, applied);
        }
        // A directory only one side holds, and has held since the last step (its removal on
        // the other side waited for something kept in it): `dir_entry` decides whether it can
        // go now.
        let held_one_side = pubs
            && apps
            && !self.inp.parked.contains_key(p)
            && match (a, l, b, r) {
                (Some(a), Some(_), None, None) | (None, None, Some(a), Some(_)) => a.is_dir(),
                _ => false,
            };
        if same(a, l) && same(b, r) && !self.resolution_at_or_below(p) && !held_one_side {
            push(merged, r);
            push(applied, l);
            return Ok(());
        }
        // A parked path is one unit, even if it is a directory on every side by now: it stays
        // parked as a whole, and a resolution applies to the whole of it.
        let parked = self.inp.parked.contains_key(p);
        if !parked && [a, l, b, r].iter().flatten().all(|n| n.is_dir()) {
            return self.dir_entry(p, a, l, b, r, pubs, apps, merged, applied);
        }
        // Both sides made a directory where there was something else (a file turned into a
        // directory on both, say): their contents merge as two new directories would, so that
        // neither side's files are dropped for the other's (seed 7005: a symlink made inside
        // one of them was lost when concurrent heads were combined).
        if !parked && l.is_some_and(|n| n.is_dir()) && r.is_some_and(|n| n.is_dir()) {
            let a = a.filter(|n| n.is_dir());
            let b = b.filter(|n| n.is_dir());
            return self.dir_entry(p, a, l, b, r, pubs, apps, merged, applied);
        }
        self.leaf(p, a, l, b, r, pubs, apps, taken, merged, applied)
    }

    #[allow(clippy::too_many_arguments)]
    fn dir_entry(
        &mut self,
        p: &[u8],
        a: Opt,
        l: Opt,
        b: Opt,
        r: Opt,
        pubs: bool,
        apps: bool,
        merged: &mut Vec<MTree>,
        applied: &mut Vec<MTree>,
    ) -> Result<()> {
        let mark = self.out.actions.len();
        let (mc, ac, m_same, a_same) = self.merge_dir(p, a, l, b, r)?;
        let (ae, le, be, re) = (a.is_some(), l.is_some(), b.is_some(), r.is_some());
        let (lc, rc) = (ae != le, be != re);
        let merged_v = if lc && pubs { le } else { re };
        // Take the shared side's existence when only it changed, or to refill a receiving
        // side's deletion; otherwise the folder keeps what it has.
        let refill = lc && !pubs && apps && !le;
        let applied_v = if (rc && apps && !lc) || refill {
            re
        } else {
            le
        };
        // The folder deleted this directory, and publishing that waited for what stayed in it
        // (a file parked there, say): once nothing of it is left in the shared state either,
        // the deletion is published (seed 7003: an emptied directory stayed shared for good).
        let deleted_here = !ae && !le && be && pubs && mc.is_empty();
        let merged_exists = (merged_v || !mc.is_empty()) && !deleted_here;
        // The other way round: the shared state removed it while something in it was kept here
        // (seed 7105: empty directories stayed in one folder after a file parked in them
        // settled). Once no file of it is left in the folder tree, it goes here too — unless
        // the folder's directory holds entries that do not sync (excluded files keep it).
        let deleted_there = ae
            && le
            && !be
            && !re
            && pubs
            && apps
            && !self.holds_files(&ac)?
            && self.inp.held.is_some_and(|held| !held(p));
        let applied_exists = (applied_v || !ac.is_empty()) && !deleted_there;
        let meta = |prefer_local: bool| {
            let n = if prefer_local { l.or(r) } else { r.or(l) }
                .or(a)
                .or(b)
                .expect("some side has the directory");
            n.clone()
        };
        if merged_exists {
            merged.push(match (m_same, r) {
                (true, Some(r)) => MTree::Same(r.clone()),
                _ => MTree::Dir(meta(lc && pubs), mc),
            });
        }
        if applied_exists {
            applied.push(match (a_same, l) {
                (true, Some(l)) => MTree::Same(l.clone()),
                _ => MTree::Dir(meta(true), ac),
            });
        }
        if applied_exists && !le {
            self.out.actions.insert(
                mark,
                Action::Mkdir {
                    path: p.to_vec(),
                    node: meta(false),
                },
            );
        }
        if !applied_exists && le {
            self.out.actions.push(Action::Rmdir { path: p.to_vec() });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn leaf(
        &mut self,
        p: &[u8],
        a: Opt,
        l: Opt,
        b: Opt,
        r: Opt,
        pubs: bool,
        apps: bool,
        taken: &BTreeSet<Vec<u8>>,
        merged: &mut Vec<MTree>,
        applied: &mut Vec<MTree>,
    ) -> Result<()> {
        let parked = self.inp.parked.get(p);
        let (lc, rc) = (!same(a, l), !same(b, r));
        // Equal content on both sides: a conflict settled, the same edit made twice, or nothing
        // new. (A change on one side only — an mtime-only touch, say — takes the normal path
        // below so that it propagates.)
        if same_content(l, r) && (parked.is_some() || lc == rc) {
            if parked.is_some() {
                self.out.resolved.push(p.to_vec());
            }
            match (l, r) {
                (Some(x), Some(y)) if lc && x.mtime_ns != y.mtime_ns => {
                    // The same edit made on both sides: the newer mtime wins everywhere.
                    if pubs && x.mtime_ns > y.mtime_ns {
                        push(merged, l);
                        push(applied, l);
                    } else if apps && !x.is_dir() {
                        self.out.actions.push(Action::Write {
                            path: p.to_vec(),
                            node: y.clone(),
                            expect: Some(x.clone()),
                        });
                        push(merged, r);
                        push(applied, r);
                    } else {
                        push(merged, r);
                        push(applied, l);
                    }
                }
                _ => {
                    push(merged, r);
                    push(applied, l);
                }
            }
            return Ok(());
        }
        match parked {
            Some(None) => {
                // Still parked: both sides keep their own version.
                push(merged, r);
                push(applied, l);
                self.record(p, ConflictKind::ModifiedBoth, l, r, Outcome::Parked);
                return Ok(());
            }
            Some(Some(choice)) => {
                self.out.resolved.push(p.to_vec());
                return self.policy(p, *choice, l, r, taken, merged, applied);
            }
            None => {}
        }
        match (lc, rc) {
            (false, false) => {
                push(merged, r);
                push(applied, l);
            }
            (true, false) => {
                if pubs {
                    // The folder held something other than the shared version here (a parked
                    // version, a newly tracked file): the shared version was never seen here,
                    // so this change meets it instead of replacing it.
                    if r.is_some() && !same_content(a, b) {
                        if l.is_none() {
                            self.record(p, ConflictKind::DeletedLocal, l, r, Outcome::ChangeKept);
                            if apps {
                                self.make_local(p, None, r)?;
                                push(applied, r);
                            }
                            push(merged, r);
                            return Ok(());
                        }
                        return self.both_changed(p, l, r, pubs, apps, taken, merged, applied);
                    }
                    self.note_publish(l, r)?;
                    push(merged, l);
                    push(applied, l);
                } else if apps && l.is_none() {
                    self.make_local(p, None, r)?;
                    push(merged, r);
                    push(applied, r);
                } else {
                    // A receiving side's own change: it stays here, unpublished.
                    self.keep_here(p, l, r);
                    push(merged, r);
                    push(applied, l);
                }
            }
            (false, true) => {
                if apps {
                    // The folder holds something the shared state did not (a parked version, a
                    // receiving side's own edit, a file new here): the remote change meets a
                    // local one, it does not replace an agreed state.
                    if l.is_some() && !same_content(a, b) {
                        return self.both_changed(p, l, r, pubs, apps, taken, merged, applied);
                    }
                    self.make_local(p, l, r)?;
                    push(merged, r);
                    push(applied, r);
                } else {
                    // A sending side of a one-way mode: the shared change is not written here.
                    self.keep_here(p, l, r);
                    push(merged, r);
                    push(applied, l);
                }
            }
            (true, true) => match (l, r) {
                (None, Some(_)) => {
                    self.record(p, ConflictKind::DeletedLocal, l, r, Outcome::ChangeKept);
                    if apps {
                        self.make_local(p, None, r)?;
                        push(applied, r);
                    }
                    push(merged, r);
                }
                (Some(_), None) => {
                    self.record(p, ConflictKind::DeletedRemote, l, r, Outcome::ChangeKept);
                    if pubs {
                        push(merged, l);
                    }
                    push(applied, l);
                }
                _ => return self.both_changed(p, l, r, pubs, apps, taken, merged, applied),
            },
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn both_changed(
        &mut self,
        p: &[u8],
        l: Opt,
        r: Opt,
        pubs: bool,
        apps: bool,
        taken: &BTreeSet<Vec<u8>>,
        merged: &mut Vec<MTree>,
        applied: &mut Vec<MTree>,
    ) -> Result<()> {
        if apps && !pubs {
            // Receiving side of a one-way mode: its own version is never clobbered.
            self.keep_here(p, l, r);
            push(merged, r);
            push(applied, l);
            return Ok(());
        }
        if pubs && !apps {
            push(merged, l);
            push(applied, l);
            return Ok(());
        }
        let policy = self.inp.rules.policy(p);
        self.policy(p, policy, l, r, taken, merged, applied)
    }

    #[allow(clippy::too_many_arguments)]
    fn policy(
        &mut self,
        p: &[u8],
        policy: Policy,
        l: Opt,
        r: Opt,
        taken: &BTreeSet<Vec<u8>>,
        merged: &mut Vec<MTree>,
        applied: &mut Vec<MTree>,
    ) -> Result<()> {
        let kind = ConflictKind::ModifiedBoth;
        match (policy, l, r) {
            (Policy::UserPrompt, _, _) => {
                push(merged, r);
                push(applied, l);
                self.record(p, kind, l, r, Outcome::Parked);
            }
            // Keeping both when one side has nothing keeps the side that has something.
            (Policy::KeepLocal, _, _) | (Policy::KeepBoth, Some(_), None) => {
                self.note_publish(l, r)?;
                push(merged, l);
                push(applied, l);
                self.record(p, kind, l, r, Outcome::KeptLocal);
            }
            (Policy::KeepRemote, _, _) | (Policy::KeepBoth, None, _) => {
                self.make_local(p, l, r)?;
                push(merged, r);
                push(applied, r);
                self.record(p, kind, l, r, Outcome::KeptRemote);
            }
            (Policy::KeepBoth, Some(ln), Some(_)) => {
                let (parent, name) = parent_and_name(p);
                let mut copy = conflict_name(name, self.inp.now_ns, self.inp.endpoint);
                let mut n = 2;
                while taken.contains(&copy) {
                    copy =
                        conflict_name(name, self.inp.now_ns, &format!("{}-{n}", self.inp.endpoint));
                    n += 1;
                }
                let to = join(parent, &copy);
                self.out.actions.push(Action::Rename {
                    from: p.to_vec(),
                    to: to.clone(),
                    expect: ln.clone(),
                    node: None,
                });
                self.make_local(p, None, r)?;
                let mut kept = ln.clone();
                kept.name = copy.clone();
                push(merged, r);
                push(merged, Some(&kept));
                push(applied, r);
                push(applied, Some(&kept));
                self.record(p, kind, l, r, Outcome::KeptBoth { copy: to });
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn forced(
        &mut self,
        p: &[u8],
        f: Force,
        a: Opt,
        l: Opt,
        b: Opt,
        r: Opt,
        merged: &mut Vec<MTree>,
        applied: &mut Vec<MTree>,
    ) -> Result<()> {
        if same(l, r) {
            push(merged, r);
            push(applied, l);
            return Ok(());
        }
        if l.is_some_and(|n| n.is_dir()) && r.is_some_and(|n| n.is_dir()) {
            let (mc, ac, _, _) = self.merge_dir(p, a, l, b, r)?;
            let n = match f {
                Force::Up => l,
                Force::Down => r,
            }
            .expect("both directories");
            merged.push(MTree::Dir(n.clone(), mc));
            applied.push(MTree::Dir(n.clone(), ac));
            return Ok(());
        }
        match f {
            Force::Up => {
                self.note_publish(l, r)?;
                push(merged, l);
                push(applied, l);
            }
            Force::Down => {
                self.make_local(p, l, r)?;
                push(merged, r);
                push(applied, r);
            }
        }
        Ok(())
    }

    /// Notes that the shared state's `r` is replaced by this folder's `l`, for the deletion
    /// guard: every file or symlink of `r` that `l` does not replace by one of the same type is
    /// removed from the shared state (a deleted file, a directory replaced by a file or a
    /// symlink with everything in it, a file turned into a symlink); files `l` adds are noted
    /// so that a removal whose content is added elsewhere counts as a move.
    fn note_publish(&mut self, l: Opt, r: Opt) -> Result<()> {
        if let Some(l) = l
            && let Some((s, c)) = content_key(l)
            && !r.is_some_and(|r| matches!(r.kind, NodeKind::File { .. }))
        {
            *self.published_added.entry((s, c.clone())).or_default() += 1;
        }
        let Some(r) = r else { return Ok(()) };
        if r.is_dir() {
            if !l.is_some_and(|l| l.is_dir()) {
                for c in self.children(Some(r))? {
                    self.note_publish(None, Some(&c))?;
                }
            }
            return Ok(());
        }
        let replaced_by_same_type =
            l.is_some_and(|l| std::mem::discriminant(&l.kind) == std::mem::discriminant(&r.kind));
        if !replaced_by_same_type {
            let key = content_key(r)
                .map(|(s, c)| (s, c.clone()))
                .unwrap_or((0, Content::Direct(vec![])));
            self.published_removed.push(key);
        }
        Ok(())
    }

    /// Notes a path where the folder keeps a version other than the shared one because of a
    /// one-way mode (for `status`).
    fn keep_here(&mut self, p: &[u8], l: Opt, r: Opt) {
        if !same_content(l, r) {
            self.out.kept_here.push(p.to_vec());
        }
    }

    fn record(&mut self, p: &[u8], kind: ConflictKind, l: Opt, r: Opt, outcome: Outcome) {
        self.out.conflicts.push(ConflictRecord {
            path: p.to_vec(),
            kind,
            local: l.cloned(),
            remote: r.cloned(),
            outcome,
        });
    }

    /// Plans the local changes that turn `from` (what the scan saw) into `to`.
    fn make_local(&mut self, p: &[u8], from: Opt, to: Opt) -> Result<()> {
        match (from, to) {
            (None, None) => {}
            (Some(x), None) => self.remove_local(p, x)?,
            (None, Some(y)) => self.create_local(p, y)?,
            (Some(x), Some(y)) => {
                if x.is_dir() && y.is_dir() {
                    let mut by: BTreeMap<Vec<u8>, [Option<Node>; 2]> = BTreeMap::new();
                    for n in self.children(Some(x))? {
                        let name = n.name.clone();
                        by.entry(name).or_default()[0] = Some(n);
                    }
                    for n in self.children(Some(y))? {
                        let name = n.name.clone();
                        by.entry(name).or_default()[1] = Some(n);
                    }
                    for (name, [cx, cy]) in by {
                        let cp = join(p, &name);
                        if self
                            .inp
                            .rules
                            .excluded(&cp, cx.as_ref().or(cy.as_ref()).is_some_and(|n| n.is_dir()))
                        {
                            continue;
                        }
                        if !same(cx.as_ref(), cy.as_ref()) {
                            self.make_local(&cp, cx.as_ref(), cy.as_ref())?;
                        }
                    }
                } else if !x.is_dir() && !y.is_dir() {
                    self.out.actions.push(Action::Write {
                        path: p.to_vec(),
                        node: y.clone(),
                        expect: Some(x.clone()),
                    });
                } else {
                    self.remove_local(p, x)?;
                    self.create_local(p, y)?;
                }
            }
        }
        Ok(())
    }

    fn remove_local(&mut self, p: &[u8], x: &Node) -> Result<()> {
        if x.is_dir() {
            for c in self.children(Some(x))? {
                self.remove_local(&join(p, &c.name), &c)?;
            }
            self.out.actions.push(Action::Rmdir { path: p.to_vec() });
        } else {
            self.out.actions.push(Action::Delete {
                path: p.to_vec(),
                expect: x.clone(),
            });
        }
        Ok(())
    }

    fn create_local(&mut self, p: &[u8], y: &Node) -> Result<()> {
        if y.is_dir() {
            self.out.actions.push(Action::Mkdir {
                path: p.to_vec(),
                node: y.clone(),
            });
            for c in self.children(Some(y))? {
                let cp = join(p, &c.name);
                if !self.inp.rules.excluded(&cp, c.is_dir()) {
                    self.create_local(&cp, &c)?;
                }
            }
        } else {
            self.out.actions.push(Action::Write {
                path: p.to_vec(),
                node: y.clone(),
                expect: None,
            });
        }
        Ok(())
    }
}

/// A file deleted at one path and created with the same content at another in one step is a
/// move: rename it locally instead of downloading it again. Directory removals wait until the
/// end (a moved file may still be inside), unless something is created at the same path later
/// — or at an ancestor's path: a directory replaced by a file is removed in place, so the
/// removals of its subdirectories must stay in place before it.
fn detect_moves(actions: &mut Vec<Action>) {
    // A file removed because something else takes its path (a directory, say) is deleted in
    // place: as a move it would run at its destination's turn, after that path's new entry
    // failed to be made (B13).
    let replaced: BTreeSet<&[u8]> = actions
        .iter()
        .filter(|a| matches!(a, Action::Mkdir { .. } | Action::Write { .. }))
        .map(|a| a.path())
        .collect();
    let mut deletes: HashMap<(u64, Content), Vec<usize>> = HashMap::new();
    for (i, a) in actions.iter().enumerate() {
        if let Action::Delete { expect, path } = a
            && !replaced.contains(path.as_slice())
            && let Some((size, content)) = content_key(expect)
        {
            deletes.entry((size, content.clone())).or_default().push(i);
        }
    }
    let mut consumed = BTreeSet::new();
    for i in 0..actions.len() {
        let Action::Write {
            path,
            node,
            expect: None,
        } = &actions[i]
        else {
            continue;
        };
        let Some((size, content)) = content_key(node) else {
            continue;
        };
        let Some(candidates) = deletes.get_mut(&(size, content.clone())) else {
            continue;
        };
        let Some(d) = candidates.pop() else { continue };
        let Action::Delete { path: from, expect } = &actions[d] else {
            unreachable!("indexed deletes")
        };
        let mv = Action::Rename {
            from: from.clone(),
            to: path.clone(),
            expect: expect.clone(),
            node: Some(node.clone()),
        };
        consumed.insert(d);
        actions[i] = mv;
    }
    let created: BTreeSet<Vec<u8>> = actions
        .iter()
        .filter(|a| !matches!(a, Action::Delete { .. } | Action::Rmdir { .. }))
        .map(|a| a.path().to_vec())
        .collect();
    let mut deferred = Vec::new();
    let mut kept = Vec::with_capacity(actions.len());
    for (i, a) in std::mem::take(actions).into_iter().enumerate() {
        if consumed.contains(&i) {
            continue;
        }
        match a {
            Action::Rmdir { ref path } if !created_at_or_above(&created, path) => deferred.push(a),
            other => kept.push(other),
        }
    }
    deferred.sort_by_key(|a| std::cmp::Reverse(a.path().iter().filter(|&&b| b == b'/').count()));
    kept.extend(deferred);
    *actions = kept;
}

/// Whether something is created at `path` or at one of its ancestors.
fn created_at_or_above(created: &BTreeSet<Vec<u8>>, path: &[u8]) -> bool {
    created.contains(path)
        || path
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'/' && created.contains(&path[..i]))
}
