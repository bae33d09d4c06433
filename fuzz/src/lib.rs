//! The logic of every fuzz target, as plain functions over untrusted bytes.
//!
//! Each `fuzz_targets/<name>.rs` is a one-line `fuzz_target!` that calls `fuzz_<name>` here, and
//! the stable test `tests/fuzz_corpus.rs` includes this file (`#[path]`) to replay
//! `fuzz/corpus/<name>/`, so this file may use only `prism_sync` and `std`.
//!
//! A target panics exactly when it found a bug: a decoder that panicked, or an accepted input that
//! does not re-encode to the same bytes (the format promises `encode(decode(b)) == b`).

use std::sync::LazyLock;

use prism_sync::archiver::filecache::CacheEntry;
use prism_sync::crypto::Keys;
use prism_sync::format::config::{self, RepoConfig};
use prism_sync::format::envelope::{self, EnvelopeHeader, ObjectKind};
use prism_sync::format::index::IndexFile;
use prism_sync::format::keyfile::{KeyFile, SEALED_LEN};
use prism_sync::format::pack::{self as layout, BlobEntry};
use prism_sync::format::session::SessionInfo;
use prism_sync::format::snapshot::Snapshot;
use prism_sync::format::tlv::{self, Fields, TlvWriter};
use prism_sync::format::tree::TreeBlob;
use prism_sync::id::hex_encode;
use prism_sync::repository::{self, OBJECT_PLAINTEXT_MAX};

/// The logic of one target: panics when it finds a bug.
pub type Target = fn(&[u8]);

/// Every target: its name (the `fuzz_targets/<name>.rs` file and the `corpus/<name>/` folder) and
/// its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", fuzz_envelope),
    ("config_header", fuzz_config_header),
    ("config", fuzz_config),
    ("keyfile", fuzz_keyfile),
    ("pack_header", fuzz_pack_header),
    ("pack_trailer", fuzz_pack_trailer),
    ("pack_table", fuzz_pack_table),
    ("blob_header", fuzz_blob_header),
    ("index", fuzz_index),
    ("tree", fuzz_tree),
    ("snapshot", fuzz_snapshot),
    ("tlv", fuzz_tlv),
    ("session", fuzz_session),
    ("head", fuzz_head),
    ("lease", fuzz_lease),
    ("presence", fuzz_presence),
    ("catalog", fuzz_catalog),
    ("filecache", fuzz_filecache),
    ("read_table", fuzz_read_table),
    ("salvage", fuzz_salvage),
    ("open_object", fuzz_open_object),
    ("ui_query", fuzz_ui_query),
];

/// Every kind of sealed object.
pub const OBJECT_KINDS: [ObjectKind; 7] = [
    ObjectKind::Config,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::Session,
    ObjectKind::Head,
    ObjectKind::Lease,
    ObjectKind::Presence,
];

/// The master key of the keyed targets; their seeds are sealed under it.
pub const MASTER: [u8; 32] = [7; 32];

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::from_master(MASTER));

/// The keys derived from [`MASTER`].
pub fn keys() -> &'static Keys {
    &KEYS
}

/// Panics unless `encoded` (the re-encoding of what was decoded from `data`) is `data`.
#[track_caller]
fn assert_canonical(what: &str, data: &[u8], encoded: &[u8]) {
    assert!(
        encoded == data,
        "{what}: accepted input does not re-encode to itself\n  input:      {}\n  re-encoded: {}",
        hex_encode(data),
        hex_encode(encoded),
    );
}

