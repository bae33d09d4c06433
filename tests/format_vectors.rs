//! Byte-exact vectors of every stored structure (format-spec/vectors/*.hex).
//!
//! For each vector: the encoder, given fixed inputs (a fixed master key and fixed salts — the
//! test-only path; real writers draw salts at random), must produce exactly the file's bytes;
//! decoding the file must give back the inputs; re-encoding must give the same bytes.
//! `PRISM_UPDATE_VECTORS=1 cargo test --test format_vectors` rewrites the files after an
//! intentional format change (then bump the version history in format-spec/README.md).

use std::path::PathBuf;

use prism_sync::archiver::filecache::CacheEntry;
use prism_sync::crypto::{Keys, key_encryption_key, unwrap_master, wrap_master};
use prism_sync::format::config::{self, Capabilities, RepoConfig};
use prism_sync::format::envelope::ObjectKind;
use prism_sync::format::head::Head;
use prism_sync::format::index::{DeletionMark, IndexBlob, IndexFile, IndexPack};
use prism_sync::format::keyfile::{Kdf, KeyFile};
use prism_sync::format::pack::BlobKind;
use prism_sync::format::session::SessionInfo;
use prism_sync::format::snapshot::{Snapshot, Summary};
use prism_sync::format::tree::{Content, Node, NodeKind, TreeBlob, TreeChild};
use prism_sync::id::{BlobId, IndexId, PackId, SnapshotId, hex_encode};
use prism_sync::repository::pack_codec::{PackWriter, compress, open_blob, read_table};
use prism_sync::repository::{open_object, seal_object_with_salt};

const MASTER: [u8; 32] = [0x11; 32];

fn keys() -> Keys {
    Keys::from_master(MASTER)
}

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("format-spec/vectors")
        .join(format!("{name}.hex"))
}

fn to_hex_lines(bytes: &[u8]) -> String {
    bytes.chunks(32).map(|c| hex_encode(c) + "\n").collect()
}

/// Compares `bytes` with the vector file (or writes it), returns the file's bytes.
fn vector(name: &str, description: &str, bytes: &[u8]) -> Vec<u8> {
    let path = vector_path(name);
    if std::env::var_os("PRISM_UPDATE_VECTORS").is_some() {
        let text = format!(
            "# {description}\n# {} bytes\n{}",
            bytes.len(),
            to_hex_lines(bytes)
        );
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hex: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .collect();
    let mut file = vec![0u8; hex.len() / 2];
    assert!(
        prism_sync::id::hex_decode(&hex, &mut file),
        "{name}: bad hex"
    );
    assert_eq!(
        hex_encode(&file),
        hex_encode(bytes),
        "{name}: the encoder no longer produces the vector"
    );
    file
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        mtime_ns: 1_764_000_000_123_456_789,
        uid: 1000,
        gid: 1000,
    }
}

#[test]
fn key_file() {
    let salt = [0x22; 32];
    for (name, kdf, secret) in [
        (
            "keyfile-argon2id",
            Kdf::Argon2id {
                memory_kib: 64,
                iterations: 1,
                lanes: 1,
            },
            &b"correct horse"[..],
        ),
        ("keyfile-raw", Kdf::Raw, &[0x33; 32][..]),
    ] {
        let mut kf = KeyFile {
            kdf,
            salt,
            created_ns: 1_764_000_000_000_000_000,
            host: "laptop".into(),
            user: "ada".into(),
            sealed_master: [0; 48],
        };
        let kek = key_encryption_key(kdf, secret, &salt);
        kf.sealed_master = wrap_master(&kek, &kf.encode_aad(), &MASTER);
        let file = vector(
            name,
            &format!("key file, {kdf:?}, master key 11…11, salt 22…22"),
            &kf.encode(),
        );
        let back = KeyFile::decode(&file).unwrap();
        assert_eq!(back, kf);
        assert_eq!(back.encode(), file);
        assert_eq!(
            unwrap_master(&kek, &back.encode_aad(), &back.sealed_master).unwrap(),
            MASTER
        );
    }
}

