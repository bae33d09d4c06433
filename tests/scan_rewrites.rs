//! A file being rewritten in place is never taken in its emptied state. On Linux (ext4) a
//! concurrent `stat` sees a file emptied by `open(O_TRUNC)` before the truncation updates its
//! mtime and ctime: old times, size 0. The randomized multi-daemon test published such empty
//! files (B5 in benches/README.md §11). A sync scan leaves a file whose size moved while its
//! times (and inode) match the file cache's trusted entry for the next scan; a backup stores
//! what it reads.
//!
//! The kernel's window lasts microseconds, so the test makes the same picture the other way
//! round: the cache remembers a different size with the file's current times.

mod lib_fixtures;

use std::os::unix::ffi::OsStrExt;

use lib_fixtures::*;
use prism_sync::archiver::filecache::{FileCache, PendingUpdates};
use prism_sync::archiver::{ArchiveOptions, Source, archive};

#[test]
fn a_file_whose_size_moved_while_its_times_did_not_is_left_for_the_next_scan() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("folder");
    write(&dir.join("notes.txt"), &text(1, 1000));
    write(&dir.join("other.txt"), &text(2, 300));
    // Old enough for the cache to trust the times it records (mtime and ctime).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let repo = init_repo(memory(), &t.path().join("keys"));
    let cache_path = t.path().join("cache.redb");
    let opts = |defer_changing| ArchiveOptions {
        file_cache: Some(cache_path.clone()),
        defer_changing,
        ..Default::default()
    };
    let first = archive(&repo, &Source::Dir(dir.clone()), &opts(true)).unwrap();
    assert!(first.deferred.is_empty(), "{:?}", first.deferred);
    first.save_cache().unwrap();
    drop(first);

    let key = dir.join("notes.txt").as_os_str().as_bytes().to_vec();
    {
        let cache = FileCache::open(&cache_path).unwrap();
        let mut e = cache
            .reader()
            .unwrap()
            .get(&key)
            .expect("cached by the first scan");
        assert!(!e.racy, "the times are old enough: the entry is trusted");
        e.size += 1;
        let mut p = PendingUpdates::new(Some(t.path()));
        p.push(&key, &e);
        cache.write_pending(&mut p).unwrap();
    }
    let sync_scan = archive(&repo, &Source::Dir(dir.clone()), &opts(true)).unwrap();
    assert_eq!(sync_scan.deferred, vec![b"notes.txt".to_vec()]);
    drop(sync_scan); // it holds the cache open
    let backup_scan = archive(&repo, &Source::Dir(dir.clone()), &opts(false)).unwrap();
    assert!(
        backup_scan.deferred.is_empty(),
        "{:?}",
        backup_scan.deferred
    );
    drop(backup_scan);

    // An entry the cache does not trust (its times were too recent to tell two writes apart):
    // the file is looked at again a moment later, and a file that holds still is taken — a
    // change within one clock tick is never deferred for good.
    {
        let cache = FileCache::open(&cache_path).unwrap();
        let mut e = cache.reader().unwrap().get(&key).unwrap();
        e.racy = true;
        let mut p = PendingUpdates::new(Some(t.path()));
        p.push(&key, &e);
        cache.write_pending(&mut p).unwrap();
    }
    let again = archive(&repo, &Source::Dir(dir.clone()), &opts(true)).unwrap();
    assert!(again.deferred.is_empty(), "{:?}", again.deferred);
}
