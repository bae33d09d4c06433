//! Lookups read a bounded part of the catalog file, whatever the number of snapshots in it:
//! the file is authenticated per block, so `restore/ls NAME --at T` (the state at a time) and
//! `history NAME PATH` of a path never edited read the first block, the blocks a binary search
//! over the rows or the paths touches, and the blocks of what they return — not the whole file.
//! Measured in bytes read from the file (blocks and their MACs), with the catalog of a real set
//! after 10 steps and the same catalog holding 1,000 and then 20,000 more (older) snapshots:
//! the file grows ~700-fold (10 KB → 6.8 MB), the bytes read by a few blocks (57 KB at 20,010
//! snapshots: the binary search's steps grow with the logarithm of the rows). Before, every
//! lookup read and hashed the whole file.
//!
//! Its own test binary: the counters are per process, and no other test may run beside it.

mod lib_fixtures;

use std::path::Path;
use std::time::Duration;

use prism_sync::format::catalog::{BLOCK, CatalogSnapshot, MAC_LEN};
use prism_sync::home::Home;
use prism_sync::id::SnapshotId;
use prism_sync::repository::Repository;
use prism_sync::repository::counters;
use prism_sync::snapshot::catalog::{Catalog, open_catalog, seal_catalog};

const SET: &str = "s";

/// What `restore NAME --at T` and `history NAME d0/f0.txt` read from an up-to-date catalog:
/// (catalog bytes read, snapshots opened, tree blobs read), and the snapshot found at T.
fn lookup_bytes(home: &Path, repo: &Repository, t: i64) -> ((u64, u64, u64), SnapshotId) {
    let bytes = counters::catalog_bytes_read();
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
            counters::catalog_bytes_read() - bytes,
            after.0 - before.0,
            after.1 - before.1,
        ),
        id,
    )
}

#[test]
fn lookups_read_a_bounded_part_of_the_catalog_at_any_number_of_snapshots() {
    let set = lib_fixtures::CliSet::new(SET, |f| lib_fixtures::numbered_files(f, 40, 4));
    set.edit_notes(1..=10);
    let (home, repo) = (&set.home, &set.repo);
    // The settled case: the listing is the snapshots directory's change stamp.
    std::thread::sleep(prism_sync::backend::STAMP_SETTLED + Duration::from_millis(200));
    let mut c = Catalog::open(home, repo, SET);
    assert!(c.refresh(repo).unwrap().is_empty());
    repo.load_index().unwrap();
    c.catalog_paths(repo).unwrap();
    c.save(repo);
    let snaps = c.snapshots(false);
    let (want, t) = (snaps[5].0, snaps[5].1.time_ns);
    let file = Home::new(home).catalog(&repo.repo_id(), SET);
    let real = open_catalog(repo.keys(), &std::fs::read(&file).unwrap()).expect("it verifies");

    let (work_10, found) = lookup_bytes(home, repo, t);
    assert_eq!(found, want);
    assert_eq!(
        (work_10.1, work_10.2),
        (0, 0),
        "nothing opened, no tree read"
    );
    let at_10 = work_10.0;
    let size_10 = std::fs::metadata(&file).unwrap().len();

    // The same catalog with `extra` more snapshots, older than the set's first (as if kept
    // from long ago), written with the listing tag it had: the lookups' answers are the same.
    let grown = |extra: usize| -> (u64, u64) {
        let mut f = real.clone();
        let first = &f.snapshots[0].snapshot;
        let old: Vec<CatalogSnapshot> = (0..extra)
            .map(|k| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(k as u64).to_be_bytes());
                id[8] = 0xee;
                CatalogSnapshot {
                    id: SnapshotId(id),
                    cataloged: true,
                    snapshot: prism_sync::snapshot::Snapshot {
                        time_ns: first.time_ns - 1_000_000_000 * (extra - k) as i64,
                        ..first.clone()
                    },
                }
            })
            .collect();
        f.snapshots.splice(0..0, old);
        for (_, vs) in &mut f.paths {
            for (i, _) in vs {
                *i += extra as u32;
            }
        }
        std::fs::write(&file, seal_catalog(repo.keys(), &f)).unwrap();
        let size = std::fs::metadata(&file).unwrap().len();
        let (work, found) = lookup_bytes(home, repo, t);
        assert_eq!(found, want, "with {extra} more snapshots");
        assert_eq!((work.1, work.2), (0, 0), "nothing opened, no tree read");
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            size,
            "served from the file as written, not rebuilt"
        );
        (work.0, size)
    };
    let (at_1k, size_1k) = grown(1_000);
    let (at_20k, size_20k) = grown(20_000);
    let block = (BLOCK + MAC_LEN) as u64;
    eprintln!(
        "catalog bytes read: {at_10} of {size_10} (10 snapshots), {at_1k} of {size_1k} \
         (1,010), {at_20k} of {size_20k} (20,010)"
    );
    assert!(
        size_20k > 500 * size_10,
        "the file grew: {size_10} → {size_20k}"
    );
    // Counted: at least the first block and the blocks of the snapshot found.
    assert!(at_10 >= block && at_20k >= 2 * block, "{at_10} {at_20k}");
    // The first block, the blocks of the snapshot found and of the path's entry and version,
    // and one block per step of the binary searches (15 over 20,010 rows, 6 over 45 paths).
    assert!(
        at_20k <= 28 * block,
        "bytes read at 20,010 snapshots: {at_20k} ({} blocks)",
        at_20k / block
    );
    // From 1,010 to 20,010 rows: the binary search takes 5 more steps, nothing else grows.
    assert!(
        at_20k <= at_1k + 6 * block,
        "from 1,010 to 20,010 snapshots: {at_1k} → {at_20k}"
    );
    assert!(at_20k * 100 < size_20k, "under 1% of the file");
}