#[test]
fn config_file() {
    let c = RepoConfig {
        repo_id: [0x44; 32],
        chunk_min_bytes: 512 << 10,
        chunk_avg_bytes: 1 << 20,
        chunk_max_bytes: 4 << 20,
        normalization: 1,
        zstd_level: 3,
        pack_target_bytes: 16 << 20,
        created_ns: 1_764_000_000_000_000_000,
        capabilities: Capabilities(Capabilities::CREATE_ONLY),
        extra: vec![],
    };
    let mut bytes = config::encode_header(&c.repo_id).to_vec();
    bytes.extend(seal_object_with_salt(
        &keys(),
        ObjectKind::Config,
        &c.encode(),
        false,
        [0x55; 32],
    ));
    let file = vector(
        "config",
        "repository config, id 44…44, default parameters, envelope salt 55…55",
        &bytes,
    );
    let (id, sealed) = config::decode_header(&file).unwrap();
    assert_eq!(id, c.repo_id);
    let plain = open_object(&keys(), ObjectKind::Config, "config", sealed).unwrap();
    let back = RepoConfig::decode(&plain).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.encode(), plain);
}

fn snapshot() -> Snapshot {
    Snapshot {
        time_ns: 1_764_000_000_500_000_000,
        tree: BlobId([0x66; 32]),
        host: "laptop".into(),
        user: "ada".into(),
        paths: vec![b"/home/ada/research/project1".to_vec()],
        tags: vec!["daily".into(), "nightly".into()],
        parents: vec![SnapshotId([0x77; 32])],
        sync_set: Some("project1-sync".into()),
        endpoint: Some("local".into()),
        summary: Summary {
            files_new: 3,
            files_changed: 1,
            files_unchanged: 9485,
            dirs: 312,
            total_bytes: 1 << 30,
            blobs_added: 5,
            bytes_added_raw: 5 << 20,
            bytes_added_stored: 3 << 20,
            duration_ns: 1_500_000_000,
            errors: 0,
            extra: vec![],
        },
        program_version: "prism-sync 0.1.0".into(),
        extra: vec![(12, b"a future optional field".to_vec())],
    }
}

#[test]
fn snapshot_object() {
    let s = snapshot();
    let plain = vector(
        "snapshot-plaintext",
        "snapshot TLV plaintext (with one unknown optional field, tag 12)",
        &s.encode(),
    );
    let back = Snapshot::decode(&plain).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.encode(), plain);
    let sealed = vector(
        "snapshot-sealed",
        "the snapshot sealed (zstd) in an envelope, master key 11…11, salt 88…88",
        &seal_object_with_salt(&keys(), ObjectKind::Snapshot, &plain, true, [0x88; 32]),
    );
    assert_eq!(
        open_object(&keys(), ObjectKind::Snapshot, "snapshot", &sealed).unwrap(),
        plain
    );
    assert!(
        open_object(&keys(), ObjectKind::Index, "snapshot", &sealed).is_err(),
        "kind is bound"
    );
}

#[test]
fn session_object() {
    let s = SessionInfo {
        id: [0x99; 32],
        started_ns: 1_764_000_000_000_000_000,
        host: "ws-1".into(),
        pid: 4242,
        command: "backup".into(),
        extra: vec![],
    };
    let plain = vector("session-plaintext", "session TLV plaintext", &s.encode());
    assert_eq!(SessionInfo::decode(&plain).unwrap(), s);
}

#[test]
fn head_object() {
    let h = Head {
        set: "project1-sync".into(),
        snapshot: SnapshotId([0x5a; 32]),
        endpoint: "ws-1".into(),
        time_ns: 1_764_000_000_250_000_000,
        merged: vec![SnapshotId([0x5b; 32]), SnapshotId([0x5c; 32])],
        conflicts: vec![],
        confirmed_deletions: 0,
        extra: vec![],
    };
    let plain = vector(
        "head-plaintext",
        "sync set head TLV plaintext: set, snapshot, endpoint, time, two merged heads",
        &h.encode(),
    );
    let back = Head::decode(&plain).unwrap();
    assert_eq!(back, h);
    assert_eq!(back.encode(), plain);
}

