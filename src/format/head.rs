//! Head objects (`heads/<set key>-<snapshot id>`, sealed, kind Head): the current state(s) of a
//! sync set. TLV fields: 1 sync set name (UTF-8), 2 snapshot id (32), 3 endpoint (UTF-8),
//! 4 time (i64 ns), 5 merged heads' snapshot ids (repeated, ascending): heads this one replaces.

use super::DecodeResult;
use super::tlv::{Fields, TlvWriter, fixed};
use crate::id::SnapshotId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub set: String,
    pub snapshot: SnapshotId,
    pub endpoint: String,
    pub time_ns: i64,
    pub merged: Vec<SnapshotId>,
    /// Fields of newer versions, kept so that re-encoding is exact.
    pub extra: Vec<(u16, Vec<u8>)>,
}

impl Head {
    pub fn encode(&self) -> Vec<u8> {
        let mut merged = self.merged.clone();
        merged.sort();
        merged.dedup();
        let mut w = TlvWriter::new();
        w.bytes(1, self.set.as_bytes())
            .bytes(2, &self.snapshot.0)
            .bytes(3, self.endpoint.as_bytes())
            .i64(4, self.time_ns);
        for m in &merged {
            w.bytes(5, &m.0);
        }
        w.extra(&self.extra);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<Self> {
        const W: &str = "head";
        let f = Fields::parse(b, W)?;
        let extra = f.unknown(&[1, 2, 3, 4, 5], W)?;
        let merged = f
            .all(5)
            .map(|m| fixed(m, W).map(SnapshotId))
            .collect::<DecodeResult<Vec<_>>>()?;
        if merged.windows(2).any(|w| w[0] >= w[1]) {
            return Err(super::DecodeError::invalid(
                W,
                "merged ids not strictly ascending",
            ));
        }
        Ok(Head {
            set: f.req_str(1, W)?,
            snapshot: SnapshotId(fixed(f.req(2, W)?, W)?),
            endpoint: f.req_str(3, W)?,
            time_ns: f.req_i64(4, W)?,
            merged,
            extra,
        })
    }
}
