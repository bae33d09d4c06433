//! Table-driven tests of the merge, in the spirit of Mutagen's reconcile tests: each case gives
//! the base, the folder (scan) and the shared state as small trees written as text, and the
//! expected merged state, folder state, plan and conflicts. Trees live in memory, so each case
//! is the pure function and nothing else.
//!
//! Tree text: space-separated entries — `path=content` a file (size = content length, mtime
//! [`MTIME`]), `path=content@N` a file with mtime N, `path/` a directory, `path->target` a
//! symlink. Parent directories are implied.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::merge::{Action, Input, MTree, Outcome, Output, TreeSource, merge};
use super::rules::{Rules, RulesBuilder};
use super::{Force, Mode, Policy, Role};
use crate::error::Result;
use crate::id::BlobId;
use crate::snapshot::{Content, Node, NodeKind, join};

const MTIME: i64 = 1_000;

/// Directory listings by content-derived id: equal directories have equal ids, as in a
/// repository, so the merge's skipping of identical subtrees is exercised.
#[derive(Default)]
struct Mem(RefCell<HashMap<BlobId, Vec<Node>>>);

impl TreeSource for Mem {
    fn dir(&self, id: &BlobId) -> Result<Vec<Node>> {
        Ok(self.0.borrow()[id].clone())
    }
}

impl Mem {
    fn put(&self, mut nodes: Vec<Node>) -> BlobId {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let id = BlobId(*blake3::hash(format!("{nodes:?}").as_bytes()).as_bytes());
        self.0.borrow_mut().insert(id, nodes);
        id
    }

    /// Builds a tree from its text; returns the root tree id.
    fn tree(&self, text: &str) -> BlobId {
        #[derive(Default)]
        struct D(BTreeMap<Vec<u8>, (NodeKind, i64)>, BTreeMap<Vec<u8>, D>);
        fn insert(d: &mut D, comps: &[&str], kind: Option<(NodeKind, i64)>) {
            let (first, rest) = comps.split_first().expect("a path");
            if rest.is_empty() {
                match kind {
                    Some(k) => {
                        d.0.insert(first.as_bytes().to_vec(), k);
                    }
                    None => {
                        d.1.entry(first.as_bytes().to_vec()).or_default();
                    }
                }
            } else {
                insert(
                    d.1.entry(first.as_bytes().to_vec()).or_default(),
                    rest,
                    kind,
                );
            }
        }
        fn build(m: &Mem, d: &D) -> BlobId {
            let mut nodes: Vec<Node> =
                d.0.iter()
                    .map(|(name, (k, mtime))| node(name, k.clone(), *mtime))
                    .collect();
            for (name, sub) in &d.1 {
                let subtree = build(m, sub);
                nodes.push(node(name, NodeKind::Dir { subtree }, 0));
            }
            m.put(nodes)
        }
        let mut root = D::default();
        for tok in text.split_whitespace() {
            if let Some(dir) = tok.strip_suffix('/') {
                insert(&mut root, &dir.split('/').collect::<Vec<_>>(), None);
            } else if let Some((p, target)) = tok.split_once("->") {
                let kind = NodeKind::Symlink {
                    target: target.as_bytes().to_vec(),
                };
                insert(
                    &mut root,
                    &p.split('/').collect::<Vec<_>>(),
                    Some((kind, MTIME)),
                );
            } else {
                let (p, spec) = tok.split_once('=').expect("path=content");
                let mtime = spec
                    .split_once('@')
                    .map_or(MTIME, |(_, t)| t.parse().unwrap());
                let leaf = Some((file(spec), mtime));
                insert(&mut root, &p.split('/').collect::<Vec<_>>(), leaf);
            }
        }
        build(self, &root)
    }

    /// The tree's text (sorted), for comparing with an expectation.
    fn text(&self, entries: &[MTree]) -> String {
        let mut out = Vec::new();
        self.flatten(b"", entries, &mut out);
        out.join(" ")
    }

