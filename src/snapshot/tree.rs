//! Writing directories as tree blobs and reading them back.
//!
//! A directory of at most [`SINGLE_LEAF_NODES_MAX`] entries (and [`SINGLE_LEAF_BYTES_MAX`]
//! encoded bytes) is one leaf blob. A bigger one is cut into leaves at content-defined points —
//! after an entry whose keyed name hash has a zero first byte (and the leaf holds at least
//! [`LEAF_NODES_MIN`] entries), or at [`LEAF_NODES_MAX`] entries or [`LEAF_BYTES_MAX`] bytes —
//! and an interior blob lists the leaves; interiors are cut the same way. Adding one file to a
//! directory of a million entries therefore rewrites one leaf and the interiors above it, and a
//! diff skips every unchanged leaf by id.
//!
//! A file of more than [`DIRECT_IDS_MAX`] chunks keeps its chunk list in content-list blobs.

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::tree::{Content, Node, NodeKind, TreeBlob, TreeChild, node_len};
use crate::id::BlobId;
use crate::repository::{Packer, Repository};

pub const SINGLE_LEAF_NODES_MAX: usize = 1024;
pub const SINGLE_LEAF_BYTES_MAX: usize = 1 << 20;
pub const LEAF_NODES_MIN: usize = 64;
pub const LEAF_NODES_MAX: usize = 4096;
pub const LEAF_BYTES_MAX: usize = 1 << 20;
pub const DIRECT_IDS_MAX: usize = 8192;
/// Interior levels above leaves; 4096^4 entries is far beyond any real directory.
const DEPTH_MAX: usize = 8;

/// Where tree blobs go.
pub trait TreeSink {
    fn keys(&self) -> &Keys;
    fn put_tree(&mut self, plaintext: Vec<u8>) -> Result<BlobId>;
}

impl TreeSink for Packer<'_> {
    fn keys(&self) -> &Keys {
        self.repo().keys()
    }
    fn put_tree(&mut self, plaintext: Vec<u8>) -> Result<BlobId> {
        self.add(BlobKind::Tree, &plaintext)
    }
}

fn is_split_point(keys: &Keys, name: &[u8]) -> bool {
    keys.keyed(name)[0] == 0
}

/// Writes a directory's entries (sorted by name, unique) and returns the id of its tree.
pub fn write_dir<S: TreeSink>(sink: &mut S, nodes: Vec<Node>) -> Result<BlobId> {
    debug_assert!(
        nodes.windows(2).all(|w| w[0].name < w[1].name),
        "entries sorted and unique"
    );
    let bytes: usize = nodes.iter().map(node_len).sum();
    if nodes.len() <= SINGLE_LEAF_NODES_MAX && bytes <= SINGLE_LEAF_BYTES_MAX {
        return sink.put_tree(TreeBlob::Leaf(nodes).encode());
    }
    let mut children = Vec::new();
    let mut leaf: Vec<Node> = Vec::new();
    let mut leaf_bytes = 0;
    for n in nodes {
        leaf_bytes += node_len(&n);
        let split = leaf.len() + 1 >= LEAF_NODES_MIN && is_split_point(sink.keys(), &n.name);
        leaf.push(n);
        if split || leaf.len() >= LEAF_NODES_MAX || leaf_bytes >= LEAF_BYTES_MAX {
            children.push(put_leaf(sink, std::mem::take(&mut leaf))?);
            leaf_bytes = 0;
        }
    }
    if !leaf.is_empty() {
        children.push(put_leaf(sink, leaf)?);
    }
    write_interiors(sink, children, 0)
}

fn put_leaf<S: TreeSink>(sink: &mut S, leaf: Vec<Node>) -> Result<TreeChild> {
    let first_name = leaf[0].name.clone();
    let nodes = leaf.len() as u64;
    let id = sink.put_tree(TreeBlob::Leaf(leaf).encode())?;
    Ok(TreeChild {
        id,
        nodes,
        first_name,
    })
}

fn write_interiors<S: TreeSink>(
    sink: &mut S,
    children: Vec<TreeChild>,
    depth: usize,
) -> Result<BlobId> {
    if children.len() <= LEAF_NODES_MAX || depth >= DEPTH_MAX {
        return sink.put_tree(TreeBlob::Interior(children).encode());
    }
    let mut upper = Vec::new();
    let mut group: Vec<TreeChild> = Vec::new();
    for c in children {
        let split = group.len() + 1 >= LEAF_NODES_MIN && is_split_point(sink.keys(), &c.first_name);
        group.push(c);
        if split || group.len() >= LEAF_NODES_MAX {
            upper.push(put_group(sink, std::mem::take(&mut group))?);
        }
    }
    if !group.is_empty() {
        upper.push(put_group(sink, group)?);
    }
    write_interiors(sink, upper, depth + 1)
}