/// Splits a little-endian u64 parameter off the front of the input.
fn split_u64(data: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = data.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

/// `EnvelopeHeader::decode` against every expected kind.
pub fn fuzz_envelope(data: &[u8]) {
    for kind in OBJECT_KINDS {
        if let Ok((h, body)) = EnvelopeHeader::decode(data, kind) {
            assert_eq!(h.kind, kind);
            assert_canonical(
                "envelope header",
                &data[..envelope::HEADER_LEN],
                &h.encode(),
            );
            assert_eq!(body, &data[envelope::HEADER_LEN..]);
            assert!(body.len() >= envelope::TAG_LEN);
        }
    }
}

/// `config::decode_header`: the clear part of the config file.
pub fn fuzz_config_header(data: &[u8]) {
    if let Ok((id, rest)) = config::decode_header(data) {
        assert_canonical(
            "config header",
            &data[..config::HEADER_LEN],
            &config::encode_header(&id),
        );
        assert_eq!(rest, &data[config::HEADER_LEN..]);
    }
}

/// `RepoConfig::decode`: the config's sealed TLV fields.
pub fn fuzz_config(data: &[u8]) {
    if let Ok(c) = RepoConfig::decode(data) {
        assert!(c.validate().is_ok(), "decode accepted an invalid config");
        assert_canonical("config", data, &c.encode());
    }
}

/// `KeyFile::decode`.
pub fn fuzz_keyfile(data: &[u8]) {
    if let Ok(k) = KeyFile::decode(data) {
        assert_eq!(k.encode_aad().len() + SEALED_LEN, data.len());
        assert_canonical("key file", data, &k.encode());
    }
}

/// `decode_pack_header`: the first 48 bytes of a pack (it ignores what follows).
pub fn fuzz_pack_header(data: &[u8]) {
    if let Ok(salt) = layout::decode_pack_header(data) {
        assert_canonical(
            "pack header",
            &data[..layout::HEADER_LEN],
            &layout::encode_pack_header(&salt),
        );
    }
}

/// `decode_trailer`; input: pack length (u64 LE) | trailer bytes.
pub fn fuzz_pack_trailer(data: &[u8]) {
    let Some((pack_len, trailer)) = split_u64(data) else {
        return;
    };
    if let Ok((offset, len)) = layout::decode_trailer(pack_len, trailer) {
        assert_canonical("pack trailer", trailer, &layout::encode_trailer(len));
        assert!(offset >= layout::HEADER_LEN as u64);
        assert_eq!(offset + len as u64 + layout::TRAILER_LEN as u64, pack_len);
    }
}

/// `decode_table`; input: table offset (u64 LE) | table plaintext.
pub fn fuzz_pack_table(data: &[u8]) {
    let Some((table_offset, table)) = split_u64(data) else {
        return;
    };
    if let Ok(entries) = layout::decode_table(table, table_offset) {
        check_entries(&entries, table_offset);
        assert_canonical("pack table", table, &layout::encode_table(&entries));
    }
}

/// Entries lie in order, without overlap, between the pack header and `end`, each after room
/// for its sealed header.
fn check_entries(entries: &[BlobEntry], end: u64) {
    let mut next_free = layout::HEADER_LEN as u64;
    for e in entries {
        assert!(e.validate().is_ok(), "accepted an invalid entry {e:?}");
        let start = e.offset as u64;
        assert!(start >= next_free + layout::BLOB_HEADER_LEN as u64);
        next_free = start + e.length as u64;
        assert!(next_free <= end);
    }
}

/// `BlobEntry::decode_header`; input: body offset (u32 LE) | header plaintext.
pub fn fuzz_blob_header(data: &[u8]) {
    let Some((offset, header)) = data.split_first_chunk::<4>() else {
        return;
    };
    let offset = u32::from_le_bytes(*offset);
    if let Ok(e) = BlobEntry::decode_header(header, offset) {
        assert_eq!(e.offset, offset);
        assert_canonical("blob header", header, &e.encode_header());
    }
}

/// `IndexFile::decode`.
pub fn fuzz_index(data: &[u8]) {
    if let Ok(i) = IndexFile::decode(data) {
        let mut c = i.clone();
        c.canonicalize();
        assert_eq!(c, i, "decoded index is not in canonical order");
        assert_canonical("index", data, &i.encode());
    }
}

/// `TreeBlob::decode`.
pub fn fuzz_tree(data: &[u8]) {
    if let Ok(t) = TreeBlob::decode(data) {
        assert_canonical("tree", data, &t.encode());
    }
}

/// `Snapshot::decode`.
pub fn fuzz_snapshot(data: &[u8]) {
    if let Ok(s) = Snapshot::decode(data) {
        assert_canonical("snapshot", data, &s.encode());
    }
}

/// `tlv::Fields::parse`, checked against a plain reading of the records.
pub fn fuzz_tlv(data: &[u8]) {
    let Ok(f) = Fields::parse(data, "fuzz") else {
        return;
    };
    // `parse` accepted the input, so it is a sequence of whole records.
    let mut records: Vec<(u16, &[u8])> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let tag = u16::from_le_bytes([rest[0], rest[1]]);
        let len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
        assert!(len <= tlv::VALUE_LEN_MAX);
        records.push((tag, &rest[6..6 + len]));
        rest = &rest[6 + len..];
    }
    assert!(records.windows(2).all(|w| w[0].0 <= w[1].0));
    let mut critical: Vec<u16> = records
        .iter()
        .map(|r| r.0)
        .filter(|t| *t >= tlv::CRITICAL)
        .collect();
    critical.dedup();
    for (tag, _) in &records {
        let want: Vec<&[u8]> = records
            .iter()
            .filter(|r| r.0 == *tag)
            .map(|r| r.1)
            .collect();
        assert_eq!(f.all(*tag).collect::<Vec<_>>(), want);
        assert_eq!(f.opt(*tag, "fuzz").is_ok(), want.len() == 1);
    }
    // The typed accessors must not panic on any value.
    for tag in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, tlv::CRITICAL] {
        let _ = f.req_u32(tag, "fuzz");
        let _ = f.req_u64(tag, "fuzz");
        let _ = f.req_i64(tag, "fuzz");
        let _ = f.opt_u64(tag, "fuzz");
        let _ = f.req_str(tag, "fuzz");
        let _ = f.opt_str(tag, "fuzz");
    }
    assert_eq!(f.unknown(&[], "fuzz").is_ok(), critical.is_empty());
    let kept = f
        .unknown(&critical, "fuzz")
        .expect("every critical tag is known");
    let plain: Vec<(u16, Vec<u8>)> = records
        .iter()
        .filter(|r| r.0 < tlv::CRITICAL)
        .map(|r| (r.0, r.1.to_vec()))
        .collect();
    assert_eq!(kept, plain);
    let all: Vec<(u16, Vec<u8>)> = records.iter().map(|r| (r.0, r.1.to_vec())).collect();
    let mut w = TlvWriter::new();
    w.extra(&all);
    assert_canonical("tlv", data, &w.finish());
}

