//! Maintenance of a repository: `check` (is everything there and readable, does every snapshot's
//! tree resolve) and `prune` (reclaim the space of blobs no snapshot uses, with compaction).
//! Both walk snapshot trees, so they sit above `snapshot` and below the sync-set layers that
//! schedule them.
//!
//! Owns: verifying a repository; deciding what to keep, repack and delete (`prune_plan`, pure)
//! and doing it (`prune`) in the order `format-spec/repository.md` gives. Must not touch: local
//! folders, printing, sync sets.

pub mod check;
pub mod prune;
pub mod prune_plan;
