//! `status` as the plan shows it, against real endpoints (each its own `PRISM_HOME` and folder
//! on one repository, a real daemon for "connected"): every instance listed as connected or
//! not, with where its folder is — including a workspace added but never joined; "In sync —
//! last update: …"; recent activity with ↑/↓ and an action column that fits its longest entry;
//! files over `warn_file_size`; the same content in `--json`.

mod cli_env;

use std::time::Duration;

use cli_env::sets::{SET, World, wait_for};
use serde_json::Value;

fn instance<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no instance {name} in {status:#}"))
}

/// Regression: status listed endpoints by last publish time only, left out added-but-never-
/// joined workspaces, and its Recent activity column overflowed ("conflict-kept-remote").
#[test]
fn status_lists_every_instance_with_its_folder_and_activity_with_arrows() {
    let w = World::with(2, &["--conflict-policy", "keep_remote"], |_| {});
    let (laptop, ws1) = (&w.eps[0], &w.eps[1]);
    laptop.ok(&["add-instance", SET, "ws2", "--dir", "/srv/ws2/data"]);
    // A conflict the laptop settles by keeping the remote version, and a file it uploads.
    laptop.write("start.txt", "laptop edit\n");
    ws1.write("start.txt", "ws1 edit\n");
    ws1.sync();
    laptop.write("notes/uploaded.txt", "up\n");
    laptop.sync();
    ws1.sync();

    let s = laptop.status();
    assert_eq!(s["in_sync"], true, "{s:#}");
    let headline = s["headline"].as_str().unwrap();
    assert!(
        headline.starts_with("In sync — last update: ") && headline.ends_with(" ago"),
        "{headline}"
    );
    let me = instance(&s, "local");
    assert_eq!(me["here"], true);
    assert_eq!(me["connected"], false, "no daemon runs: {me:#}");
    assert_eq!(me["folder"], laptop.folder.to_str().unwrap());
    let other = instance(&s, "ws1");
    assert_eq!(other["here"], false);
    assert_eq!(
        other["folder"],
        ws1.folder.to_str().unwrap(),
        "ws1's folder comes from the version it published: {other:#}"
    );
    assert!(other["last_seen_ago"].as_str().unwrap().ends_with(" ago"));
    assert!(other["host"].as_str().is_some_and(|h| !h.is_empty()));
    let never = instance(&s, "ws2");
    assert_eq!(never["connected"], false);
    assert_eq!(never["folder"], "/srv/ws2/data");
    assert!(
        never["state"].as_str().unwrap().starts_with("never joined"),
        "{never:#}"
    );
    // Existing keys stay for scripts.
    for key in [
        "state",
        "endpoints",
        "local",
        "shared",
        "activity",
        "last_update_ago",
    ] {
        assert!(!s[key].is_null(), "{key} missing");
    }
    let actions: Vec<&str> = s["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"conflict-kept-remote"), "{actions:?}");

    let text = laptop.ok(&["status", SET]);
    assert!(text.contains("✅ p: In sync — last update: "), "{text}");
    assert!(
        text.contains("🔴 local (this machine): not connected"),
        "{text}"
    );
    assert!(
        text.contains("⚪ ws1: last seen ") && text.contains(ws1.folder.to_str().unwrap()),
        "{text}"
    );
    assert!(
        text.contains("🔴 ws2: never joined") && text.contains("/srv/ws2/data"),
        "{text}"
    );
    // Activity: arrows both ways, and the path never runs into the action.
    let activity: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("Recent activity"))
        .skip(1)
        .take_while(|l| l.starts_with("     "))
        .collect();
    assert!(activity.iter().any(|l| l.contains("↑ ")), "{text}");
    assert!(
        activity
            .iter()
            .any(|l| l.contains("↓ conflict-kept-remote  start.txt")),
        "{text}"
    );
    // The column where the path starts: after the arrow, the action and its padding.
    let path_column: Vec<usize> = activity
        .iter()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let after_action = l.find(words[1]).unwrap() + words[1].len();
            let path_at = after_action + l[after_action..].find(words[2]).unwrap();
            l[..path_at].chars().count()
        })
        .collect();
    assert!(
        path_column.windows(2).all(|p| p[0] == p[1]),
        "paths do not line up: {activity:#?}"
    );
}

