//! One conformance suite that every backend passes: create-only semantics, exact ranged reads,
//! listing, not-found errors, large objects, concurrent writers. Each backend is one line in
//! `backends()`.

mod servers;

use std::sync::Arc;

use prism_sync::backend::{Backend, DynBackend, ErrorKind, FsBackend, Kind, MemoryBackend};

/// Every backend, as `repository::open_backend` makes them (s3 and rest inside the retry wrapper): s3 on
/// the moto server `.ci/run` starts (PRISM_TEST_S3_ENDPOINT), rest on `prism-sync serve`
/// children (plain HTTP and TLS with a pinned certificate).
fn backends(tmp: &std::path::Path) -> Vec<(&'static str, DynBackend)> {
    let fs = Arc::new(FsBackend::new(tmp.join("fs-repo")));
    fs.prepare().unwrap();
    let s3 = servers::s3_endpoint();
    vec![
        ("memory", Arc::new(MemoryBackend::new())),
        ("fs", fs),
        ("s3", servers::s3_backend(&s3, "conformance")),
        ("rest", servers::rest_backend(tmp, false)),
        ("rest-tls", servers::rest_backend(tmp, true)),
    ]
}

fn name(i: u8) -> String {
    prism_sync::id::hex_encode(&[i; 32])
}

/// A head's name has the layout's form: 16 hex digits of the set's key, `-`, the snapshot id.
fn head_name(i: u8) -> String {
    format!("{}-{}", &name(i)[..16], name(i))
}

#[test]
fn create_is_write_once() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, b) in backends(tmp.path()) {
        b.create(Kind::Snapshot, &name(1), b"first").unwrap();
        let err = b.create(Kind::Snapshot, &name(1), b"second").unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists, "{label}");
        assert_eq!(
            b.read(Kind::Snapshot, &name(1)).unwrap(),
            b"first",
            "{label}: unchanged"
        );
        // Namespaces are separate.
        b.create(Kind::Index, &name(1), b"other kind").unwrap();
        assert_eq!(
            b.read(Kind::Index, &name(1)).unwrap(),
            b"other kind",
            "{label}"
        );
        // The config has its own fixed name.
        b.create(Kind::Config, "", b"cfg").unwrap();
        assert_eq!(b.read(Kind::Config, "").unwrap(), b"cfg", "{label}");
        assert_eq!(
            b.create(Kind::Config, "", b"cfg2").unwrap_err().kind,
            ErrorKind::AlreadyExists,
            "{label}"
        );
    }
}

#[test]
fn ranged_reads_are_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    for (label, b) in backends(tmp.path()) {
        b.create(Kind::Pack, &name(2), &data).unwrap();
        assert_eq!(
            b.read_range(Kind::Pack, &name(2), 0, 10).unwrap(),
            &data[..10],
            "{label}"
        );
        assert_eq!(
            b.read_range(Kind::Pack, &name(2), 9_990, 10).unwrap(),
            &data[9_990..],
            "{label}"
        );
        assert_eq!(
            b.read_range(Kind::Pack, &name(2), 1234, 0).unwrap(),
            b"",
            "{label}"
        );
        assert!(
            b.read_range(Kind::Pack, &name(2), 9_995, 10).is_err(),
            "{label}: reading past the end fails"
        );
    }
}

#[test]
fn listing_and_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, b) in backends(tmp.path()) {
        assert!(b.list(Kind::Pack).unwrap().is_empty(), "{label}");
        for i in 0..5u8 {
            b.create(Kind::Pack, &name(i), &vec![i; i as usize * 10])
                .unwrap();
        }
        let mut l = b.list(Kind::Pack).unwrap();
        l.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            l.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
            (0..5).map(name).collect::<Vec<_>>(),
            "{label}"
        );
        assert_eq!(
            l.iter().map(|o| o.size).collect::<Vec<_>>(),
            vec![0, 10, 20, 30, 40],
            "{label}"
        );
        assert!(
            b.list(Kind::Snapshot).unwrap().is_empty(),
            "{label}: other kinds unaffected"
        );
        assert!(
            b.read(Kind::Pack, &name(9)).unwrap_err().is_not_found(),
            "{label}"
        );
        assert!(
            b.read_range(Kind::Pack, &name(9), 0, 1)
                .unwrap_err()
                .is_not_found(),
            "{label}"
        );
        assert!(
            b.delete(Kind::Pack, &name(9)).unwrap_err().is_not_found(),
            "{label}"
        );
        b.delete(Kind::Pack, &name(3)).unwrap();
        assert_eq!(b.list(Kind::Pack).unwrap().len(), 4, "{label}");
        assert!(
            b.read(Kind::Pack, &name(3)).unwrap_err().is_not_found(),
            "{label}"
        );
        // Invalid names are refused, not mapped somewhere surprising.
        assert!(
            b.create(Kind::Snapshot, "../escape", b"x").is_err(),
            "{label}"
        );
        assert!(
            b.create(Kind::Snapshot, ".hidden", b"x").is_err(),
            "{label}"
        );
    }
}