#[test]
fn head_object_with_conflicts_and_confirmed_deletions() {
    use prism_sync::format::head::{ConflictState, SharedConflict};
    let h = Head {
        set: "project1-sync".into(),
        snapshot: SnapshotId([0x5a; 32]),
        endpoint: "merge".into(),
        time_ns: 1_764_000_000_250_000_000,
        merged: vec![SnapshotId([0x5b; 32])],
        conflicts: vec![
            SharedConflict {
                path: b"analysis.ipynb".to_vec(),
                endpoint: "local".into(),
                state: ConflictState::Parked,
                time_ns: 1_764_000_000_100_000_000,
                version: Some(SnapshotId([0x5d; 32])),
                ancestor: None,
                extra: vec![],
            },
            SharedConflict {
                path: b"data/run.csv".to_vec(),
                endpoint: "ws-1".into(),
                state: ConflictState::Unadopted,
                time_ns: 1_764_000_000_200_000_000,
                version: Some(SnapshotId([0x5c; 32])),
                ancestor: Some(SnapshotId([0x5e; 32])),
                extra: vec![],
            },
        ],
        confirmed_deletions: 7,
        extra: vec![],
    };
    let plain = vector(
        "head-plaintext-v2",
        "sync set head TLV plaintext: one merged head, a parked and an unadopted conflict, 7 confirmed deletions",
        &h.encode(),
    );
    let back = Head::decode(&plain).unwrap();
    assert_eq!(back, h);
    assert_eq!(back.encode(), plain);
}

#[test]
fn maintenance_lease_object() {
    use prism_sync::format::lease::Lease;
    let l = Lease {
        generation: 42,
        holder: [0x6c; 16],
        host: "ws-1".into(),
        pid: 31337,
        endpoint: "project1-sync/ws-1".into(),
        taken_ns: 1_764_000_000_000_000_000,
        expires_ns: 1_764_000_001_800_000_000,
        released: true,
        extra: vec![],
    };
    let plain = vector(
        "lease-plaintext",
        "maintenance lease TLV plaintext: generation 42, holder, host, endpoint, taken, expires 30 min later, released",
        &l.encode(),
    );
    let back = Lease::decode(&plain).unwrap();
    assert_eq!(back, l);
    assert_eq!(back.encode(), plain);
}

#[test]
fn presence_object() {
    use prism_sync::format::presence::Presence;
    let p = Presence {
        set: "project1-sync".into(),
        endpoint: "ws-1".into(),
        host: "ws-1.internal".into(),
        pid: 31337,
        folder: b"/home/researcher/project1".to_vec(),
        started_ns: 1_764_000_000_000_000_000,
        heartbeat_ns: 1_764_000_120_000_000_000,
        interval_ms: 60_000,
        version: "prism-sync 0.1.0".into(),
        stopped: true,
        extra: vec![],
    };
    let plain = vector(
        "presence-plaintext",
        "presence TLV plaintext: set, endpoint, host, pid 31337, folder, started, heartbeat 2 min later, interval 60 s, version, stopped",
        &p.encode(),
    );
    let back = Presence::decode(&plain).unwrap();
    assert_eq!(back, p);
    assert_eq!(back.encode(), plain);
}

#[test]
fn index_file() {
    let mut f = IndexFile {
        supersedes: vec![IndexId([0x01; 32])],
        packs: vec![
            IndexPack {
                id: PackId([0xa0; 32]),
                kind: BlobKind::Data,
                length: 4096,
                salt: [0xa1; 32],
                blobs: vec![
                    IndexBlob {
                        id: BlobId([0xb0; 32]),
                        offset: 108,
                        length: 1016,
                        raw_length: 1000,
                    },
                    IndexBlob {
                        id: BlobId([0xb1; 32]),
                        offset: 1184,
                        length: 516,
                        raw_length: 2000,
                    },
                ],
            },
            IndexPack {
                id: PackId([0xc0; 32]),
                kind: BlobKind::Tree,
                length: 300,
                salt: [0xc1; 32],
                blobs: vec![IndexBlob {
                    id: BlobId([0xd0; 32]),
                    offset: 108,
                    length: 116,
                    raw_length: 100,
                }],
            },
        ],
        marks: vec![DeletionMark {
            pack: PackId([0xc0; 32]),
            marked_ns: 1_764_000_000_000_000_000,
            wait_for: vec![[0xee; 32]],
        }],
    };
    f.canonicalize();
    let plain = vector(
        "index-plaintext",
        "index plaintext: 1 superseded file, a data pack (2 blobs, the second compressed), a marked tree pack",
        &f.encode(),
    );
    let back = IndexFile::decode(&plain).unwrap();
    assert_eq!(back, f);
    assert_eq!(back.encode(), plain);
    assert!(!back.packs[0].blobs[0].compressed() && back.packs[0].blobs[1].compressed());
}

