//! A laptop and a workspace (two endpoints on one machine, each with its own home) keep a folder
//! in sync through an S3 bucket and through `prism-sync serve`, using only the CLI:
//! `init` / `sync` / `add-instance` / `join`.

mod servers;

use std::path::Path;

use servers::*;

/// Edits flow both ways; simultaneous edits of one file are kept as a conflict, not lost.
fn two_endpoints(laptop: Machine, ws: Machine, url: &str, tmp: &Path) {
    let lf = tmp.join("laptop-folder");
    let wf = tmp.join("ws-folder");
    write(&lf.join("analysis.py"), b"print('v1')\n");
    write(&lf.join("data/big.bin"), &bytes(1, 3 << 20));
    laptop.ok(&[
        "init",
        lf.to_str().unwrap(),
        "--repo",
        url,
        "--name",
        "proj",
    ]);
    laptop.ok(&["sync", "proj"]);
    ws.join_set(&laptop, "proj", "ws1", &wf, url);
    ws.ok(&["sync", "proj"]);
    assert_eq!(digest(&wf), digest(&lf), "the workspace got the folder");

    // The workspace produces results; the laptop edits code.
    write(&wf.join("results/out.csv"), b"a,b\n1,2\n");
    write(&lf.join("analysis.py"), b"print('v2')\n");
    ws.ok(&["sync", "proj"]);
    laptop.ok(&["sync", "proj"]);
    ws.ok(&["sync", "proj"]);
    assert_eq!(digest(&wf), digest(&lf), "both edits on both sides");
    assert_eq!(
        std::fs::read(wf.join("analysis.py")).unwrap(),
        b"print('v2')\n"
    );
    assert!(lf.join("results/out.csv").is_file());

    // A delete on one side propagates.
    std::fs::remove_file(lf.join("data/big.bin")).unwrap();
    laptop.ok(&["sync", "proj"]);
    ws.ok(&["sync", "proj"]);
    assert!(!wf.join("data/big.bin").exists());

    // Both edit the same file: nothing is lost.
    write(&lf.join("notes.md"), b"laptop\n");
    laptop.ok(&["sync", "proj"]);
    ws.ok(&["sync", "proj"]);
    write(&lf.join("notes.md"), b"laptop edit\n");
    write(&wf.join("notes.md"), b"workspace edit\n");
    laptop.ok(&["sync", "proj"]);
    let r = ws.run(&["sync", "proj"]);
    assert!(r.code == 0 || r.code == 3, "{}", r.stderr);
    let status = ws.ok(&["conflicts", "proj"]).stdout;
    assert!(status.contains("notes.md"), "{status}");
    assert_eq!(
        std::fs::read(wf.join("notes.md")).unwrap(),
        b"workspace edit\n"
    );
    laptop.ok(&["check", "--repo", url, "--read-data"]);
    let versions = laptop.ok(&["history", "proj", "analysis.py"]).stdout;
    assert!(versions.lines().count() >= 2, "{versions}");
}

#[test]
fn a_laptop_and_a_workspace_sync_through_s3() {
    let ep = s3_endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("s3://{}/sets", unique_bucket("sync"));
    let laptop = Machine::new(tmp.path().join("laptop-home")).with_s3(&ep);
    let ws = Machine::new(tmp.path().join("ws-home")).with_s3(&ep);
    two_endpoints(laptop, ws, &url, tmp.path());
}

#[test]
fn a_laptop_and_a_workspace_sync_through_serve() {
    let tmp = tempfile::tempdir().unwrap();
    // The workspace serves its (EFS) repository directory and syncs with it directly; the
    // laptop reaches it over TLS.
    let root = tmp.path().join("efs/prism");
    let server = Serve::start(tmp.path(), &root, true, false);
    let laptop = Machine::new(tmp.path().join("laptop-home")).with_token();
    let lf = tmp.path().join("laptop-folder");
    let wf = tmp.path().join("ws-folder");
    write(&lf.join("analysis.py"), b"print('v1')\n");
    laptop.ok(&[
        "init",
        lf.to_str().unwrap(),
        "--repo",
        &server.url,
        "--name",
        "proj",
    ]);
    laptop.ok(&["sync", "proj"]);
    let ws = Machine::new(tmp.path().join("ws-home"));
    ws.join_set(&laptop, "proj", "ws1", &wf, root.to_str().unwrap());
    ws.ok(&["sync", "proj"]);
    assert_eq!(digest(&wf), digest(&lf));
    write(&wf.join("results/r.txt"), b"42\n");
    ws.ok(&["sync", "proj"]);
    laptop.ok(&["sync", "proj"]);
    assert_eq!(digest(&wf), digest(&lf));

    // And both endpoints through serve (a second laptop-like endpoint).
    let tmp2 = tempfile::tempdir().unwrap();
    let server2 = Serve::start(tmp2.path(), &tmp2.path().join("repo"), false, false);
    let a = Machine::new(tmp2.path().join("a-home")).with_token();
    let b = Machine::new(tmp2.path().join("b-home")).with_token();
    two_endpoints(a, b, &server2.url, tmp2.path());
    drop(server);
}
