//! Property tests of the sync step against a simple model, over random histories on two or
//! three endpoints (real folders, one in-memory repository, real steps):
//!
//! - no edit is silently lost: every version a user wrote is still in some folder at the end,
//!   unless some user *knowingly* replaced or deleted it (it was in their folder at that path
//!   when they edited or deleted it);
//! - endpoints converge once edits stop (with keep_both; with user_prompt after resolving);
//! - a crash in the middle of applying a plan, followed by a rerun, gives the same result as
//!   an uninterrupted step (random crashes in the histories, and every crash point of one plan).

mod lib_fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prism_sync::backend::{DynBackend, MemoryBackend};
use prism_sync::endpoint::{Endpoint, StepOptions, StepReport, step};
use prism_sync::error::Error;
use prism_sync::repository::{InitOptions, Repository};
use prism_sync::sync::Policy;
use proptest::prelude::*;

const SET: &str = "p";
const PATHS: &[&str] = &[
    "a.txt",
    "b.txt",
    "d/c.txt",
    "d/e.txt",
    "d",
    "f/g/h.txt",
    "f/g",
    "f",
];

struct World {
    _tmp: tempfile::TempDir,
    backend: DynBackend,
    keys: PathBuf,
    homes: Vec<PathBuf>,
    folders: Vec<PathBuf>,
}