    fn flatten(&self, prefix: &[u8], entries: &[MTree], out: &mut Vec<String>) {
        let mut entries = entries.to_vec();
        entries.sort_by(|a, b| a.name().cmp(b.name()));
        for e in &entries {
            let p = join(prefix, e.name());
            match e {
                MTree::Dir(_, children) => {
                    out.push(format!("{}/", show(&p)));
                    self.flatten(&p, children, out);
                }
                MTree::Same(n) => match &n.kind {
                    NodeKind::Dir { subtree } => {
                        out.push(format!("{}/", show(&p)));
                        let children: Vec<MTree> = self
                            .dir(subtree)
                            .unwrap()
                            .into_iter()
                            .map(MTree::Same)
                            .collect();
                        self.flatten(&p, &children, out);
                    }
                    _ => out.push(leaf_text(&p, n)),
                },
            }
        }
    }
}

/// Normalizes an expected tree text: implied parents made explicit, sorted.
fn expected_text(text: &str) -> String {
    let mut set = BTreeSet::new();
    for tok in text.split_whitespace() {
        let path = tok
            .split_once("->")
            .map(|(p, _)| p)
            .or_else(|| tok.split_once('=').map(|(p, _)| p))
            .unwrap_or(tok.trim_end_matches('/'));
        let comps: Vec<&str> = path.split('/').collect();
        for i in 1..comps.len() {
            set.insert(format!("{}/", comps[..i].join("/")));
        }
        set.insert(tok.to_string());
    }
    // Sort as the flattening does: by path components.
    let mut v: Vec<String> = set.into_iter().collect();
    v.sort_by_key(|a| key(a));
    v.join(" ")
}

fn key(tok: &str) -> Vec<Vec<u8>> {
    let path = tok
        .split_once("->")
        .map(|(p, _)| p)
        .or_else(|| tok.split_once('=').map(|(p, _)| p))
        .unwrap_or(tok.trim_end_matches('/'));
    path.split('/').map(|c| c.as_bytes().to_vec()).collect()
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn file(spec: &str) -> NodeKind {
    let content = spec.split('@').next().unwrap();
    NodeKind::File {
        size: content.len() as u64,
        content: Content::Direct(vec![BlobId(*blake3::hash(content.as_bytes()).as_bytes())]),
    }
}

fn node(name: &[u8], kind: NodeKind, mtime_ns: i64) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        mtime_ns,
        uid: 0,
        gid: 0,
    }
}

/// Contents are recovered from a registry of the texts used (a blob id names its text).
fn leaf_text(p: &[u8], n: &Node) -> String {
    match &n.kind {
        NodeKind::Symlink { target } => format!("{}->{}", show(p), show(target)),
        NodeKind::File { content, .. } => {
            let Content::Direct(ids) = content else {
                panic!("direct content")
            };
            let text = CONTENTS
                .with(|c| c.borrow().get(&ids[0]).cloned())
                .unwrap_or_default();
            if n.mtime_ns == MTIME {
                format!("{}={text}", show(p))
            } else {
                format!("{}={text}@{}", show(p), n.mtime_ns)
            }
        }
        NodeKind::Dir { .. } => format!("{}/", show(p)),
    }
}

thread_local! {
    static CONTENTS: RefCell<HashMap<BlobId, String>> = RefCell::new(HashMap::new());
}

/// Registers every content of a tree text, so that trees print contents, not blob ids.
fn register(text: &str) {
    for tok in text.split_whitespace() {
        if let Some((_, spec)) = tok.split_once('=') {
            let content = spec.split('@').next().unwrap();
            CONTENTS.with(|c| {
                c.borrow_mut().insert(
                    BlobId(*blake3::hash(content.as_bytes()).as_bytes()),
                    content.to_string(),
                )
            });
        }
    }
}

/// One action as text: `write P`, `update P`, `delete P`, `mkdir P`, `rmdir P`, `move A B`,
/// `keep-both A B` (B with its time stamp replaced by `T`).
fn action_text(a: &Action) -> String {
    let stamp = |p: &[u8]| {
        let s = show(p);
        match s.find(".conflict-") {
            Some(i) => format!(
                "{}.conflict-T{}",
                &s[..i],
                &s[i + ".conflict-".len() + 15..]
            ),
            None => s,
        }
    };
    match a {
        Action::Mkdir { path, .. } => format!("mkdir {}", show(path)),
        Action::Write {
            path, expect: None, ..
        } => format!("write {}", show(path)),
        Action::Write { path, .. } => format!("update {}", show(path)),
        Action::Delete { path, .. } => format!("delete {}", show(path)),
        Action::Rmdir { path } => format!("rmdir {}", show(path)),
        Action::Rename {
            from,
            to,
            node: Some(_),
            ..
        } => format!("move {} {}", show(from), show(to)),
        Action::Rename { from, to, .. } => format!("keep-both {} {}", show(from), stamp(to)),
    }
}

