//! One benchmark per stage of the backup pipeline, plus pack writing and index lookups
//! (`cargo bench --bench stages`; results recorded in benches/README.md).
//!
//! Each stage runs on one core over 16 MiB of data (throughput in bytes per second), so the
//! numbers say which stage bounds a backup on a given machine: read → chunk → hash → dedup
//! lookup → compress → encrypt → pack.

use std::hint::black_box;

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, bench};

use prism_sync::chunker::Chunker;
use prism_sync::crypto::Keys;
use prism_sync::format::index::{IndexBlob, IndexFile, IndexPack};
use prism_sync::format::pack::BlobKind;
use prism_sync::id::{BlobId, IndexId, PackId};
use prism_sync::repository::index::Index;
use prism_sync::repository::pack_codec::{PackWriter, compress_into};

const MIB: usize = 1 << 20;
const INPUT: usize = 16 * MIB;

fn main() {
    divan::main();
}

/// Deterministic bytes: `random` is incompressible, otherwise CSV-like text (compresses ~3x).
fn data(random: bool) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    if random {
        (0..INPUT / 8).flat_map(|_| next().to_le_bytes()).collect()
    } else {
        let mut out = Vec::with_capacity(INPUT + 128);
        let mut t = 1_700_000_000u64;
        while out.len() < INPUT {
            t += next() % 5;
            let v = next();
            out.extend_from_slice(
                format!(
                    "{t},{},{}.{:04},sensor-{}\n",
                    v % 10_000,
                    (v >> 20) % 100,
                    (v >> 32) % 10_000,
                    (v >> 50) % 16
                )
                .as_bytes(),
            );
        }
        out.truncate(INPUT);
        out
    }
}

fn keys() -> Keys {
    Keys::from_master([7u8; 32])
}

fn chunker(keys: &Keys) -> Chunker {
    Chunker::new(keys.gear_table(), 512 << 10, 1 << 20, 4 << 20, 2)
}

#[bench]
fn chunk(b: Bencher) {
    let input = data(true);
    let c = chunker(&keys());
    b.counter(BytesCount::new(input.len()))
        .bench(|| black_box(c.cuts(black_box(&input))));
}

#[bench]
fn hash_keyed_blake3(b: Bencher) {
    let input = data(true);
    let k = keys();
    b.counter(BytesCount::new(input.len())).bench(|| {
        for c in input.chunks(MIB) {
            black_box(k.blob_id(c));
        }
    });
}

#[bench(args = [false, true])]
fn compress_zstd3(b: Bencher, random: bool) {
    let input = data(random);
    let mut z = zstd::bulk::Compressor::new(3).expect("zstd");
    let mut out = Vec::new();
    b.counter(BytesCount::new(input.len())).bench_local(|| {
        for c in input.chunks(MIB) {
            black_box(compress_into(&mut z, c, &mut out));
        }
    });
}

/// Encrypting and framing 1 MiB blobs into one 16 MiB pack (AES-256-GCM, table, trailer).
#[bench]
fn seal_pack(b: Bencher) {
    let input = data(true);
    let k = keys();
    b.counter(BytesCount::new(input.len())).bench(|| {
        let mut w = PackWriter::new(&k, BlobKind::Data, INPUT + MIB);
        for (i, c) in input.chunks(MIB).enumerate() {
            w.add_slice(BlobId([i as u8; 32]), c.len(), false, c);
        }
        black_box(w.finish())
    });
}

/// An index file of `n` blobs in 16 MiB packs of 16 blobs each, as a repository of n MiB would
/// have.
fn index_file(n: usize) -> (IndexFile, Vec<BlobId>) {
    let k = keys();
    let ids: Vec<BlobId> = (0..n as u64).map(|i| k.blob_id(&i.to_le_bytes())).collect();
    let packs = ids
        .chunks(16)
        .enumerate()
        .map(|(p, blobs)| IndexPack {
            id: PackId(k.keyed(&(p as u64).to_be_bytes())),
            kind: BlobKind::Data,
            length: 16 << 20,
            salt: [0; 32],
            blobs: blobs
                .iter()
                .enumerate()
                .map(|(i, id)| IndexBlob {
                    id: *id,
                    offset: (i * MIB) as u32,
                    length: MIB as u32 + 16,
                    raw_length: MIB as u32,
                })
                .collect(),
        })
        .collect();
    let file = IndexFile {
        supersedes: vec![],
        packs,
        marks: vec![],
    };
    (file, ids)
}

fn index_of(n: usize) -> (Index, Vec<BlobId>) {
    let (file, ids) = index_file(n);
    (Index::from_files(vec![(IndexId([1; 32]), file)]), ids)
}

/// Dedup lookups against an index of a million blobs (a 1 TiB repository at 1 MiB chunks):
/// half hits, half misses.
#[bench]
fn index_lookup_1m(b: Bencher) {
    let (idx, ids) = index_of(1_000_000);
    let k = keys();
    let misses: Vec<BlobId> = (0..1000u64)
        .map(|i| k.blob_id(&(u64::MAX - i).to_le_bytes()))
        .collect();
    let probes: Vec<BlobId> = ids
        .iter()
        .step_by(1000)
        .copied()
        .zip(misses)
        .flat_map(|(a, b)| [a, b])
        .collect();
    b.counter(ItemsCount::new(probes.len())).bench(|| {
        probes
            .iter()
            .filter(|id| idx.has_live(BlobKind::Data, id))
            .count()
    });
}

/// Building the in-memory index from decoded index files (what every command does at start).
#[bench(sample_count = 10)]
fn index_load_1m(b: Bencher) {
    let files = vec![(IndexId([1; 32]), index_file(1_000_000).0)];
    b.counter(ItemsCount::new(1_000_000usize))
        .bench(|| black_box(Index::from_files(files.clone())));
}