fn put_group<S: TreeSink>(sink: &mut S, group: Vec<TreeChild>) -> Result<TreeChild> {
    let first_name = group[0].first_name.clone();
    let nodes = group.iter().map(|c| c.nodes).sum();
    let id = sink.put_tree(TreeBlob::Interior(group).encode())?;
    Ok(TreeChild {
        id,
        nodes,
        first_name,
    })
}

/// The content reference of a file with these chunk ids.
pub fn write_content<S: TreeSink>(sink: &mut S, ids: Vec<BlobId>) -> Result<Content> {
    if ids.len() <= DIRECT_IDS_MAX {
        return Ok(Content::Direct(ids));
    }
    let mut lists = Vec::new();
    for part in ids.chunks(DIRECT_IDS_MAX) {
        lists.push(sink.put_tree(TreeBlob::ContentList(part.to_vec()).encode())?);
    }
    Ok(Content::Indirect(lists))
}

/// Reads and decodes one tree blob.
pub fn read_tree(repo: &Repository, id: &BlobId) -> Result<TreeBlob> {
    let plain = repo.read_blob(BlobKind::Tree, id)?;
    TreeBlob::decode(&plain).map_err(|e| Error::decode(format!("tree blob {}", id.short()), e))
}

/// All entries of a directory, in name order, following interior blobs.
pub fn read_dir(repo: &Repository, id: &BlobId) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    collect_dir(repo, id, &mut out, 0)?;
    if out.windows(2).any(|w| w[0].name >= w[1].name) {
        return Err(Error::corrupt(
            format!("tree blob {}", id.short()),
            "entries of its parts overlap",
        ));
    }
    Ok(out)
}

fn collect_dir(repo: &Repository, id: &BlobId, out: &mut Vec<Node>, depth: usize) -> Result<()> {
    match read_tree(repo, id)? {
        TreeBlob::Leaf(nodes) => out.extend(nodes),
        TreeBlob::Interior(children) if depth < DEPTH_MAX => {
            for c in children {
                collect_dir(repo, &c.id, out, depth + 1)?;
            }
        }
        _ => {
            return Err(Error::corrupt(
                format!("tree blob {}", id.short()),
                "not a directory tree",
            ));
        }
    }
    Ok(())
}