/// `list_unless`: the names and their tag when the tag given differs (the empty one always
/// does), nothing when it is the tag of the current names; any create or delete changes it.
#[test]
fn listing_unless_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, b) in backends(tmp.path()) {
        for i in 0..3u8 {
            b.create(Kind::Snapshot, &name(i), b"s").unwrap();
        }
        let first = b
            .list_unless(Kind::Snapshot, "")
            .unwrap()
            .unwrap_or_else(|| panic!("{label}: the empty tag matches nothing"));
        let mut names = first.names.clone();
        names.sort();
        assert_eq!(names, (0..3).map(name).collect::<Vec<_>>(), "{label}");
        assert_eq!(
            first.tag,
            prism_sync::backend::listing_tag(&names),
            "{label}"
        );
        assert!(
            b.list_unless(Kind::Snapshot, &first.tag).unwrap().is_none(),
            "{label}: unchanged"
        );
        b.create(Kind::Snapshot, &name(7), b"s").unwrap();
        let added = b.list_unless(Kind::Snapshot, &first.tag).unwrap();
        assert_eq!(added.as_ref().map(|l| l.names.len()), Some(4), "{label}");
        let added = added.unwrap();
        b.delete(Kind::Snapshot, &name(0)).unwrap();
        let removed = b.list_unless(Kind::Snapshot, &added.tag).unwrap();
        assert_eq!(removed.map(|l| l.names.len()), Some(3), "{label}");
    }
}

#[test]
fn large_objects_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 40 << 20];
    blake3::Hasher::new()
        .update(b"large")
        .finalize_xof()
        .fill(&mut data);
    for (label, b) in backends(tmp.path()) {
        b.create(Kind::Pack, &name(7), &data).unwrap();
        assert!(b.read(Kind::Pack, &name(7)).unwrap() == data, "{label}");
        assert!(
            b.read_range(Kind::Pack, &name(7), 30 << 20, 1 << 20)
                .unwrap()
                == data[30 << 20..31 << 20],
            "{label}"
        );
    }
}

#[test]
fn concurrent_creators_of_one_name_have_exactly_one_winner() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, b) in backends(tmp.path()) {
        for round in 0..20u8 {
            let winners: usize = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8u8)
                    .map(|t| {
                        let b = b.clone();
                        s.spawn(move || {
                            b.create(Kind::Head, &head_name(round), &[t; 100]).is_ok() as usize
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            if label == "s3" {
                // S3 servers decide this race, not the backend: moto (like s3s-fs) checks
                // If-None-Match and then stores (moto/s3/responses.py put_object), so under load
                // two writers can both succeed. The repository never depends on winning such a
                // race (format-spec/media.md); what must hold is one writer's complete bytes.
                assert!(winners >= 1, "{label}: round {round}: no winner");
            } else {
                assert_eq!(winners, 1, "{label}: round {round}");
            }
            let got = b.read(Kind::Head, &head_name(round)).unwrap();
            assert!(
                got.iter().all(|&x| x == got[0]) && got.len() == 100,
                "{label}: one writer's complete bytes"
            );
        }
    }
}

#[test]
fn concurrent_creators_of_distinct_names_all_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, b) in backends(tmp.path()) {
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let b = b.clone();
                s.spawn(move || {
                    for i in 0..25u8 {
                        b.create(Kind::Pack, &name(t * 25 + i), &[t, i]).unwrap();
                    }
                });
            }
        });
        assert_eq!(b.list(Kind::Pack).unwrap().len(), 200, "{label}");
    }
}

#[test]
fn fs_backend_leaves_no_temp_files_and_ignores_them_in_listings() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    let b = FsBackend::new(&root);
    b.prepare().unwrap();
    b.create(Kind::Index, &name(1), b"x").unwrap();
    let stray: Vec<_> = std::fs::read_dir(root.join("index"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(stray.len(), 1, "only the object, no temp file: {stray:?}");
    std::fs::write(root.join("index/.tmp-leftover"), b"partial").unwrap();
    assert_eq!(b.list(Kind::Index).unwrap().len(), 1);
    // Objects are read-only on disk.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("index").join(name(1)))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0, "objects are not writable");
    // prepare refuses a non-empty directory that is not a repository.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("thesis.tex"), b"precious").unwrap();
    assert!(FsBackend::new(&other).prepare().is_err());
}
