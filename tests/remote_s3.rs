//! The s3 backend against a real S3 server (moto on 127.0.0.1, PRISM_TEST_S3_ENDPOINT): the
//! conditional-write probe (and a server that ignores the headers), create without a proven
//! capability, multipart uploads, listing pagination, and every repository command through the
//! CLI.

mod servers;

use std::sync::Arc;

use prism_sync::backend::{Backend, DynBackend, ErrorKind, Kind, S3Backend};
use prism_sync::format::config::Capabilities;
use prism_sync::repository::{Credentials, InitOptions, Repository};
use servers::*;

fn name(i: u32) -> String {
    prism_sync::id::hex_encode(blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

fn raw(endpoint: &str, tag: &str) -> S3Backend {
    let url = format!("s3://{}/p", unique_bucket(tag));
    let b = S3Backend::open_with(&url, overrides(endpoint)).unwrap();
    b.prepare().unwrap();
    b
}

#[test]
fn the_probe_proves_conditional_writes_on_moto_and_init_records_them() {
    let ep = s3_endpoint();
    let b = raw(&ep, "probe");
    let caps = b.probe().unwrap();
    assert_eq!(
        caps,
        Capabilities(Capabilities::CREATE_ONLY | Capabilities::COMPARE_AND_SWAP)
    );
    // The probe leaves nothing behind, and init records what it proved.
    assert!(b.list(Kind::Pack).unwrap().is_empty());
    let tmp = tempfile::tempdir().unwrap();
    let creds = Credentials {
        password: None,
        local_keys_dir: tmp.path().join("keys"),
    };
    let backend: DynBackend = Arc::new(b);
    let repo = Repository::init(backend.clone(), &creds, &InitOptions::default()).unwrap();
    assert_eq!(repo.config().capabilities, caps);
    let repo = Repository::open(backend, &creds).unwrap();
    assert_eq!(repo.config().capabilities, caps);
}

#[test]
fn a_server_that_ignores_conditional_headers_is_detected_and_not_relied_on() {
    let ep = s3_endpoint();
    // The proxy drops If-None-Match and If-Match: the server "accepts and ignores" them.
    let proxy = Proxy::new(port_of(&ep), true, None);
    let b = raw(&proxy.endpoint(), "ignoring");
    assert_eq!(b.probe().unwrap(), Capabilities(0));
    let tmp = tempfile::tempdir().unwrap();
    let creds = Credentials {
        password: None,
        local_keys_dir: tmp.path().join("keys"),
    };
    let backend: DynBackend = Arc::new(b);
    let repo = Repository::init(backend.clone(), &creds, &InitOptions::default()).unwrap();
    assert_eq!(repo.config().capabilities, Capabilities(0));
    // Create-only still holds without concurrency (HEAD, then PUT).
    backend.create(Kind::Head, &name(1), b"first").unwrap();
    let e = backend.create(Kind::Head, &name(1), b"second").unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert_eq!(backend.read(Kind::Head, &name(1)).unwrap(), b"first");
}

#[test]
fn without_a_proven_capability_create_is_head_then_put() {
    let ep = s3_endpoint();
    let b = raw(&ep, "unproven");
    b.create(Kind::Snapshot, &name(1), b"one").unwrap();
    assert_eq!(
        b.create(Kind::Snapshot, &name(1), b"two").unwrap_err().kind,
        ErrorKind::AlreadyExists
    );
    assert_eq!(b.read(Kind::Snapshot, &name(1)).unwrap(), b"one");
}

#[test]
fn large_objects_go_up_in_parts_and_create_only_holds_for_them() {
    let ep = s3_endpoint();
    let b = raw(&ep, "multipart").with_multipart(8 << 20, 5 << 20);
    b.use_capabilities(b.probe().unwrap());
    let data = bytes(1, (20 << 20) + 12345);
    b.create(Kind::Pack, &name(1), &data).unwrap();
    assert!(b.read(Kind::Pack, &name(1)).unwrap() == data);
    assert!(
        b.read_range(Kind::Pack, &name(1), 10 << 20, 6 << 20)
            .unwrap()
            == data[10 << 20..16 << 20]
    );
    let other = bytes(2, 18 << 20);
    let e = b.create(Kind::Pack, &name(1), &other).unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert!(b.read(Kind::Pack, &name(1)).unwrap() == data, "unchanged");
    assert_eq!(b.list(Kind::Pack).unwrap()[0].size, data.len() as u64);
}

#[test]
fn listings_page_through_more_than_a_thousand_objects() {
    let ep = s3_endpoint();
    let b: DynBackend = Arc::new(raw(&ep, "pages"));
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let b = b.clone();
            s.spawn(move || {
                for i in 0..140u32 {
                    b.create(Kind::Index, &name(t * 1000 + i), b"x").unwrap();
                }
            });
        }
    });
    let l = b.list(Kind::Index).unwrap();
    assert_eq!(l.len(), 1120);
    assert!(l.windows(2).all(|w| w[0].name < w[1].name));
    // Packs are listed through their two-character subdirectories.
    b.create(Kind::Pack, &name(5), b"p").unwrap();
    assert_eq!(b.list(Kind::Pack).unwrap()[0].name, name(5));
}

