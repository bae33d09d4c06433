//! The local snapshot catalog of one sync set (`$PRISM_HOME/sync/catalog/<repository id
//! hex>/<set name hex>`, see `format-spec/local-state.md`): the set's snapshots decrypted, the ids
//! of the repository's other snapshots, every path's versions, and the tag of the snapshot
//! listing it is current with.
//!
//! ```text
//! magic "PRISMCAT" | u32 version (2) | repository id (32) | u16 len | set name (UTF-8)
//! u8 len | listing tag (lowercase hex, at most 64; empty: none)
//! u32 n | n rows: i64 time_ns | id (32) | u8 flags | u32 len     (strictly ascending by
//!         (time, id); flags bit 0: paths cataloged, bit 1: a before-sync snapshot)
//! u32 m | m ids (32 each) of other sets' snapshots, strictly ascending
//! u32 p | p × u32 len: the length of each path entry
//! n snapshot TLVs (lengths from the rows), in row order
//! p path entries, strictly ascending by path bytes: u16 len | path |
//!         u32 e | e versions: u32 snapshot index (< n, strictly ascending, a cataloged one) |
//!                 u8 present (0 absent, 1 present) | node (as in a tree leaf) if present
//! MAC (32): keyed BLAKE3 of everything before it (not part of what `decode` reads)
//! ```
//!
//! Fixed-width rows and explicit lengths let [`CatalogView`] answer a query by reading only
//! what it needs (a binary search over the rows or the paths, then one snapshot or one path
//! entry), without decoding the rest.

use super::snapshot::Snapshot;
use super::tree::{Node, decode_node, encode_node};
use super::{DecodeError, DecodeResult, Put, Reader, len_u32};
use crate::id::SnapshotId;

pub const MAGIC: &[u8; 8] = b"PRISMCAT";
pub const VERSION: u32 = 2;
/// Length of the MAC that follows the body.
pub const MAC_LEN: usize = 32;
pub const FLAG_CATALOGED: u8 = 1;
pub const FLAG_SAFETY: u8 = 2;
/// The tag of the snapshots a sync step saves before it replaces local files.
pub const SAFETY_TAG: &str = "before-sync";
const ROW_LEN: usize = 8 + 32 + 1 + 4;
const TAG_LEN_MAX: usize = 64;
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
    /// The listing tag (`backend::listing_tag`) of the repository's snapshots when the catalog
    /// was last brought up to date (empty: unknown).
    pub listing: String,
    pub snapshots: Vec<CatalogSnapshot>,
    pub others: Vec<SnapshotId>,
    pub paths: Vec<(Vec<u8>, PathVersions)>,
}

/// Whether a snapshot is the local copy a step saved before replacing files.
pub fn is_safety(s: &Snapshot) -> bool {
    s.tags.iter().any(|t| t == SAFETY_TAG)
}

fn valid_tag(t: &[u8]) -> bool {
    t.len() <= TAG_LEN_MAX
        && t.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

fn encode_path_entry(v: &mut Vec<u8>, path: &[u8], versions: &PathVersions) {
    v.put_u16(u16::try_from(path.len()).expect("paths are bounded"));
    v.put(path);
    v.put_u32(len_u32(versions.len()));
    for (i, node) in versions {
        v.put_u32(*i);
        match node {
            None => v.put_u8(0),
            Some(n) => {
                v.put_u8(1);
                encode_node(v, n);
            }
        }
    }
}

impl CatalogFile {
    /// The body (without the MAC).
    pub fn encode(&self) -> Vec<u8> {
        assert!(valid_tag(self.listing.as_bytes()), "a listing tag is hex");
        let tlvs: Vec<Vec<u8>> = self.snapshots.iter().map(|s| s.snapshot.encode()).collect();
        let entries: Vec<Vec<u8>> = self
            .paths
            .iter()
            .map(|(p, vs)| {
                let mut e = Vec::new();
                encode_path_entry(&mut e, p, vs);
                e
            })
            .collect();
        let mut v = Vec::new();
        v.put(MAGIC);
        v.put_u32(VERSION);
        v.put(&self.repo_id);
        v.put_u16(u16::try_from(self.set.len()).expect("set names are short"));
        v.put(self.set.as_bytes());
        v.put_u8(self.listing.len() as u8);
        v.put(self.listing.as_bytes());
        v.put_u32(len_u32(self.snapshots.len()));
        for (s, tlv) in self.snapshots.iter().zip(&tlvs) {
            v.put_i64(s.snapshot.time_ns);
            v.put(&s.id.0);
            let mut flags = 0;
            if s.cataloged {
                flags |= FLAG_CATALOGED;
            }
            if is_safety(&s.snapshot) {
                flags |= FLAG_SAFETY;
            }
            v.put_u8(flags);
            v.put_u32(len_u32(tlv.len()));
        }
        v.put_u32(len_u32(self.others.len()));
        for id in &self.others {
            v.put(&id.0);
        }
        v.put_u32(len_u32(entries.len()));
        for e in &entries {
            v.put_u32(len_u32(e.len()));
        }
        for tlv in &tlvs {
            v.put(tlv);
        }
        for e in &entries {
            v.put(e);
        }
        v
    }

    /// Decodes a body (without the MAC) whole; checks every rule, so that re-encoding gives the
    /// same bytes.
    pub fn decode(bytes: &[u8]) -> DecodeResult<CatalogFile> {
        let view = CatalogView::parse(bytes.to_vec())?;
        let mut snapshots = Vec::with_capacity(view.len());
        for i in 0..view.len() {
            let row = view.row(i);
            snapshots.push(CatalogSnapshot {
                id: row.id,
                cataloged: row.cataloged(),
                snapshot: view.snapshot(i)?,
            });
        }
        let others = (0..view.others_len()).map(|i| view.other(i)).collect();
        let mut paths = Vec::with_capacity(view.paths_len());
        for j in 0..view.paths_len() {
            let (path, versions) = view.path_entry(j)?;
            paths.push((path.to_vec(), versions));
        }
        Ok(CatalogFile {
            repo_id: view.repo_id,
            set: view.set.clone(),
            listing: view.listing.clone(),
            snapshots,
            others,
            paths,
        })
    }
}

/// A snapshot row: what is known without decoding the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub time_ns: i64,
    pub id: SnapshotId,
    pub flags: u8,
}

