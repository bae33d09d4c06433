//! Snapshot objects (`snapshots/<id>`, sealed, kind Snapshot): the commit record of one state of a
//! folder. TLV fields:
//!
//! | tag | field | encoding |
//! |---|---|---|
//! | 1 | time | i64 ns since the Unix epoch (UTC) |
//! | 2 | root tree | blob id (32) |
//! | 3 | host | UTF-8 |
//! | 4 | user | UTF-8 |
//! | 5 | path (repeated, in order) | bytes: the absolute path backed up |
//! | 6 | tag (repeated, ascending) | UTF-8 |
//! | 7 | parent (repeated, in order) | snapshot id (32) |
//! | 8 | sync set (optional) | UTF-8 |
//! | 9 | endpoint (optional) | UTF-8 |
//! | 10 | summary | nested TLV, see [`Summary`] |
//! | 11 | program version | UTF-8 |

use super::tlv::{Fields, TlvWriter, fixed, utf8};
use super::{DecodeError, DecodeResult};
use crate::id::{BlobId, SnapshotId};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub total_bytes: u64,
    pub blobs_added: u64,
    pub bytes_added_raw: u64,
    pub bytes_added_stored: u64,
    pub duration_ns: u64,
    pub errors: u64,
    pub extra: Vec<(u16, Vec<u8>)>,
}

impl Summary {
    fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.u64(1, self.files_new)
            .u64(2, self.files_changed)
            .u64(3, self.files_unchanged)
            .u64(4, self.dirs)
            .u64(5, self.total_bytes)
            .u64(6, self.blobs_added)
            .u64(7, self.bytes_added_raw)
            .u64(8, self.bytes_added_stored)
            .u64(9, self.duration_ns)
            .u64(10, self.errors)
            .extra(&self.extra);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> DecodeResult<Self> {
        const W: &str = "snapshot summary";
        let f = Fields::parse(bytes, W)?;
        let g = |t| f.req_u64(t, W);
        Ok(Summary {
            files_new: g(1)?,
            files_changed: g(2)?,
            files_unchanged: g(3)?,
            dirs: g(4)?,
            total_bytes: g(5)?,
            blobs_added: g(6)?,
            bytes_added_raw: g(7)?,
            bytes_added_stored: g(8)?,
            duration_ns: g(9)?,
            errors: g(10)?,
            extra: f.unknown(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], W)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub time_ns: i64,
    pub tree: BlobId,
    pub host: String,
    pub user: String,
    pub paths: Vec<Vec<u8>>,
    pub tags: Vec<String>,
    pub parents: Vec<SnapshotId>,
    pub sync_set: Option<String>,
    pub endpoint: Option<String>,
    pub summary: Summary,
    pub program_version: String,
    pub extra: Vec<(u16, Vec<u8>)>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut tags = self.tags.clone();
        tags.sort();
        let mut w = TlvWriter::new();
        w.i64(1, self.time_ns)
            .bytes(2, &self.tree.0)
            .bytes(3, self.host.as_bytes())
            .bytes(4, self.user.as_bytes());
        for p in &self.paths {
            w.bytes(5, p);
        }
        for t in &tags {
            w.bytes(6, t.as_bytes());
        }
        for p in &self.parents {
            w.bytes(7, &p.0);
        }
        if let Some(s) = &self.sync_set {
            w.bytes(8, s.as_bytes());
        }
        if let Some(e) = &self.endpoint {
            w.bytes(9, e.as_bytes());
        }
        w.bytes(10, &self.summary.encode())
            .bytes(11, self.program_version.as_bytes())
            .extra(&self.extra);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> DecodeResult<Self> {
        const W: &str = "snapshot";
        let f = Fields::parse(bytes, W)?;
        let tags = f
            .all(6)
            .map(|t| utf8(t, W))
            .collect::<DecodeResult<Vec<_>>>()?;
        if tags.windows(2).any(|w| w[0] > w[1]) {
            return Err(DecodeError::invalid(W, "tags not in ascending order"));
        }
        Ok(Snapshot {
            time_ns: f.req_i64(1, W)?,
            tree: BlobId(fixed(f.req(2, W)?, W)?),
            host: f.req_str(3, W)?,
            user: f.req_str(4, W)?,
            paths: f.all(5).map(<[u8]>::to_vec).collect(),
            tags,
            parents: f
                .all(7)
                .map(|p| fixed(p, W).map(SnapshotId))
                .collect::<DecodeResult<_>>()?,
            sync_set: f.opt_str(8, W)?,
            endpoint: f.opt_str(9, W)?,
            summary: Summary::decode(f.req(10, W)?)?,
            program_version: f.req_str(11, W)?,
            extra: f.unknown(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], W)?,
        })
    }
}
