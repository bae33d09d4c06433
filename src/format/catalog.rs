//! The local snapshot catalog of one sync set (`$PRISM_HOME/sync/catalog/<repository id
//! hex>/<set name hex>`, see `format-spec/local-state.md`): the set's snapshots decrypted, the ids
//! of the repository's other snapshots, and every path's versions.
//!
//! ```text
//! magic "PRISMCAT" | u32 version (1) | repository id (32) | u16 len | set name (UTF-8)
//! u32 n | n snapshots: id (32) | u8 flags (bit 0: paths cataloged) | u32 len | snapshot TLV
//!         (strictly ascending by (time, id))
//! u32 m | m ids (32 each) of other sets' snapshots, strictly ascending
//! u32 p | p paths, strictly ascending by bytes: u16 len | path |
//!         u32 e | e versions: u32 snapshot index (< n, strictly ascending, a cataloged one) |
//!                 u8 present (0 absent, 1 present) | node (as in a tree leaf) if present
//! MAC (32): keyed BLAKE3 of everything before it (not part of what `decode` reads)
//! ```

use super::snapshot::Snapshot;
use super::tree::{Node, decode_node, encode_node};
use super::{DecodeError, DecodeResult, Put, Reader, len_u32};
use crate::id::SnapshotId;

pub const MAGIC: &[u8; 8] = b"PRISMCAT";
pub const VERSION: u32 = 1;
/// Length of the MAC that follows the body.
pub const MAC_LEN: usize = 32;
const FLAG_CATALOGED: u8 = 1;
const W: &str = "snapshot catalog";

/// One snapshot of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSnapshot {
    pub id: SnapshotId,
    /// Its paths are in [`CatalogFile::paths`].
    pub cataloged: bool,
    pub snapshot: Snapshot,
}

/// A path's versions: the snapshot (an index into [`CatalogFile::snapshots`]) from which on it
/// has this node (`None`: absent), up to the next version.
pub type PathVersions = Vec<(u32, Option<Node>)>;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatalogFile {
    pub repo_id: [u8; 32],
    pub set: String,
    pub snapshots: Vec<CatalogSnapshot>,
    pub others: Vec<SnapshotId>,
    pub paths: Vec<(Vec<u8>, PathVersions)>,
}

impl CatalogFile {
    /// The body (without the MAC).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.put(MAGIC);
        v.put_u32(VERSION);
        v.put(&self.repo_id);
        v.put_u16(u16::try_from(self.set.len()).expect("set names are short"));
        v.put(self.set.as_bytes());
        v.put_u32(len_u32(self.snapshots.len()));
        for s in &self.snapshots {
            v.put(&s.id.0);
            v.put_u8(if s.cataloged { FLAG_CATALOGED } else { 0 });
            let plain = s.snapshot.encode();
            v.put_u32(len_u32(plain.len()));
            v.put(&plain);
        }
        v.put_u32(len_u32(self.others.len()));
        for id in &self.others {
            v.put(&id.0);
        }
        v.put_u32(len_u32(self.paths.len()));
        for (path, versions) in &self.paths {
            v.put_u16(u16::try_from(path.len()).expect("paths are bounded"));
            v.put(path);
            v.put_u32(len_u32(versions.len()));
            for (i, node) in versions {
                v.put_u32(*i);
                match node {
                    None => v.put_u8(0),
                    Some(n) => {
                        v.put_u8(1);
                        encode_node(&mut v, n);
                    }
                }
            }
        }
        v
    }

    /// Decodes a body (without the MAC); checks every ordering rule, so that re-encoding gives
    /// the same bytes.
    pub fn decode(bytes: &[u8]) -> DecodeResult<CatalogFile> {
        let mut r = Reader::new(bytes);
        if r.bytes(MAGIC.len(), W)? != MAGIC {
            return Err(DecodeError::BadMagic(W));
        }
        let version = r.u32(W)?;
        if version != VERSION {
            return Err(DecodeError::Version {
                found: version,
                supported: VERSION,
            });
        }
        let repo_id = r.array(W)?;
        let nl = r.u16(W)? as usize;
        let set = std::str::from_utf8(r.bytes(nl, W)?)
            .map_err(|_| DecodeError::invalid(W, "set name is not UTF-8"))?
            .to_string();
        let n = r.count(32 + 1 + 4, W)?;
        let mut snapshots: Vec<CatalogSnapshot> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = SnapshotId(r.array(W)?);
            let cataloged = match r.u8(W)? {
                0 => false,
                FLAG_CATALOGED => true,
                f => return Err(DecodeError::invalid(W, format!("unknown flags {f:#x}"))),
            };
            let len = r.u32(W)? as usize;
            let snapshot = Snapshot::decode(r.bytes(len, W)?)?;
            if let Some(prev) = snapshots.last()
                && (prev.snapshot.time_ns, prev.id) >= (snapshot.time_ns, id)
            {
                return Err(DecodeError::invalid(
                    W,
                    "snapshots not in ascending (time, id) order",
                ));
            }
            snapshots.push(CatalogSnapshot {
                id,
                cataloged,
                snapshot,
            });
        }
        let m = r.count(32, W)?;
        let mut others: Vec<SnapshotId> = Vec::with_capacity(m);
        for _ in 0..m {
            let id = SnapshotId(r.array(W)?);
            if others.last().is_some_and(|p| *p >= id) {
                return Err(DecodeError::invalid(W, "other ids not ascending"));
            }
            others.push(id);
        }
        let p = r.count(2 + 4, W)?;
        let mut paths: Vec<(Vec<u8>, PathVersions)> = Vec::with_capacity(p);
        for _ in 0..p {
            let pl = r.u16(W)? as usize;
            let path = r.bytes(pl, W)?.to_vec();
            if paths.last().is_some_and(|(q, _)| *q >= path) {
                return Err(DecodeError::invalid(W, "paths not ascending"));
            }
            let e = r.count(4 + 1, W)?;
            let mut versions: PathVersions = Vec::with_capacity(e);
            for _ in 0..e {
                let i = r.u32(W)?;
                let at = snapshots
                    .get(i as usize)
                    .ok_or_else(|| DecodeError::invalid(W, "version of an unknown snapshot"))?;
                if !at.cataloged {
                    return Err(DecodeError::invalid(
                        W,
                        "version of a snapshot whose paths are not cataloged",
                    ));
                }
                if versions.last().is_some_and(|(j, _)| *j >= i) {
                    return Err(DecodeError::invalid(W, "versions not ascending"));
                }
                let node = match r.u8(W)? {
                    0 => None,
                    1 => Some(decode_node(&mut r)?),
                    b => return Err(DecodeError::invalid(W, format!("present byte {b}"))),
                };
                versions.push((i, node));
            }
            paths.push((path, versions));
        }
        r.finish()?;
        Ok(CatalogFile {
            repo_id,
            set,
            snapshots,
            others,
            paths,
        })
    }
}

/// Splits a stored catalog into its body and MAC (`None`: too short to hold one).
pub fn split_mac(bytes: &[u8]) -> Option<(&[u8], &[u8; MAC_LEN])> {
    let cut = bytes.len().checked_sub(MAC_LEN)?;
    let (body, mac) = bytes.split_at(cut);
    Some((body, mac.try_into().ok()?))
}