#[test]
fn every_repository_command_works_on_s3() {
    let ep = s3_endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let m = Machine::new(tmp.path().join("home"))
        .with_s3(&ep)
        .var("PRISM_SYNC_PASSWORD", "pw-1");
    let url = format!("s3://{}/research/repo", unique_bucket("cli"));
    let src = tmp.path().join("src");
    write(&src.join("notes.md"), b"hello s3\n");
    write(&src.join("data/a.bin"), &bytes(3, 3 << 20));
    let out = m
        .ok(&["repo", "init", "--repo", &url, "--pack-size", "1"])
        .stdout;
    assert!(out.contains("✅ Repository created at s3://"), "{out}");
    let first = m
        .ok(&["backup", "--repo", &url, "-q", src.to_str().unwrap()])
        .stdout;
    write(&src.join("notes.md"), b"hello again\n");
    m.ok(&["backup", "--repo", &url, src.to_str().unwrap()]);
    let snaps: serde_json::Value =
        serde_json::from_str(&m.ok(&["snapshots", "--repo", &url, "--json"]).stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let ls = m.ok(&["ls", "--repo", &url, "latest"]).stdout;
    assert!(ls.contains("a.bin"), "{ls}");
    let dump = m.ok(&["dump", "--repo", &url, "latest", "notes.md"]).stdout;
    assert_eq!(dump, "hello again\n");
    m.ok(&["diff", "--repo", &url, first.trim(), "latest"]);
    let target = tmp.path().join("restored");
    m.ok(&[
        "restore",
        "--repo",
        &url,
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(digest(&target), digest(&src));
    m.ok(&["check", "--repo", &url, "--read-data"]);
    m.ok(&["stats", "--repo", &url]);
    let mut add = m.command(&["key", "add", "--repo", &url]);
    add.env("PRISM_SYNC_NEW_PASSWORD", "pw-2");
    assert!(add.output().unwrap().status.success());
    let keys: serde_json::Value =
        serde_json::from_str(&m.ok(&["key", "list", "--repo", &url, "--json"]).stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    m.ok(&["forget", "--repo", &url, "--keep-last", "1", "--prune"]);
    m.ok(&["check", "--repo", &url, "--read-data"]);
    let snaps: serde_json::Value =
        serde_json::from_str(&m.ok(&["snapshots", "--repo", &url, "--json"]).stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
}

#[test]
fn bad_urls_missing_buckets_and_dead_endpoints_get_clear_errors() {
    let ep = s3_endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let m = Machine::new(tmp.path().join("home")).with_s3(&ep);
    let r = m.run(&["snapshots", "--repo", "s3://Bad_Bucket/x"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not a valid bucket name"), "{}", r.stderr);
    let r = m.run(&[
        "snapshots",
        "--repo",
        &format!("s3://{}/x", unique_bucket("absent")),
    ]);
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert!(r.stderr.contains("no repository at s3://"), "{}", r.stderr);
    // Nothing listens: a quick, clear failure (not minutes of retries).
    let dead = Machine::new(tmp.path().join("home2"))
        .with_s3(&format!("http://127.0.0.1:{}", free_port()));
    let t = std::time::Instant::now();
    let r = dead.run(&["snapshots", "--repo", "s3://some-bucket/x"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("AWS_ENDPOINT_URL"), "{}", r.stderr);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        t.elapsed()
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}
