//! Replays every fuzz target on stable: each file of `fuzz/corpus/<target>/`, then a few thousand
//! deterministic mutations of those files, through the same functions the libFuzzer targets call
//! (`fuzz/src/lib.rs`). A decoder that panics, or an accepted input that does not re-encode to
//! itself, fails this test with the input's hex. A missing or empty corpus folder fails it too.
//!
//! The `seed-*` files are written by the real encoders:
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` rewrites them (other files, such
//! as inputs a fuzzer found, are left alone). See `fuzz/README.md`.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_targets;

use std::cell::{Cell, RefCell};
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use fuzz_targets::{MASTER, TARGETS, Target, keys};
use prism_sync::archiver::filecache::CacheEntry;
use prism_sync::crypto::Keys;
use prism_sync::format::config::{self, Capabilities, RepoConfig};
use prism_sync::format::envelope::ObjectKind;
use prism_sync::format::index::{DeletionMark, IndexBlob, IndexFile, IndexPack};
use prism_sync::format::keyfile::{Kdf, KeyFile};
use prism_sync::format::pack::{self as layout, BlobEntry, BlobKind};
use prism_sync::format::session::SessionInfo;
use prism_sync::format::snapshot::{Snapshot, Summary};
use prism_sync::format::tlv::TlvWriter;
use prism_sync::format::tree::{Content, Node, NodeKind, TreeBlob, TreeChild};
use prism_sync::id::{BlobId, IndexId, PackId, SnapshotId, hex_encode};
use prism_sync::repository::pack_codec::PackWriter;
use prism_sync::repository::seal_object_with_salt;

/// Mutated inputs tried per target, on top of the corpus files.
const MUTATIONS_PER_TARGET: usize = 3000;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// The files of one target's corpus, sorted by name; fails when the folder is missing or empty.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_root().join(target);
    let rd = fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = rd
        .map(|e| e.expect("corpus entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, fs::read(e.path()).expect("corpus file"))
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

/// splitmix64: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Values that tend to sit on a decoder's edges, written as LE u16/u32/u64.
const INTERESTING: [u64; 12] = [
    0,
    1,
    16,
    31,
    32,
    0x7f,
    0x80,
    0x7fff,
    0x8000,
    0xffff,
    u32::MAX as u64,
    u64::MAX,
];

/// One to four stacked mutations of a seed (or of random bytes), like libFuzzer's.
fn mutate(rng: &mut Rng, seeds: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut v = if rng.below(16) == 0 {
        (0..rng.below(256)).map(|_| rng.byte()).collect()
    } else {
        seeds[rng.below(seeds.len())].1.clone()
    };
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0, 1, 0x7f, 0x80, 0xff, rng.byte()][rng.below(6)];
            }
            2 => v.truncate(rng.below(len + 1)),
            3 if len > 0 => {
                let start = rng.below(len);
                let end = start + rng.below(len - start + 1).min(64);
                v.drain(start..end);
            }
            4 => {
                let at = rng.below(len + 1);
                let add: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.byte()).collect();
                v.splice(at..at, add);
            }
            5 if len > 0 => {
                let start = rng.below(len);
                let end = start + rng.below(len - start + 1).min(64);
                let dup = v[start..end].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, dup);
            }
            6 => {
                let width = [2, 4, 8][rng.below(3)];
                if len >= width {
                    let at = rng.below(len - width + 1);
                    let x = INTERESTING[rng.below(INTERESTING.len())];
                    let x = if rng.below(4) == 0 {
                        x.wrapping_add(rng.below(5) as u64).wrapping_sub(2)
                    } else {
                        x
                    };
                    v[at..at + width].copy_from_slice(&x.to_le_bytes()[..width]);
                }
            }
            7 => {
                let other = &seeds[rng.below(seeds.len())].1;
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ => v.push(rng.byte()),
        }
    }
    v
}

thread_local! {
    /// Set while this thread runs targets: their panics are recorded here instead of printed.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Installs (once) a panic hook that records a capturing thread's panics and hands every other
/// panic to the default hook.
fn install_capturing_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CAPTURING.get() {
                return previous(info);
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = format!("panicked at {at}: {msg}"));
        }));
    });
}

/// Runs one input; `Err` holds where and why the target panicked.
fn run(f: Target, data: &[u8]) -> Result<(), String> {
    CAPTURING.set(true);
    let out = panic::catch_unwind(AssertUnwindSafe(|| f(data)));
    CAPTURING.set(false);
    out.map_err(|_| LAST_PANIC.with(|p| p.borrow().clone()))
}

fn describe(target: &str, origin: &str, data: &[u8], why: &str) -> String {
    let dump = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-corpus-failures")
        .join(target);
    fs::create_dir_all(&dump).expect("failure folder");
    let path = dump.join(format!(
        "{}-{}",
        origin.replace(['/', ' '], "_"),
        hex_encode(&fnv(data))
    ));
    fs::write(&path, data).expect("failure file");
    let hex = if data.len() <= 512 {
        hex_encode(data)
    } else {
        format!("{}… ({} bytes)", hex_encode(&data[..512]), data.len())
    };
    format!(
        "{target} / {origin}: {why}\n    input (saved to {}): {hex}",
        path.display()
    )
}

/// A short, stable name for an input (not cryptographic).
fn fnv(data: &[u8]) -> [u8; 8] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h.to_be_bytes()
}

#[test]
fn every_target_survives_its_corpus_and_mutations() {
    install_capturing_hook();
    let mut failures = Vec::new();
    let mut runs = 0usize;
    for (i, &(target, f)) in TARGETS.iter().enumerate() {
        let files = corpus(target);
        for (name, data) in &files {
            runs += 1;
            if let Err(why) = run(f, data) {
                failures.push(describe(target, name, data, &why));
            }
        }
        let mut rng = Rng(0x5eed_0000 + i as u64);
        let mut found = 0;
        for n in 0..MUTATIONS_PER_TARGET {
            let data = mutate(&mut rng, &files);
            runs += 1;
            if let Err(why) = run(f, &data) {
                // Report a few per target: one bug tends to show up again and again.
                if found < 3 {
                    failures.push(describe(target, &format!("mutation {n}"), &data, &why));
                }
                found += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) in {runs} runs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_target_has_a_fuzz_target_file_and_a_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (target, _) in TARGETS {
        let src = fs::read_to_string(root.join(format!("fuzz_targets/{target}.rs")))
            .unwrap_or_else(|e| panic!("fuzz_targets/{target}.rs: {e}"));
        assert!(
            src.contains(&format!("prism_sync_fuzz::fuzz_{target}(")),
            "fuzz_targets/{target}.rs does not call fuzz_{target}"
        );
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "fuzz/Cargo.toml has no [[bin]] {target}"
        );
        corpus(target);
    }
    for e in fs::read_dir(corpus_root()).expect("fuzz/corpus") {
        let name = e.expect("corpus folder").file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name} belongs to no target"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Seed generation: valid encodings from the real encoders, plus truncated and mutated variants.

struct Seeds {
    dir: PathBuf,
    written: usize,
}

impl Seeds {
    fn new(target: &str) -> Self {
        let dir = corpus_root().join(target);
        fs::create_dir_all(&dir).expect("corpus folder");
        for e in fs::read_dir(&dir).expect("corpus folder") {
            let e = e.expect("corpus entry");
            if e.file_name().to_string_lossy().starts_with("seed-") {
                fs::remove_file(e.path()).expect("old seed");
            }
        }
        Seeds { dir, written: 0 }
    }

    fn one(&mut self, name: &str, bytes: &[u8]) {
        fs::write(self.dir.join(format!("seed-{name}")), bytes).expect("seed");
        self.written += 1;
    }

    /// The valid encoding, then: cut by one byte, cut in half, one bit flipped in the middle, one
    /// byte too many.
    fn valid(&mut self, name: &str, bytes: &[u8]) {
        self.one(name, bytes);
        if !bytes.is_empty() {
            self.one(&format!("{name}-cut1"), &bytes[..bytes.len() - 1]);
            self.one(&format!("{name}-half"), &bytes[..bytes.len() / 2]);
            let mut flipped = bytes.to_vec();
            flipped[bytes.len() / 2] ^= 0x10;
            self.one(&format!("{name}-flip"), &flipped);
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        self.one(&format!("{name}-extra"), &longer);
    }
}

fn presence() -> prism_sync::format::presence::Presence {
    prism_sync::format::presence::Presence {
        set: "p-sync".into(),
        endpoint: "ws-1".into(),
        host: "ws-1.internal".into(),
        pid: 4243,
        folder: b"/home/me/p".to_vec(),
        started_ns: 1_700_000_000_000_000_010,
        heartbeat_ns: 1_700_000_060_000_000_010,
        interval_ms: 60_000,
        version: "prism-sync 0.1.0".into(),
        stopped: false,
        extra: vec![],
    }
}

fn id(b: u8) -> [u8; 32] {
    let mut v = [b; 32];
    v[0] = b.wrapping_mul(17);
    v
}

fn prefixed_u64(x: u64, rest: &[u8]) -> Vec<u8> {
    let mut v = x.to_le_bytes().to_vec();
    v.extend_from_slice(rest);
    v
}

fn repo_config(extra: Vec<(u16, Vec<u8>)>) -> RepoConfig {
    RepoConfig {
        repo_id: id(0x11),
        chunk_min_bytes: 512 << 10,
        chunk_avg_bytes: 1 << 20,
        chunk_max_bytes: 8 << 20,
        normalization: 2,
        zstd_level: 3,
        pack_target_bytes: 16 << 20,
        created_ns: 1_700_000_000_123_456_789,
        capabilities: Capabilities(Capabilities::CREATE_ONLY | Capabilities::COMPARE_AND_SWAP),
        extra,
    }
}

fn index_file() -> IndexFile {
    let mut i = IndexFile {
        supersedes: vec![IndexId(id(0x31)), IndexId(id(0x30))],
        packs: vec![
            IndexPack {
                id: PackId(id(0x42)),
                kind: BlobKind::Tree,
                length: 1000,
                salt: id(0x43),
                blobs: vec![IndexBlob {
                    id: BlobId(id(0x44)),
                    offset: 108,
                    length: 116,
                    raw_length: 100,
                }],
            },
            IndexPack {
                id: PackId(id(0x41)),
                kind: BlobKind::Data,
                length: 10_000,
                salt: id(0x45),
                blobs: vec![
                    IndexBlob {
                        id: BlobId(id(0x47)),
                        offset: 400,
                        length: 66,
                        raw_length: 4000,
                    },
                    IndexBlob {
                        id: BlobId(id(0x46)),
                        offset: 108,
                        length: 216,
                        raw_length: 200,
                    },
                ],
            },
        ],
        marks: vec![DeletionMark {
            pack: PackId(id(0x42)),
            marked_ns: 1_700_000_000_000_000_000,
            wait_for: vec![id(0x52), id(0x51)],
        }],
    };
    i.canonicalize();
    i
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        mtime_ns: 1_700_000_000_000_000_001,
        uid: 1000,
        gid: 100,
    }
}

fn snapshot(full: bool) -> Snapshot {
    Snapshot {
        time_ns: 1_700_000_000_000_000_002,
        tree: BlobId(id(0x61)),
        host: "laptop".into(),
        user: "ana".into(),
        paths: if full {
            vec![b"/home/ana/research".to_vec(), b"/data/\xff\xfe".to_vec()]
        } else {
            vec![]
        },
        tags: if full {
            vec!["weekly".into(), "daily".into()]
        } else {
            vec![]
        },
        parents: if full {
            vec![SnapshotId(id(0x62)), SnapshotId(id(0x63))]
        } else {
            vec![]
        },
        sync_set: full.then(|| "thesis".into()),
        endpoint: full.then(|| "cloud-1".into()),
        summary: Summary {
            files_new: 3,
            files_changed: 1,
            files_unchanged: 100,
            dirs: 7,
            total_bytes: 1 << 30,
            blobs_added: 12,
            bytes_added_raw: 5 << 20,
            bytes_added_stored: 2 << 20,
            duration_ns: 1_500_000_000,
            errors: 0,
            extra: if full {
                vec![(0x40, b"later".to_vec())]
            } else {
                vec![]
            },
        },
        program_version: "prism-sync 0.1.0".into(),
        extra: if full {
            vec![(0x20, b"future".to_vec())]
        } else {
            vec![]
        },
    }
}

fn session() -> SessionInfo {
    SessionInfo {
        id: id(0x71),
        started_ns: 1_700_000_000_000_000_003,
        host: "laptop".into(),
        pid: 4242,
        command: "backup".into(),
        extra: vec![],
    }
}

fn head() -> prism_sync::format::head::Head {
    prism_sync::format::head::Head {
        set: "project1-sync".into(),
        snapshot: prism_sync::id::SnapshotId(id(0x72)),
        endpoint: "ws-1".into(),
        time_ns: 1_700_000_000_000_000_004,
        merged: vec![
            prism_sync::id::SnapshotId(id(0x73)),
            prism_sync::id::SnapshotId(id(0x74)),
        ],
        conflicts: vec![],
        confirmed_deletions: 0,
        extra: vec![(9, b"future".to_vec())],
    }
}

/// A zstd frame holding `n` (256..=65_791) copies of `b` as one RLE block: 11 bytes, so a pack
/// can hold a compressed blob without this test depending on zstd.
fn zstd_rle(b: u8, n: usize) -> Vec<u8> {
    assert!((256..=65_791).contains(&n));
    let mut v = vec![0x28, 0xb5, 0x2f, 0xfd];
    v.push(0x60); // single segment, 2-byte content size
    v.extend_from_slice(&((n - 256) as u16).to_le_bytes());
    let block = 1 | (1 << 1) | ((n as u32) << 3); // last, RLE, size
    v.extend_from_slice(&block.to_le_bytes()[..3]);
    v.push(b);
    v
}

fn pack(keys: &Keys, kind: BlobKind, salt: u8, blobs: &[Vec<u8>]) -> Vec<u8> {
    let mut w = PackWriter::with_salt(keys, kind, id(salt), 1 << 14);
    for raw in blobs {
        let id = keys.blob_id(raw);
        let uniform = raw.len() >= 256 && raw.iter().all(|&b| b == raw[0]);
        if uniform {
            w.add(id, raw.len(), true, zstd_rle(raw[0], raw.len()));
        } else {
            w.add(id, raw.len(), false, raw.clone());
        }
    }
    w.finish().bytes
}

/// Rewrites the `seed-*` files of every corpus folder.
#[test]
#[ignore = "writes fuzz/corpus; run by hand after a format change"]
fn write_seed_corpus() {
    let keys = keys();
    assert_eq!(keys.master(), &MASTER);

    // envelope and open_object: one sealed object of each kind, raw and compressed.
    let config_plain = repo_config(vec![]).encode();
    let plaintexts: Vec<(ObjectKind, &str, Vec<u8>)> = vec![
        (ObjectKind::Config, "config", config_plain.clone()),
        (ObjectKind::Index, "index", index_file().encode()),
        (ObjectKind::Snapshot, "snapshot", snapshot(true).encode()),
        (ObjectKind::Session, "session", session().encode()),
        (ObjectKind::Head, "head", head().encode()),
        (ObjectKind::Presence, "presence", presence().encode()),
    ];
    let mut env = Seeds::new("envelope");
    let mut open = Seeds::new("open_object");
    for (n, (kind, name, plain)) in plaintexts.iter().enumerate() {
        for compress in [false, true] {
            let sealed = seal_object_with_salt(keys, *kind, plain, compress, id(0x80 + n as u8));
            let name = format!("{name}{}", if compress { "-zstd" } else { "" });
            env.valid(&name, &sealed);
            open.valid(&name, &sealed);
        }
    }
    // A compressed body that is mostly repetition, so the zstd path is certainly taken.
    let big = snapshot(true).encode().repeat(8);
    let sealed = seal_object_with_salt(keys, ObjectKind::Head, &big, true, id(0x8f));
    open.one("head-zstd-big", &sealed);
    let mut bad = seal_object_with_salt(keys, ObjectKind::Index, b"", false, id(0x90));
    env.one("index-empty", &bad);
    open.one("index-empty", &bad);
    bad[7] = 1; // reserved byte
    env.one("reserved-set", &bad);
    bad[7] = 0;
    bad[6] = 2; // unknown compression
    env.one("unknown-compression", &bad);

    // config file: clear header, then the sealed config envelope.
    let mut cfg_file = config::encode_header(&id(0x11)).to_vec();
    cfg_file.extend_from_slice(&seal_object_with_salt(
        keys,
        ObjectKind::Config,
        &config_plain,
        false,
        id(0x91),
    ));
    let mut s = Seeds::new("config_header");
    s.valid("file", &cfg_file);
    s.one("header-only", &config::encode_header(&id(0x12)));
    let mut v2 = cfg_file.clone();
    v2[4] = 2;
    s.one("version2", &v2);

    let mut s = Seeds::new("config");
    s.valid("plain", &config_plain);
    s.valid(
        "extra",
        &repo_config(vec![(0, b"zero".to_vec()), (0x30, b"future".to_vec())]).encode(),
    );
    let mut w = TlvWriter::new();
    w.bytes(1, &id(0x11)).u32(2, 512 << 10).bytes(0x8001, b"");
    s.one("critical-unknown", &w.finish());

    let mut s = Seeds::new("keyfile");
    let argon = KeyFile {
        kdf: Kdf::Argon2id {
            memory_kib: 64 << 10,
            iterations: 3,
            lanes: 4,
        },
        salt: id(0xa1),
        created_ns: 1_700_000_000_000_000_004,
        host: "laptop".into(),
        user: "ana".into(),
        sealed_master: [0xa2; 48],
    };
    s.valid("argon2id", &argon.encode());
    let raw = KeyFile {
        kdf: Kdf::Raw,
        host: "Zürich-µ".into(),
        user: String::new(),
        ..argon.clone()
    };
    s.valid("raw", &raw.encode());

    let mut s = Seeds::new("pack_header");
    s.valid("header", &layout::encode_pack_header(&id(0xb1)));

    let mut s = Seeds::new("pack_trailer");
    s.valid("table52", &prefixed_u64(1000, &layout::encode_trailer(52)));
    s.one("smallest", &prefixed_u64(76, &layout::encode_trailer(20)));
    s.one("too-long", &prefixed_u64(75, &layout::encode_trailer(20)));
    s.one(
        "huge",
        &prefixed_u64(u64::MAX, &layout::encode_trailer(u32::MAX)),
    );

    let entries = [
        BlobEntry {
            kind: BlobKind::Data,
            compressed: false,
            offset: 108,
            length: 116,
            raw_length: 100,
            id: BlobId(id(0xc1)),
        },
        BlobEntry {
            kind: BlobKind::Data,
            compressed: true,
            offset: 284,
            length: 27,
            raw_length: 1000,
            id: BlobId(id(0xc2)),
        },
    ];
    let mut s = Seeds::new("pack_table");
    s.valid("two", &prefixed_u64(311, &layout::encode_table(&entries)));
    s.one("empty", &prefixed_u64(48, &layout::encode_table(&[])));
    s.one(
        "past-end",
        &prefixed_u64(310, &layout::encode_table(&entries)),
    );

    let mut s = Seeds::new("blob_header");
    for (n, e) in entries.iter().enumerate() {
        let mut v = e.offset.to_le_bytes().to_vec();
        v.extend_from_slice(&e.encode_header());
        s.valid(&format!("entry{n}"), &v);
    }

    let mut s = Seeds::new("index");
    s.valid("full", &index_file().encode());
    s.valid("empty", &IndexFile::default().encode());

    let mut s = Seeds::new("tree");
    let leaf = TreeBlob::Leaf(vec![
        node(
            b"a.txt",
            NodeKind::File {
                size: 10,
                content: Content::Direct(vec![BlobId(id(0xd1)), BlobId(id(0xd2))]),
            },
        ),
        node(
            b"big.bin",
            NodeKind::File {
                size: 1 << 40,
                content: Content::Indirect(vec![BlobId(id(0xd3))]),
            },
        ),
        node(
            b"empty",
            NodeKind::File {
                size: 0,
                content: Content::Direct(vec![]),
            },
        ),
        node(
            b"link",
            NodeKind::Symlink {
                target: b"../elsewhere".to_vec(),
            },
        ),
        node(
            b"sub\xff",
            NodeKind::Dir {
                subtree: BlobId(id(0xd4)),
            },
        ),
    ]);
    s.valid("leaf", &leaf.encode());
    s.valid("leaf-empty", &TreeBlob::Leaf(vec![]).encode());
    s.valid(
        "leaf-symlink",
        &TreeBlob::Leaf(vec![node(
            b"l",
            NodeKind::Symlink {
                target: b"t".to_vec(),
            },
        )])
        .encode(),
    );
    s.valid(
        "interior",
        &TreeBlob::Interior(vec![
            TreeChild {
                id: BlobId(id(0xd5)),
                nodes: 500,
                first_name: b"a".to_vec(),
            },
            TreeChild {
                id: BlobId(id(0xd6)),
                nodes: 400,
                first_name: b"m".to_vec(),
            },
        ])
        .encode(),
    );
    s.valid(
        "content-list",
        &TreeBlob::ContentList(vec![BlobId(id(0xd7)), BlobId(id(0xd8))]).encode(),
    );

    let mut s = Seeds::new("snapshot");
    s.valid("full", &snapshot(true).encode());
    s.valid("minimal", &snapshot(false).encode());

    let mut s = Seeds::new("tlv");
    s.valid("snapshot", &snapshot(true).encode());
    s.valid(
        "config-extra",
        &repo_config(vec![(9, b"again".to_vec())]).encode(),
    );
    let mut w = TlvWriter::new();
    w.bytes(3, b"")
        .bytes(3, b"x")
        .bytes(0x8000, b"crit")
        .bytes(0xffff, b"");
    s.valid("repeats-critical", &w.finish());
    s.one("empty", b"");

    let mut s = Seeds::new("session");
    s.valid("plain", &session().encode());
    let no_host = SessionInfo {
        host: String::new(),
        command: "prune --max-unused 5%".into(),
        ..session()
    };
    s.valid("empty-host", &no_host.encode());
    let future = SessionInfo {
        extra: vec![(6, b"future".to_vec())],
        ..session()
    };
    s.valid("future-field", &future.encode());

    let mut s = Seeds::new("head");
    s.valid("plain", &head().encode());
    let none = prism_sync::format::head::Head {
        merged: vec![],
        extra: vec![],
        ..head()
    };
    s.valid("first", &none.encode());
    use prism_sync::format::head::{ConflictState, SharedConflict};
    let with_conflicts = prism_sync::format::head::Head {
        conflicts: vec![
            SharedConflict {
                path: b"notes/a.txt".to_vec(),
                endpoint: "local".into(),
                state: ConflictState::Parked,
                time_ns: 1_700_000_000_000_000_006,
                version: Some(prism_sync::id::SnapshotId(id(0x75))),
                ancestor: None,
                extra: vec![],
            },
            SharedConflict {
                path: b"notes/a.txt".to_vec(),
                endpoint: "ws-2".into(),
                state: ConflictState::Unadopted,
                time_ns: 1_700_000_000_000_000_007,
                version: Some(prism_sync::id::SnapshotId(id(0x76))),
                ancestor: Some(prism_sync::id::SnapshotId(id(0x77))),
                extra: vec![(9, b"future".to_vec())],
            },
        ],
        confirmed_deletions: 12,
        ..head()
    };
    s.valid("conflicts", &with_conflicts.encode());

    let mut s = Seeds::new("lease");
    let lease = prism_sync::format::lease::Lease {
        generation: 7,
        holder: [0x6d; 16],
        host: "laptop".into(),
        pid: 4242,
        endpoint: "p-sync/local".into(),
        taken_ns: 1_700_000_000_000_000_008,
        expires_ns: 1_700_000_001_800_000_008,
        released: false,
        extra: vec![],
    };
    s.valid("held", &lease.encode());
    let released = prism_sync::format::lease::Lease {
        released: true,
        extra: vec![(9, b"future".to_vec())],
        ..lease.clone()
    };
    s.valid("released-future-field", &released.encode());

    let mut s = Seeds::new("presence");
    s.valid("running", &presence().encode());
    let stopped = prism_sync::format::presence::Presence {
        stopped: true,
        folder: vec![b'/', 0xff, b'x'],
        extra: vec![(11, b"future".to_vec())],
        ..presence()
    };
    s.valid("stopped-future-field", &stopped.encode());

    let mut s = Seeds::new("catalog");
    let notes = Node {
        name: b"notes.txt".to_vec(),
        kind: NodeKind::File {
            size: 3,
            content: Content::Direct(vec![BlobId(id(0xc1))]),
        },
        mode: 0o644,
        mtime_ns: 1_700_000_000_000_000_009,
        uid: 1000,
        gid: 1000,
    };
    let catalog = prism_sync::format::catalog::CatalogFile {
        nonce: [0xc5; 16],
        repo_id: id(0xc2),
        set: "p-sync".into(),
        listing: "af1349b9f5f9a1a6a0404dea36dcc949".into(),
        snapshots: vec![prism_sync::format::catalog::CatalogSnapshot {
            id: SnapshotId(id(0xc3)),
            cataloged: true,
            snapshot: Snapshot {
                sync_set: Some("p-sync".into()),
                ..snapshot(false)
            },
        }],
        others: vec![SnapshotId(id(0xc4))],
        paths: vec![
            (b"d".to_vec(), vec![(0, None)]),
            (b"notes.txt".to_vec(), vec![(0, Some(notes))]),
        ],
    };
    s.valid("one-snapshot", &catalog.encode());
    s.valid(
        "sealed",
        &prism_sync::snapshot::catalog::seal_catalog(keys, &catalog),
    );
    s.valid(
        "empty",
        &prism_sync::format::catalog::CatalogFile::default().encode(),
    );

    let mut s = Seeds::new("filecache");
    let entry = CacheEntry {
        size: 4096,
        mtime_ns: 1_700_000_000_000_000_005,
        ctime_ns: -1,
        ino: 1234,
        dev: 66306,
        racy: false,
        ids: vec![BlobId(id(0xe1)), BlobId(id(0xe2)), BlobId(id(0xe3))],
    };
    s.valid("three", &entry.encode());
    s.valid(
        "none",
        &CacheEntry {
            ids: vec![],
            ..entry
        }
        .encode(),
    );

    // read_table and salvage: real packs under the fixed keys (small, so the salvage walk, which
    // tries every offset, stays fast).
    let data = pack(
        keys,
        BlobKind::Data,
        0xf1,
        &[
            b"hello pack".to_vec(),
            vec![b'z'; 1000],
            vec![],
            b"tail".to_vec(),
        ],
    );
    let tree = pack(keys, BlobKind::Tree, 0xf2, &[leaf.encode()]);
    let empty = pack(keys, BlobKind::Data, 0xf3, &[]);
    let (_, listed) =
        prism_sync::repository::pack_codec::read_table(keys, &data).expect("seed pack opens");
    assert!(listed[1].compressed, "the RLE frame is stored compressed");
    let opened =
        prism_sync::repository::pack_codec::salvage(keys, &data).expect("seed pack salvages");
    assert!(
        opened.iter().all(|s| s.plaintext.is_ok()),
        "every blob opens"
    );
    let mut no_table = data.clone();
    let n = no_table.len();
    no_table[n - 12] ^= 1;
    let mut bad_header = no_table.clone();
    bad_header[listed[1].offset as usize - 30] ^= 1;
    for target in ["read_table", "salvage"] {
        let mut s = Seeds::new(target);
        s.valid("data", &data);
        s.valid("tree", &tree);
        s.valid("empty", &empty);
        s.one("table-damaged", &no_table);
        s.one("table-and-header-damaged", &bad_header);
    }

    // ui_query: query strings and form bodies as browsers send them, and raw path bytes.
    let mut q = Seeds::new("ui_query");
    q.one("query", b"v=0fd96a1e&path=data%2Fcaf%E9%20x.csv&i=2");
    q.one("form", b"token=00ff&path=notes.md&keep=local");
    q.one("escapes", b"%%41%4%zz+&&==&t");
    q.one("path-bytes", b"caf\xe9/\x00\xff/a b");

    let total: u64 = fs::read_dir(corpus_root())
        .expect("corpus")
        .flat_map(|d| fs::read_dir(d.expect("dir").path()).expect("dir"))
        .map(|f| f.expect("file").metadata().expect("meta").len())
        .sum();
    assert!(total < 512 << 10, "corpus grew to {total} bytes");
}
