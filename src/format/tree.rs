//! Tree blobs: the canonical binary encoding of directories (and of long content lists).
//!
//! ```text
//! u8 form: 1 leaf, 2 interior, 3 content list
//! leaf:          u32 n, then n nodes, strictly ascending by name bytes
//! interior:      u32 n, then n children: tree id (32) | u64 nodes below | u16 len | first name
//!                (children cover consecutive name ranges; first names strictly ascending)
//! content list:  u32 n, then n data blob ids (32 each), in file order
//! node:          u8 type (1 file, 2 directory, 3 symlink) | u16 name length | name bytes |
//!                u32 mode (permission bits, 0o7777 at most) | i64 mtime (ns since the Unix epoch) |
//!                u32 uid | u32 gid | then by type:
//!   file:        u64 size | u8 content form (0 direct, 1 indirect) | u32 n | n ids (32 each)
//!                (direct: data blob ids; indirect: ids of content-list tree blobs)
//!   directory:   subtree id (32): the tree blob (leaf or interior) of its entries
//!   symlink:     u16 target length | target bytes (stored as is, never followed)
//! ```
//!
//! Names are raw bytes (non-UTF-8 allowed), 1..=1024 long, without `/` or NUL, never `.` or `..`.

use super::{DecodeError, DecodeResult, Put, Reader, len_u32};
use crate::id::BlobId;

