//! Remote repositories at the speed of the link, counted rather than timed: the real binary
//! against a real `prism-sync serve --log-requests` on 127.0.0.1, whose request log says what
//! each command asked for. (The timed comparison with restic over a slow link is
//! `benches/wan.sh`; see benches/README.md.)
//!
//! Guards:
//! - a restore or a workspace's first sync reads data by pack (a few ranged reads), not one
//!   request per blob;
//! - the metadata cache: a second command on a machine fetches no index file, snapshot or tree
//!   pack it has seen; a damaged cache entry is detected, fetched again and repaired;
//! - a no-change sync step costs the same requests after 50 steps of history as after 5;
//! - connections (TLS handshakes) are reused, not made per request;
//! - `--limit-upload` / `--limit-download` / a set's `limit_upload` hold.

mod servers;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use servers::*;

/// A tree of `n` small files (1–6 KiB), a few duplicates and one 3 MiB file.
fn tree(root: &Path, n: usize) {
    for i in 0..n {
        let len = 1024 + (i * 997) % 5000;
        write(
            &root.join(format!("d{}/f{i:04}.txt", i % 7)),
            &bytes(i as u64, len),
        );
    }
    write(&root.join("copies/a.txt"), &bytes(1, 2000));
    write(&root.join("copies/b.txt"), &bytes(1, 2000));
    write(&root.join("big/data.bin"), &bytes(99, 3 << 20));
}

fn count(reqs: &[(String, String)], method: &str, prefix: &str) -> usize {
    reqs.iter()
        .filter(|(m, p)| m == method && p.starts_with(prefix))
        .count()
}

/// Object reads (not listings) of a namespace: `GET /index/<name>`.
fn reads(reqs: &[(String, String)], dir: &str) -> usize {
    let prefix = format!("/{dir}/");
    reqs.iter()
        .filter(|(m, p)| m == "GET" && p.len() > prefix.len() && p.starts_with(&prefix))
        .count()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    server: Serve,
    src: PathBuf,
}

fn setup(tls: bool) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let server = Serve::start_logged(&root.join("srv"), &root.join("served"), tls);
    let laptop = Machine::new(root.join("laptop"))
        .with_token()
        .var("PRISM_SYNC_PASSWORD", "wan smoke");
    let src = root.join("src");
    tree(&src, 400);
    laptop.ok(&["repo", "init", "--repo", &server.url, "--pack-size", "1"]);
    laptop.ok(&["backup", "--repo", &server.url, src.to_str().unwrap()]);
    Setup {
        _tmp: tmp,
        root,
        server,
        src,
    }
}

