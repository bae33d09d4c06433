//! prism-sync: an encrypted, deduplicating, content-addressed store of folder snapshots, and the
//! sync engine built on it.
//!
//! The layers, bottom up. A module may use the modules of its own line and of the lines above
//! it, never one below; `tests/layering.rs` reads this list and every `crate::…` path in `src/`
//! and fails on an upward use (each module's own docs say what it owns and must not touch):
//!
//! - [`sys`], [`units`], [`id`], [`home`], [`timing`]: the operating system (every call that
//!   differs between Linux and the other Unixes, and the crate's only `unsafe`); units;
//!   identifiers; every path under `$PRISM_HOME`; timing spans (`PRISM_SYNC_TIMING=1`:
//!   durations on stderr, for profiling).
//! - [`format`]: byte layouts — no I/O, no crypto.
//! - [`crypto`], [`chunker`]: key derivation, key files, AEAD sealing; content-defined cut
//!   points (pure).
//! - [`fsx`]: every write below a folder, through directory handles that never follow a
//!   symlink; what a file system folds (case, Unicode normalization); private files.
//! - [`backend`]: opaque bytes by (kind, name) on a directory, in memory, in S3 or behind
//!   `serve`, plus retry and fault-injection wrappers.
//! - [`error`]: the crate's error type.
//! - [`time`]: the times people type and read.
//! - [`repository`]: opening a repository URL, open/init, sealing and opening packs, the
//!   in-memory index, write ordering (packs → index → snapshot), sessions, the maintenance lease.
//! - [`snapshot`]: trees, nodes, walking, diff, selection, retention, the per-set catalog.
//! - [`maintenance`]: `check` and `prune` (a pure plan of what to keep, repack and delete, and
//!   its execution), which walk snapshot trees.
//! - [`archiver`], [`restorer`]: folder → snapshot and snapshot → folder.
//! - [`sync`]: the three-way merge as a pure function, rules and policies.
//! - [`endpoint`]: a sync set at this machine: config, state, the sync step.
//! - [`browse`], [`serve`]: reading versions for people (cached trees and chunks, histories,
//!   diffs); the REST server over a repository directory (`prism-sync serve`).
//! - [`mount`]: every snapshot (or sync-set version) as a read-only FUSE folder.
//! - [`daemon`]: watching, polling and scheduling steps continuously; the control socket; the
//!   login agent.
//! - [`status`], [`ui`]: what `status` reports, and the in-sync rule; the local web app
//!   (`prism-sync ui`): status, conflicts, every version by time.
//! - [`cli`]: the command line; the only place that prints.
//!
//! The on-disk format is specified in `format-spec/` at the top of the source tree.

// `unsafe` lives in `sys` only (which allows it for itself), each block with a `SAFETY:` reason.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod archiver;
pub mod backend;
pub(crate) mod browse;
pub mod chunker;
pub mod cli;
pub mod crypto;
pub mod daemon;
pub mod endpoint;
pub mod error;
pub mod format;
pub mod fsx;
pub mod home;
pub mod id;
pub mod maintenance;
pub(crate) mod mount;
pub mod repository;
pub mod restorer;
pub mod serve;
pub mod snapshot;
pub mod status;
pub mod sync;
pub mod sys;
pub mod time;
pub mod timing;
pub mod ui;
pub(crate) mod units;

pub use error::{Error, Result};
