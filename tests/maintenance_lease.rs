//! The maintenance lease: of several maintainers racing for it, exactly one gets it; it expires
//! only after its holder's TTL plus the clock-skew bound; a released lease lets the next taker
//! in at once; a holder that lost it notices before its next destructive phase.

mod lib_fixtures;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use lib_fixtures::*;
use prism_sync::backend::{DynBackend, FsBackend, Kind};
use prism_sync::repository::lease::{self, CLOCK_SKEW_MAX, LEASE_MARGIN, LEASE_TTL, Taken};
use prism_sync::repository::{Repository, now_ns};

fn ns(d: Duration) -> i64 {
    d.as_nanos() as i64
}

fn setup() -> (tempfile::TempDir, DynBackend) {
    let tmp = tempfile::tempdir().unwrap();
    let backend: DynBackend = Arc::new(FsBackend::new(tmp.path().join("repo")));
    init_repo(backend.clone(), tmp.path());
    (tmp, backend)
}

#[test]
fn of_maintainers_racing_for_the_lease_exactly_one_gets_it() {
    let (tmp, backend) = setup();
    for round in 0..5 {
        let n = 8;
        let barrier = Arc::new(Barrier::new(n));
        let held: Vec<Option<lease::HeldLease>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let barrier = barrier.clone();
                    // Each maintainer opens the repository itself, as separate endpoints do.
                    let repo = Repository::open(backend.clone(), &creds(tmp.path())).unwrap();
                    s.spawn(move || {
                        barrier.wait();
                        match lease::take(&repo, &format!("set/ep{i}"), LEASE_TTL).unwrap() {
                            Taken::Held(h) => Some(h),
                            Taken::Busy(_) => None,
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<&lease::HeldLease> = held.iter().flatten().collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} maintainers hold the lease at once",
            winners.len()
        );
        let repo = Repository::open(backend.clone(), &creds(tmp.path())).unwrap();
        let newest = lease::newest(&repo).unwrap().unwrap();
        assert_eq!(newest.holder, winners[0].lease.holder);
        // While it is held, nobody else gets it.
        assert!(matches!(
            lease::take(&repo, "set/late", LEASE_TTL).unwrap(),
            Taken::Busy(_)
        ));
        // Given back, the next taker gets it at once.
        held.into_iter()
            .flatten()
            .next()
            .unwrap()
            .release(&repo)
            .unwrap();
    }
    // Old generations are cleaned up: only the newest few objects remain.
    let left = backend.list(Kind::Lease).unwrap();
    assert!(left.len() <= 2, "lease objects pile up: {left:?}");
}

#[test]
fn a_crashed_holders_lease_expires_only_after_its_ttl_plus_the_skew_bound() {
    let (tmp, backend) = setup();
    let repo = Repository::open(backend.clone(), &creds(tmp.path())).unwrap();
    let ttl = Duration::from_secs(60);
    let Taken::Held(crashed) = lease::take(&repo, "set/crashed", ttl).unwrap() else {
        panic!("the first taker gets the lease");
    };
    // The holder "crashes": it never renews or releases. A taker whose clock is ahead by
    // less than the skew bound beyond the expiry still waits.
    let expires = crashed.lease.expires_ns;
    let other = Repository::open(backend.clone(), &creds(tmp.path())).unwrap();
    for now in [now_ns(), expires, expires + ns(CLOCK_SKEW_MAX) - 1] {
        assert!(
            matches!(
                lease::take_at(&other, "set/other", LEASE_TTL, now).unwrap(),
                Taken::Busy(_)
            ),
            "taken over at {now} (expires {expires})"
        );
    }
    let Taken::Held(h) = lease::take_at(
        &other,
        "set/other",
        LEASE_TTL,
        expires + ns(CLOCK_SKEW_MAX) + 1,
    )
    .unwrap() else {
        panic!("an expired lease is taken over");
    };
    assert_eq!(h.lease.generation, crashed.lease.generation + 1);
    // The old holder, back from the dead, cannot renew: the generation is taken.
    let mut zombie = crashed;
    let e = zombie.renew(&repo, LEASE_TTL).unwrap_err();
    assert!(e.to_string().contains("lease was lost"), "{e}");
}

#[test]
fn a_holder_renews_before_a_phase_and_stops_once_it_lost_the_lease() {
    let (tmp, backend) = setup();
    let repo = Repository::open(backend.clone(), &creds(tmp.path())).unwrap();
    // A short lease: less than the margin is left, so `ensure` renews (a new generation).
    let Taken::Held(mut h) = lease::take(&repo, "set/a", LEASE_MARGIN / 2).unwrap() else {
        panic!("free lease");
    };
    let g = h.lease.generation;
    h.ensure(&repo).unwrap();
    assert_eq!(h.lease.generation, g + 1);
    assert!(h.left() > LEASE_MARGIN);
    // Someone takes the next generation (as if our lease had expired long ago): the holder's
    // next renewal fails, so it stops.
    let other = Repository::open(backend.clone(), &creds(tmp.path())).unwrap();
    let far = h.lease.expires_ns + ns(CLOCK_SKEW_MAX) + 1;
    assert!(matches!(
        lease::take_at(&other, "set/b", LEASE_TTL, far).unwrap(),
        Taken::Held(_)
    ));
    assert!(h.renew(&repo, LEASE_TTL).is_err());
}

#[test]
fn a_damaged_lease_is_an_error_naming_it_never_a_free_pass() {
    let (tmp, backend) = setup();
    backend
        .create(Kind::Lease, "0000000000000005", b"garbage")
        .unwrap();
    let repo = Repository::open(backend.clone(), &creds(tmp.path())).unwrap();
    let e = lease::take(&repo, "set/a", LEASE_TTL)
        .unwrap_err()
        .to_string();
    assert!(e.contains("0000000000000005"), "{e}");
}