#[test]
fn tree_blobs() {
    let leaf = TreeBlob::Leaf(vec![
        node(
            b"a.txt",
            NodeKind::File {
                size: 5,
                content: Content::Direct(vec![BlobId([0x01; 32])]),
            },
        ),
        node(
            b"caf\xe9",
            NodeKind::File {
                size: 0,
                content: Content::Direct(vec![]),
            },
        ),
        node(
            b"data",
            NodeKind::Dir {
                subtree: BlobId([0x02; 32]),
            },
        ),
        node(
            b"huge.h5",
            NodeKind::File {
                size: 1 << 40,
                content: Content::Indirect(vec![BlobId([0x03; 32])]),
            },
        ),
        node(
            b"link",
            NodeKind::Symlink {
                target: b"a.txt".to_vec(),
            },
        ),
    ]);
    let interior = TreeBlob::Interior(vec![
        TreeChild {
            id: BlobId([0x04; 32]),
            nodes: 700,
            first_name: b"aaa".to_vec(),
        },
        TreeChild {
            id: BlobId([0x05; 32]),
            nodes: 512,
            first_name: b"mmm".to_vec(),
        },
    ]);
    let list = TreeBlob::ContentList(vec![BlobId([0x06; 32]), BlobId([0x07; 32])]);
    for (name, desc, t) in [
        (
            "tree-leaf",
            "leaf tree: file, empty file with a non-UTF-8 name, directory, indirect file, symlink",
            leaf,
        ),
        ("tree-interior", "interior tree of two leaves", interior),
        (
            "tree-content-list",
            "content list of two data blob ids",
            list,
        ),
    ] {
        let file = vector(name, desc, &t.encode());
        let back = TreeBlob::decode(&file).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.encode(), file);
    }
}

#[test]
fn pack_file() {
    let k = keys();
    let mut w = PackWriter::with_salt(&k, BlobKind::Data, [0x12; 32], 1 << 16);
    let text = b"prism-sync keeps every version. ".repeat(16);
    let random: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let mut z = zstd::bulk::Compressor::new(3).unwrap();
    for b in [&text[..], &random[..]] {
        match compress(&mut z, b) {
            Some(c) => w.add(k.blob_id(b), b.len(), true, c),
            None => w.add(k.blob_id(b), b.len(), false, b.to_vec()),
        };
    }
    let p = w.finish();
    let file = vector(
        "pack",
        "data pack, salt 12…12, master key 11…11: a compressed text blob, a raw 64-byte blob",
        &p.bytes,
    );
    assert_eq!(PackId::of_bytes(&file), p.id);
    let (salt, entries) = read_table(&k, &file).unwrap();
    assert_eq!(salt, [0x12; 32]);
    assert_eq!(entries, p.entries);
    let cipher = k.pack_cipher(&salt);
    let got: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| {
            open_blob(
                &k,
                &cipher,
                e,
                &file[e.offset as usize..(e.offset + e.length) as usize],
            )
            .unwrap()
        })
        .collect();
    assert_eq!(got, vec![text.to_vec(), random]);
    assert!(entries[0].compressed && !entries[1].compressed);
}

#[test]
fn file_cache_entry() {
    let e = CacheEntry {
        size: 123_456,
        mtime_ns: 1_764_000_000_000_000_001,
        ctime_ns: 1_764_000_000_000_000_002,
        ino: 77,
        dev: 2049,
        racy: true,
        ids: vec![BlobId([0x31; 32])],
    };
    let file = vector(
        "filecache-entry",
        "file cache value (redb table files_v1)",
        &e.encode(),
    );
    assert_eq!(CacheEntry::decode(&file).unwrap(), e);
}

