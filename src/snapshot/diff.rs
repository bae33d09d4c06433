//! Differences between two trees, skipping identical subtrees by id (cost: O(changes)).

use super::tree::{read_dir, walk};
use super::{Node, NodeKind, join};
use crate::error::Result;
use crate::id::BlobId;
use crate::repository::Repository;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    /// Same type; content and/or metadata (mode, mtime, owner) changed.
    Modified {
        content: bool,
        metadata: bool,
    },
    /// A file became a directory, a symlink a file, and so on.
    TypeChanged,
}

impl Change {
    /// One-letter code as listings show it: `+`, `-`, `M` (content), `U` (metadata only), `T`.
    pub fn code(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified { content: true, .. } => 'M',
            Change::Modified { .. } => 'U',
            Change::TypeChanged => 'T',
        }
    }
}

#[derive(Debug, Clone)]
pub struct DiffEntry {
    pub path: Vec<u8>,
    pub change: Change,
    pub old: Option<Node>,
    pub new: Option<Node>,
}

fn same_type(a: &Node, b: &Node) -> bool {
    std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind)
}

fn content_differs(a: &Node, b: &Node) -> bool {
    match (&a.kind, &b.kind) {
        (
            NodeKind::File {
                size: sa,
                content: ca,
            },
            NodeKind::File {
                size: sb,
                content: cb,
            },
        ) => sa != sb || ca != cb,
        (NodeKind::Symlink { target: ta }, NodeKind::Symlink { target: tb }) => ta != tb,
        _ => false,
    }
}

fn metadata_differs(a: &Node, b: &Node) -> bool {
    let dir = a.is_dir();
    a.mode != b.mode || (!dir && a.mtime_ns != b.mtime_ns) || a.uid != b.uid || a.gid != b.gid
}

/// Reports every difference between trees `a` and `b` to `out`, in path order.
pub fn diff_trees(
    repo: &Repository,
    a: &BlobId,
    b: &BlobId,
    out: &mut dyn FnMut(DiffEntry),
) -> Result<()> {
    diff_dirs(repo, a, b, &[], out)
}

fn report_all(
    repo: &Repository,
    prefix: &[u8],
    node: &Node,
    change: Change,
    out: &mut dyn FnMut(DiffEntry),
) -> Result<()> {
    let (old, new) = if change == Change::Added {
        (None, Some(node.clone()))
    } else {
        (Some(node.clone()), None)
    };
    out(DiffEntry {
        path: prefix.to_vec(),
        change,
        old,
        new,
    });
    if let NodeKind::Dir { subtree } = &node.kind {
        walk(repo, subtree, &mut |p, n| {
            let path = join(prefix, p);
            let (old, new) = if change == Change::Added {
                (None, Some(n.clone()))
            } else {
                (Some(n.clone()), None)
            };
            out(DiffEntry {
                path,
                change,
                old,
                new,
            });
            Ok(true)
        })?;
    }
    Ok(())
}

fn diff_dirs(
    repo: &Repository,
    a: &BlobId,
    b: &BlobId,
    prefix: &[u8],
    out: &mut dyn FnMut(DiffEntry),
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let (left, right) = (read_dir(repo, a)?, read_dir(repo, b)?);
    let (mut i, mut j) = (0, 0);
    while i < left.len() || j < right.len() {
        let ord = match (left.get(i), right.get(j)) {
            (Some(l), Some(r)) => l.name.cmp(&r.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                report_all(
                    repo,
                    &join(prefix, &left[i].name),
                    &left[i],
                    Change::Removed,
                    out,
                )?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                report_all(
                    repo,
                    &join(prefix, &right[j].name),
                    &right[j],
                    Change::Added,
                    out,
                )?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (l, r) = (&left[i], &right[j]);
                let path = join(prefix, &l.name);
                if !same_type(l, r) {
                    out(DiffEntry {
                        path,
                        change: Change::TypeChanged,
                        old: Some(l.clone()),
                        new: Some(r.clone()),
                    });
                } else {
                    let (content, metadata) = (content_differs(l, r), metadata_differs(l, r));
                    if content || metadata {
                        out(DiffEntry {
                            path: path.clone(),
                            change: Change::Modified { content, metadata },
                            old: Some(l.clone()),
                            new: Some(r.clone()),
                        });
                    }
                    if let (NodeKind::Dir { subtree: sa }, NodeKind::Dir { subtree: sb }) =
                        (&l.kind, &r.kind)
                    {
                        diff_dirs(repo, sa, sb, &path, out)?;
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}
