//! A file being rewritten in place is never taken in its emptied state, and a file that holds
//! still is never left out for good.
//!
//! On Linux (ext4) a concurrent `stat` sees a file emptied by `open(O_TRUNC)` before the
//! truncation updates its mtime and ctime: old times, size 0. The randomized multi-daemon test
//! published such empty files (B5 in benches/README.md §11). A sync scan looks again, a moment
//! later, at a file whose size moved while its times and inode match its file-cache entry, and
//! leaves it for the next scan if it is still moving (unit tests in `archiver`: the kernel's
//! window lasts microseconds). A first version deferred such a file at once when the cache
//! trusted its entry; in the soak a daemon then deferred a file that held still at every step
//! and never went idle. This test pins that: the same picture with a file that holds still.

mod lib_fixtures;

use std::os::unix::ffi::OsStrExt;

use lib_fixtures::*;
use prism_sync::archiver::filecache::{FileCache, PendingUpdates};
use prism_sync::archiver::{ArchiveOptions, Source, archive};

#[test]
fn a_file_whose_size_moved_while_its_times_did_not_is_read_once_it_holds_still() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("folder");
    write(&dir.join("notes.txt"), &text(1, 1000));
    write(&dir.join("other.txt"), &text(2, 300));
    // Old enough for the cache to trust the times it records (mtime and ctime).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let repo = init_repo(memory(), &t.path().join("keys"));
    let cache_path = t.path().join("cache.redb");
    let opts = ArchiveOptions {
        file_cache: Some(cache_path.clone()),
        defer_changing: true,
        ..Default::default()
    };
    let first = archive(&repo, &Source::Dir(dir.clone()), &opts).unwrap();
    assert!(first.deferred.is_empty(), "{:?}", first.deferred);
    first.save_cache().unwrap();
    drop(first); // it holds the cache open

    // The cache remembers another size with the file's current times, trusted and not.
    let key = dir.join("notes.txt").as_os_str().as_bytes().to_vec();
    for racy in [false, true] {
        {
            let cache = FileCache::open(&cache_path).unwrap();
            let mut e = cache.reader().unwrap().get(&key).expect("cached");
            e.size = 999;
            e.racy = racy;
            let mut p = PendingUpdates::new(Some(t.path()));
            p.push(&key, &e);
            cache.write_pending(&mut p).unwrap();
        }
        let scan = archive(&repo, &Source::Dir(dir.clone()), &opts).unwrap();
        assert!(scan.deferred.is_empty(), "racy {racy}: {:?}", scan.deferred);
        drop(scan);
    }
}
