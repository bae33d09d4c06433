//! Head objects (`heads/<set key>-<snapshot id>`, sealed, kind Head): the current state(s) of a
//! sync set. TLV fields: 1 sync set name (UTF-8), 2 snapshot id (32), 3 endpoint (UTF-8),
//! 4 time (i64 ns), 5 merged heads' snapshot ids (repeated, ascending): heads this one replaces,
//! 6 conflicts in the set (repeated, nested TLV, ascending by path, endpoint, class), 7 file
//! deletions the publishing user confirmed (u64; absent = none). See `format-spec/sync.md`.

use super::tlv::{Fields, TlvWriter, fixed};
use super::{DecodeError, DecodeResult};
use crate::id::SnapshotId;

/// What a conflict carried in a head is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictState {
    /// Parked at `endpoint` (`user_prompt`): that endpoint's folder keeps its own version
    /// until someone there resolves it.
    Parked,
    /// Found while combining concurrent heads: `endpoint`'s version (in snapshot `version`)
    /// was not adopted. An endpoint whose base holds that version takes the common ancestor's
    /// state (`ancestor`) as its base at `path`, so its own policy decides.
    Unadopted,
    /// Dealt with: the entry of the same path, endpoint and version (a `Parked` one when
    /// `version` is absent, an `Unadopted` one when present) was resolved at `time_ns` (by the
    /// resolver's clock). Carried for a while so that combining with a concurrent head that
    /// still holds the entry does not bring it back; never listed to users.
    Resolved,
}

impl ConflictState {
    pub fn code(self) -> u8 {
        match self {
            ConflictState::Parked => 1,
            ConflictState::Unadopted => 2,
            ConflictState::Resolved => 3,
        }
    }
}

/// A conflict somewhere in the set, carried in the head so that every endpoint sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConflict {
    pub path: Vec<u8>,
    pub endpoint: String,
    pub state: ConflictState,
    /// When it was parked, or the time of the head whose version was not adopted.
    pub time_ns: i64,
    /// A snapshot holding `endpoint`'s version at `path`.
    pub version: Option<SnapshotId>,
    /// The common ancestor of the combined heads (`Unadopted` only; absent: none).
    pub ancestor: Option<SnapshotId>,
    /// Fields of newer versions, kept so that re-encoding is exact.
    pub extra: Vec<(u16, Vec<u8>)>,
}

impl SharedConflict {
    fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.bytes(1, &self.path)
            .bytes(2, self.endpoint.as_bytes())
            .bytes(3, &[self.state.code()])
            .i64(4, self.time_ns);
        if let Some(v) = &self.version {
            w.bytes(5, &v.0);
        }
        if let Some(a) = &self.ancestor {
            w.bytes(6, &a.0);
        }
        w.extra(&self.extra);
        w.finish()
    }

    fn decode(b: &[u8]) -> DecodeResult<Self> {
        const W: &str = "head conflict";
        let f = Fields::parse(b, W)?;
        let extra = f.unknown(&[1, 2, 3, 4, 5, 6], W)?;
        let state = match f.req(3, W)? {
            [1] => ConflictState::Parked,
            [2] => ConflictState::Unadopted,
            [3] => ConflictState::Resolved,
            _ => return Err(DecodeError::invalid(W, "unknown conflict state")),
        };
        let path = f.req(1, W)?.to_vec();
        if path.is_empty() {
            return Err(DecodeError::invalid(W, "empty path"));
        }
        Ok(SharedConflict {
            path,
            endpoint: f.req_str(2, W)?,
            state,
            time_ns: f.req_i64(4, W)?,
            version: f
                .opt(5, W)?
                .map(|v| fixed(v, W).map(SnapshotId))
                .transpose()?,
            ancestor: f
                .opt(6, W)?
                .map(|v| fixed(v, W).map(SnapshotId))
                .transpose()?,
            extra,
        })
    }

    /// What the entry is about: 0 a parked conflict, 1 a version not adopted (a `Resolved`
    /// entry is of the class of the entry it resolved: 1 when it names a version).
    pub fn class(&self) -> u8 {
        match self.state {
            ConflictState::Parked => 0,
            ConflictState::Unadopted => 1,
            ConflictState::Resolved => u8::from(self.version.is_some()),
        }
    }

    /// The canonical order of a head's conflicts (at most one entry per key): path, endpoint,
    /// class, and for a version not adopted (or its resolution) the version.
    pub fn key(&self) -> (&[u8], &str, u8, Option<&SnapshotId>) {
        let class = self.class();
        let version = if class == 1 {
            self.version.as_ref()
        } else {
            None
        };
        (&self.path, &self.endpoint, class, version)
    }

    /// The entry's bytes (a total order to break ties deterministically).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        self.encode()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub set: String,
    pub snapshot: SnapshotId,
    pub endpoint: String,
    pub time_ns: i64,
    pub merged: Vec<SnapshotId>,
    /// Conflicts in the set as of this head, one per (path, endpoint, class).
    pub conflicts: Vec<SharedConflict>,
    /// File deletions the user who published this head confirmed (`--allow-deletions`,
    /// `force-sync`): endpoints taking exactly this step from their base accept them.
    pub confirmed_deletions: u64,
    /// Fields of newer versions, kept so that re-encoding is exact.
    pub extra: Vec<(u16, Vec<u8>)>,
}

