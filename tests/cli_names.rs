//! Names and small things, against the real binary: a dry run shows both directions, a
//! mistyped set name gets a suggestion, NAME may be left out with one set, `restore --at` twice
//! picks a fresh folder, `--at` takes version ids and words, counts read as English.

mod cli_env;

use cli_env::sets::{Ep, SET, World};
use serde_json::Value;

fn paths(list: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|e| e[key].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn sync_ok(ep: &Ep) {
    ep.ok(&["sync", SET]);
}

/// Regression: `sync --dry-run` listed the incoming changes but `"uploads": []`, while the real
/// step then published six changes.
#[test]
fn sync_dry_run_shows_uploads_and_downloads() {
    let w = World::new(2);
    let (laptop, ws) = (&w.eps[0], &w.eps[1]);
    laptop.write("up/new.txt", "new here");
    laptop.write("up/edited.txt", "v1");
    sync_ok(laptop);
    sync_ok(ws);
    laptop.write("up/edited.txt", "v2, longer");
    laptop.write("up/second.txt", "another");
    ws.write("down/from-ws.txt", "theirs");
    sync_ok(ws);

    let plan = laptop.json(&["sync", SET, "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        paths(&plan["uploads"], "path"),
        ["up/edited.txt", "up/second.txt"],
        "{plan}"
    );
    let downloads: Vec<String> = paths(&plan["downloads"], "what");
    assert!(
        downloads.iter().any(|d| d.contains("down/from-ws.txt")),
        "{plan}"
    );
    let human = laptop.ok(&["sync", SET, "--dry-run"]);
    assert!(human.contains("↑ Would publish 2 changes"), "{human}");
    assert!(human.contains("up/second.txt"), "{human}");
    assert!(human.contains("down/from-ws.txt"), "{human}");

    // The real step publishes exactly what the dry run said.
    let real = laptop.sync();
    assert_eq!(
        paths(&real["uploads"], "path"),
        ["up/edited.txt", "up/second.txt"],
        "{real}"
    );
}

#[test]
fn set_names_suggested_and_optional_with_one_set() {
    let w = World::new(1);
    let laptop = &w.eps[0];
    laptop.write("a.txt", "a");
    // The set is `p`; with one set, NAME may be left out everywhere.
    let out = laptop.ok(&["sync"]);
    assert!(out.contains("↑ 1 change published"), "singular: {out}");
    let h = laptop.ok(&["history", "a.txt"]);
    assert!(
        h.contains("1 version\n") || h.contains(": 1 version"),
        "{h}"
    );
    laptop.ok(&["conflicts"]);
    laptop.ok(&["status"]);
    // `restore --at` too (it once went to the embedded default repository, which does not
    // exist here, and told the user to create one).
    let r = laptop.json(&["restore", "--at", "now"]);
    let t = r["target"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(format!("{t}/a.txt")).unwrap(), "a");

    // A mistyped name: one line with the likely one.
    let o = laptop.run(&["sync", "pp"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("did you mean {SET}?")), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn restore_at_twice_and_at_ids_and_words() {
    let w = World::new(1);
    let laptop = &w.eps[0];
    laptop.write("a.txt", "v1");
    let first = laptop.sync();
    let v1 = first["published"].as_str().unwrap().to_string();
    laptop.write("a.txt", "v2");
    laptop.sync();

    // Twice into the default folder: the second picks a fresh name instead of failing.
    let r1 = laptop.json(&["restore", SET, "--at", "now"]);
    let r2 = laptop.json(&["restore", SET, "--at", "now"]);
    let (t1, t2) = (
        r1["target"].as_str().unwrap(),
        r2["target"].as_str().unwrap(),
    );
    assert_ne!(t1, t2, "a fresh folder");
    assert!(t2.starts_with(t1), "beside the first: {t1} / {t2}");
    assert_eq!(
        std::fs::read_to_string(format!("{t2}/a.txt")).unwrap(),
        "v2"
    );

    // --at takes the id `history` prints (8 digits) …
    let r3 = laptop.json(&["restore", SET, "--at", &v1[..8]]);
    let t3 = r3["target"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{t3}/a.txt")).unwrap(),
        "v1"
    );
    // … and words: today (its end) is the newest state; yesterday predates the set.
    let v = laptop.json(&["ls", SET, "--at", "today"]);
    assert!(v.to_string().contains("a.txt"), "{v}");
    let o = laptop.run(&["restore", SET, "--at", "yesterday"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no snapshot at or before yesterday"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