/// One case of the table.
struct Case {
    name: &'static str,
    base: &'static str,
    /// What the folder held after the last step; `None`: the base (nothing parked or kept).
    applied: Option<&'static str>,
    local: &'static str,
    remote: &'static str,
    policy: Policy,
    /// Mode of every path, and this endpoint's role.
    mode: Mode,
    role: Role,
    parked: &'static [&'static str],
    /// Paths the scan could not read (untracked this step).
    untracked: &'static [&'static str],
    excludes: &'static [&'static str],
    /// Directories of the folder that hold entries that do not sync.
    held: &'static [&'static str],
    force: Option<Force>,
    // Expectations.
    merged: &'static str,
    folder: &'static str,
    actions: &'static [&'static str],
    /// `path:outcome` with outcome `parked`, `local`, `remote`, `both`, `change`.
    conflicts: &'static [&'static str],
    publish_deletes: u64,
    local_deletes: u64,
    /// Paths where a one-way mode keeps this folder's own version.
    kept_here: &'static [&'static str],
}

const CASE: Case = Case {
    name: "",
    base: "",
    applied: None,
    local: "",
    remote: "",
    policy: Policy::UserPrompt,
    mode: Mode::Bidirectional,
    role: Role::Local,
    parked: &[],
    untracked: &[],
    excludes: &[],
    held: &[],
    force: None,
    merged: "",
    folder: "",
    actions: &[],
    conflicts: &[],
    publish_deletes: 0,
    local_deletes: 0,
    kept_here: &[],
};

fn outcome_text(o: &Outcome) -> &'static str {
    match o {
        Outcome::Parked => "parked",
        Outcome::KeptLocal => "local",
        Outcome::KeptRemote => "remote",
        Outcome::KeptBoth { .. } => "both",
        Outcome::ChangeKept => "change",
    }
}

fn run(c: &Case) -> Result<(Mem, Output)> {
    for t in [c.base, c.applied.unwrap_or(""), c.local, c.remote] {
        register(t);
    }
    let m = Mem::default();
    let rules: Rules = {
        let mut b = RulesBuilder::new();
        b.default_policy = c.policy;
        b.default_mode = c.mode;
        b.excludes = c.excludes.iter().map(|s| s.to_string()).collect();
        b.build()?
    };
    let parked: BTreeMap<Vec<u8>, Option<Policy>> = c
        .parked
        .iter()
        .map(|p| (p.as_bytes().to_vec(), None))
        .collect();
    let untracked: BTreeSet<Vec<u8>> = c.untracked.iter().map(|p| p.as_bytes().to_vec()).collect();
    let (b, l, r) = (m.tree(c.base), m.tree(c.local), m.tree(c.remote));
    let a = c.applied.map(|t| m.tree(t)).unwrap_or(b);
    let held = |p: &[u8]| c.held.iter().any(|h| h.as_bytes() == p);
    let inp = Input {
        applied: Some(a),
        local: Some(l),
        base: Some(b),
        remote: Some(r),
        rules: &rules,
        role: c.role,
        endpoint: "here",
        now_ns: 1_764_245_025_000_000_000,
        parked: &parked,
        untracked: &untracked,
        force: c.force,
        held: Some(&held),
    };
    let out = merge(&m, &inp)?;
    Ok((m, out))
}