impl Head {
    pub fn encode(&self) -> Vec<u8> {
        let mut merged = self.merged.clone();
        merged.sort();
        merged.dedup();
        let mut conflicts: Vec<&SharedConflict> = self.conflicts.iter().collect();
        conflicts.sort_by(|a, b| a.key().cmp(&b.key()));
        conflicts.dedup_by(|a, b| a.key() == b.key());
        let mut w = TlvWriter::new();
        w.bytes(1, self.set.as_bytes())
            .bytes(2, &self.snapshot.0)
            .bytes(3, self.endpoint.as_bytes())
            .i64(4, self.time_ns);
        for m in &merged {
            w.bytes(5, &m.0);
        }
        for c in conflicts {
            w.bytes(6, &c.encode());
        }
        if self.confirmed_deletions > 0 {
            w.u64(7, self.confirmed_deletions);
        }
        w.extra(&self.extra);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<Self> {
        const W: &str = "head";
        let f = Fields::parse(b, W)?;
        let extra = f.unknown(&[1, 2, 3, 4, 5, 6, 7], W)?;
        let merged = f
            .all(5)
            .map(|m| fixed(m, W).map(SnapshotId))
            .collect::<DecodeResult<Vec<_>>>()?;
        if merged.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DecodeError::invalid(W, "merged ids not strictly ascending"));
        }
        let conflicts = f
            .all(6)
            .map(SharedConflict::decode)
            .collect::<DecodeResult<Vec<_>>>()?;
        if conflicts.windows(2).any(|w| w[0].key() >= w[1].key()) {
            return Err(DecodeError::invalid(
                W,
                "conflicts not strictly ascending by path, endpoint, class and version",
            ));
        }
        let confirmed_deletions = match f.opt_u64(7, W)? {
            Some(0) => {
                return Err(DecodeError::invalid(
                    W,
                    "zero confirmed deletions is encoded as absent",
                ));
            }
            Some(n) => n,
            None => 0,
        };
        Ok(Head {
            set: f.req_str(1, W)?,
            snapshot: SnapshotId(fixed(f.req(2, W)?, W)?),
            endpoint: f.req_str(3, W)?,
            time_ns: f.req_i64(4, W)?,
            merged,
            conflicts,
            confirmed_deletions,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(path: &str, endpoint: &str) -> SharedConflict {
        SharedConflict {
            path: path.into(),
            endpoint: endpoint.into(),
            state: ConflictState::Parked,
            time_ns: 5,
            version: None,
            ancestor: None,
            extra: vec![],
        }
    }

    #[test]
    fn conflicts_are_encoded_in_canonical_order_and_refused_out_of_it() {
        let mut h = Head {
            set: "s".into(),
            snapshot: SnapshotId([1; 32]),
            endpoint: "e".into(),
            time_ns: 1,
            merged: vec![],
            conflicts: vec![conflict("b", "x"), conflict("a", "y"), conflict("a", "x")],
            confirmed_deletions: 3,
            extra: vec![],
        };
        let bytes = h.encode();
        let back = Head::decode(&bytes).unwrap();
        h.conflicts.sort_by(|a, b| a.key().cmp(&b.key()));
        assert_eq!(back, h);
        // Swapping two encoded conflicts must be refused.
        let mut w = TlvWriter::new();
        w.bytes(1, b"s").bytes(2, &[1; 32]).bytes(3, b"e").i64(4, 1);
        w.bytes(6, &conflict("b", "x").encode());
        w.bytes(6, &conflict("a", "x").encode());
        assert!(Head::decode(&w.finish()).is_err());
    }
}
