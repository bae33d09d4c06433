//! Index files (`index/<id>`, sealed, kind Index): which blobs each pack holds and where.
//!
//! Plaintext (all integers LE):
//!
//! ```text
//! u32 S, then S index ids (32 bytes each, strictly ascending): index files this one replaces
//! u32 P, then P packs, strictly ascending by pack id:
//!     pack id (32) | kind u8 | reserved 3 | pack length u32 | pack salt (32) | u32 B |
//!     B blobs, strictly ascending by offset: id (32) | body offset u32 | body length u32 | raw length u32
//! u32 M, then M deletion marks, strictly ascending by pack id (each pack must be listed above):
//!     pack id (32) | marked at i64 (ns since the Unix epoch) | u32 W | W session ids (32 each, ascending)
//! ```
//!
//! A blob is compressed exactly when its body length minus the 16-byte tag is below its raw
//! length (writers store raw unless zstd makes the blob strictly smaller).

use super::pack::{BlobEntry, BlobKind, TAG_LEN};
use super::{DecodeError, DecodeResult, Put, Reader, len_u32};
use crate::id::{BlobId, IndexId, PackId};

/// A pack as an index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPack {
    pub id: PackId,
    pub kind: BlobKind,
    pub length: u32,
    /// The pack's salt (also in its header), so a blob opens with a single ranged read.
    pub salt: [u8; 32],
    pub blobs: Vec<IndexBlob>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexBlob {
    pub id: BlobId,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

impl IndexBlob {
    pub fn compressed(&self) -> bool {
        self.length - TAG_LEN as u32 != self.raw_length
    }
    pub fn entry(&self, kind: BlobKind) -> BlobEntry {
        BlobEntry {
            kind,
            compressed: self.compressed(),
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
            id: self.id,
        }
    }
}

/// A pack that prune has marked for deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionMark {
    pub pack: PackId,
    pub marked_ns: i64,
    /// Sessions that were live when the mark was made; the pack may be deleted once all ended.
    pub wait_for: Vec<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexFile {
    pub supersedes: Vec<IndexId>,
    pub packs: Vec<IndexPack>,
    pub marks: Vec<DeletionMark>,
}

const W: &str = "index";

impl IndexFile {
    /// Puts everything in canonical order (writers call this before encoding).
    pub fn canonicalize(&mut self) {
        self.supersedes.sort();
        self.supersedes.dedup();
        self.packs.sort_by_key(|p| p.id);
        self.packs.dedup_by_key(|p| p.id);
        for p in &mut self.packs {
            p.blobs.sort_by_key(|b| b.offset);
        }
        self.marks.sort_by_key(|m| m.pack);
        self.marks.dedup_by_key(|m| m.pack);
        for m in &mut self.marks {
            m.wait_for.sort();
            m.wait_for.dedup();
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut v = Vec::with_capacity(16 + self.packs.len() * 44 + blobs * 44);
        v.put_u32(len_u32(self.supersedes.len()));
        for s in &self.supersedes {
            v.put(&s.0);
        }
        v.put_u32(len_u32(self.packs.len()));
        for p in &self.packs {
            v.put(&p.id.0);
            v.put_u8(p.kind as u8);
            v.put(&[0; 3]);
            v.put_u32(p.length);
            v.put(&p.salt);
            v.put_u32(len_u32(p.blobs.len()));
            for b in &p.blobs {
                v.put(&b.id.0);
                v.put_u32(b.offset);
                v.put_u32(b.length);
                v.put_u32(b.raw_length);
            }
        }
        v.put_u32(len_u32(self.marks.len()));
        for m in &self.marks {
            v.put(&m.pack.0);
            v.put_i64(m.marked_ns);
            v.put_u32(len_u32(m.wait_for.len()));
            for s in &m.wait_for {
                v.put(s);
            }
        }
        v
    }

    pub fn decode(bytes: &[u8]) -> DecodeResult<Self> {
        let mut r = Reader::new(bytes);
        let n = r.count(32, W)?;
        let mut supersedes = Vec::with_capacity(n);
        for _ in 0..n {
            let id = IndexId(r.array(W)?);
            if supersedes.last().is_some_and(|l| *l >= id) {
                return Err(DecodeError::invalid(
                    W,
                    "superseded ids not strictly ascending",
                ));
            }
            supersedes.push(id);
        }
        let n = r.count(76, W)?;
        let mut packs: Vec<IndexPack> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = PackId(r.array(W)?);
            if packs.last().is_some_and(|l| l.id >= id) {
                return Err(DecodeError::invalid(W, "pack ids not strictly ascending"));
            }
            let kind = r.u8(W)?;
            let kind = BlobKind::from_u8(kind)
                .ok_or_else(|| DecodeError::invalid(W, format!("unknown pack kind {kind}")))?;
            r.reserved(3, W)?;
            let length = r.u32(W)?;
            let salt = r.array::<32>(W)?;
            let nb = r.count(44, W)?;
            let mut blobs: Vec<IndexBlob> = Vec::with_capacity(nb);
            for _ in 0..nb {
                let b = IndexBlob {
                    id: BlobId(r.array(W)?),
                    offset: r.u32(W)?,
                    length: r.u32(W)?,
                    raw_length: r.u32(W)?,
                };
                if b.length < TAG_LEN as u32
                    || b.length - (TAG_LEN as u32) > b.raw_length
                    || b.offset as u64 + b.length as u64 > length as u64
                {
                    return Err(DecodeError::invalid(
                        W,
                        format!("blob {} has impossible lengths", b.id.short()),
                    ));
                }
                if blobs
                    .last()
                    .is_some_and(|l| l.offset as u64 + l.length as u64 > b.offset as u64)
                {
                    return Err(DecodeError::invalid(
                        W,
                        "blobs overlap or are not ascending by offset",
                    ));
                }
                blobs.push(b);
            }
            packs.push(IndexPack {
                id,
                kind,
                length,
                salt,
                blobs,
            });
        }
        let n = r.count(44, W)?;
        let mut marks: Vec<DeletionMark> = Vec::with_capacity(n);
        for _ in 0..n {
            let pack = PackId(r.array(W)?);
            if marks.last().is_some_and(|l| l.pack >= pack) {
                return Err(DecodeError::invalid(W, "marks not strictly ascending"));
            }
            if packs.binary_search_by_key(&pack, |p| p.id).is_err() {
                return Err(DecodeError::invalid(
                    W,
                    "mark for a pack the index does not list",
                ));
            }
            let marked_ns = r.i64(W)?;
            let nw = r.count(32, W)?;
            let mut wait_for: Vec<[u8; 32]> = Vec::with_capacity(nw);
            for _ in 0..nw {
                let s = r.array::<32>(W)?;
                if wait_for.last().is_some_and(|l| *l >= s) {
                    return Err(DecodeError::invalid(
                        W,
                        "session ids not strictly ascending",
                    ));
                }
                wait_for.push(s);
            }
            marks.push(DeletionMark {
                pack,
                marked_ns,
                wait_for,
            });
        }
        r.finish()?;
        Ok(IndexFile {
            supersedes,
            packs,
            marks,
        })
    }
}