/// With a real daemon running the set, this machine is connected (and says so in both forms).
#[test]
fn a_running_daemon_makes_this_instance_connected() {
    let w = World::new(1);
    let laptop = &w.eps[0];
    laptop.ok(&["start", SET]);
    wait_for("the daemon to answer", Duration::from_secs(60), || {
        instance(&laptop.status(), "local")["connected"] == true
    });
    let text = laptop.ok(&["status", SET]);
    assert!(
        text.contains("🟢 local (this machine): connected (daemon pid "),
        "{text}"
    );
    laptop.ok(&["stop", SET]);
    wait_for("the daemon to stop", Duration::from_secs(60), || {
        instance(&laptop.status(), "local")["connected"] == false
    });
}

/// `warn_file_size`: the files over it are listed by `status` (from the state the step
/// recorded), largest first, and leave the list when they shrink.
#[test]
fn files_over_warn_file_size_are_listed_by_status() {
    let w = World::new(1);
    let laptop = &w.eps[0];
    std::fs::write(
        laptop.home.join("sync-rules.yml"),
        "default_rules:\n  size_limits:\n    warn_file_size: 100KB\n",
    )
    .unwrap();
    std::fs::write(laptop.path("big.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::create_dir_all(laptop.path("sub")).unwrap();
    std::fs::write(laptop.path("sub/bigger.bin"), vec![8u8; 400_000]).unwrap();
    laptop.write("small.txt", "small\n");
    laptop.sync();
    let s = laptop.status();
    let large: Vec<(String, u64)> = s["large_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        large,
        vec![
            ("sub/bigger.bin".to_string(), 400_000),
            ("big.bin".to_string(), 300_000)
        ]
    );
    assert!(s["warn_file_size"].as_u64().is_some());
    let text = laptop.ok(&["status", SET]);
    assert!(text.contains("2 files over warn_file_size"), "{text}");
    assert!(text.contains("sub/bigger.bin"), "{text}");
    std::fs::write(laptop.path("big.bin"), b"now small").unwrap();
    laptop.sync();
    let s = laptop.status();
    assert_eq!(s["large_files"].as_array().unwrap().len(), 1, "{s:#}");
}

/// Sets that synced `*.log` files before it became a built-in exclude are told, once, that those
/// files stop syncing and how to bring them back. (A set made before this version has no note
/// that it was told: the test removes the note to stand for one.)
#[test]
fn sets_with_shared_log_files_are_told_once_that_they_stop_syncing() {
    let w = World::new(2);
    let (laptop, ws) = (&w.eps[0], &w.eps[1]);
    // The laptop syncs `*.log` as before the exclude.
    let cfg = laptop.home.join("sync").join(format!("{SET}.yml"));
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("exclude_patterns: []", "exclude_patterns: [\"!*.log\"]");
    std::fs::write(&cfg, text).unwrap();
    laptop.write("runs/train.log", "epoch 1\n");
    laptop.sync();
    let note = ws
        .home
        .join("sync")
        .join(format!(".{SET}.log-exclude-noticed"));
    assert!(note.exists(), "the first step leaves its note");
    std::fs::remove_file(&note).unwrap();

    let o = ws.run(&["sync", SET]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 *.log file in the shared state (e.g. runs/train.log) no longer syncs")
            && err.contains("!*.log"),
        "{err}"
    );
    for args in [["sync", SET], ["status", SET]] {
        let o = ws.run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("no longer sync"),
            "said twice ({args:?}): {err}"
        );
    }
    // Where `!*.log` brings them back, nothing is said.
    let o = laptop.run(&["status", SET]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("no longer sync"));
}

/// `real_time: false` (the research preset's datasets and results): a change there does not
/// start a step of the daemon by itself; it goes with the next step that runs anyway. A
/// change in a real-time category (code) is synced at once, and takes it along.
#[test]
fn a_real_time_false_category_waits_for_the_next_step() {
    let w = World::with(2, &["--rules", "research"], |_| {});
    let (laptop, ws1) = (&w.eps[0], &w.eps[1]);
    // No periodic rescan during the test: only events start steps.
    let o = laptop
        .cmd(&["start", SET])
        .env("PRISM_SYNC_FULL_RESCAN_S", "600")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for("the daemon's first step", Duration::from_secs(60), || {
        let s = laptop.status();
        s["daemon"]["running"] == true && s["in_sync"] == true
    });
    laptop.write("data/x.csv", "1,2\n");
    // Well past the settle window (50 ms) and a head poll (100 ms): nothing was published.
    std::thread::sleep(Duration::from_secs(3));
    ws1.sync();
    assert_eq!(
        ws1.read("data/x.csv"),
        None,
        "a real_time: false change was synced at once"
    );
    let s = laptop.status();
    assert_eq!(s["in_sync"], false, "the waiting change is shown: {s:#}");
    laptop.write("train.py", "print(1)\n");
    wait_for(
        "the code change and the waiting one",
        Duration::from_secs(60),
        || {
            ws1.sync();
            ws1.read("train.py").is_some()
        },
    );
    assert_eq!(ws1.read("data/x.csv").as_deref(), Some("1,2\n"));
}

/// Regression (issue 15, point 5): other endpoints were shown by their last publish only, never
/// as connected. Two real daemons on one repository: each sees the other connected, with its
/// host and folder, from its heartbeat; a clean `stop` shows it not connected at once; a daemon
/// killed without a word is not connected either (its process is gone from this machine).
#[test]
fn endpoints_whose_daemons_run_are_shown_connected_elsewhere() {
    let w = World::new(2);
    let (laptop, ws1) = (&w.eps[0], &w.eps[1]);
    for ep in [laptop, ws1] {
        let o = ep
            .cmd(&["start", SET])
            .env("PRISM_SYNC_PRESENCE_MS", "500")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    wait_for(
        "each to see the other connected",
        Duration::from_secs(60),
        || {
            instance(&laptop.status(), "ws1")["connected"] == true
                && instance(&ws1.status(), "local")["connected"] == true
        },
    );
    let s = laptop.status();
    let other = instance(&s, "ws1");
    assert_eq!(other["folder"], ws1.folder.to_str().unwrap(), "{other:#}");
    assert!(other["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(other["heartbeat_ago"].as_str().unwrap().ends_with(" ago"));
    assert!(
        other["version"]
            .as_str()
            .unwrap()
            .starts_with("prism-sync ")
    );
    assert!(!other["daemon_started"].is_null(), "{other:#}");
    let text = laptop.ok(&["status", SET]);
    assert!(text.contains("🟢 ws1: connected (heartbeat "), "{text}");
    assert!(text.contains(ws1.folder.to_str().unwrap()), "{text}");
    // Heartbeats replace each other: one object per endpoint (two while one is replaced).
    let objects = std::fs::read_dir(w.repo.join("presence")).unwrap().count();
    assert!((2..=4).contains(&objects), "{objects} presence objects");

    ws1.ok(&["stop", SET]);
    wait_for("ws1 to be shown stopped", Duration::from_secs(60), || {
        let s = laptop.status();
        let i = instance(&s, "ws1");
        i["connected"] == false && i["state"].as_str().unwrap().contains("its daemon stopped")
    });
    let text = laptop.ok(&["status", SET]);
    assert!(
        text.contains("🔴 ws1: not connected: its daemon stopped"),
        "{text}"
    );

    let pid = laptop.daemon_pid().expect("the laptop's daemon runs");
    // SAFETY: signalling a daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for(
        "the killed daemon to be shown gone",
        Duration::from_secs(60),
        || {
            let s = ws1.status();
            let i = instance(&s, "local");
            i["connected"] == false && i["state"].as_str().unwrap().contains("no heartbeat")
        },
    );
}
