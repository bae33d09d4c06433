//! History at any age, counted in work: with the set's catalog, bringing it up to date after one
//! more step and answering a path's history opens only the new snapshot and reads only the
//! directories that step changed — as many after 60 steps as after 10. Before the catalog, every
//! `history` opened every snapshot of the set and read each one's tree down to the path.
//!
//! Its own test binary: the counters are per process, and no other test may run beside it.

mod lib_fixtures;

use std::path::Path;

use prism_sync::repository::Repository;
use prism_sync::repository::counters;
use prism_sync::snapshot::catalog::Catalog;

const SET: &str = "s";

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
    let set = lib_fixtures::CliSet::new(SET, |f| lib_fixtures::numbered_files(f, 200, 10));
    let (home, repo) = (&set.home, &set.repo);
    let mut n = 0;
    let mut steps_to = |to: u32| {
        set.edit_notes(n + 1..=to);
        n = to;
    };
    // The first history builds the catalog: it opens every snapshot once.
    steps_to(10);
    let (first, versions) = history_work(home, repo);
    assert_eq!(versions, 11, "v0 … v10");
    assert!(
        first.0 >= 11,
        "the first one opens each snapshot: {first:?}"
    );

    steps_to(11);
    let (at_11, versions) = history_work(home, repo);
    assert_eq!(versions, 12);
    steps_to(61);
    let _ = history_work(home, repo);
    steps_to(62);
    let (at_62, versions) = history_work(home, repo);
    assert_eq!(versions, 63);
    assert_eq!(at_11.0, 1, "only the new snapshot is opened");
    // Its root directory and the one before it; nothing below (notes.txt is at the top).
    assert!(at_11.1 <= 2, "tree blobs read after one step: {at_11:?}");
    assert_eq!(at_62, at_11, "the same work after 62 steps as after 11");

    // Nothing new: nothing opened, nothing read.
    let (idle, _) = history_work(home, repo);
    assert_eq!(idle, (0, 0));
}
