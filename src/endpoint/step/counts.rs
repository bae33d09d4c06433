//! File and byte counts of trees, for `status`: files and symlinks (every entry that is not a
//! directory) and the bytes of the files. A tree's counts are carried from the previous tree
//! counted — the difference of the two, O(changes) — or, with none, counted by a walk (the
//! first step, or state from a version that counted otherwise).

use super::{Cx, TreeChange};
use crate::error::Result;
use crate::id::BlobId;
use crate::snapshot::NodeKind;
use crate::snapshot::diff::{Change, diff_trees};
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
        let (df, db) = delta(cx, &changes)?;
        return Ok(Counts {
            files: (c.files as i64 + df).max(0) as u64,
            bytes: (c.bytes as i64 + db).max(0) as u64,
        });
    }
    walk_counts(cx, tree)
}

/// The counts of a whole tree, by a walk.
fn walk_counts(cx: &Cx, tree: BlobId) -> Result<Counts> {
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

/// Files and bytes a list of tree changes adds (negative: removes).
///
/// An added or removed directory comes with one change per entry inside it, but a type change
/// (a directory that became a file or a symlink, or the reverse) is one change: the entries of
/// its directory side are counted by a walk of that subtree.
fn delta(cx: &Cx, changes: &[TreeChange]) -> Result<(i64, i64)> {
    let (mut files, mut bytes) = (0i64, 0i64);
    for (_, change, old, new) in changes {
        for (n, sign) in [(old, -1i64), (new, 1)] {
            let Some(n) = n else { continue };
            if let (Change::TypeChanged, NodeKind::Dir { subtree }) = (change, &n.kind) {
                let c = walk_counts(cx, *subtree)?;
                files += sign * c.files as i64;
                bytes += sign * c.bytes as i64;
            } else if !n.is_dir() {
                files += sign;
                bytes += sign * n.size() as i64;
            }
        }
    }
    Ok((files, bytes))
}

/// The tree last counted for the folder (`local`) or the shared state, with its counts.
pub(super) fn previous(cx: &Cx, local: bool) -> Option<(BlobId, Counts)> {
    let m = &cx.meta;
    let (tree, files, bytes) = if local {
        (&m.local_counted_tree, m.local_files, m.local_bytes)
    } else {
        (&m.shared_counted_tree, m.remote_files, m.remote_bytes)
    };
    let tree = (*tree)?;
    Some((tree, Counts { files, bytes }))
}