impl Row {
    pub fn cataloged(&self) -> bool {
        self.flags & FLAG_CATALOGED != 0
    }
    pub fn safety(&self) -> bool {
        self.flags & FLAG_SAFETY != 0
    }
}

/// A catalog body read in place: [`CatalogView::parse`] checks the framing (header, rows,
/// lengths that add up exactly) in one pass over the fixed-width tables, without decoding a
/// snapshot or a path entry; those are decoded (and checked) when asked for.
pub struct CatalogView {
    body: Vec<u8>,
    pub repo_id: [u8; 32],
    pub set: String,
    pub listing: String,
    rows_at: usize,
    n: usize,
    others_at: usize,
    m: usize,
    /// Where each snapshot TLV starts; one more entry for the end.
    snap_at: Vec<usize>,
    /// Where each path entry starts; one more entry for the end.
    path_at: Vec<usize>,
}

impl CatalogView {
    pub fn parse(body: Vec<u8>) -> DecodeResult<CatalogView> {
        let mut r = Reader::new(&body);
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
        let tl = r.u8(W)? as usize;
        let tag = r.bytes(tl, W)?;
        if !valid_tag(tag) {
            return Err(DecodeError::invalid(W, "listing tag is not lowercase hex"));
        }
        let listing = String::from_utf8(tag.to_vec()).expect("hex is ASCII");
        let n = r.count(ROW_LEN, W)?;
        let rows_at = r.position();
        let mut snap_lens = Vec::with_capacity(n);
        let mut prev: Option<(i64, [u8; 32])> = None;
        for _ in 0..n {
            let time = r.i64(W)?;
            let id: [u8; 32] = r.array(W)?;
            let flags = r.u8(W)?;
            if flags & !(FLAG_CATALOGED | FLAG_SAFETY) != 0 {
                return Err(DecodeError::invalid(W, format!("unknown flags {flags:#x}")));
            }
            if prev.is_some_and(|p| p >= (time, id)) {
                return Err(DecodeError::invalid(
                    W,
                    "snapshots not in ascending (time, id) order",
                ));
            }
            prev = Some((time, id));
            snap_lens.push(r.u32(W)? as usize);
        }
        let m = r.count(32, W)?;
        let others_at = r.position();
        let mut prev: Option<&[u8]> = None;
        for _ in 0..m {
            let id = r.bytes(32, W)?;
            if prev.is_some_and(|p| p >= id) {
                return Err(DecodeError::invalid(W, "other ids not ascending"));
            }
            prev = Some(id);
        }
        let p = r.count(4, W)?;
        let mut path_lens = Vec::with_capacity(p);
        for _ in 0..p {
            path_lens.push(r.u32(W)? as usize);
        }
        let mut at = r.position();
        let mut snap_at = Vec::with_capacity(n + 1);
        for len in snap_lens {
            snap_at.push(at);
            at = at.checked_add(len).ok_or(DecodeError::Truncated(W))?;
        }
        snap_at.push(at);
        let mut path_at = Vec::with_capacity(p + 1);
        for len in path_lens {
            // The smallest entry: u16 len, an empty path, u32 e.
            if len < 6 {
                return Err(DecodeError::invalid(W, "a path entry is too short"));
            }
            path_at.push(at);
            at = at.checked_add(len).ok_or(DecodeError::Truncated(W))?;
        }
        path_at.push(at);
        match at.cmp(&body.len()) {
            std::cmp::Ordering::Greater => return Err(DecodeError::Truncated(W)),
            std::cmp::Ordering::Less => return Err(DecodeError::Trailing(body.len() - at)),
            std::cmp::Ordering::Equal => {}
        }
        // Paths strictly ascending: each entry's path bytes, compared in place.
        let mut v = CatalogView {
            body,
            repo_id,
            set,
            listing,
            rows_at,
            n,
            others_at,
            m,
            snap_at,
            path_at,
        };
        for j in 1..p {
            if v.path_name(j - 1)? >= v.path_name(j)? {
                return Err(DecodeError::invalid(W, "paths not ascending"));
            }
        }
        v.body.shrink_to_fit();
        Ok(v)
    }

