//! Concurrent heads must collapse into one. Found by the randomized three-daemon test (seed
//! 4242, `keep_both`): with the three folders identical, the daemons kept publishing three
//! concurrent heads for minutes — each head's conflict list left out a different endpoint's
//! entries, so combining them brought those entries back and every step published again.
//!
//! Here the race is made deterministic: in a "lockstep" round every endpoint steps starting
//! from the same heads (each one's publish is held back until all have stepped), which is what
//! three daemons woken by the same change do.

mod cli_env;

use std::path::PathBuf;

use cli_env::sets::{SET, World, listing};

/// Every head file and its bytes.
fn heads_now(w: &World) -> Vec<(PathBuf, Vec<u8>)> {
    w.heads()
        .into_iter()
        .map(|h| {
            let b = std::fs::read(&h).unwrap();
            (h, b)
        })
        .collect()
}

fn set_heads(w: &World, heads: &[(PathBuf, Vec<u8>)]) {
    for h in w.heads() {
        std::fs::remove_file(h).unwrap();
    }
    for (h, b) in heads {
        std::fs::write(h, b).unwrap();
    }
}

/// One step at every endpoint at the same moment: each reads the heads as they were when the
/// round began. Returns how many endpoints published.
fn lockstep(w: &World) -> usize {
    let start = heads_now(w);
    let mut after: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut published = 0;
    for ep in &w.eps {
        set_heads(w, &start);
        let o = ep.run(&["--json", "sync", SET]);
        let out = String::from_utf8_lossy(&o.stdout);
        let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "{}: sync --json: {e}\n{out}\n{}",
                ep.name,
                String::from_utf8_lossy(&o.stderr)
            )
        });
        assert!(r["halted"].is_null(), "{}: {r}", ep.name);
        if !r["published"].is_null() {
            published += 1;
        }
        for h in heads_now(w) {
            if !after.iter().any(|(p, _)| *p == h.0) {
                after.push(h);
            }
        }
    }
    set_heads(w, &after);
    published
}

/// Rounds until one passes with no publish and a single head; panics after `max`.
fn until_quiet(w: &World, max: usize, what: &str) -> usize {
    for round in 1..=max {
        let published = lockstep(w);
        if published == 0 && w.heads().len() == 1 {
            return round;
        }
    }
    panic!(
        "{what}: still {} heads and publishing after {max} rounds in lockstep",
        w.heads().len()
    );
}

fn conflicts_here(s: &serde_json::Value) -> Vec<String> {
    s["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["here"] == true)
        .map(|c| c["path"].as_str().unwrap().to_string())
        .collect()
}

/// Three endpoints edit the same two files at once, and keep stepping at the same moments.
fn three_concurrent_edits(policy: &str) -> World {
    let w = World::with(3, &["--conflict-policy", policy], |laptop| {
        laptop.write("hot/a.txt", "v1\n");
        laptop.write("hot/b.txt", "v1\n");
    });
    for ep in &w.eps {
        ep.sync();
    }
    assert_eq!(w.heads().len(), 1);
    for ep in &w.eps {
        ep.write("hot/a.txt", &format!("a from {}\n", ep.name));
        ep.write("hot/b.txt", &format!("b from {}\n", ep.name));
    }
    assert_eq!(lockstep(&w), 3, "each endpoint published its own edit");
    assert_eq!(w.heads().len(), 3);
    w
}

#[test]
fn concurrent_heads_collapse_into_one_under_keep_both() {
    let w = three_concurrent_edits("keep_both");
    until_quiet(&w, 8, "keep_both");
    let first = listing(&w.eps[0].folder);
    for ep in &w.eps {
        assert_eq!(listing(&ep.folder), first, "{} differs", ep.name);
        let s = ep.status();
        assert_eq!(s["in_sync"], true, "{}: {s}", ep.name);
        assert!(s["conflicts"].as_array().unwrap().is_empty(), "{s}");
    }
    // Nothing was lost: every endpoint's versions are in the folder (as conflict copies).
    let all: Vec<&String> = first.values().collect();
    for ep in &w.eps {
        for f in ["a", "b"] {
            let v = format!("{f} from {}\n", ep.name);
            assert!(all.contains(&&v), "{v:?} lost: {first:?}");
        }
    }
}

#[test]
fn concurrent_heads_collapse_into_one_under_user_prompt() {
    let w = three_concurrent_edits("user_prompt");
    until_quiet(&w, 8, "user_prompt, parked");
    // Every endpoint lists the same conflicts; resolve each where it is parked.
    let lists: Vec<serde_json::Value> = w
        .eps
        .iter()
        .map(|e| e.status()["conflicts"].clone())
        .collect();
    let keyed = |v: &serde_json::Value| -> Vec<(String, String)> {
        let mut k: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["path"].as_str().unwrap().to_string(),
                    c["endpoint"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        k.sort();
        k
    };
    assert!(!keyed(&lists[0]).is_empty(), "{}", lists[0]);
    for l in &lists {
        assert_eq!(keyed(l), keyed(&lists[0]), "conflicts seen differently");
    }
    for ep in &w.eps {
        for p in conflicts_here(&ep.status()) {
            ep.ok(&["resolve", SET, &p, "--keep", "local"]);
        }
    }
    until_quiet(&w, 8, "user_prompt, resolved");
    let first = listing(&w.eps[0].folder);
    for ep in &w.eps {
        assert_eq!(listing(&ep.folder), first, "{} differs", ep.name);
        let s = ep.status();
        assert_eq!(s["in_sync"], true, "{}: {s}", ep.name);
        assert!(s["conflicts"].as_array().unwrap().is_empty(), "{s}");
    }
}