pub const FORM_LEAF: u8 = 1;
pub const FORM_INTERIOR: u8 = 2;
pub const FORM_CONTENT_LIST: u8 = 3;
pub const NAME_LEN_MAX: usize = 1024;
pub const SYMLINK_TARGET_LEN_MAX: usize = 4096;
pub const MODE_MASK: u32 = 0o7777;
/// Encoded length of the smallest node (a symlink, 1-byte name, 1-byte target).
pub const NODE_LEN_MIN: usize = 1 + 2 + 1 + 4 + 8 + 4 + 4 + 2 + 1;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Content {
    /// The file's data blob ids, in order.
    Direct(Vec<BlobId>),
    /// Ids of content-list tree blobs whose concatenation is the data blob id list.
    Indirect(Vec<BlobId>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    File { size: u64, content: Content },
    Dir { subtree: BlobId },
    Symlink { target: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: NodeKind,
    pub mode: u32,
    pub mtime_ns: i64,
    pub uid: u32,
    pub gid: u32,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::File { .. } => "file",
            NodeKind::Dir { .. } => "dir",
            NodeKind::Symlink { .. } => "symlink",
        }
    }
    pub fn size(&self) -> u64 {
        match &self.kind {
            NodeKind::File { size, .. } => *size,
            NodeKind::Symlink { target } => target.len() as u64,
            NodeKind::Dir { .. } => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeChild {
    pub id: BlobId,
    pub nodes: u64,
    pub first_name: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeBlob {
    Leaf(Vec<Node>),
    Interior(Vec<TreeChild>),
    ContentList(Vec<BlobId>),
}

/// Checks a name as every layer must: 1..=1024 bytes, no `/` or NUL, not `.` or `..`.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b == 0)
}

pub fn encode_node(v: &mut Vec<u8>, n: &Node) {
    let ty = match n.kind {
        NodeKind::File { .. } => 1,
        NodeKind::Dir { .. } => 2,
        NodeKind::Symlink { .. } => 3,
    };
    v.put_u8(ty);
    v.put_u16(n.name.len() as u16);
    v.put(&n.name);
    v.put_u32(n.mode & MODE_MASK);
    v.put_i64(n.mtime_ns);
    v.put_u32(n.uid);
    v.put_u32(n.gid);
    match &n.kind {
        NodeKind::File { size, content } => {
            v.put_u64(*size);
            let (form, ids) = match content {
                Content::Direct(ids) => (0, ids),
                Content::Indirect(ids) => (1, ids),
            };
            v.put_u8(form);
            v.put_u32(len_u32(ids.len()));
            for id in ids {
                v.put(&id.0);
            }
        }
        NodeKind::Dir { subtree } => v.put(&subtree.0),
        NodeKind::Symlink { target } => {
            v.put_u16(target.len() as u16);
            v.put(target);
        }
    }
}

/// Encoded length of a node, for splitting decisions without encoding twice.
pub fn node_len(n: &Node) -> usize {
    1 + 2
        + n.name.len()
        + 4
        + 8
        + 4
        + 4
        + match &n.kind {
            NodeKind::File {
                content: Content::Direct(ids) | Content::Indirect(ids),
                ..
            } => 8 + 1 + 4 + 32 * ids.len(),
            NodeKind::Dir { .. } => 32,
            NodeKind::Symlink { target } => 2 + target.len(),
        }
}

const W: &str = "tree";

/// Decodes one node (as in a leaf); also used by the local snapshot catalog.
pub fn decode_node(r: &mut Reader) -> DecodeResult<Node> {
    let ty = r.u8(W)?;
    let nl = r.u16(W)? as usize;
    let name = r.bytes(nl, W)?.to_vec();
    if !valid_name(&name) {
        return Err(DecodeError::invalid(
            W,
            format!("invalid entry name {:?}", String::from_utf8_lossy(&name)),
        ));
    }
    let mode = r.u32(W)?;
    if mode & !MODE_MASK != 0 {
        return Err(DecodeError::invalid(
            W,
            format!("mode {mode:#o} has bits outside 0o7777"),
        ));
    }
    let mtime_ns = r.i64(W)?;
    let uid = r.u32(W)?;
    let gid = r.u32(W)?;
    let kind = match ty {
        1 => {
            let size = r.u64(W)?;
            let form = r.u8(W)?;
            let n = r.count(32, W)?;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(BlobId(r.array(W)?));
            }
            let content = match form {
                0 => Content::Direct(ids),
                1 if n > 0 => Content::Indirect(ids),
                1 => return Err(DecodeError::invalid(W, "indirect content without lists")),
                f => return Err(DecodeError::invalid(W, format!("unknown content form {f}"))),
            };
            if size == 0 && content != Content::Direct(Vec::new()) {
                return Err(DecodeError::invalid(W, "empty file with content"));
            }
            NodeKind::File { size, content }
        }
        2 => NodeKind::Dir {
            subtree: BlobId(r.array(W)?),
        },
        3 => {
            let tl = r.u16(W)? as usize;
            if tl == 0 || tl > SYMLINK_TARGET_LEN_MAX {
                return Err(DecodeError::invalid(
                    W,
                    "symlink target length out of range",
                ));
            }
            NodeKind::Symlink {
                target: r.bytes(tl, W)?.to_vec(),
            }
        }
        t => return Err(DecodeError::invalid(W, format!("unknown node type {t}"))),
    };
    Ok(Node {
        name,
        kind,
        mode,
        mtime_ns,
        uid,
        gid,
    })
}

impl TreeBlob {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            TreeBlob::Leaf(nodes) => {
                v.reserve(5 + nodes.iter().map(node_len).sum::<usize>());
                v.put_u8(FORM_LEAF);
                v.put_u32(len_u32(nodes.len()));
                for n in nodes {
                    encode_node(&mut v, n);
                }
            }
            TreeBlob::Interior(children) => {
                v.put_u8(FORM_INTERIOR);
                v.put_u32(len_u32(children.len()));
                for c in children {
                    v.put(&c.id.0);
                    v.put_u64(c.nodes);
                    v.put_u16(c.first_name.len() as u16);
                    v.put(&c.first_name);
                }
            }
            TreeBlob::ContentList(ids) => {
                v.reserve(5 + 32 * ids.len());
                v.put_u8(FORM_CONTENT_LIST);
                v.put_u32(len_u32(ids.len()));
                for id in ids {
                    v.put(&id.0);
                }
            }
        }
        v
    }

    pub fn decode(bytes: &[u8]) -> DecodeResult<Self> {
        let mut r = Reader::new(bytes);
        let form = r.u8(W)?;
        let out = match form {
            FORM_LEAF => {
                // The smallest node: a symlink with a 1-byte name and a 1-byte target.
                let n = r.count(NODE_LEN_MIN, W)?;
                let mut nodes: Vec<Node> = Vec::with_capacity(n);
                for _ in 0..n {
                    let node = decode_node(&mut r)?;
                    if nodes.last().is_some_and(|l| l.name >= node.name) {
                        return Err(DecodeError::invalid(
                            W,
                            "entries not strictly ascending by name",
                        ));
                    }
                    nodes.push(node);
                }
                TreeBlob::Leaf(nodes)
            }
            FORM_INTERIOR => {
                let n = r.count(43, W)?;
                if n == 0 {
                    return Err(DecodeError::invalid(W, "interior tree without children"));
                }
                let mut children: Vec<TreeChild> = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = BlobId(r.array(W)?);
                    let nodes = r.u64(W)?;
                    let fl = r.u16(W)? as usize;
                    let first_name = r.bytes(fl, W)?.to_vec();
                    if !valid_name(&first_name) || nodes == 0 {
                        return Err(DecodeError::invalid(
                            W,
                            "interior child with an invalid range",
                        ));
                    }
                    if children.last().is_some_and(|l| l.first_name >= first_name) {
                        return Err(DecodeError::invalid(W, "children not strictly ascending"));
                    }
                    children.push(TreeChild {
                        id,
                        nodes,
                        first_name,
                    });
                }
                TreeBlob::Interior(children)
            }
            FORM_CONTENT_LIST => {
                let n = r.count(32, W)?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(BlobId(r.array(W)?));
                }
                TreeBlob::ContentList(ids)
            }
            f => return Err(DecodeError::invalid(W, format!("unknown tree form {f}"))),
        };
        r.finish()?;
        Ok(out)
    }
}
