//! Trees, nodes and snapshots as a program sees them: writing a directory as tree blobs
//! (split into several when it is huge), reading and walking trees, id-level diff, choosing a
//! snapshot by id, prefix, `latest` or time, retention policies, and the local per-set catalog
//! of snapshots and path versions.
//!
//! Owns: the tree structure above the byte layout, and the catalog's file under `$PRISM_HOME`.
//! Must not touch: the folders being backed up or synced.

pub mod catalog;
pub(crate) mod diff;
pub(crate) mod retention;
pub mod select;
pub mod tree;

pub use crate::format::snapshot::{Snapshot, Summary};
pub use crate::format::tree::{Content, Node, NodeKind};

/// Joins a parent path and a name with `/` (paths inside snapshots are byte strings).
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Splits a user-given path inside a snapshot into components, ignoring empty ones and `.`.
pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// A path for display: UTF-8 where it is, escapes elsewhere.
pub fn display_path(p: &[u8]) -> String {
    match std::str::from_utf8(p) {
        Ok(s) => s.to_string(),
        Err(_) => p.escape_ascii().to_string(),
    }
}
