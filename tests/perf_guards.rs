//! Performance regression guards that do not time anything: they count bytes, blobs and
//! memory, which do not depend on how busy the machine is. Speed itself is measured by
//! `benches/` and `../shared/bench/compare` (benches/README.md).

mod lib_fixtures;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use lib_fixtures::*;
use prism_sync::archiver::{self, ArchiveOptions, BackupOptions, Progress};
use prism_sync::backend::FsBackend;
use prism_sync::crypto::Keys;
use prism_sync::format::index::{IndexBlob, IndexFile, IndexPack};
use prism_sync::format::pack::BlobKind;
use prism_sync::id::{BlobId, IndexId, PackId};
use prism_sync::repository::index::Index;

/// Counts the bytes live on each thread (allocations minus frees made by it), so a test can
/// measure what one structure costs while other tests run on other threads.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialized thread local
// without a destructor, safe to touch from inside the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|c| c.set(c.get() + l.size() as isize));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = LIVE.try_with(|c| c.set(c.get() - l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let _ = LIVE.try_with(|c| c.set(c.get() + new as isize - l.size() as isize));
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.with(|c| c.get())
}

/// An index file as a repository of `blobs` 1 MiB chunks in 16 MiB packs would have.
fn index_file(blobs: u64) -> IndexFile {
    let k = Keys::from_master([3; 32]);
    let ids: Vec<BlobId> = (0..blobs).map(|i| k.blob_id(&i.to_le_bytes())).collect();
    IndexFile {
        supersedes: vec![],
        marks: vec![],
        packs: ids
            .chunks(16)
            .enumerate()
            .map(|(p, blobs)| IndexPack {
                id: PackId(k.keyed(&(p as u64).to_be_bytes())),
                kind: BlobKind::Data,
                length: 16 << 20,
                salt: [5; 32],
                blobs: blobs
                    .iter()
                    .enumerate()
                    .map(|(i, id)| IndexBlob {
                        id: *id,
                        offset: (i as u32) << 20,
                        length: (1 << 20) + 16,
                        raw_length: 1 << 20,
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[test]
fn the_in_memory_index_costs_48_bytes_per_blob_plus_its_pack_table() {
    const BLOBS: u64 = 2_000_000;
    let file = index_file(BLOBS);
    let before = live(); // `file` is consumed (and freed) by from_files
    let file_bytes = {
        // What the decoded file itself holds, so it can be subtracted after it is freed.
        let packs = file.packs.len();
        (packs * std::mem::size_of::<IndexPack>()
            + BLOBS as usize * std::mem::size_of::<IndexBlob>()) as isize
    };
    let idx = Index::from_files(vec![(IndexId([1; 32]), file)]);
    let index_bytes = live() - before + file_bytes;
    assert_eq!(idx.blob_count() as u64, BLOBS);
    let per_blob_entries = idx.entry_bytes() as f64 / BLOBS as f64;
    let per_blob_total = index_bytes as f64 / BLOBS as f64;
    eprintln!(
        "index of {BLOBS} blobs in {} packs: entries {per_blob_entries:.1} B/blob, \
         everything {per_blob_total:.1} B/blob",
        idx.packs().len()
    );
    // 48-byte entries plus the bucket table (under half a byte per blob).
    assert!(
        per_blob_entries <= 48.5,
        "blob entries cost {per_blob_entries:.1} B/blob"
    );
    // Pack records (id, salt, length, kind) and the id → pack map add ~8 B/blob at 16 blobs
    // per pack; far less for packs of small files.
    assert!(
        per_blob_total <= 60.0,
        "the index costs {per_blob_total:.1} B/blob in all"
    );
    // And a lookup finds what was put in.
    let k = Keys::from_master([3; 32]);
    assert!(idx.has_live(BlobKind::Data, &k.blob_id(&12345u64.to_le_bytes())));
    assert!(!idx.has_live(BlobKind::Data, &k.blob_id(b"absent")));
}

fn backup_opts(cache: &Path, progress: Arc<Progress>) -> BackupOptions {
    BackupOptions {
        archive: ArchiveOptions {
            file_cache: Some(cache.to_path_buf()),
            progress,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn a_no_change_backup_reads_no_file_and_stores_no_blob() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, 11);
    for i in 0..200 {
        write(&src.join(format!("many/f{i:03}.txt")), &text(i, 3_000));
    }
    // Older than the racy window, so the first backup's cache entries are trusted.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let backend = Arc::new(FsBackend::new(t.path().join("repo")));
    let repo = init_repo(backend, t.path());
    let cache = t.path().join("cache.redb");

    let p1 = Arc::new(Progress::default());
    let first = archiver::backup(
        &repo,
        std::slice::from_ref(&src),
        &backup_opts(&cache, p1.clone()),
    )
    .unwrap();
    assert!(p1.bytes_read.load(Ordering::SeqCst) > 3_500_000);
    assert!(first.snapshot.summary.blobs_added > 0);

    let p2 = Arc::new(Progress::default());
    let second = archiver::backup(
        &repo,
        std::slice::from_ref(&src),
        &backup_opts(&cache, p2.clone()),
    )
    .unwrap();
    assert_eq!(
        p2.bytes_read.load(Ordering::SeqCst),
        0,
        "files were read again"
    );
    assert_eq!(second.snapshot.summary.blobs_added, 0);
    assert_eq!(second.snapshot.tree, first.snapshot.tree);

    // One changed file: exactly that file is read again.
    write(&src.join("many/f007.txt"), &text(999, 3_000));
    let p3 = Arc::new(Progress::default());
    let third = archiver::backup(&repo, &[src], &backup_opts(&cache, p3.clone())).unwrap();
    assert_eq!(p3.bytes_read.load(Ordering::SeqCst), 3_000);
    assert_eq!(third.snapshot.summary.files_changed, 1);
}

#[test]
fn duplicate_content_is_stored_once() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let big = bytes(21, 3_000_000);
    for name in ["a.bin", "copy of a.bin", "sub/dir/a.bin"] {
        write(&src.join(name), &big);
    }
    let backend = Arc::new(FsBackend::new(t.path().join("repo")));
    let repo = init_repo(backend, t.path());
    let r = archiver::backup(
        &repo,
        &[src],
        &backup_opts(&t.path().join("c.redb"), Arc::default()),
    )
    .unwrap();
    let s = &r.snapshot.summary;
    // 3 MB of random bytes is 2-6 chunks (0.5-4 MiB); stored once, plus one tree blob per dir.
    assert!(
        s.bytes_added_raw < 3_000_000 + 64 * 1024,
        "stored {} raw bytes for 3 copies of 3 MB",
        s.bytes_added_raw
    );
}