impl World {
    fn new(n: usize, policy: Policy) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let backend: DynBackend = Arc::new(MemoryBackend::new());
        let keys = tmp.path().join("keys");
        Repository::init(
            backend.clone(),
            &lib_fixtures::key_creds(&keys),
            &InitOptions {
                pack_target_bytes: 1 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        let (mut homes, mut folders) = (Vec::new(), Vec::new());
        for i in 0..n {
            let home = tmp.path().join(format!("home{i}"));
            let folder = tmp.path().join(format!("folder{i}"));
            std::fs::create_dir_all(&folder).unwrap();
            let cfg = lib_fixtures::endpoint_config(SET, &folder, i, policy);
            Endpoint::create(&home, cfg).unwrap();
            homes.push(home);
            folders.push(folder);
        }
        World {
            _tmp: tmp,
            backend,
            keys,
            homes,
            folders,
        }
    }

    /// One step at endpoint `i`, as a fresh process would run it. A halted step (the user
    /// emptied the folder on purpose) is confirmed with `sync --allow-deletions`.
    fn sync(&self, i: usize, stop_after: Option<usize>) -> Result<StepReport, Error> {
        let ep = Endpoint::open(&self.homes[i], SET).unwrap();
        let repo =
            Repository::open(self.backend.clone(), &lib_fixtures::key_creds(&self.keys)).unwrap();
        let r = step(
            &ep,
            &repo,
            &StepOptions {
                stop_after,
                ..Default::default()
            },
        )?;
        if r.halted.is_some() {
            return step(
                &ep,
                &repo,
                &StepOptions {
                    allow_deletions: true,
                    stop_after,
                    ..Default::default()
                },
            );
        }
        Ok(r)
    }

    fn resolve_all(&self, i: usize) {
        let ep = Endpoint::open(&self.homes[i], SET).unwrap();
        for (p, _) in ep.state.conflicts().unwrap() {
            ep.state.set_resolution(&p, Policy::KeepBoth).unwrap();
        }
    }
}

/// Files of a folder: relative path → content; directories as "<dir>".
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(rel, "<dir>".into());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Conflict copies carry a time and an endpoint in their names; two runs differ only there.
fn normalized(t: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    t.iter()
        .map(|(k, v)| {
            let k = match k.find(".conflict-") {
                Some(i) => format!(
                    "{}.conflict-*{}",
                    &k[..i],
                    k[i..].find('.').map(|_| "").unwrap_or("")
                ),
                None => k.clone(),
            };
            (k, v.clone())
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    /// Endpoint writes a path; `shared` writes the same content any endpoint would.
    Write(usize, usize, bool),
    Delete(usize, usize),
    RemoveDir(usize, usize),
    Sync(usize),
    /// A step killed after k actions of its plan.
    Crash(usize, usize),
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    let ep = 0..n;
    let path = 0..PATHS.len();
    prop_oneof![
        4 => (ep.clone(), path.clone(), prop::bool::weighted(0.2)).prop_map(|(e, p, s)| Op::Write(e, p, s)),
        1 => (ep.clone(), path.clone()).prop_map(|(e, p)| Op::Delete(e, p)),
        1 => (ep.clone(), path.clone()).prop_map(|(e, p)| Op::RemoveDir(e, p)),
        3 => ep.clone().prop_map(Op::Sync),
        1 => (ep, 0..4usize).prop_map(|(e, k)| Op::Crash(e, k)),
    ]
}

/// The model: every version written, and those some user knowingly replaced or deleted.
#[derive(Default)]
struct Model {
    written: BTreeSet<String>,
    superseded: BTreeSet<String>,
    counter: usize,
}

impl Model {
    fn supersede_tree(&mut self, p: &Path) {
        if p.is_dir() {
            for (_, v) in tree(p) {
                if v != "<dir>" {
                    self.superseded.insert(v);
                }
            }
        } else if let Ok(v) = std::fs::read_to_string(p) {
            self.superseded.insert(v);
        }
    }

    fn run(&mut self, w: &World, op: &Op) {
        match *op {
            Op::Write(e, pi, shared) => {
                let root = &w.folders[e];
                let rel = PATHS[pi];
                let target = root.join(rel);
                // Clear the way as a user would: a file where a directory must be, or the other way.
                let mut cur = root.clone();
                for comp in Path::new(rel)
                    .parent()
                    .into_iter()
                    .flat_map(|p| p.components())
                {
                    cur = cur.join(comp);
                    if cur.is_file() || cur.is_symlink() {
                        self.supersede_tree(&cur);
                        std::fs::remove_file(&cur).unwrap();
                    }
                }
                if target.is_dir() {
                    self.supersede_tree(&target);
                    std::fs::remove_dir_all(&target).unwrap();
                } else if target.is_file() {
                    self.supersede_tree(&target);
                }
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                self.counter += 1;
                let content = if shared {
                    format!("same {rel}\n")
                } else {
                    format!("v{} by {e} at {rel}\n", self.counter)
                };
                std::fs::write(&target, &content).unwrap();
                self.written.insert(content);
            }
            Op::Delete(e, pi) => {
                let p = w.folders[e].join(PATHS[pi]);
                if p.is_file() {
                    self.supersede_tree(&p);
                    std::fs::remove_file(&p).unwrap();
                }
            }
            Op::RemoveDir(e, pi) => {
                let p = w.folders[e].join(PATHS[pi]);
                if p.is_dir() {
                    self.supersede_tree(&p);
                    std::fs::remove_dir_all(&p).unwrap();
                }
            }
            Op::Sync(e) => {
                w.sync(e, None).unwrap();
            }
            Op::Crash(e, k) => match w.sync(e, Some(k)) {
                Ok(_) | Err(Error::Interrupted) => {}
                Err(other) => panic!("step failed: {other}"),
            },
        }
    }
}

fn converge(w: &World, n: usize) {
    for _ in 0..4 {
        for i in 0..n {
            w.sync(i, None).unwrap();
        }
    }
}

fn check_history(n: usize, ops: &[Op], policy: Policy) -> Result<(), TestCaseError> {
    let w = World::new(n, policy);
    let mut m = Model::default();
    for op in ops {
        m.run(&w, op);
    }
    converge(&w, n);
    if policy == Policy::UserPrompt {
        for i in 0..n {
            w.resolve_all(i);
        }
        converge(&w, n);
    }
    let first = tree(&w.folders[0]);
    for i in 1..n {
        prop_assert_eq!(
            &tree(&w.folders[i]),
            &first,
            "endpoint {} differs from endpoint 0 after the edits stopped",
            i
        );
    }
    let present: BTreeSet<&String> = first.values().collect();
    for v in m.written.difference(&m.superseded) {
        prop_assert!(
            present.contains(v),
            "version {:?} was lost without anyone replacing or deleting it; final tree: {:?}",
            v,
            first
        );
    }
    // Idle steps change nothing.
    for i in 0..n {
        let r = w.sync(i, None).unwrap();
        prop_assert!(
            !r.changed(),
            "an idle step at endpoint {} still changed something: {:?}",
            i,
            r.actions
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn keep_both_loses_nothing_and_converges_with_two_endpoints(ops in prop::collection::vec(op(2), 1..24)) {
        check_history(2, &ops, Policy::KeepBoth)?;
    }

    #[test]
    fn keep_both_loses_nothing_and_converges_with_three_endpoints(ops in prop::collection::vec(op(3), 1..24)) {
        check_history(3, &ops, Policy::KeepBoth)?;
    }

    #[test]
    fn user_prompt_loses_nothing_and_converges_after_resolving(ops in prop::collection::vec(op(2), 1..24)) {
        check_history(2, &ops, Policy::UserPrompt)?;
    }
}

/// Every crash point of one plan: crash after k actions, rerun, and the result equals the
/// uninterrupted step's; a further step is a no-op.
#[test]
fn a_crash_at_any_point_of_applying_a_plan_then_a_rerun_gives_the_same_result() {
    let setup = || {
        let w = World::new(2, Policy::KeepBoth);
        let f0 = &w.folders[0];
        for (p, c) in [
            ("a.txt", "a"),
            ("b.txt", "b"),
            ("d/c.txt", "c"),
            ("d/e.txt", "e"),
            ("x/y/z.txt", "z"),
            ("keep.txt", "k"),
        ] {
            std::fs::create_dir_all(f0.join(p).parent().unwrap()).unwrap();
            std::fs::write(f0.join(p), c).unwrap();
        }
        w.sync(0, None).unwrap();
        w.sync(1, None).unwrap();
        // Changes on the laptop that the workspace's next plan must apply.
        std::fs::write(f0.join("a.txt"), "a2").unwrap();
        std::fs::remove_file(f0.join("b.txt")).unwrap();
        std::fs::remove_dir_all(f0.join("d")).unwrap();
        std::fs::create_dir_all(f0.join("moved")).unwrap();
        std::fs::rename(f0.join("x/y/z.txt"), f0.join("moved/z.txt")).unwrap();
        for i in 0..4 {
            std::fs::create_dir_all(f0.join("new")).unwrap();
            std::fs::write(f0.join(format!("new/{i}.txt")), format!("new {i}")).unwrap();
        }
        w.sync(0, None).unwrap();
        w
    };
    let reference = setup();
    let full = reference.sync(1, None).unwrap();
    let plan_len = full.actions.len();
    assert!(
        plan_len >= 8,
        "the plan has many steps to cut: {:?}",
        full.actions
    );
    let expected = tree(&reference.folders[1]);
    assert_eq!(expected, tree(&reference.folders[0]));
    for k in 0..plan_len {
        let w = setup();
        match w.sync(1, Some(k)) {
            Err(Error::Interrupted) => {}
            other => panic!("crash point {k}: expected an interrupted step, got {other:?}"),
        }
        w.sync(1, None).unwrap();
        assert_eq!(
            normalized(&tree(&w.folders[1])),
            normalized(&expected),
            "crash after {k} of {plan_len} actions, then a rerun"
        );
        let again = w.sync(1, None).unwrap();
        assert!(
            !again.changed(),
            "crash point {k}: the step after the rerun still changed {:?}",
            again.actions
        );
        w.sync(0, None).unwrap();
        assert_eq!(
            tree(&w.folders[0]),
            expected,
            "crash point {k}: the laptop is unaffected"
        );
    }
}

/// Regression: a parked conflict whose other side was then deleted lost the parked version
/// when resolved with keep_both (it took the "remote" branch and deleted the local file).
#[test]
fn regression_keep_both_after_the_other_side_deleted() {
    let ops = [
        Op::Write(0, 0, false),
        Op::Write(1, 0, false),
        Op::Sync(0),
        Op::Delete(0, 0),
        Op::Sync(1),
    ];
    check_history(2, &ops, Policy::UserPrompt).unwrap();
}

/// Regression: replacing a directory that held a parked version deleted the shared version
/// inside it, which this endpoint had never seen.
#[test]
fn regression_replacing_a_directory_with_a_parked_file_inside() {
    let ops = [
        Op::Write(0, 3, false),
        Op::Crash(0, 0),
        Op::Write(1, 3, false),
        Op::Sync(1),
        Op::Write(1, 4, false),
    ];
    check_history(2, &ops, Policy::UserPrompt).unwrap();
}
