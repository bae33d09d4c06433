//! Maintenance of a set whose repository is reached through `serve --append-only`: every
//! delete of data is refused there, so retention and prune cannot run from this endpoint.
//! They used to fail on every attempt (a warning per `sync`, an error in `status`); now they
//! are skipped and `status` says why, once, with the fix.

mod servers;

use std::time::Duration;

use servers::*;

const SKIPPED: &str = "repository is append-only; run prune where the repository lives";

#[test]
fn maintenance_through_an_append_only_server_is_skipped_and_said_once() {
    let tmp = tempfile::tempdir().unwrap();
    let served = Serve::start(tmp.path(), &tmp.path().join("served"), false, true);
    let url = served.url.clone();
    let m = Machine::new(tmp.path().join("h"))
        .with_token()
        .var("PRISM_SYNC_RETENTION_EVERY_S", "1")
        .var("PRISM_SYNC_PRUNE_EVERY_S", "1");
    let folder = tmp.path().join("folder");
    write(&folder.join("a.txt"), b"one\n");
    m.ok(&[
        "init",
        folder.to_str().unwrap(),
        "--repo",
        &url,
        "--name",
        "s",
    ]);
    // Several steps with maintenance due each time (intervals of 1 s): quiet, and successful.
    for i in 0..3 {
        write(&folder.join("a.txt"), format!("version {i}\n").as_bytes());
        let r = m.run(&["sync", "s"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            !r.stderr.contains("maintenance") && !r.stderr.contains("append-only"),
            "sync complains about maintenance: {}",
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(1200));
    }
    // What `sync` starts in the background (and the daemon runs when idle) ends skipped,
    // not failed; `status` says why and what to do instead.
    let r = m.run(&["--json", "maintain", "s", "--if-due"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let status = || -> serde_json::Value {
        let r = m.run(&["--json", "status", "s"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    let st = status();
    assert_eq!(st["maintenance"]["skipped"], SKIPPED, "{st}");
    assert!(st["maintenance"]["last_error"].is_null(), "{st}");
    assert!(st["maintenance"]["retention_last"].is_null(), "{st}");
    let human = m.run(&["status", "s"]);
    assert!(
        human.stdout.contains(&format!("skipped: {SKIPPED}")),
        "{}",
        human.stdout
    );
    // Asked for explicitly, it says so and succeeds; nothing was deleted.
    let r = m.run(&["maintain", "s"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(SKIPPED), "{}", r.stdout);
    let snaps = m.run(&["--json", "snapshots", "--repo", &url]);
    let n = serde_json::from_str::<serde_json::Value>(&snaps.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    assert!(
        n >= 3,
        "{n} snapshots: none may be forgotten through append-only"
    );
}
