//! The read planner (`repository::reader`) on a real repository: every blob comes out right and
//! in order, each planned read is fetched exactly once (however many fetchers race for it),
//! duplicates are fetched once, skipped files release their blobs, and a buffer far smaller
//! than the data never stalls the consumers.

mod lib_fixtures;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use lib_fixtures::{Call, Tapped, bytes};
use prism_sync::archiver::{BackupOptions, backup};
use prism_sync::backend::{DynBackend, Kind, MemoryBackend};
use prism_sync::format::pack::BlobKind;
use prism_sync::id::BlobId;
use prism_sync::repository::reader::{ReadOptions, with_prefetch};
use prism_sync::repository::{InitOptions, Repository};
use prism_sync::snapshot::NodeKind;
use prism_sync::snapshot::tree::{file_blobs, walk};

/// Ranged pack reads per (pack, offset, length), and in all.
#[derive(Default)]
struct Counts {
    ranges: Mutex<HashMap<(String, u64, u64), usize>>,
    reads: AtomicUsize,
}

#[test]
fn every_blob_arrives_in_order_each_read_once_within_a_tiny_buffer() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..120u64 {
        std::fs::write(
            src.join(format!("f{i:03}")),
            bytes(i, 500 + (i as usize * 331) % 9000),
        )
        .unwrap();
    }
    // Duplicates (one blob, several files) and a file of several chunks.
    std::fs::write(src.join("dup-a"), bytes(7, 3000)).unwrap();
    std::fs::write(src.join("dup-b"), bytes(7, 3000)).unwrap();
    std::fs::write(src.join("big"), bytes(1000, 6 << 20)).unwrap();
    let keys = tmp.path().join("keys");
    let counting = Arc::new(Counts::default());
    let counts = counting.clone();
    let mut tapped = Tapped::new(Arc::new(MemoryBackend::new()), move |call| {
        if let Call::ReadRange {
            kind: Kind::Pack,
            name,
            offset,
            length,
        } = *call
        {
            counts.reads.fetch_add(1, Ordering::SeqCst);
            *counts
                .ranges
                .lock()
                .unwrap()
                .entry((name.to_string(), offset, length))
                .or_default() += 1;
        }
    });
    tapped.parallelism = Some(8);
    let backend: DynBackend = Arc::new(tapped);
    let opts = InitOptions {
        pack_target_bytes: 1 << 20,
        chunk_min_bytes: 64 << 10,
        chunk_avg_bytes: 256 << 10,
        chunk_max_bytes: 1 << 20,
        ..Default::default()
    };
    Repository::init(backend.clone(), &lib_fixtures::key_creds(&keys), &opts).unwrap();
    let repo = Repository::open(backend, &lib_fixtures::key_creds(&keys)).unwrap();
    let snap = backup(&repo, std::slice::from_ref(&src), &BackupOptions::default()).unwrap();
    repo.load_index().unwrap();
    let mut files: Vec<(String, Vec<BlobId>)> = Vec::new();
    walk(&repo, &snap.snapshot.tree, &mut |path, node| {
        if let NodeKind::File { content, .. } = &node.kind {
            files.push((
                String::from_utf8(path.to_vec()).unwrap(),
                file_blobs(&repo, content).unwrap(),
            ));
        }
        Ok(true)
    })
    .unwrap();
    assert!(
        files.iter().any(|(_, b)| b.len() > 5),
        "a file of many chunks"
    );
    counting.reads.store(0, Ordering::SeqCst);
    counting.ranges.lock().unwrap().clear();

    let read_opts = ReadOptions {
        gap_bytes_max: 4096,
        range_bytes_max: 64 << 10,
        concurrency: 8,
        // Far less than the data: blobs fetched ahead must not stall the consumers.
        buffer_bytes_max: 128 << 10,
    };
    let lists: Vec<Vec<BlobId>> = files.iter().map(|(_, b)| b.clone()).collect();
    let planned = with_prefetch(&repo, BlobKind::Data, lists, read_opts, |pf| {
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some((name, _)) = files.get(i) else { break };
                        if i % 5 == 4 {
                            // Skipped after its first blob: the rest is released.
                            let mut it = pf.file(i);
                            let _ = it.next();
                            continue;
                        }
                        let mut got = Vec::new();
                        for blob in pf.file(i) {
                            got.extend_from_slice(&blob.unwrap());
                        }
                        let want = std::fs::read(src.join(name)).unwrap();
                        assert!(got == want, "{name} came out different");
                    }
                });
            }
        });
        pf.planned_reads()
    });
    let ranges = counting.ranges.lock().unwrap();
    assert!(
        ranges.values().all(|&n| n == 1),
        "a planned read was fetched twice: {:?}",
        ranges.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(
        counting.reads.load(Ordering::SeqCst) <= planned,
        "{} reads for {planned} planned",
        counting.reads.load(Ordering::SeqCst)
    );
    let blobs: usize = files.iter().map(|(_, b)| b.len()).sum();
    assert!(
        planned < blobs,
        "{planned} reads for {blobs} blobs: nothing coalesced"
    );
}

/// Compaction reads the blobs it keeps as a restore reads them: a small pack's neighbouring
/// blobs in one ranged read. Through `serve` over a 40 ms link the first compaction of a
/// 10-step repository took 91 s: one request per blob, 2,001 of them in sequence
/// (benches/README.md §12d).
#[test]
fn compaction_reads_each_small_pack_in_few_requests_not_one_per_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = reads.clone();
    let tapped = Tapped::new(Arc::new(MemoryBackend::new()), move |call| {
        if let Call::ReadRange {
            kind: Kind::Pack, ..
        } = *call
        {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let backend: DynBackend = Arc::new(tapped);
    Repository::init(
        backend.clone(),
        &lib_fixtures::key_creds(&keys),
        &InitOptions::default(),
    )
    .unwrap();
    let repo = Repository::open(backend, &lib_fixtures::key_creds(&keys)).unwrap();
    // Ten backups of 40 small new files each: ten small data packs of 40 blobs.
    let src = tmp.path().join("src");
    let mut blobs = 0;
    for step in 0..10u64 {
        for i in 0..40u64 {
            lib_fixtures::write(
                &src.join(format!("s{step}/f{i}.txt")),
                &bytes(step * 100 + i, 300),
            );
            blobs += 1;
        }
        backup(&repo, std::slice::from_ref(&src), &BackupOptions::default()).unwrap();
    }
    repo.load_index().unwrap();
    reads.store(0, Ordering::SeqCst);
    let report = prism_sync::maintenance::prune::prune(
        &repo,
        &prism_sync::maintenance::prune::PruneOptions {
            compact_below_bytes: prism_sync::maintenance::prune::COMPACT_BELOW_BYTES,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        report.packs_compacted >= 10,
        "the small packs were compacted: {report:?}"
    );
    let n = reads.load(Ordering::SeqCst);
    assert!(
        n <= 2 * report.packs_compacted,
        "{n} pack reads to compact {} packs holding {blobs}+ blobs",
        report.packs_compacted
    );
    // Everything still reads back.
    let checked = prism_sync::maintenance::check::check(
        &repo,
        &prism_sync::maintenance::check::ReadData::All,
    )
    .unwrap();
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
}