#[test]
fn snapshot_catalog_file() {
    use prism_sync::format::catalog::{CatalogFile, CatalogSnapshot};
    use prism_sync::snapshot::catalog::{open_catalog, seal_catalog};
    let first = snapshot();
    let second = Snapshot {
        time_ns: first.time_ns + 60_000_000_000,
        tags: vec![],
        parents: vec![SnapshotId([0x78; 32])],
        extra: vec![],
        ..first.clone()
    };
    let notes = |size: u64, blob: u8| {
        Some(node(
            b"notes.txt",
            NodeKind::File {
                size,
                content: Content::Direct(vec![BlobId([blob; 32])]),
            },
        ))
    };
    let f = CatalogFile {
        nonce: [0x5a; 16],
        repo_id: [0x22; 32],
        set: "project1-sync".into(),
        listing: "41153ec5e22e7e1d208eec929ef45dcd".into(),
        snapshots: vec![
            CatalogSnapshot {
                id: SnapshotId([0x77; 32]),
                cataloged: true,
                snapshot: first,
            },
            CatalogSnapshot {
                id: SnapshotId([0x79; 32]),
                cataloged: true,
                snapshot: second,
            },
        ],
        others: vec![SnapshotId([0x31; 32]), SnapshotId([0x32; 32])],
        paths: vec![
            (
                b"gone.txt".to_vec(),
                vec![
                    (
                        0,
                        notes(5, 0xb1).map(|n| Node {
                            name: b"gone.txt".to_vec(),
                            ..n
                        }),
                    ),
                    (1, None),
                ],
            ),
            (
                b"notes.txt".to_vec(),
                vec![(0, notes(3, 0xb2)), (1, notes(4, 0xb3))],
            ),
        ],
    };
    let bytes = vector(
        "catalog",
        "snapshot catalog (version 3) of set project1-sync, repository id 22…22, nonce 5a…5a, \
         listing tag 41153ec5…: two snapshots, two other ids, gone.txt deleted and notes.txt \
         changed at the second; one block and its MAC under master key 11…11",
        &seal_catalog(&keys(), &f),
    );
    let back = open_catalog(&keys(), &bytes).expect("the MAC verifies and it decodes");
    assert_eq!(back, f);
    assert_eq!(seal_catalog(&keys(), &back), bytes);
    // Shorter than one block: the body, then its one MAC.
    let body = &bytes[..bytes.len() - 32];
    assert_eq!(CatalogFile::decode(body).unwrap().encode(), body);
    // Read in place: one row, one snapshot, one path entry at a time.
    let view = prism_sync::format::catalog::CatalogView::parse(body.to_vec()).unwrap();
    assert_eq!(view.len(), 2);
    assert_eq!(view.uncataloged(), 0);
    assert_eq!(view.listing, f.listing);
    assert_eq!(view.row(1).unwrap().id, SnapshotId([0x79; 32]));
    assert_eq!(
        view.row(1).unwrap().time_ns,
        f.snapshots[1].snapshot.time_ns
    );
    assert_eq!(view.snapshot(0).unwrap(), f.snapshots[0].snapshot);
    assert_eq!(
        view.partition(|r| r.time_ns <= f.snapshots[0].snapshot.time_ns)
            .unwrap(),
        1
    );
    assert_eq!(
        view.versions_of(b"notes.txt").unwrap(),
        Some(f.paths[1].1.clone())
    );
    assert_eq!(view.versions_of(b"other.txt").unwrap(), None);
    assert_eq!(view.others_len(), 2);
    assert_eq!(view.other(1).unwrap(), SnapshotId([0x32; 32]));
    // Under another key, or with one bit flipped, it is ignored.
    assert!(open_catalog(&Keys::from_master([0x12; 32]), &bytes).is_none());
    let mut flipped = bytes.clone();
    flipped[40] ^= 1;
    assert!(open_catalog(&keys(), &flipped).is_none());
    // Several blocks: a body longer than one block gets a MAC after each; a block moved,
    // dropped or taken from another write (another nonce) does not verify.
    let mut big = f.clone();
    big.paths = (0..300)
        .map(|i| {
            (
                format!("dir/file-{i:04}.txt").into_bytes(),
                f.paths[1].1.clone(),
            )
        })
        .collect();
    let body = big.encode();
    let sealed = seal_catalog(&keys(), &big);
    let blocks = body.len().div_ceil(prism_sync::format::catalog::BLOCK);
    assert!(blocks >= 3, "{blocks} blocks");
    assert_eq!(sealed.len(), body.len() + 32 * blocks);
    assert_eq!(open_catalog(&keys(), &sealed), Some(big.clone()));
    let stride = prism_sync::format::catalog::BLOCK + 32;
    let mut swapped = sealed.clone();
    let (a, b) = swapped.split_at_mut(2 * stride);
    a[stride..].swap_with_slice(&mut b[..stride]);
    assert!(open_catalog(&keys(), &swapped).is_none(), "blocks swapped");
    let other = seal_catalog(
        &keys(),
        &CatalogFile {
            nonce: [0x5b; 16],
            ..big.clone()
        },
    );
    let mut spliced = sealed.clone();
    spliced[stride..2 * stride].copy_from_slice(&other[stride..2 * stride]);
    assert!(
        open_catalog(&keys(), &spliced).is_none(),
        "a block of another write"
    );
}
