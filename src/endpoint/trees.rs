//! Trees for the merge: reading them from the repository (cached), writing merged trees, and
//! patching single paths of a tree being built.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::error::Result;
use crate::id::BlobId;
use crate::repository::{Packer, Repository};
use crate::snapshot::tree::{read_dir, write_dir};
use crate::snapshot::{Node, NodeKind, components};
use crate::sync::merge::{MTree, TreeSource};

/// Directory listings from the repository, each read once per step.
pub struct RepoTrees<'r> {
    repo: &'r Repository,
    cache: RefCell<HashMap<BlobId, Vec<Node>>>,
}

impl<'r> RepoTrees<'r> {
    pub fn new(repo: &'r Repository) -> Self {
        RepoTrees {
            repo,
            cache: RefCell::new(HashMap::new()),
        }
    }
}

impl TreeSource for RepoTrees<'_> {
    fn dir(&self, id: &BlobId) -> Result<Vec<Node>> {
        if let Some(v) = self.cache.borrow().get(id) {
            return Ok(v.clone());
        }
        let v = read_dir(self.repo, id)?;
        self.cache.borrow_mut().insert(*id, v.clone());
        Ok(v)
    }
}

/// Writes a tree being built; returns its root tree id.
pub fn write_tree(packer: &mut Packer, entries: &[MTree]) -> Result<BlobId> {
    let mut nodes = Vec::with_capacity(entries.len());
    for e in entries {
        nodes.push(match e {
            MTree::Same(n) => n.clone(),
            MTree::Dir(n, children) => {
                let mut n = n.clone();
                n.kind = NodeKind::Dir {
                    subtree: write_tree(packer, children)?,
                };
                n
            }
        });
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes.dedup_by(|a, b| a.name == b.name);
    write_dir(packer, nodes)
}

/// The node at `path` below a root tree, if any.
pub fn node_at(src: &dyn TreeSource, root: Option<BlobId>, path: &[u8]) -> Result<Option<Node>> {
    let Some(mut dir) = root else { return Ok(None) };
    let comps = components(path);
    for (i, c) in comps.iter().enumerate() {
        let Some(n) = src.dir(&dir)?.into_iter().find(|n| n.name == *c) else {
            return Ok(None);
        };
        if i + 1 == comps.len() {
            return Ok(Some(n));
        }
        match n.kind {
            NodeKind::Dir { subtree } => dir = subtree,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Sets the entry at `path` of a tree being built to `node` (or removes it), expanding whole
/// directories taken unchanged on the way. A missing parent directory leaves the tree as is.
pub fn patch(
    src: &dyn TreeSource,
    entries: &mut Vec<MTree>,
    path: &[u8],
    node: Option<Node>,
) -> Result<()> {
    patch_entry(src, entries, path, node.map(MTree::Same))
}

/// [`patch`] with an entry being built (a directory with new contents, say).
pub fn patch_entry(
    src: &dyn TreeSource,
    entries: &mut Vec<MTree>,
    path: &[u8],
    entry: Option<MTree>,
) -> Result<()> {
    let comps = components(path);
    patch_at(src, entries, &comps, entry)
}

fn patch_at(
    src: &dyn TreeSource,
    entries: &mut Vec<MTree>,
    comps: &[&[u8]],
    node: Option<MTree>,
) -> Result<()> {
    let Some((first, rest)) = comps.split_first() else {
        return Ok(());
    };
    let pos = entries.iter().position(|e| e.name() == *first);
    if rest.is_empty() {
        if let Some(i) = pos {
            entries.remove(i);
        }
        if let Some(mut e) = node {
            match &mut e {
                MTree::Same(n) | MTree::Dir(n, _) => n.name = first.to_vec(),
            }
            entries.push(e);
            entries.sort_by(|a, b| a.name().cmp(b.name()));
        }
        return Ok(());
    }
    let Some(i) = pos else { return Ok(()) };
    if let MTree::Same(n) = &entries[i] {
        let NodeKind::Dir { subtree } = n.kind else {
            return Ok(());
        };
        let children = src.dir(&subtree)?.into_iter().map(MTree::Same).collect();
        entries[i] = MTree::Dir(n.clone(), children);
    }
    if let MTree::Dir(_, children) = &mut entries[i] {
        patch_at(src, children, rest, node)?;
    }
    Ok(())
}

/// Sets the entry at `path` of a tree being built back to what tree `from` holds there. Unlike
/// [`patch`], a parent directory the tree being built no longer has is re-created (with `from`'s
/// metadata, holding only what is restored): a failed action below a directory the plan removed
/// whole must still be undone in the base, or the step records as done a removal that did not
/// happen (B13: the folder keeps the directory, the base says it is gone, and the next step sees
/// nothing to do).
pub fn restore(
    src: &dyn TreeSource,
    entries: &mut Vec<MTree>,
    path: &[u8],
    from: Option<BlobId>,
) -> Result<()> {
    let node = node_at(src, from, path)?;
    if node.is_some() {
        let comps = components(path);
        for depth in 1..comps.len() {
            if has_dir(src, entries, &comps[..depth])? {
                continue;
            }
            let prefix = comps[..depth].join(&b'/');
            if let Some(dir) = node_at(src, from, &prefix)? {
                patch_entry(src, entries, &prefix, Some(MTree::Dir(dir, vec![])))?;
            }
        }
    }
    patch(src, entries, path, node)
}

/// Whether the tree being built has a directory at the path made of `comps`.
fn has_dir(src: &dyn TreeSource, entries: &[MTree], comps: &[&[u8]]) -> Result<bool> {
    let Some((first, rest)) = comps.split_first() else {
        return Ok(true);
    };
    let Some(e) = entries.iter().find(|e| e.name() == *first) else {
        return Ok(false);
    };
    match e {
        MTree::Dir(_, children) => has_dir(src, children, rest),
        MTree::Same(n) => match n.kind {
            NodeKind::Dir { .. } if rest.is_empty() => Ok(true),
            NodeKind::Dir { subtree } => {
                Ok(node_at(src, Some(subtree), &rest.join(&b'/'))?.is_some_and(|n| n.is_dir()))
            }
            _ => Ok(false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(HashMap<BlobId, Vec<Node>>);
    impl TreeSource for Mem {
        fn dir(&self, id: &BlobId) -> Result<Vec<Node>> {
            Ok(self.0[id].clone())
        }
    }

    fn file(name: &str) -> Node {
        Node {
            name: name.into(),
            kind: NodeKind::File {
                size: 0,
                content: crate::snapshot::Content::Direct(vec![]),
            },
            mode: 0o644,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn patch_expands_unchanged_directories() {
        let sub = BlobId([1; 32]);
        let src = Mem(HashMap::from([(sub, vec![file("a"), file("b")])]));
        let mut dir = file("d");
        dir.kind = NodeKind::Dir { subtree: sub };
        let mut entries = vec![MTree::Same(dir)];
        patch(&src, &mut entries, b"d/a", None).unwrap();
        patch(&src, &mut entries, b"d/c", Some(file("x"))).unwrap();
        let MTree::Dir(_, children) = &entries[0] else {
            panic!("expanded")
        };
        let names: Vec<&[u8]> = children.iter().map(|c| c.name()).collect();
        assert_eq!(names, vec![&b"b"[..], b"c"]);
    }

    /// B13: a move out of a directory the plan removed whole failed; undoing it in the base must
    /// bring the directory back there, or the base records the removal as done.
    #[test]
    fn restore_below_a_directory_removed_whole_recreates_it() {
        let (root, sub, deeper) = (BlobId([1; 32]), BlobId([2; 32]), BlobId([3; 32]));
        let mut d = file("d");
        d.kind = NodeKind::Dir { subtree: sub };
        let mut e = file("e");
        e.kind = NodeKind::Dir { subtree: deeper };
        let src = Mem(HashMap::from([
            (root, vec![d, file("k")]),
            (sub, vec![file("a"), file("b"), e]),
            (deeper, vec![file("x")]),
        ]));
        // The merged tree: `d` is gone (everything in it moved or deleted), `k` stays.
        let mut entries = vec![MTree::Same(file("k"))];
        restore(&src, &mut entries, b"d/a", Some(root)).unwrap();
        restore(&src, &mut entries, b"d/e/x", Some(root)).unwrap();
        // A path the old tree lacks is removed, and creates no parent.
        restore(&src, &mut entries, b"n/new", Some(root)).unwrap();
        let names: Vec<&[u8]> = entries.iter().map(|c| c.name()).collect();
        assert_eq!(names, vec![&b"d"[..], b"k"]);
        let MTree::Dir(_, children) = &entries[0] else {
            panic!("d re-created")
        };
        let names: Vec<&[u8]> = children.iter().map(|c| c.name()).collect();
        assert_eq!(names, vec![&b"a"[..], b"e"], "only what is restored");
        let MTree::Dir(_, grand) = &children[1] else {
            panic!("d/e re-created")
        };
        assert_eq!(grand.len(), 1);
        assert_eq!(grand[0].name(), b"x");
    }
}