#[test]
fn a_restore_on_a_new_machine_reads_by_pack_and_a_second_reads_no_metadata() {
    let s = setup(false);
    let url = &s.server.url;
    // Data and tree packs (all live under data/).
    let data_packs: usize = std::fs::read_dir(s.server.root.join("data"))
        .unwrap()
        .map(|d| files_in(&d.unwrap().path()))
        .sum();
    // ~4.5 MiB in packs of 1 MiB; how many depends on how the parallel packers were fed.
    assert!(data_packs >= 3, "{data_packs} packs");

    let other = Machine::new(s.root.join("other"))
        .with_token()
        .var("PRISM_SYNC_PASSWORD", "wan smoke");
    let before = s.server.requests().len();
    let target = s.root.join("restored");
    other.ok(&[
        "restore",
        "--repo",
        url,
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(digest(&target), digest(&s.src));
    let reqs = s.server.requests()[before..].to_vec();
    // 402 files and a 3 MiB one in ~6 packs of 1 MiB: every pack read in one or two ranges
    // (ranges are at most 4 MiB, neighbours coalesce), never once per blob.
    let data_gets = count(&reqs, "GET", "/data/");
    eprintln!(
        "restore: {} requests, {data_gets} pack reads, {data_packs} data packs",
        reqs.len()
    );
    assert!(
        data_gets <= data_packs + 2,
        "{data_gets} pack reads for {data_packs} packs: {reqs:?}"
    );
    assert!(
        reqs.len() <= data_gets + 12,
        "{} requests: {reqs:?}",
        reqs.len()
    );

    // The same machine again: index, snapshot and tree packs come from its cache.
    let before = s.server.requests().len();
    let again = s.root.join("restored-again");
    other.ok(&[
        "restore",
        "--repo",
        url,
        "latest",
        "--target",
        again.to_str().unwrap(),
    ]);
    assert_eq!(digest(&again), digest(&s.src));
    let reqs = s.server.requests()[before..].to_vec();
    assert_eq!(reads(&reqs, "index"), 0, "{reqs:?}");
    assert_eq!(reads(&reqs, "snapshots"), 0, "{reqs:?}");
    assert!(
        count(&reqs, "GET", "/data/") <= data_gets,
        "tree packs are not fetched again: {reqs:?}"
    );

    // The cache is private and lives under the home.
    use std::os::unix::fs::PermissionsExt;
    let cache = other.home.join("sync/cache");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "one repository's cache: {dirs:?}");
    for d in [cache.clone(), dirs[0].clone(), dirs[0].join("trees")] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    let mut cached = 0;
    for kind in ["index", "snapshots", "trees"] {
        for e in std::fs::read_dir(dirs[0].join(kind)).unwrap() {
            let mode = e.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            cached += 1;
        }
    }
    assert!(cached >= 3, "index, snapshot and tree pack cached");
}

#[test]
fn a_damaged_cache_entry_is_detected_fetched_again_and_repaired() {
    let s = setup(false);
    let url = &s.server.url;
    let m = Machine::new(s.root.join("other"))
        .with_token()
        .var("PRISM_SYNC_PASSWORD", "wan smoke");
    m.ok(&["ls", "--repo", url, "latest"]); // fills the cache
    let cache = std::fs::read_dir(m.home.join("sync/cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let mut damaged = Vec::new();
    for kind in ["index", "snapshots", "trees"] {
        for (i, e) in std::fs::read_dir(cache.join(kind)).unwrap().enumerate() {
            let p = e.unwrap().path();
            let mut b = std::fs::read(&p).unwrap();
            if i % 2 == 0 {
                // Flip bytes in the middle (and at the end, where a blob's tag may be).
                let mid = b.len() / 2;
                b[mid] ^= 0xff;
                let last = b.len() - 1;
                b[last] ^= 0xff;
            } else {
                b.truncate(b.len() / 3);
            }
            std::fs::write(&p, &b).unwrap();
            damaged.push(p);
        }
    }
    assert!(damaged.len() >= 3);
    let target = s.root.join("restored");
    m.ok(&[
        "restore",
        "--repo",
        url,
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(digest(&target), digest(&s.src));
    // Every damaged entry was replaced by the server's bytes (named by their hash).
    for p in damaged {
        let b = std::fs::read(&p).unwrap();
        assert_eq!(
            blake3::hash(&b).to_hex().as_str(),
            p.file_name().unwrap().to_str().unwrap(),
            "{} repaired",
            p.display()
        );
    }
}

#[test]
fn a_workspace_first_sync_reads_by_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Serve::start_logged(&root.join("srv"), &root.join("served"), false);
    let url = server.url.clone();
    let laptop = Machine::new(root.join("laptop")).with_token();
    let ws = Machine::new(root.join("ws")).with_token();
    let folder = root.join("folder");
    tree(&folder, 300);
    laptop.ok(&[
        "init",
        folder.to_str().unwrap(),
        "--name",
        "set",
        "--repo",
        &url,
    ]);
    laptop.ok(&["sync", "set"]);
    let ws_folder = root.join("ws-folder");
    ws.join_set(&laptop, "set", "ws", &ws_folder, &url);
    let before = server.requests().len();
    ws.ok(&["sync", "set"]);
    assert_eq!(digest(&ws_folder), digest(&folder));
    let reqs = server.requests()[before..].to_vec();
    let data_gets = count(&reqs, "GET", "/data/");
    // 300 files in one 16 MiB data pack and a tree pack or two: a handful of ranged reads.
    assert!(data_gets <= 6, "{data_gets} pack reads: {reqs:?}");
    assert!(reqs.len() <= 30, "{} requests: {reqs:?}", reqs.len());
}

#[test]
fn no_change_steps_cost_the_same_requests_however_long_the_history() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Serve::start_logged(&root.join("srv"), &root.join("served"), false);
    let url = server.url.clone();
    let laptop = Machine::new(root.join("laptop")).with_token();
    let folder = root.join("folder");
    write(&folder.join("start.txt"), b"0");
    laptop.ok(&[
        "init",
        folder.to_str().unwrap(),
        "--name",
        "set",
        "--repo",
        &url,
    ]);
    laptop.ok(&["sync", "set"]);
    const STEPS: usize = 50;
    let mut costs = Vec::new();
    for i in 0..STEPS {
        // History grows: every round publishes a new snapshot (and trees, index files).
        write(
            &folder.join(format!("d{}/edit-{i}.txt", i % 5)),
            format!("edit {i}").as_bytes(),
        );
        laptop.ok(&["sync", "set"]);
        let before = server.requests().len();
        laptop.ok(&["sync", "set"]);
        let reqs = server.requests()[before..].to_vec();
        costs.push(reqs);
    }
    let (fifth, last) = (&costs[4], &costs[STEPS - 1]);
    eprintln!("a no-change step: {} requests: {last:?}", last.len());
    assert_eq!(
        fifth.len(),
        last.len(),
        "a no-change step after 5 rounds: {fifth:?}\nafter {STEPS}: {last:?}"
    );
    // None of them reads an index file, a snapshot or a tree pack: the cache has them all.
    for reqs in &costs[1..] {
        assert_eq!(
            reads(reqs, "index") + reads(reqs, "snapshots"),
            0,
            "{reqs:?}"
        );
        assert_eq!(count(reqs, "GET", "/data/"), 0, "{reqs:?}");
    }
}

#[test]
fn connections_and_tls_handshakes_are_reused() {
    let s = setup(true);
    let m = Machine::new(s.root.join("other"))
        .with_token()
        .var("PRISM_SYNC_PASSWORD", "wan smoke")
        .var(
            "PRISM_SYNC_REST_FINGERPRINT",
            s.server.fingerprint.as_deref().unwrap(),
        );
    let (conns, reqs) = (s.server.connections(), s.server.requests().len());
    let target = s.root.join("restored");
    m.ok(&[
        "restore",
        "--repo",
        &s.server.url,
        "--connections",
        "3",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(digest(&target), digest(&s.src));
    let handshakes = s.server.connections() - conns;
    let requests = s.server.requests().len() - reqs;
    eprintln!("{requests} requests over {handshakes} TLS connections");
    assert!(requests >= 10, "{requests} requests");
    // At most one connection per request in flight (3), however many requests.
    assert!(
        handshakes <= 3,
        "{handshakes} TLS handshakes for {requests} requests"
    );
}

#[test]
fn bandwidth_limits_hold_for_commands_and_sync_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Serve::start_logged(&root.join("srv"), &root.join("served"), false);
    let url = server.url.clone();
    let m = Machine::new(root.join("m"))
        .with_token()
        .var("PRISM_SYNC_PASSWORD", "limits");
    let src = root.join("src");
    write(&src.join("one.bin"), &bytes(5, 1 << 20)); // incompressible
    m.ok(&["repo", "init", "--repo", &url]);
    // 1 MiB at 256 KiB/s: at least 4 s (a little slack for timer rounding).
    const SLACK: Duration = Duration::from_millis(300);
    let t = Instant::now();
    m.ok(&[
        "backup",
        "--repo",
        &url,
        "--limit-upload",
        "256",
        src.to_str().unwrap(),
    ]);
    let up = t.elapsed();
    assert!(up >= Duration::from_secs(4) - SLACK, "upload took {up:?}");
    let t = Instant::now();
    let target = root.join("restored");
    m.ok(&[
        "restore",
        "--repo",
        &url,
        "--limit-download",
        "256",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    let down = t.elapsed();
    assert!(
        down >= Duration::from_secs(4) - SLACK,
        "download took {down:?}"
    );
    assert_eq!(digest(&target), digest(&src));

    // A sync set's config carries its own limit, honoured by `sync` (and by the daemon, which
    // opens the repository the same way).
    let folder = root.join("folder");
    write(&folder.join("seed.txt"), b"seed");
    m.ok(&[
        "init",
        folder.to_str().unwrap(),
        "--name",
        "lim",
        "--repo",
        &url,
    ]);
    m.ok(&["sync", "lim"]);
    let cfg = m.home.join("sync/lim.yml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}limit_upload: 256\n")).unwrap();
    write(&folder.join("new.bin"), &bytes(6, 1 << 20));
    let t = Instant::now();
    m.ok(&["sync", "lim"]);
    let step = t.elapsed();
    assert!(
        step >= Duration::from_secs(4) - SLACK,
        "a step with limit_upload 256 took {step:?}"
    );
    // Nonsense is refused with the fix.
    let r = m.run(&["snapshots", "--repo", &url, "--limit-upload", "0"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("limit-upload"), "{}", r.stderr);
}
