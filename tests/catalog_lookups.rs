//! Lookups at any age, counted in work: with nothing new (the snapshot listing has the tag the
//! catalog recorded), finding the state at a time (`restore/ls NAME --at`) and a path's versions
//! (`history`) decode only what they return from the stored catalog — as many entries after 62
//! steps as after 10 — open no snapshot and read no tree. Before, every such command decoded
//! the whole catalog and compared the whole snapshot listing with it. A snapshot forgotten, or
//! published elsewhere, after the catalog was written changes the listing: it is never served
//! from the file, and the new one is seen at once.
//!
//! Its own test binary: the counters are per process, and no other test may run beside it.

mod lib_fixtures;

use std::path::Path;
use std::time::Duration;

use prism_sync::id::SnapshotId;
use prism_sync::repository::Repository;
use prism_sync::repository::counters;
use prism_sync::snapshot::Snapshot;
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

/// What `restore NAME --at T` (the state at T) and `history NAME d0/f0.txt` (a path never
/// edited) do with the catalog: (catalog entries decoded, snapshots opened, tree blobs read), and
/// the snapshot found at T.
fn lookup_work(home: &Path, repo: &Repository, t: i64) -> ((u64, u64, u64), SnapshotId) {
    let decoded = counters::catalog_decoded();
    let before = counters::now();
    let mut c = Catalog::open(home, repo, SET);
    assert!(c.refresh(repo).unwrap().is_empty());
    c.catalog_paths(repo).unwrap();
    let (id, _) = c.at(Some(t), false).unwrap().expect("a snapshot at t");
    let fixed = c.versions(b"d0/f0.txt").unwrap();
    assert_eq!(fixed.len(), 1, "never edited: one version");
    c.save(repo);
    let after = counters::now();
    (
        (
            counters::catalog_decoded() - decoded,
            after.0 - before.0,
            after.1 - before.1,
        ),
        id,
    )
}

fn set_snapshots(repo: &Repository) -> Vec<(SnapshotId, Snapshot)> {
    repo.snapshots()
        .unwrap()
        .into_iter()
        .filter(|(_, s)| s.sync_set.as_deref() == Some(SET))
        .collect()
}

#[test]
fn lookups_in_an_up_to_date_catalog_decode_as_much_after_62_steps_as_after_10() {
    let set = lib_fixtures::CliSet::new(SET, |f| lib_fixtures::numbered_files(f, 40, 4));
    let (home, repo) = (&set.home, &set.repo);
    let mut n = 0;
    let mut steps_to = |to: u32| {
        set.edit_notes(n + 1..=to);
        n = to;
    };
    // A directory repository's listing is its change stamp once the directory has been left
    // alone for a moment: wait for that, so the lookups below are the settled case.
    let settle =
        || std::thread::sleep(prism_sync::backend::STAMP_SETTLED + Duration::from_millis(200));
    steps_to(10);
    settle();
    let snaps = set_snapshots(repo);
    let (want, at5) = (snaps[5].0, snaps[5].1.time_ns);
    let _ = history_work(home, repo); // brings the catalog up to date
    let (at_10, found) = lookup_work(home, repo, at5);
    assert_eq!(found, want, "the state at that moment");
    // One snapshot for the state at T, one path entry and its one version's snapshot.
    assert_eq!(at_10, (3, 0, 0), "decoded, opened, read after 10 steps");

    steps_to(62);
    settle();
    let _ = history_work(home, repo);
    let (at_62, found) = lookup_work(home, repo, at5);
    assert_eq!(found, want);
    assert_eq!(at_62, at_10, "the same work after 62 steps as after 10");

    // Forgotten after the catalog was written: never served from it (the listing's tag
    // changed, so the catalog drops it); the state at T is then the snapshot before it.
    repo.backend()
        .delete(prism_sync::backend::Kind::Snapshot, &want.to_hex())
        .unwrap();
    let (_, found) = lookup_work(home, repo, at5);
    assert_eq!(found, snaps[4].0, "the forgotten one is not served");

    // Published by another endpoint after the catalog was written: seen at once.
    let (_, last) = set_snapshots(repo).pop().unwrap();
    let other = Snapshot {
        time_ns: last.time_ns + 1_000_000_000,
        endpoint: Some("elsewhere".into()),
        ..last
    };
    let other_id = repo.save_snapshot(&other).unwrap();
    let mut c = Catalog::open(home, repo, SET);
    assert!(c.refresh(repo).unwrap().is_empty());
    assert_eq!(c.at(None, false).unwrap().map(|(id, _)| id), Some(other_id));
}