/// `SessionInfo::decode`.
pub fn fuzz_session(data: &[u8]) {
    if let Ok(s) = SessionInfo::decode(data) {
        assert_canonical("session", data, &s.encode());
    }
}

/// `Head::decode` (a sync set's head object).
pub fn fuzz_head(data: &[u8]) {
    if let Ok(h) = prism_sync::format::head::Head::decode(data) {
        assert_canonical("head", data, &h.encode());
    }
}

/// `Lease::decode` (the repository's maintenance lease).
pub fn fuzz_lease(data: &[u8]) {
    if let Ok(l) = prism_sync::format::lease::Lease::decode(data) {
        assert_canonical("lease", data, &l.encode());
        assert!(
            l.expires_ns > l.taken_ns,
            "a lease that expires before it was taken"
        );
    }
}

/// `Presence::decode` (a daemon's heartbeat for one endpoint of a sync set).
pub fn fuzz_presence(data: &[u8]) {
    if let Ok(p) = prism_sync::format::presence::Presence::decode(data) {
        assert_canonical("presence", data, &p.encode());
        assert!(
            p.heartbeat_ns >= p.started_ns && p.interval_ms > 0,
            "a presence with a heartbeat before its start or no interval"
        );
    }
}

/// `CatalogFile::decode` (a set's local snapshot catalog, without its MAC), the in-place
/// reader `CatalogView` (every accessor on whatever framing it accepts) and
/// `snapshot::catalog::open_catalog` (the MAC check in front of them).
pub fn fuzz_catalog(data: &[u8]) {
    use prism_sync::format::catalog::{CatalogFile, CatalogView};
    if let Ok(c) = CatalogFile::decode(data) {
        assert_canonical("catalog", data, &c.encode());
    }
    if let Ok(v) = CatalogView::parse(data.to_vec()) {
        let sorted = v.check_all().is_ok();
        for i in 0..v.len() {
            if let Ok(row) = v.row(i) {
                let _ = v.snapshot(i);
                let found = v.find(row.time_ns, &row.id);
                if sorted {
                    assert_eq!(found.ok(), Some(Some(i)), "rows are sorted");
                }
            }
        }
        let _ = v.partition(|r| r.time_ns <= 0);
        for i in 0..v.others_len() {
            let _ = v.other(i);
        }
        for j in 0..v.paths_len() {
            if let Ok(name) = v.path_name(j) {
                let _ = v.path_entry(j);
                let _ = v.versions_of(&name);
            }
        }
        let _ = v.versions_of(b"notes.txt");
    }
    if let Some(c) = prism_sync::snapshot::catalog::open_catalog(keys(), data) {
        assert_canonical(
            "sealed catalog",
            data,
            &prism_sync::snapshot::catalog::seal_catalog(keys(), &c),
        );
    }
}

