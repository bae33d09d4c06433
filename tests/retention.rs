//! Retention applied by itself: the set's `retention` is validated at load, and running daemons
//! forget exactly the set's snapshots outside it (never heads or each endpoint's newest, never
//! another set's snapshots or plain backups) and prune, while two endpoints keep editing.

mod cli_env;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cli_env::sets::{Ep, SET, World, wait_for};

fn set_retention(ep: &Ep, set: &str, value: &str) {
    let path = ep.home.join(format!("sync/{set}.yml"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("retention: 30d"), "{text}");
    std::fs::write(
        &path,
        text.replace("retention: 30d", &format!("retention: {value}")),
    )
    .unwrap();
}

#[test]
fn a_retention_that_is_not_one_is_refused_with_the_fix() {
    let w = World::new(1);
    let a = &w.eps[0];
    set_retention(a, SET, "banana");
    for args in [vec!["sync", SET], vec!["status", SET]] {
        let o = a.run(&args);
        assert!(!o.status.success(), "{args:?} accepted retention: banana");
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err
            .lines()
            .find(|l| l.contains("banana"))
            .unwrap_or_else(|| panic!("{args:?}: no line names the value: {err}"));
        assert!(
            line.contains("write a duration such as 30d")
                && line.contains("keep-within 30d, keep-daily 90"),
            "{args:?}: the error names the fix: {line}"
        );
    }
    // A restic-style policy is accepted.
    let path = a.home.join(format!("sync/{SET}.yml"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "retention: banana",
            "retention: keep-within 30d, keep-daily 90",
        ),
    )
    .unwrap();
    a.sync();
    assert_eq!(
        a.status()["maintenance"]["retention"],
        "keep-within 30d, keep-daily 90"
    );
}

/// Every snapshot in the repository: id → (time in s, sync set, endpoint, tags).
type Snap = (f64, Option<String>, Option<String>, Vec<String>);

fn snapshots(ep: &Ep, repo: &str) -> BTreeMap<String, Snap> {
    let v = ep.json(&["snapshots", "--repo", repo]);
    let list = v.as_array().cloned().unwrap_or_else(|| {
        v["snapshots"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("snapshots --json: {v}"))
    });
    list.iter()
        .map(|s| {
            let t: jiff::Timestamp = s["time"].as_str().unwrap().parse().unwrap();
            (
                s["id"].as_str().unwrap().to_string(),
                (
                    t.as_nanosecond() as f64 / 1e9,
                    s["sync_set"].as_str().map(String::from),
                    s["endpoint"].as_str().map(String::from),
                    s["tags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_str().unwrap().to_string())
                        .collect(),
                ),
            )
        })
        .collect()
}

fn start(ep: &Ep) {
    let o = ep
        .cmd(&["start", SET])
        .env("PRISM_SYNC_RETENTION_EVERY_S", "2")
        .env("PRISM_SYNC_PRUNE_EVERY_S", "4")
        // Maintenance waits for the set to be idle this long (a minute by default).
        .env("PRISM_SYNC_MAINTAIN_IDLE_S", "1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "start at {}: {}",
        ep.name,
        String::from_utf8_lossy(&o.stderr)
    );
}

fn audit(ep: &Ep, action: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(ep.home.join(format!("sync/{SET}.audit.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["action"] == action)
        .collect()
}

#[test]
fn running_daemons_forget_and_prune_exactly_outside_a_short_window_while_two_endpoints_edit() {
    const WINDOW_S: f64 = 20.0;
    let w = World::new(2);
    let (a, b) = (&w.eps[0], &w.eps[1]);
    let repo = w.repo.to_str().unwrap().to_string();
    // Another set and a plain backup share the repository; both are older than any window.
    let other = w.tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("o.txt"), "other set\n").unwrap();
    a.ok(&[
        "init",
        other.to_str().unwrap(),
        "--repo",
        &repo,
        "--name",
        "q",
    ]);
    a.ok(&["sync", "q"]);
    std::fs::write(other.join("o.txt"), "other set, v2\n").unwrap();
    a.ok(&["sync", "q"]);
    let plain = w.tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("p.txt"), "plain backup\n").unwrap();
    a.ok(&["backup", "--repo", &repo, plain.to_str().unwrap()]);
    a.ok(&["backup", "--repo", &repo, plain.to_str().unwrap()]);
    let untouchable: BTreeSet<String> = snapshots(a, &repo)
        .into_iter()
        .filter(|(_, s)| s.1.as_deref() != Some(SET))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(untouchable.len(), 4, "two of set q, two plain backups");

    for ep in [a, b] {
        set_retention(ep, SET, &format!("{}s", WINDOW_S as u64));
    }
    start(a);
    start(b);

    // Both endpoints edit for a while, well past the window; every snapshot seen is noted.
    let mut seen: BTreeMap<String, Snap> = BTreeMap::new();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(45) {
        a.write("a.txt", &format!("a edit {n}\n"));
        b.write(&format!("b/{}.txt", n % 5), &format!("b edit {n}\n"));
        n += 1;
        std::thread::sleep(Duration::from_millis(700));
        seen.extend(
            snapshots(a, &repo)
                .into_iter()
                .filter(|(_, s)| s.1.as_deref() == Some(SET)),
        );
    }
    // Quiet: both converge, then retention runs once more after the last snapshot.
    let t1 = Instant::now();
    loop {
        let (sa, sb) = (a.status(), b.status());
        if a.read("a.txt") == b.read("a.txt")
            && a.read("b/0.txt") == b.read("b/0.txt")
            && sa["heads"] == 1
            && sa["in_sync"] == true
            && sb["in_sync"] == true
        {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(60),
            "no convergence:\na: {sa}\nb: {sb}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let quiet = jiff::Timestamp::now().as_second();
    seen.extend(
        snapshots(a, &repo)
            .into_iter()
            .filter(|(_, s)| s.1.as_deref() == Some(SET)),
    );
    let last_run = |ep: &Ep, what: &str| {
        ep.status()["maintenance"][what]
            .as_str()
            .map(|t| t.parse::<jiff::Timestamp>().unwrap().as_second())
    };
    wait_for(
        "retention and prune run after the last edit",
        Duration::from_secs(60),
        || {
            ["retention_last", "prune_last"].iter().all(|what| {
                [a, b]
                    .iter()
                    .any(|e| last_run(e, what).is_some_and(|t| t > quiet + 1))
            })
        },
    );
    // A prune deletes a pack it marked only once no session that was live at the mark can
    // still refer to it: the prune that marks the packs of the last forgotten snapshots frees
    // nothing, a later one does. On a loaded machine the daemons' steps overlap every prune
    // during the edits (all deferred), so wait for the one that frees (one every 4 s when idle).
    wait_for(
        "a prune that frees the packs of forgotten snapshots",
        Duration::from_secs(60),
        || {
            [a, b]
                .iter()
                .flat_map(|e| audit(e, "prune"))
                .any(|p| p["freed_bytes"].as_u64().unwrap_or(0) > 0)
        },
    );
    for ep in [a, b] {
        ep.ok(&["stop", SET]);
    }

    let now_snaps = snapshots(a, &repo);
    // Other sets and plain backups: untouched.
    for id in &untouchable {
        assert!(
            now_snaps.contains_key(id),
            "retention of {SET} forgot {id}, not its own"
        );
    }
    let mine: BTreeMap<&String, &Snap> = now_snaps
        .iter()
        .filter(|(_, s)| s.1.as_deref() == Some(SET))
        .collect();
    let newest = mine.values().map(|s| s.0).fold(f64::MIN, f64::max);
    // Every snapshot seen that is inside the window of the newest is still there.
    for (id, s) in &seen {
        if s.0 >= newest - WINDOW_S + 2.0 {
            assert!(
                mine.contains_key(id),
                "{id} ({}s before the newest) was forgotten inside the window",
                newest - s.0
            );
        }
    }
    // Outside it, only protected ones are left: a head's snapshot, or an endpoint's newest.
    let heads: BTreeSet<String> = w
        .heads()
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .split_once('-')
                .unwrap()
                .1
                .to_string()
        })
        .collect();
    let mut newest_of: BTreeMap<&str, (f64, &String)> = BTreeMap::new();
    for (id, s) in &mine {
        if let Some(e) = s.2.as_deref() {
            let slot = newest_of.entry(e).or_insert((s.0, id));
            if s.0 > slot.0 {
                *slot = (s.0, id);
            }
        }
    }
    let outside: Vec<&&String> = mine
        .iter()
        .filter(|(_, s)| s.0 < newest - WINDOW_S - 2.0)
        .map(|(id, _)| id)
        .collect();
    for id in &outside {
        assert!(
            heads.contains(**id) || newest_of.values().any(|(_, n)| n == *id),
            "{id} is outside the window and protected by nothing, yet kept"
        );
    }
    let forgotten = seen
        .keys()
        .filter(|id| !now_snaps.contains_key(*id))
        .count();
    assert!(
        forgotten > 5,
        "retention forgot only {forgotten} of {} snapshots",
        seen.len()
    );

    // Status and the audit log say what ran; prune freed space.
    let runs: Vec<serde_json::Value> = [a, b].iter().flat_map(|e| audit(e, "retention")).collect();
    let total: u64 = runs.iter().map(|r| r["forgotten"].as_u64().unwrap()).sum();
    assert_eq!(
        total as usize, forgotten,
        "the audit log lists every forgotten snapshot"
    );
    let prunes: Vec<serde_json::Value> = [a, b].iter().flat_map(|e| audit(e, "prune")).collect();
    assert!(!prunes.is_empty(), "no prune ran");
    assert!(
        prunes
            .iter()
            .any(|p| p["freed_bytes"].as_u64().unwrap() > 0),
        "prune freed nothing: {prunes:?}"
    );
    let st = a.status();
    assert!(
        st["maintenance"]["retention_last"].is_string()
            || b.status()["maintenance"]["retention_last"].is_string()
    );

    // The repository is whole, and both folders still hold the latest state.
    a.ok(&["check", "--repo", &repo, "--read-data"]);
    assert_eq!(a.read("a.txt"), b.read("a.txt"));
    assert_eq!(a.read("a.txt").unwrap(), format!("a edit {}\n", n - 1));
}