    /// Snapshots in the catalog.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Row `i` (`i < len()`).
    pub fn row(&self, i: usize) -> Row {
        let b = &self.body[self.rows_at + i * ROW_LEN..][..ROW_LEN];
        Row {
            time_ns: i64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            id: SnapshotId(b[8..40].try_into().expect("32 bytes")),
            flags: b[40],
        }
    }

    /// Snapshot `i` decoded; its time and before-sync flag must agree with its row.
    pub fn snapshot(&self, i: usize) -> DecodeResult<Snapshot> {
        let s = Snapshot::decode(&self.body[self.snap_at[i]..self.snap_at[i + 1]])?;
        let row = self.row(i);
        if s.time_ns != row.time_ns {
            return Err(DecodeError::invalid(
                W,
                "a row's time is not its snapshot's",
            ));
        }
        if is_safety(&s) != row.safety() {
            return Err(DecodeError::invalid(
                W,
                "a row's before-sync flag is not its snapshot's",
            ));
        }
        Ok(s)
    }

    /// The position of the row of `(time_ns, id)`, if there is one.
    pub fn find(&self, time_ns: i64, id: &SnapshotId) -> Option<usize> {
        let key = (time_ns, *id);
        let i = self.partition(|r| (r.time_ns, r.id) < key);
        (i < self.n && {
            let r = self.row(i);
            (r.time_ns, r.id) == key
        })
        .then_some(i)
    }

    /// The first row for which `before` is false (rows are sorted by it).
    pub fn partition(&self, before: impl Fn(&Row) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(&self.row(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub fn others_len(&self) -> usize {
        self.m
    }

    pub fn other(&self, i: usize) -> SnapshotId {
        SnapshotId(
            self.body[self.others_at + i * 32..][..32]
                .try_into()
                .expect("32 bytes"),
        )
    }

    pub fn paths_len(&self) -> usize {
        self.path_at.len() - 1
    }

    fn entry(&self, j: usize) -> &[u8] {
        &self.body[self.path_at[j]..self.path_at[j + 1]]
    }

    /// The path of entry `j`.
    pub fn path_name(&self, j: usize) -> DecodeResult<&[u8]> {
        let mut r = Reader::new(self.entry(j));
        let pl = r.u16(W)? as usize;
        r.bytes(pl, W)
    }

    /// Entry `j`: its path and versions, checked.
    pub fn path_entry(&self, j: usize) -> DecodeResult<(&[u8], PathVersions)> {
        let mut r = Reader::new(self.entry(j));
        let pl = r.u16(W)? as usize;
        let path = r.bytes(pl, W)?;
        let e = r.count(4 + 1, W)?;
        let mut versions: PathVersions = Vec::with_capacity(e);
        for _ in 0..e {
            let i = r.u32(W)?;
            if i as usize >= self.n {
                return Err(DecodeError::invalid(W, "version of an unknown snapshot"));
            }
            if !self.row(i as usize).cataloged() {
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
        r.finish()?;
        Ok((path, versions))
    }

    /// The versions of `path` (a binary search over the entries; only that entry is decoded).
    pub fn versions_of(&self, path: &[u8]) -> DecodeResult<Option<PathVersions>> {
        let (mut lo, mut hi) = (0, self.paths_len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.path_name(mid)?.cmp(path) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(self.path_entry(mid)?.1)),
            }
        }
        Ok(None)
    }
}

/// Splits a stored catalog into its body and MAC (`None`: too short to hold one).
pub fn split_mac(bytes: &[u8]) -> Option<(&[u8], &[u8; MAC_LEN])> {
    let cut = bytes.len().checked_sub(MAC_LEN)?;
    let (body, mac) = bytes.split_at(cut);
    Some((body, mac.try_into().ok()?))
}
