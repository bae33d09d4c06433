//! Several real daemons on one repository, edits at the same moment: they converge promptly
//! and `status` never says "in sync" while it is not. Each endpoint has its own `PRISM_HOME`;
//! daemons are started with `prism-sync start` (real processes, real sockets, inotify).

mod cli_env;

use std::time::{Duration, Instant};

use cli_env::sets::{Ep, SET, World, wait_for};

/// A daemon whose safety-net rescan is far away: only the scheduling under test can make it
/// converge.
fn start(ep: &Ep) {
    let o = ep
        .cmd(&["start", SET])
        .env("PRISM_SYNC_FULL_RESCAN_S", "600")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "start at {}: {}",
        ep.name,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Generous for a shared 2-core machine; a step here takes tens of milliseconds.
const CONVERGE: Duration = Duration::from_secs(20);

/// Asserts what `status` may claim: in sync only with exactly one head.
#[track_caller]
fn status_is_honest(ep: &Ep) -> serde_json::Value {
    let s = ep.status();
    if s["in_sync"] == true {
        assert_eq!(
            s["heads"], 1,
            "{} says in sync while the set has {} heads: {s}",
            ep.name, s["heads"]
        );
    }
    s
}

/// Both daemons publish at the same moment: the repository kept two heads for 10 s to 10
/// minutes (until the safety rescan or the next edit) while both sides said `in_sync: true`,
/// because a step recorded as seen the heads listed at its end, including one it never merged.
#[test]
fn concurrent_publishes_converge_promptly_and_status_never_claims_sync_with_two_heads() {
    let w = World::new(2);
    let (a, b) = (&w.eps[0], &w.eps[1]);
    start(a);
    start(b);
    wait_for("both sides in sync at first", CONVERGE, || {
        status_is_honest(a)["in_sync"] == true && status_is_honest(b)["in_sync"] == true
    });
    for trial in 0..6 {
        let (fa, fb) = (format!("a{trial}.txt"), format!("b{trial}.txt"));
        std::thread::scope(|s| {
            s.spawn(|| a.write(&fa, "from a\n"));
            s.spawn(|| b.write(&fb, "from b\n"));
        });
        let t0 = Instant::now();
        let mut converged = false;
        while t0.elapsed() < CONVERGE {
            let (sa, sb) = (status_is_honest(a), status_is_honest(b));
            let everywhere = [a, b]
                .iter()
                .all(|e| e.path(&fa).exists() && e.path(&fb).exists());
            if everywhere && w.heads().len() == 1 && sa["in_sync"] == true && sb["in_sync"] == true
            {
                converged = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            converged,
            "trial {trial}: no convergence within {CONVERGE:?}: {} head(s); a: {}; b: {}",
            w.heads().len(),
            a.status(),
            b.status()
        );
    }
}

/// Conflict copies (`name.conflict-…`) in a folder.
fn conflict_copies(ep: &Ep) -> Vec<String> {
    std::fs::read_dir(&ep.folder)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".conflict-"))
        .collect()
}

fn conflict_paths(s: &serde_json::Value) -> Vec<String> {
    s["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_string())
        .collect()
}

/// With the same file edited on both sides at the same moment under `user_prompt`, both sides
/// said "no conflicts" for up to 10 minutes, then combining the two heads settled it as
/// keep-both; and a conflict parked at one endpoint was invisible at the other.
#[test]
fn the_same_file_edited_at_once_is_parked_promptly_and_seen_everywhere() {
    let w = World::with(2, &[], |laptop| {
        laptop.write("notes.txt", "v1\n");
    });
    let (a, b) = (&w.eps[0], &w.eps[1]);
    start(a);
    start(b);
    wait_for("both sides in sync at first", CONVERGE, || {
        a.status()["in_sync"] == true && b.status()["in_sync"] == true
    });
    std::thread::scope(|s| {
        s.spawn(|| a.write("notes.txt", "from a\n"));
        s.spawn(|| b.write("notes.txt", "from b\n"));
    });
    wait_for("the conflict to be reported at both ends", CONVERGE, || {
        [a, b]
            .iter()
            .all(|e| conflict_paths(&e.status()) == vec!["notes.txt".to_string()])
    });
    // Parked, not settled: each side keeps its own version, no copy appears, and that lasts.
    std::thread::sleep(Duration::from_secs(2));
    for (e, mine) in [(a, "from a\n"), (b, "from b\n")] {
        assert_eq!(e.read("notes.txt").as_deref(), Some(mine), "{}", e.name);
        assert!(
            conflict_copies(e).is_empty(),
            "{}: {:?}",
            e.name,
            conflict_copies(e)
        );
        let s = status_is_honest(e);
        assert_eq!(s["in_sync"], false, "{}: {s}", e.name);
        assert_eq!(conflict_paths(&s), vec!["notes.txt".to_string()], "{s}");
    }
    // It is resolved where it is parked, and then nothing is in conflict anywhere.
    let parked_at = a.status()["conflicts"][0]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let (here, there) = if parked_at == a.name { (a, b) } else { (b, a) };
    let o = there.run(&["resolve", SET, "notes.txt", "--keep", "local"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains(&parked_at),
        "resolving where it is not parked says where it is"
    );
    here.ok(&["resolve", SET, "notes.txt", "--keep", "local"]);
    let kept = here.read("notes.txt").unwrap();
    wait_for("both sides to agree and be in sync", CONVERGE, || {
        there.read("notes.txt").as_deref() == Some(kept.as_str())
            && status_is_honest(a)["in_sync"] == true
            && status_is_honest(b)["in_sync"] == true
    });
    assert!(conflict_paths(&a.status()).is_empty() && conflict_paths(&b.status()).is_empty());
}
