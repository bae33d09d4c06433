//! Servers going away in the middle of a backup and of a sync step, with real processes:
//!
//! - S3: the test's own moto behind a restartable TCP proxy (moto keeps its objects only in
//!   memory, so "restarting" S3 is the endpoint going down — listener closed, every connection
//!   cut — and coming back); the proxy also slows uploads so that the outage lands mid-backup.
//! - serve: the `prism-sync serve` process is SIGKILLed and started again on the same port,
//!   with the same token and kept certificate.
//!
//! Each run must either finish (the retry layer rides out the outage) or fail cleanly with an
//! error naming the problem; afterwards `check --read-data` passes and every snapshot that was
//! reported restores bit for bit.

mod servers;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use prism_sync::backend::{Backend, Kind, S3Backend};
use servers::*;

/// Uploads are slowed to this rate so that a backup takes seconds, not milliseconds.
const RATE_BYTES_PER_SEC: u64 = 6 << 20;
const OUTAGE: Duration = Duration::from_secs(3);

fn spawn(m: &Machine, args: &[&str]) -> Child {
    m.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child, max: Duration) -> Run {
    let start = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > max {
            let _ = child.kill();
            panic!("the command did not finish within {max:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Waits until `count()` reaches `n` while `child` still runs; false if the child finished
/// first (the outage would not be "in the middle").
fn wait_until(child: &mut Child, n: usize, count: impl Fn() -> usize) -> bool {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if count() >= n {
            return true;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress: only {} objects after 120 s",
            count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn make_data(root: &Path, seed: u64, files: u64) {
    for i in 0..files {
        write(
            &root.join(format!("data/part-{i}.bin")),
            &bytes(seed + i, 4 << 20),
        );
    }
    write(&root.join("notes.md"), format!("seed {seed}\n").as_bytes());
}

fn fs_pack_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("data"))
        .map(|rd| {
            rd.flatten()
                .map(|d| {
                    std::fs::read_dir(d.path())
                        .map(|r| {
                            r.flatten()
                                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                                .count()
                        })
                        .unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

fn check_and_restore(
    m: &Machine,
    url: &str,
    src_digest: &std::collections::BTreeMap<String, String>,
    scratch: &Path,
) {
    m.ok(&["check", "--repo", url, "--read-data"]);
    let target = scratch.join(format!(
        "restore-{}",
        prism_sync::id::hex_encode(&prism_sync::crypto::random_bytes::<4>())
    ));
    m.ok(&[
        "restore",
        "--repo",
        url,
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(
        &digest(&target),
        src_digest,
        "the snapshot restores bit for bit"
    );
}

#[test]
fn an_s3_outage_in_the_middle_of_a_backup_is_ridden_out() {
    let moto = Moto::start();
    let proxy = Proxy::new(moto.port, false, Some(RATE_BYTES_PER_SEC));
    let tmp = tempfile::tempdir().unwrap();
    let m = Machine::new(tmp.path().join("home")).with_s3(&proxy.endpoint());
    let url = format!("s3://{}/repo", unique_bucket("outage"));
    m.ok(&["repo", "init", "--repo", &url, "--pack-size", "1"]);
    let src = tmp.path().join("src");
    make_data(&src, 1, 6);
    let direct = S3Backend::open_with(&url, overrides(&moto.endpoint())).unwrap();
    let started = Instant::now();
    let mut child = spawn(&m, &["backup", "--repo", &url, src.to_str().unwrap()]);
    assert!(
        wait_until(&mut child, 4, || direct
            .list(Kind::Pack)
            .map_or(0, |l| l.len())),
        "the backup finished before the outage"
    );
    proxy.stop();
    std::thread::sleep(OUTAGE);
    proxy.start();
    let r = finish(child, Duration::from_secs(180)).ok("backup across an S3 outage");
    assert!(started.elapsed() > OUTAGE);
    assert!(r.stdout.to_lowercase().contains("snapshot"), "{}", r.stdout);
    check_and_restore(&m, &url, &digest(&src), tmp.path());
}

#[test]
fn an_s3_outage_in_the_middle_of_a_sync_step_is_ridden_out() {
    let moto = Moto::start();
    let proxy = Proxy::new(moto.port, false, Some(RATE_BYTES_PER_SEC));
    let tmp = tempfile::tempdir().unwrap();
    let laptop = Machine::new(tmp.path().join("laptop")).with_s3(&proxy.endpoint());
    let url = format!("s3://{}/repo", unique_bucket("syncoutage"));
    laptop.ok(&["repo", "init", "--repo", &url, "--pack-size", "1"]);
    let folder = tmp.path().join("folder");
    make_data(&folder, 10, 6);
    laptop.ok(&[
        "init",
        folder.to_str().unwrap(),
        "--repo",
        &url,
        "--name",
        "proj",
    ]);
    let direct = S3Backend::open_with(&url, overrides(&moto.endpoint())).unwrap();
    let mut child = spawn(&laptop, &["sync", "proj"]);
    assert!(
        wait_until(&mut child, 4, || direct
            .list(Kind::Pack)
            .map_or(0, |l| l.len())),
        "the sync step finished before the outage"
    );
    proxy.stop();
    std::thread::sleep(OUTAGE);
    proxy.start();
    finish(child, Duration::from_secs(180)).ok("sync step across an S3 outage");
    // A workspace joins through the same bucket and gets everything.
    let ws = Machine::new(tmp.path().join("ws")).with_s3(&moto.endpoint());
    let ws_folder = tmp.path().join("ws-folder");
    ws.join_set(&laptop, "proj", "ws1", &ws_folder, &url);
    ws.ok(&["sync", "proj"]);
    assert_eq!(digest(&ws_folder), digest(&folder));
    laptop.ok(&["check", "--repo", &url, "--read-data"]);
}

#[test]
fn serve_killed_and_restarted_in_the_middle_of_a_backup_and_a_sync_step() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("served");
    let mut server = Serve::start(tmp.path(), &root, true, false);
    // The proxy slows the upload so the crash lands in the middle; the URL keeps the pin.
    let proxy = Proxy::new(server.port, false, Some(RATE_BYTES_PER_SEC));
    let url = server
        .url
        .replace(&format!(":{}/", server.port), &format!(":{}/", proxy.port));
    let m = Machine::new(tmp.path().join("laptop")).with_token();
    m.ok(&["repo", "init", "--repo", &url, "--pack-size", "1"]);
    let src = tmp.path().join("src");
    make_data(&src, 20, 6);
    let mut child = spawn(&m, &["backup", "--repo", &url, src.to_str().unwrap()]);
    assert!(
        wait_until(&mut child, 4, || fs_pack_count(&root)),
        "the backup finished before the crash"
    );
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    finish(child, Duration::from_secs(180)).ok("backup across a serve crash");
    check_and_restore(&m, &url, &digest(&src), tmp.path());

    // The same for a sync step.
    let folder = tmp.path().join("folder");
    make_data(&folder, 30, 6);
    m.ok(&[
        "init",
        folder.to_str().unwrap(),
        "--repo",
        &url,
        "--name",
        "proj",
    ]);
    let before = fs_pack_count(&root);
    let mut child = spawn(&m, &["sync", "proj"]);
    assert!(
        wait_until(&mut child, before + 4, || fs_pack_count(&root)),
        "the sync step finished before the crash"
    );
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    finish(child, Duration::from_secs(180)).ok("sync step across a serve crash");
    let ws_folder = tmp.path().join("ws-folder");
    let ws = Machine::new(tmp.path().join("ws")).with_token();
    ws.join_set(&m, "proj", "ws1", &ws_folder, &url);
    ws.ok(&["sync", "proj"]);
    assert_eq!(digest(&ws_folder), digest(&folder));
    m.ok(&["check", "--repo", &url, "--read-data"]);
}

#[test]
fn serve_gone_for_good_fails_a_backup_cleanly_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("served");
    let mut server = Serve::start(tmp.path(), &root, false, false);
    let proxy = Proxy::new(server.port, false, Some(RATE_BYTES_PER_SEC));
    let url = format!("rest:http://127.0.0.1:{}/", proxy.port);
    let m = Machine::new(tmp.path().join("laptop"))
        .with_token()
        .var("PRISM_SYNC_RETRY_SECS", "4");
    m.ok(&["repo", "init", "--repo", &url, "--pack-size", "1"]);
    let src = tmp.path().join("src");
    write(&src.join("small.txt"), b"first state\n");
    m.ok(&["backup", "--repo", &url, src.to_str().unwrap()]);
    let first = digest(&src);
    make_data(&src, 40, 6);
    let before = fs_pack_count(&root);
    let started = Instant::now();
    let mut child = spawn(&m, &["backup", "--repo", &url, src.to_str().unwrap()]);
    assert!(
        wait_until(&mut child, before + 3, || fs_pack_count(&root)),
        "the backup finished before the crash"
    );
    server.kill();
    let r = finish(child, Duration::from_secs(120));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("gave up after"), "{}", r.stderr);
    assert!(r.stderr.contains("prism-sync serve"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(started.elapsed() < Duration::from_secs(60));
    server.restart();
    // Nothing acknowledged is lost: the first snapshot is intact, check passes.
    let snaps: serde_json::Value =
        serde_json::from_str(&m.ok(&["snapshots", "--repo", &url, "--json"]).stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    check_and_restore(&m, &url, &first, tmp.path());
    // And the next backup completes.
    m.ok(&["backup", "--repo", &url, src.to_str().unwrap()]);
    check_and_restore(&m, &url, &digest(&src), tmp.path());
}