/// The data blob ids of a file, resolving content lists.
pub fn file_blobs(repo: &Repository, content: &Content) -> Result<Vec<BlobId>> {
    match content {
        Content::Direct(ids) => Ok(ids.clone()),
        Content::Indirect(lists) => {
            let mut out = Vec::new();
            for l in lists {
                match read_tree(repo, l)? {
                    TreeBlob::ContentList(ids) => out.extend(ids),
                    _ => {
                        return Err(Error::corrupt(
                            format!("tree blob {}", l.short()),
                            "not a content list",
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Finds the node at a path below a root tree; the empty path is the root itself (returned as a
/// directory node named "").
pub fn find(repo: &Repository, root: &BlobId, path: &[u8]) -> Result<Option<Node>> {
    let mut node = Node {
        name: Vec::new(),
        kind: NodeKind::Dir { subtree: *root },
        mode: 0o755,
        mtime_ns: 0,
        uid: 0,
        gid: 0,
    };
    for comp in super::components(path) {
        let NodeKind::Dir { subtree } = node.kind else {
            return Ok(None);
        };
        let entries = read_dir(repo, &subtree)?;
        match entries.into_iter().find(|n| n.name == comp) {
            Some(n) => node = n,
            None => return Ok(None),
        }
    }
    Ok(Some(node))
}

/// Calls `visit(path, node)` for every node below `root`, depth first, in name order. Returning
/// false from `visit` for a directory skips its contents.
pub fn walk(
    repo: &Repository,
    root: &BlobId,
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<bool>,
) -> Result<()> {
    walk_dir(repo, root, &[], visit)
}

fn walk_dir(
    repo: &Repository,
    id: &BlobId,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<bool>,
) -> Result<()> {
    for n in read_dir(repo, id)? {
        let path = super::join(prefix, &n.name);
        let descend = visit(&path, &n)?;
        if let (true, NodeKind::Dir { subtree }) = (descend, &n.kind) {
            walk_dir(repo, subtree, &path, visit)?;
        }
    }
    Ok(())
}

/// Every blob reachable from the roots: tree blobs (leaves, interiors, content lists) and data
/// blobs. Trees already in `trees` are not read again, so shared subtrees cost nothing.
pub struct Reachable {
    pub trees: std::collections::HashSet<BlobId>,
    pub data: std::collections::HashSet<BlobId>,
}

impl Reachable {
    pub fn new() -> Self {
        Reachable {
            trees: Default::default(),
            data: Default::default(),
        }
    }

    /// Adds everything below `root`. Errors (missing or damaged trees) go to `on_error` with the
    /// path where they were met; the walk goes on with the rest.
    pub fn add_tree(
        &mut self,
        repo: &Repository,
        root: &BlobId,
        on_error: &mut dyn FnMut(Vec<u8>, Error),
    ) {
        let mut stack = vec![(Vec::new(), *root)];
        while let Some((path, id)) = stack.pop() {
            if !self.trees.insert(id) {
                continue;
            }
            let blob = match read_tree(repo, &id) {
                Ok(b) => b,
                Err(e) => {
                    on_error(path, e);
                    continue;
                }
            };
            match blob {
                TreeBlob::Leaf(nodes) => {
                    for n in nodes {
                        match n.kind {
                            NodeKind::Dir { subtree } => {
                                stack.push((super::join(&path, &n.name), subtree))
                            }
                            NodeKind::File {
                                content: Content::Direct(ids),
                                ..
                            } => self.data.extend(ids),
                            NodeKind::File {
                                content: Content::Indirect(lists),
                                ..
                            } => stack.extend(
                                lists.into_iter().map(|l| (super::join(&path, &n.name), l)),
                            ),
                            NodeKind::Symlink { .. } => {}
                        }
                    }
                }
                TreeBlob::Interior(children) => {
                    stack.extend(children.into_iter().map(|c| (path.clone(), c.id)))
                }
                TreeBlob::ContentList(ids) => self.data.extend(ids),
            }
        }
    }
}

impl Default for Reachable {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::TreeBlob;

    /// Collects tree blobs in memory.
    struct MemSink {
        keys: Keys,
        blobs: std::collections::HashMap<BlobId, Vec<u8>>,
    }

    impl TreeSink for MemSink {
        fn keys(&self) -> &Keys {
            &self.keys
        }
        fn put_tree(&mut self, p: Vec<u8>) -> Result<BlobId> {
            let id = self.keys.blob_id(&p);
            self.blobs.insert(id, p);
            Ok(id)
        }
    }

    fn file(name: String) -> Node {
        Node {
            name: name.into_bytes(),
            kind: NodeKind::File {
                size: 1,
                content: Content::Direct(vec![BlobId([1; 32])]),
            },
            mode: 0o644,
            mtime_ns: 1,
            uid: 0,
            gid: 0,
        }
    }

    fn entries(sink: &MemSink, id: &BlobId) -> Vec<Node> {
        match TreeBlob::decode(&sink.blobs[id]).unwrap() {
            TreeBlob::Leaf(n) => n,
            TreeBlob::Interior(c) => c.iter().flat_map(|c| entries(sink, &c.id)).collect(),
            TreeBlob::ContentList(_) => panic!("not a dir"),
        }
    }

    #[test]
    fn a_huge_directory_is_split_and_one_new_entry_changes_few_blobs() {
        let mut sink = MemSink {
            keys: Keys::from_master([1; 32]),
            blobs: Default::default(),
        };
        let mut names: Vec<String> = (0..20_000).map(|i| format!("file-{i:06}")).collect();
        names.sort();
        let nodes: Vec<Node> = names.iter().cloned().map(file).collect();
        let root = write_dir(&mut sink, nodes.clone()).unwrap();
        let before = sink.blobs.len();
        assert!(before > 20, "split into many leaves, got {before}");
        assert!(
            sink.blobs
                .values()
                .all(|b| b.len() <= LEAF_BYTES_MAX + 4096)
        );
        assert_eq!(entries(&sink, &root), nodes);

        let mut more = nodes.clone();
        more.push(file("file-010000a".into()));
        more.sort_by(|a, b| a.name.cmp(&b.name));
        let root2 = write_dir(&mut sink, more.clone()).unwrap();
        assert_ne!(root, root2);
        let added = sink.blobs.len() - before;
        assert!(
            added <= 3,
            "one leaf and its interior change, got {added} new blobs"
        );
        assert_eq!(entries(&sink, &root2), more);
    }

    #[test]
    fn long_chunk_lists_go_to_content_lists() {
        let mut sink = MemSink {
            keys: Keys::from_master([1; 32]),
            blobs: Default::default(),
        };
        let ids: Vec<BlobId> = (0..DIRECT_IDS_MAX as u32 + 5)
            .map(|i| BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        match write_content(&mut sink, ids.clone()).unwrap() {
            Content::Indirect(lists) => {
                assert_eq!(lists.len(), 2);
                let back: Vec<BlobId> = lists
                    .iter()
                    .flat_map(|l| match TreeBlob::decode(&sink.blobs[l]).unwrap() {
                        TreeBlob::ContentList(v) => v,
                        _ => panic!(),
                    })
                    .collect();
                assert_eq!(back, ids);
            }
            Content::Direct(_) => panic!("expected indirect content"),
        }
    }
}
