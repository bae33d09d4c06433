//! prism-sync: an encrypted, deduplicating, content-addressed store of folder snapshots, and the
//! sync engine built on it.
//!
//! The layers, bottom up (each module's own docs say what it owns and what it must not touch):
//!
//! - [`sys`]: every call into the operating system that differs between Linux and the other
//!   Unixes, and the crate's only `unsafe` (a Linux and a portable POSIX implementation).
//! - [`id`], [`format`]: identifiers and byte layouts — no I/O, no crypto.
//! - [`crypto`]: key derivation, key files, AEAD sealing.
//! - [`chunker`]: content-defined cut points (pure).
//! - [`pack`], [`index`]: assembling and parsing packs; blob id → location.
//! - [`backend`]: opaque bytes by (kind, name) on a directory, in memory, in S3 or behind
//!   `serve`, plus retry and fault-injection wrappers.
//! - [`repository`]: open/init, write ordering (packs → index → snapshot), check, prune.
//! - [`snapshot`]: trees, nodes, walking, diff, selection, retention.
//! - [`fsx`]: every write below a folder, through directory handles that never follow a
//!   symlink; what a file system folds (case, Unicode normalization).
//! - [`archiver`], [`restorer`]: folder → snapshot and snapshot → folder.
//! - [`sync`]: the three-way merge as a pure function, rules and policies.
//! - [`endpoint`]: a sync set at this machine: config, state, the sync step.
//! - [`browse`]: reading versions for people (cached trees and chunks, histories, diffs).
//! - [`mount`]: every snapshot (or sync-set version) as a read-only FUSE folder.
//! - [`serve`]: the REST server over a repository directory (`prism-sync serve`).
//! - [`ui`]: the local web app (`prism-sync ui`): status, conflicts, every version by time.
//! - [`daemon`]: watching, polling and scheduling steps continuously; the control socket.
//! - [`status`]: what `status` reports, and the in-sync rule.
//! - [`cli`]: the command line; the only place that prints.
//!
//! The on-disk format is specified in `format-spec/` at the top of the source tree.

// `unsafe` lives in `sys` only (which allows it for itself), each block with a `SAFETY:` reason.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod archiver;
pub mod backend;
pub mod browse;
pub mod chunker;
pub mod cli;
pub mod crypto;
pub mod daemon;
pub mod endpoint;
pub mod error;
pub mod format;
pub mod fsx;
pub mod id;
pub mod index;
pub mod mount;
pub mod pack;
pub mod repository;
pub mod restorer;
pub mod serve;
pub mod snapshot;
pub mod status;
pub mod sync;
pub mod sys;
pub mod time;
pub mod ui;
pub mod units;

pub use error::{Error, Result};
