//! What presence costs over a remote repository, counted in requests through a real
//! `prism-sync serve --log-requests`: a running daemon creates one presence object per
//! interval and deletes the one before (plus one listing when it starts), `status` lists once
//! and reads one object per endpoint, and a clean `stop` writes one last object. Nothing else
//! touches `presence/`.

mod servers;

use std::time::Duration;

use servers::*;

/// Stops the daemon even when the test fails.
struct Daemon<'a>(&'a Machine);

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["stop", "s"]);
    }
}

fn presence_requests(server: &Serve) -> Vec<(String, String)> {
    server
        .requests()
        .into_iter()
        .filter(|(_, p)| p.contains("presence/"))
        .collect()
}

fn count(reqs: &[(String, String)], method: &str, listing: bool) -> usize {
    reqs.iter()
        .filter(|(m, p)| m == method && p.ends_with("presence/") == listing)
        .count()
}

#[test]
fn a_daemon_heartbeat_costs_one_create_and_one_delete_per_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start_logged(tmp.path(), &tmp.path().join("served"), false);
    let m = Machine::new(tmp.path().join("h"))
        .with_token()
        .var("PRISM_SYNC_PRESENCE_MS", "1000");
    let folder = tmp.path().join("folder");
    write(&folder.join("notes.txt"), b"v0\n");
    m.ok(&[
        "init",
        folder.to_str().unwrap(),
        "--repo",
        &server.url,
        "--name",
        "s",
    ]);
    m.ok(&["sync", "s"]);
    assert!(
        presence_requests(&server).is_empty(),
        "a sync step touches no presence object"
    );

    m.ok(&["start", "s"]);
    let daemon = Daemon(&m);
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(5_500));
    let idle = presence_requests(&server);
    let beats = t0.elapsed().as_millis() as usize / 1000 + 1;
    let (creates, deletes, lists, reads) = (
        count(&idle, "POST", false),
        count(&idle, "DELETE", false),
        count(&idle, "GET", true),
        count(&idle, "GET", false) + count(&idle, "HEAD", false),
    );
    assert!(
        (beats.saturating_sub(2)..=beats + 1).contains(&creates),
        "{creates} creates in {beats} intervals: {idle:#?}"
    );
    assert!(
        deletes + 1 >= creates && deletes <= creates,
        "each create but the first deletes the one before: {idle:#?}"
    );
    assert_eq!(lists, 1, "one listing when the daemon starts: {idle:#?}");
    assert_eq!(reads, 0, "the daemon reads no presence: {idle:#?}");

    let before = presence_requests(&server).len();
    let s = m.ok(&["--json", "status", "s"]).stdout;
    let after = presence_requests(&server);
    let status_reqs = &after[before..];
    // A heartbeat may land while status runs.
    let own: Vec<_> = status_reqs
        .iter()
        .filter(|(m, _)| m == "GET" || m == "HEAD")
        .cloned()
        .collect();
    assert_eq!(count(&own, "GET", true), 1, "{status_reqs:#?}");
    assert!(
        (1..=2).contains(&count(&own, "GET", false)),
        "status reads the newest object of the one endpoint: {status_reqs:#?}"
    );
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["instances"][0]["connected"], true, "{v:#}");

    drop(daemon);
    let stopped = presence_requests(&server);
    let last: Vec<_> = stopped[after.len()..].to_vec();
    assert!(
        count(&last, "POST", false) >= 1,
        "a clean stop writes one last object: {last:#?}"
    );
    println!(
        "presence over {beats} s: {creates} creates, {deletes} deletes, {lists} listing; status: {} requests",
        own.len()
    );
}
