//! File and byte counts of trees, for `status`: files and symlinks (every entry that is not a
//! directory) and the bytes of the files. A tree's counts are carried from the previous tree
//! counted — the difference of the two, O(changes) — or, with none, counted by a walk (the
//! first step, or state from a version that counted otherwise).

use super::{Cx, TreeChange, count_delta};
use crate::error::Result;
use crate::id::BlobId;
use crate::snapshot::diff::diff_trees;
use crate::snapshot::tree::walk;

/// Counts of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Counts {
    pub files: u64,
    pub bytes: u64,
}

/// The counts of `tree`, from those of `prev` (a tree counted before) when there is one.
pub(super) fn count(cx: &Cx, tree: BlobId, prev: Option<(BlobId, Counts)>) -> Result<Counts> {
    if let Some((old, c)) = prev {
        if old == tree {
            return Ok(c);
        }
        let mut changes: Vec<TreeChange> = Vec::new();
        diff_trees(cx.repo, &old, &tree, &mut |d| {
            changes.push((d.path, d.change, d.old, d.new))
        })?;
        let (df, db) = count_delta(&changes);
        return Ok(Counts {
            files: (c.files as i64 + df).max(0) as u64,
            bytes: (c.bytes as i64 + db).max(0) as u64,
        });
    }
    let mut c = Counts::default();
    walk(cx.repo, &tree, &mut |_, n| {
        if !n.is_dir() {
            c.files += 1;
            c.bytes += n.size();
        }
        Ok(true)
    })?;
    Ok(c)
}

/// The tree last counted for the folder (`local`) or the shared state, with its counts.
pub(super) fn previous(cx: &Cx, local: bool) -> Option<(BlobId, Counts)> {
    let m = &cx.meta;
    let (tree, files, bytes) = if local {
        (&m.local_counted_tree, m.local_files, m.local_bytes)
    } else {
        (&m.shared_counted_tree, m.remote_files, m.remote_bytes)
    };
    let tree = tree.as_deref().and_then(BlobId::from_hex)?;
    Some((tree, Counts { files, bytes }))
}
