//! Several real daemons on one repository, edits at the same moment: they converge promptly
//! and `status` never says "in sync" while it is not. Each endpoint has its own `PRISM_HOME`;
//! daemons are started with `prism-sync start` (real processes, real sockets, inotify).

mod common;

use std::time::{Duration, Instant};

use common::sets::{Ep, SET, World, wait_for};

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