/// `CacheEntry::decode` (a value of the local file cache).
pub fn fuzz_filecache(data: &[u8]) {
    if let Some(e) = CacheEntry::decode(data) {
        assert_canonical("file cache entry", data, &e.encode());
    }
}

/// `pack_codec::read_table` under the fixed keys.
pub fn fuzz_read_table(data: &[u8]) {
    if let Ok((salt, entries)) = prism_sync::repository::pack_codec::read_table(keys(), data) {
        assert_eq!(salt[..], data[16..layout::HEADER_LEN]);
        check_entries(&entries, data.len() as u64);
    }
}

/// `pack_codec::salvage` under the fixed keys.
pub fn fuzz_salvage(data: &[u8]) {
    if let Ok(found) = prism_sync::repository::pack_codec::salvage(keys(), data) {
        for s in found {
            let e = s.entry;
            assert!(e.offset as usize + e.length as usize <= data.len());
            if let Ok(plain) = s.plaintext {
                assert_eq!(plain.len(), e.raw_length as usize);
                assert_eq!(keys().blob_id(&plain), e.id);
            }
        }
    }
}

/// `repository::open_object` under the fixed keys, for every kind; what opens is then decoded as
/// its kind's plaintext.
pub fn fuzz_open_object(data: &[u8]) {
    for kind in OBJECT_KINDS {
        if let Ok(plain) = repository::open_object(keys(), kind, "x", data) {
            assert!(plain.len() <= OBJECT_PLAINTEXT_MAX);
            match kind {
                ObjectKind::Config => fuzz_config(&plain),
                ObjectKind::Index => fuzz_index(&plain),
                ObjectKind::Snapshot => fuzz_snapshot(&plain),
                ObjectKind::Session => fuzz_session(&plain),
                ObjectKind::Head => fuzz_head(&plain),
                ObjectKind::Lease => fuzz_lease(&plain),
                ObjectKind::Presence => fuzz_presence(&plain),
            }
        }
    }
}

/// The web app's reading of a request's query string and form fields (`ui::parse_query`,
/// `ui::pct_decode`): never a panic, and every path survives `pct_encode` and back.
pub fn fuzz_ui_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = prism_sync::ui::parse_query(Some(&text));
    let _ = prism_sync::ui::pct_decode(&text);
    let encoded = prism_sync::ui::pct_encode(data);
    assert!(encoded.is_ascii(), "an encoded path is ASCII: {encoded}");
    assert!(
        prism_sync::ui::pct_decode(&encoded) == data,
        "pct_encode does not round-trip {}",
        hex_encode(data)
    );
}
