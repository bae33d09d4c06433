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
}
