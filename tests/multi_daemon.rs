//! The randomized multi-daemon test: three real daemons (the laptop through `prism-sync serve`,
//! two workspaces on the repository directory), a seeded random workload on all three folders,
//! then quiesce and check (see `multi_daemon_harness` for what is checked and how).
//!
//! CI runs the short version below with a fixed seed. The soak is the same harness for longer:
//!
//! ```sh
//! PRISM_SOAK_DURATION_S=1800 PRISM_SOAK_SEED=7 nice cargo test --release --test multi_daemon \
//!     soak -- --ignored --nocapture
//! ```
//!
//! (`PRISM_SOAK_ROUND_S`, `PRISM_SOAK_POLICY`, `PRISM_SOAK_CONVERGE_S` and
//! `PRISM_SOAK_FULL_RESCAN_S` tune it; `PRISM_TEST_BIN` runs a copy of the binary instead of
//! the one cargo builds, so the tree can be rebuilt while a soak runs; `benches/README.md`
//! records the runs.)

mod multi_daemon_harness;
mod servers;

use multi_daemon_harness::{Config, World};

#[test]
fn three_daemons_under_a_random_workload_converge_and_lose_nothing() {
    World::create(Config::ci(20261201)).run();
}

#[test]
#[ignore = "the soak: long by design; run it with PRISM_SOAK_DURATION_S and PRISM_SOAK_SEED (see the module docs)"]
fn soak() {
    World::create(Config::soak_from_env()).run();
}