fn check(c: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let (m, out) = match run(c) {
        Ok(x) => x,
        Err(e) => return vec![format!("merge failed: {e}")],
    };
    let mut diff = |what: &str, want: String, got: String| {
        if want != got {
            problems.push(format!("{what}:\n      want {want}\n      got  {got}"));
        }
    };
    diff("merged", expected_text(c.merged), m.text(&out.merged));
    diff("folder", expected_text(c.folder), m.text(&out.applied));
    diff(
        "actions",
        c.actions.join(", "),
        out.actions
            .iter()
            .map(action_text)
            .collect::<Vec<_>>()
            .join(", "),
    );
    diff(
        "conflicts",
        c.conflicts.join(", "),
        out.conflicts
            .iter()
            .map(|k| format!("{}:{}", show(&k.path), outcome_text(&k.outcome)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    diff(
        "kept here",
        c.kept_here.join(", "),
        out.kept_here
            .iter()
            .map(|p| show(p))
            .collect::<Vec<_>>()
            .join(", "),
    );
    diff(
        "deletions (published, local)",
        format!("{} {}", c.publish_deletes, c.local_deletes),
        format!("{} {}", out.publish_deletes, out.local_deletes),
    );
    problems
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "nothing changed",
        base: "a=1 d/b=2", local: "a=1 d/b=2", remote: "a=1 d/b=2",
        merged: "a=1 d/b=2", folder: "a=1 d/b=2", ..CASE },
    Case { name: "a local edit is published",
        base: "a=1", local: "a=2", remote: "a=1",
        merged: "a=2", folder: "a=2", ..CASE },
    Case { name: "a shared edit is applied",
        base: "a=1", local: "a=1", remote: "a=2",
        merged: "a=2", folder: "a=2", actions: &["update a"], ..CASE },
    Case { name: "a file created on both sides with the same content is no conflict",
        base: "", local: "n=x", remote: "n=x",
        merged: "n=x", folder: "n=x", ..CASE },
    Case { name: "a file created here is published",
        base: "a=1", local: "a=1 d/n=x", remote: "a=1",
        merged: "a=1 d/n=x", folder: "a=1 d/n=x", ..CASE },
    Case { name: "a file created in the shared state arrives with its directory",
        base: "a=1", local: "a=1", remote: "a=1 d/n=x",
        merged: "a=1 d/n=x", folder: "a=1 d/n=x", actions: &["mkdir d", "write d/n"], ..CASE },
    Case { name: "user_prompt parks both-changed: each side keeps its version",
        base: "a=1", local: "a=2", remote: "a=3",
        merged: "a=3", folder: "a=2", conflicts: &["a:parked"], ..CASE },
    Case { name: "keep_local publishes this side's version",
        base: "a=1", local: "a=2", remote: "a=3", policy: Policy::KeepLocal,
        merged: "a=2", folder: "a=2", conflicts: &["a:local"], ..CASE },
    Case { name: "keep_remote writes the shared version here",
        base: "a=1", local: "a=2", remote: "a=3", policy: Policy::KeepRemote,
        merged: "a=3", folder: "a=3", actions: &["update a"], conflicts: &["a:remote"], ..CASE },
    Case { name: "keep_both renames this side's version and takes the shared one",
        base: "a.txt=1", local: "a.txt=2", remote: "a.txt=3", policy: Policy::KeepBoth,
        merged: "a.txt=3 a.conflict-20251127-120345-here.txt=2",
        folder: "a.txt=3 a.conflict-20251127-120345-here.txt=2",
        actions: &["keep-both a.txt a.conflict-T-here.txt", "write a.txt"],
        conflicts: &["a.txt:both"], ..CASE },
    Case { name: "a local deletion meets a shared edit: the edit comes back",
        base: "a=1", local: "", remote: "a=2",
        merged: "a=2", folder: "a=2", actions: &["write a"], conflicts: &["a:change"], ..CASE },
    Case { name: "a local edit meets a shared deletion: the edit is published again",
        base: "a=1", local: "a=2", remote: "",
        merged: "a=2", folder: "a=2", conflicts: &["a:change"], ..CASE },
    Case { name: "deleted on both sides",
        base: "a=1 b=2", local: "b=2", remote: "b=2",
        merged: "b=2", folder: "b=2", ..CASE },
    Case { name: "a local deletion is published and counted",
        base: "a=1 b=2", local: "b=2", remote: "a=1 b=2",
        merged: "b=2", folder: "b=2", publish_deletes: 1, ..CASE },
    Case { name: "a shared deletion is applied and counted",
        base: "a=1 b=2", local: "a=1 b=2", remote: "b=2",
        merged: "b=2", folder: "b=2", actions: &["delete a"], local_deletes: 1, ..CASE },
    Case { name: "a local move is published and is not a deletion",
        base: "a=1", local: "d/a=1", remote: "a=1",
        merged: "d/a=1", folder: "d/a=1", ..CASE },
    Case { name: "a file replaced by a directory is deleted in place, not moved after the mkdir (B13)",
        base: "n=1", local: "n=1", remote: "n/c=2 p=1",
        merged: "n/c=2 p=1", folder: "n/c=2 p=1",
        actions: &["delete n", "mkdir n", "write n/c", "write p"], local_deletes: 1, ..CASE },
    Case { name: "a shared move is a rename here",
        base: "a=1", local: "a=1", remote: "d/a=1",
        merged: "d/a=1", folder: "d/a=1", actions: &["mkdir d", "move a d/a"], ..CASE },
    Case { name: "a directory deleted elsewhere keeps what was edited inside it here",
        base: "d/a=1 d/b=2", local: "d/a=1 d/b=3", remote: "",
        merged: "d/b=3", folder: "d/b=3", actions: &["delete d/a"],
        conflicts: &["d/b:change"], local_deletes: 1, ..CASE },
    Case { name: "a directory replaced by a file elsewhere: its files are deleted here",
        base: "d/a=1 d/b=2", local: "d/a=1 d/b=2", remote: "d=x",
        merged: "d=x", folder: "d=x",
        actions: &["delete d/a", "delete d/b", "rmdir d", "write d"], local_deletes: 2, ..CASE },
    Case { name: "a directory replaced by a symlink elsewhere: its files are deleted here",
        base: "d/a=1", local: "d/a=1", remote: "d->/tmp",
        merged: "d->/tmp", folder: "d->/tmp",
        actions: &["delete d/a", "rmdir d", "write d"], local_deletes: 1, ..CASE },
    Case { name: "a directory replaced by a symlink here: each file in it is a published deletion",
        base: "d/a=1 d/e/b=2", local: "d->/tmp", remote: "d/a=1 d/e/b=2",
        merged: "d->/tmp", folder: "d->/tmp", publish_deletes: 2, ..CASE },
    Case { name: "a directory replaced by a file here: each file in it is a published deletion",
        base: "d/a=1 d/b=2", local: "d=x", remote: "d/a=1 d/b=2",
        merged: "d=x", folder: "d=x", publish_deletes: 2, ..CASE },
    Case { name: "a file turned into a symlink here is a published deletion",
        base: "a=1", local: "a->/x", remote: "a=1",
        merged: "a->/x", folder: "a->/x", publish_deletes: 1, ..CASE },
    Case { name: "a file turned into a symlink elsewhere is a local deletion",
        base: "a=1", local: "a=1", remote: "a->/x",
        merged: "a->/x", folder: "a->/x", actions: &["update a"], local_deletes: 1, ..CASE },
    Case { name: "a file moved into a new directory here is not a deletion",
        base: "a=1 b=2", local: "n/a=1 b=2", remote: "a=1 b=2",
        merged: "n/a=1 b=2", folder: "n/a=1 b=2", ..CASE },
    Case { name: "excluded paths keep the shared version and are never touched here",
        base: "a=1 x.log=1", local: "a=1", remote: "a=1 x.log=2", excludes: &["*.log"],
        merged: "a=1 x.log=2", folder: "a=1", ..CASE },
    Case { name: "an unreadable file keeps its state on both sides",
        base: "a=1 b=1", local: "a=1", remote: "a=1 b=2", untracked: &["b"],
        merged: "a=1 b=2", folder: "a=1 b=1", ..CASE },
    Case { name: "a parked path stays parked while nothing changes",
        base: "a=3", applied: Some("a=2"), local: "a=2", remote: "a=3", parked: &["a"],
        merged: "a=3", folder: "a=2", ..CASE },
    Case { name: "a parked path settles when both sides hold the same content again",
        base: "a=3", applied: Some("a=2"), local: "a=3", remote: "a=3", parked: &["a"],
        merged: "a=3", folder: "a=3", ..CASE },
    Case { name: "a directory deleted here stays deleted once a file parked in it settles",
        base: "t/n=1 o=1", applied: Some("o=1"), local: "o=1", remote: "t/ o=1", parked: &["t/n"],
        merged: "o=1", folder: "o=1", ..CASE },
    Case { name: "a directory deleted here comes back for what arrived in it meanwhile",
        base: "t/n=1 o=1", applied: Some("o=1"), local: "o=1", remote: "t/m=2 o=1", parked: &["t/n"],
        merged: "t/m=2 o=1", folder: "t/m=2 o=1", actions: &["mkdir t", "write t/m"], ..CASE },
    Case { name: "a file turned into a directory on both sides: the directories merge",
        base: "f=1 o=1", local: "f/a=1 o=1", remote: "f/b=2 o=1",
        merged: "f/a=1 f/b=2 o=1", folder: "f/a=1 f/b=2 o=1", actions: &["write f/b"], ..CASE },
    Case { name: "a directory removed in the shared state goes here once a file parked in it settles",
        base: "o=1", applied: Some("t/s/ o=1"), local: "t/s/ o=1", remote: "o=1",
        merged: "o=1", folder: "o=1", actions: &["rmdir t/s", "rmdir t"], ..CASE },
    Case { name: "a directory removed in the shared state stays here while excluded files hold it",
        base: "o=1", applied: Some("t/ o=1"), local: "t/ o=1", remote: "o=1", held: &["t"],
        merged: "o=1", folder: "t/ o=1", ..CASE },
    Case { name: "a shared edit meets a parked version: still a conflict",
        base: "a=3", applied: Some("a=2"), local: "a=2", remote: "a=4", parked: &["a"],
        merged: "a=4", folder: "a=2", conflicts: &["a:parked"], ..CASE },
    Case { name: "identical edits with different mtimes: the newer mtime wins everywhere",
        base: "a=1", local: "a=2@5", remote: "a=2@7",
        merged: "a=2@7", folder: "a=2@7", actions: &["update a"], ..CASE },
    Case { name: "upload-only, at a workspace: shared edits arrive",
        base: "a=1", local: "a=1", remote: "a=2", mode: Mode::UploadOnly, role: Role::Instance,
        merged: "a=2", folder: "a=2", actions: &["update a"], ..CASE },
    Case { name: "upload-only, at a workspace: its own edits stay here",
        base: "a=1", local: "a=5", remote: "a=1", mode: Mode::UploadOnly, role: Role::Instance,
        merged: "a=1", folder: "a=5", kept_here: &["a"], ..CASE },
    Case { name: "upload-only, at a workspace: its deletions are refilled",
        base: "a=1", local: "", remote: "a=1", mode: Mode::UploadOnly, role: Role::Instance,
        merged: "a=1", folder: "a=1", actions: &["write a"], ..CASE },
    Case { name: "upload-only, at a workspace: an own edit is never clobbered",
        base: "a=1", local: "a=5", remote: "a=2", mode: Mode::UploadOnly, role: Role::Instance,
        merged: "a=2", folder: "a=5", kept_here: &["a"], ..CASE },
    Case { name: "upload-only, at the laptop: shared edits do not arrive",
        base: "a=1", local: "a=1", remote: "a=2", mode: Mode::UploadOnly, role: Role::Local,
        merged: "a=2", folder: "a=1", kept_here: &["a"], ..CASE },
    Case { name: "force-sync up: the shared state becomes the folder",
        base: "a=1 b=1", local: "a=2", remote: "a=3 b=1 c=1", force: Some(Force::Up),
        merged: "a=2", folder: "a=2", publish_deletes: 2, ..CASE },
    Case { name: "force-sync down: the folder becomes the shared state",
        base: "a=1", local: "a=2 n=1", remote: "a=3", force: Some(Force::Down),
        merged: "a=3", folder: "a=3", actions: &["update a", "delete n"], local_deletes: 1,
        ..CASE },
];

#[test]
fn merge_table() {
    let mut failures = Vec::new();
    for c in CASES {
        let problems = check(c);
        if !problems.is_empty() {
            failures.push(format!(
                "case {:?}:\n    {}",
                c.name,
                problems.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} merge cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// The merge is a pure function: the same inputs give the same outputs.
#[test]
fn merge_is_deterministic() {
    for c in CASES
        .iter()
        .filter(|c| c.force.is_none() && c.parked.is_empty())
    {
        let (m1, o1) = run(c).unwrap();
        let (m2, o2) = run(c).unwrap();
        assert_eq!(m1.text(&o1.merged), m2.text(&o2.merged), "{}", c.name);
        assert_eq!(o1.actions, o2.actions, "{}", c.name);
    }
}
