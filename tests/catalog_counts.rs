//! History at any age, counted in work: with the set's catalog, bringing it up to date after one
//! more step and answering a path's history opens only the new snapshot and reads only the
//! directories that step changed — as many after 60 steps as after 10. Before the catalog, every
//! `history` opened every snapshot of the set and read each one's tree down to the path.
//!
//! Its own test binary: the counters are per process, and no other test may run beside it.

use std::path::Path;
use std::process::Command;

use prism_sync::endpoint::{Endpoint, StepOptions, step};
use prism_sync::repository::counters;
use prism_sync::repository::{Credentials, Repository};
use prism_sync::snapshot::catalog::Catalog;

const SET: &str = "s";

fn ok(home: &Path, args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_prism-sync"))
        .args(args)
        .env("PRISM_HOME", home)
        .env_remove("PRISM_SYNC_PASSWORD")
        .env_remove("PRISM_SYNC_REPO")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// (snapshots opened, tree blobs read) by what `history NAME notes.txt` does, and the number of
/// versions it found.
fn history_work(home: &Path, repo: &Repository) -> ((u64, u64), usize) {
    let before = counters::now();
    let mut c = Catalog::open(home, repo, SET);
    assert!(c.refresh(repo).unwrap().is_empty());
    repo.load_index().unwrap();
    c.catalog_paths(repo).unwrap();
    c.save(repo);
    let versions = c.versions(b"notes.txt").unwrap().len();
    let after = counters::now();
    ((after.0 - before.0, after.1 - before.1), versions)
}

#[test]
fn history_opens_only_new_snapshots_and_reads_only_changed_trees_at_any_age() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let folder = tmp.path().join("folder");
    for i in 0..200 {
        let p = folder.join(format!("d{}/f{i}.txt", i % 10));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("file {i}\n")).unwrap();
    }
    std::fs::write(folder.join("notes.txt"), "v0\n").unwrap();
    let repo_dir = tmp.path().join("repo");
    ok(
        &home,
        &[
            "init",
            folder.to_str().unwrap(),
            "--repo",
            repo_dir.to_str().unwrap(),
            "--name",
            SET,
        ],
    );
    ok(&home, &["sync", SET]);
    let ep = Endpoint::open(&home, SET).unwrap();
    let creds = Credentials {
        password: None,
        local_keys_dir: home.join("sync/keys"),
    };
    let repo = Repository::open_url(&ep.cfg.repo, &creds).unwrap();
    let mut n = 0;
    let mut steps_to = |to: u32| {
        while n < to {
            n += 1;
            std::fs::write(folder.join("notes.txt"), format!("v{n}\n")).unwrap();
            step(&ep, &repo, &StepOptions::default()).unwrap();
        }
    };
    // The first history builds the catalog: it opens every snapshot once.
    steps_to(10);
    let (first, versions) = history_work(&home, &repo);
    assert_eq!(versions, 11, "v0 … v10");
    assert!(
        first.0 >= 11,
        "the first one opens each snapshot: {first:?}"
    );

    steps_to(11);
    let (at_11, versions) = history_work(&home, &repo);
    assert_eq!(versions, 12);
    steps_to(61);
    let _ = history_work(&home, &repo);
    steps_to(62);
    let (at_62, versions) = history_work(&home, &repo);
    assert_eq!(versions, 63);
    assert_eq!(at_11.0, 1, "only the new snapshot is opened");
    // Its root directory and the one before it; nothing below (notes.txt is at the top).
    assert!(at_11.1 <= 2, "tree blobs read after one step: {at_11:?}");
    assert_eq!(at_62, at_11, "the same work after 62 steps as after 11");

    // Nothing new: nothing opened, nothing read.
    let (idle, _) = history_work(&home, &repo);
    assert_eq!(idle, (0, 0));
}
