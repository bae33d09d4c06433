//! The local snapshot catalog of one sync set (`$PRISM_HOME/sync/catalog/<repository id
//! hex>/<set name hex>`, see `format-spec/local-state.md`): the set's snapshots decrypted, the ids
//! of the repository's other snapshots, every path's versions, and the tag of the snapshot
//! listing it is current with.
//!
//! The body (what [`CatalogFile::encode`] gives):
//!
//! ```text
//! magic "PRISMCAT" | u32 version (3) | nonce (16) | u64 body length
//! repository id (32) | u16 len | set name (UTF-8) | u8 len | listing tag (lowercase hex, <= 64)
//! u32 n | u32 m | u32 p | u32 snapshots whose paths are not cataloged
//! n rows: i64 time_ns | id (32) | u8 flags | u64 offset | u32 len        (53 bytes each;
//!         strictly ascending by (time, id); flags bit 0: paths cataloged, bit 1: before-sync)
//! m ids (32 each) of other sets' snapshots, strictly ascending
//! p path slots: u64 offset | u32 len                                      (12 bytes each)
//! n snapshot TLVs, in row order, then p path entries, strictly ascending by path bytes:
//!         u16 len | path | u32 e | e versions: u32 snapshot index (< n, strictly ascending, a
//!         cataloged one) | u8 present (0 absent, 1 present) | node (as in a tree leaf) if present
//! ```
//!
//! The stored file ([`seal`]) is the body cut into blocks of [`BLOCK`] bytes, each followed by
//! its MAC, so that a reader verifies only the blocks it reads ([`Sealed`]). Fixed-width rows
//! and slots with offsets let [`CatalogView`] answer a query by reading only what it needs (a
//! binary search over the rows or the paths, then one snapshot or one path entry).

use std::cell::RefCell;

use super::snapshot::Snapshot;
use super::tree::{Node, decode_node, encode_node};
use super::{DecodeError, DecodeResult, Put, Reader, len_u32};
use crate::id::SnapshotId;

pub const MAGIC: &[u8; 8] = b"PRISMCAT";
pub const VERSION: u32 = 3;
/// Length of each block MAC.
pub const MAC_LEN: usize = 32;
/// Bytes of body per stored block (the last block may be shorter).
pub const BLOCK: usize = 4096;
pub const FLAG_CATALOGED: u8 = 1;
pub const FLAG_SAFETY: u8 = 2;
/// The tag of the snapshots a sync step saves before it replaces local files.
pub const SAFETY_TAG: &str = "before-sync";
/// magic, version, nonce, body length: what a reader needs before it can check a block.
pub const PREFIX_LEN: usize = 8 + 4 + 16 + 8;
const ROW_LEN: usize = 8 + 32 + 1 + 8 + 4;
const SLOT_LEN: usize = 8 + 4;
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
    /// Chosen at random each time the file is written: binds its blocks together (a block of
    /// another write does not verify in this one).
    pub nonce: [u8; 16],
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
    /// The body (what [`seal`] cuts into blocks).
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
        let header = PREFIX_LEN + 32 + 2 + self.set.len() + 1 + self.listing.len() + 16;
        let data_at = header
            + self.snapshots.len() * ROW_LEN
            + self.others.len() * 32
            + self.paths.len() * SLOT_LEN;
        let total = data_at
            + tlvs.iter().map(Vec::len).sum::<usize>()
            + entries.iter().map(Vec::len).sum::<usize>();
        let mut v = Vec::with_capacity(total);
        v.put(MAGIC);
        v.put_u32(VERSION);
        v.put(&self.nonce);
        v.put_u64(total as u64);
        v.put(&self.repo_id);
        v.put_u16(u16::try_from(self.set.len()).expect("set names are short"));
        v.put(self.set.as_bytes());
        v.put_u8(self.listing.len() as u8);
        v.put(self.listing.as_bytes());
        v.put_u32(len_u32(self.snapshots.len()));
        v.put_u32(len_u32(self.others.len()));
        v.put_u32(len_u32(self.paths.len()));
        v.put_u32(len_u32(
            self.snapshots.iter().filter(|s| !s.cataloged).count(),
        ));
        let mut at = data_at;
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
            v.put_u64(at as u64);
            v.put_u32(len_u32(tlv.len()));
            at += tlv.len();
        }
        for id in &self.others {
            v.put(&id.0);
        }
        for e in &entries {
            v.put_u64(at as u64);
            v.put_u32(len_u32(e.len()));
            at += e.len();
        }
        debug_assert_eq!(v.len(), data_at);
        for tlv in &tlvs {
            v.put(tlv);
        }
        for e in &entries {
            v.put(e);
        }
        debug_assert_eq!(v.len(), total);
        v
    }

    /// Decodes a body whole; checks every rule, so that re-encoding gives the same bytes.
    pub fn decode(bytes: &[u8]) -> DecodeResult<CatalogFile> {
        CatalogFile::from_view(&CatalogView::parse(bytes.to_vec())?)
    }

    /// Everything a view holds, every rule checked.
    pub fn from_view(view: &CatalogView) -> DecodeResult<CatalogFile> {
        view.check_all()?;
        let mut snapshots = Vec::with_capacity(view.len());
        for i in 0..view.len() {
            let row = view.row(i)?;
            snapshots.push(CatalogSnapshot {
                id: row.id,
                cataloged: row.cataloged(),
                snapshot: view.snapshot(i)?,
            });
        }
        let others = (0..view.others_len())
            .map(|i| view.other(i))
            .collect::<DecodeResult<_>>()?;
        let mut paths = Vec::with_capacity(view.paths_len());
        for j in 0..view.paths_len() {
            paths.push(view.path_entry(j)?);
        }
        Ok(CatalogFile {
            nonce: view.nonce,
            repo_id: view.repo_id,
            set: view.set.clone(),
            listing: view.listing.clone(),
            snapshots,
            others,
            paths,
        })
    }
}

/// Where a catalog body is read from: in memory, or a stored file whose blocks are checked as
/// they are read ([`Sealed`]).
pub trait Source {
    /// The body's length.
    fn body_len(&self) -> usize;
    /// `len` bytes of the body from `at`; an error if they are not all there or do not verify.
    fn read(&self, at: usize, len: usize) -> DecodeResult<Vec<u8>>;
    /// Says that the bytes from `at` on will be read: a stored file reads them in one call.
    fn prefetch(&self, _at: usize, _len: usize) -> DecodeResult<()> {
        Ok(())
    }
}

impl Source for Vec<u8> {
    fn body_len(&self) -> usize {
        self.len()
    }
    fn read(&self, at: usize, len: usize) -> DecodeResult<Vec<u8>> {
        let end = at.checked_add(len).ok_or(DecodeError::Truncated(W))?;
        self.get(at..end)
            .map(<[u8]>::to_vec)
            .ok_or(DecodeError::Truncated(W))
    }
}

/// Something that reads bytes at an offset: a file (`pread`), or bytes in memory.
pub trait ReadAt {
    fn size(&self) -> std::io::Result<u64>;
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, at)
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()> {
        let src = usize::try_from(at)
            .ok()
            .and_then(|a| self.get(a..a.checked_add(buf.len())?))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// The MAC of block `i` of a body: keyed BLAKE3 of nonce ‖ u64 body length ‖ u64 i ‖ the
/// block's bytes.
pub fn block_mac(
    key: &[u8; 32],
    nonce: &[u8; 16],
    body_len: u64,
    i: u64,
    block: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(nonce);
    h.update(&body_len.to_le_bytes());
    h.update(&i.to_le_bytes());
    h.update(block);
    *h.finalize().as_bytes()
}

/// The stored bytes of `body`: each block of [`BLOCK`] bytes followed by its MAC.
pub fn seal(key: &[u8; 32], body: &[u8]) -> Vec<u8> {
    assert!(body.len() >= PREFIX_LEN, "a body starts with its prefix");
    let nonce: [u8; 16] = body[12..28].try_into().expect("16 bytes");
    let mut out = Vec::with_capacity(body.len() + body.len().div_ceil(BLOCK) * MAC_LEN);
    for (i, b) in body.chunks(BLOCK).enumerate() {
        out.extend_from_slice(b);
        out.extend_from_slice(&block_mac(key, &nonce, body.len() as u64, i as u64, b));
    }
    out
}

/// A stored catalog read in place: a block is read (with neighbours that are missing, in one
/// call) and its MAC checked the first time one of its bytes is asked for, then kept.
pub struct Sealed<R> {
    r: R,
    key: [u8; 32],
    nonce: [u8; 16],
    body_len: usize,
    /// The blocks read so far, by number.
    blocks: RefCell<Vec<Option<Box<[u8]>>>>,
}

fn damaged_block(i: usize) -> DecodeError {
    DecodeError::invalid(W, format!("block {i} does not verify"))
}

impl<R: ReadAt> Sealed<R> {
    /// Reads the prefix (magic, version, nonce, body length), checks the stored size against
    /// it and verifies the first block.
    pub fn open(r: R, key: &[u8; 32]) -> DecodeResult<Sealed<R>> {
        let size = r.size().map_err(|_| DecodeError::Truncated(W))?;
        let mut prefix = [0u8; PREFIX_LEN];
        r.read_exact_at(&mut prefix, 0)
            .map_err(|_| DecodeError::Truncated(W))?;
        if &prefix[..8] != MAGIC {
            return Err(DecodeError::BadMagic(W));
        }
        let version = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(DecodeError::Version {
                found: version,
                supported: VERSION,
            });
        }
        let body_len = u64::from_le_bytes(prefix[28..36].try_into().expect("8 bytes"));
        let stored =
            (body_len as u128) + (body_len.div_ceil(BLOCK as u64) as u128) * MAC_LEN as u128;
        if (body_len as usize) < PREFIX_LEN || stored != size as u128 {
            return Err(DecodeError::invalid(
                W,
                "the stored size is not the body length's",
            ));
        }
        let s = Sealed {
            r,
            key: *key,
            nonce: prefix[12..28].try_into().expect("16 bytes"),
            body_len: usize::try_from(body_len).map_err(|_| DecodeError::Truncated(W))?,
            blocks: RefCell::new(vec![None; body_len.div_ceil(BLOCK as u64) as usize]),
        };
        s.load(0, 0)?;
        Ok(s)
    }

    fn block_len(&self, i: usize) -> usize {
        (self.body_len - i * BLOCK).min(BLOCK)
    }

    /// Reads blocks `first..=last` that are not kept yet (each run of missing ones in one
    /// call) and verifies them.
    fn load(&self, first: usize, last: usize) -> DecodeResult<()> {
        let mut i = first;
        while i <= last {
            if self.blocks.borrow()[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < last && self.blocks.borrow()[j + 1].is_none() {
                j += 1;
            }
            let at = i * (BLOCK + MAC_LEN);
            let len: usize = (i..=j).map(|b| self.block_len(b) + MAC_LEN).sum();
            let mut buf = vec![0u8; len];
            self.r
                .read_exact_at(&mut buf, at as u64)
                .map_err(|_| DecodeError::Truncated(W))?;
            let mut off = 0;
            let mut blocks = self.blocks.borrow_mut();
            for b in i..=j {
                let bl = self.block_len(b);
                let (data, mac) = buf[off..off + bl + MAC_LEN].split_at(bl);
                let want = block_mac(&self.key, &self.nonce, self.body_len as u64, b as u64, data);
                if blake3::Hash::from(want)
                    != blake3::Hash::from(<[u8; 32]>::try_from(mac).expect("32 bytes"))
                {
                    return Err(damaged_block(b));
                }
                blocks[b] = Some(data.into());
                off += bl + MAC_LEN;
            }
            i = j + 1;
        }
        Ok(())
    }
}

impl<R: ReadAt> Source for Sealed<R> {
    fn body_len(&self) -> usize {
        self.body_len
    }
    fn read(&self, at: usize, len: usize) -> DecodeResult<Vec<u8>> {
        let end = at.checked_add(len).ok_or(DecodeError::Truncated(W))?;
        if end > self.body_len {
            return Err(DecodeError::Truncated(W));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let (first, last) = (at / BLOCK, (end - 1) / BLOCK);
        self.load(first, last)?;
        let blocks = self.blocks.borrow();
        if first == last {
            let data = blocks[first].as_ref().expect("loaded above");
            return Ok(data[at - first * BLOCK..end - first * BLOCK].to_vec());
        }
        let mut out = Vec::with_capacity(len);
        for b in first..=last {
            let data = blocks[b].as_ref().expect("loaded above");
            let from = at.max(b * BLOCK) - b * BLOCK;
            let to = end.min(b * BLOCK + data.len()) - b * BLOCK;
            out.extend_from_slice(&data[from..to]);
        }
        Ok(out)
    }
    fn prefetch(&self, at: usize, len: usize) -> DecodeResult<()> {
        let end = at.saturating_add(len).min(self.body_len);
        if at < end {
            self.load(at / BLOCK, (end - 1) / BLOCK)?;
        }
        Ok(())
    }
}

/// A snapshot row: what is known without decoding the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub time_ns: i64,
    pub id: SnapshotId,
    pub flags: u8,
    /// Where its snapshot's TLV is in the body, and its length.
    pub at: u64,
    pub len: u32,
}

impl Row {
    pub fn cataloged(&self) -> bool {
        self.flags & FLAG_CATALOGED != 0
    }
    pub fn safety(&self) -> bool {
        self.flags & FLAG_SAFETY != 0
    }
}

/// A catalog body read in place: [`CatalogView::parse`] reads the header only (a fixed number
/// of bytes at the start); rows, ids, snapshots and path entries are read (and checked) when
/// asked for. [`CatalogView::check_all`] checks every rule of the format.
pub struct CatalogView {
    src: Box<dyn Source>,
    pub nonce: [u8; 16],
    pub repo_id: [u8; 32],
    pub set: String,
    pub listing: String,
    n: usize,
    m: usize,
    p: usize,
    uncataloged: usize,
    rows_at: usize,
    others_at: usize,
    slots_at: usize,
    data_at: usize,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl CatalogView {
    /// A body in memory.
    pub fn parse(body: Vec<u8>) -> DecodeResult<CatalogView> {
        CatalogView::read_from(Box::new(body))
    }

    /// Reads the header from `src`.
    pub fn read_from(src: Box<dyn Source>) -> DecodeResult<CatalogView> {
        let len = src.body_len();
        let fixed = src.read(0, (PREFIX_LEN + 32 + 2).min(len))?;
        let mut r = Reader::new(&fixed);
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
        let nonce = r.array(W)?;
        if r.u64(W)? != len as u64 {
            return Err(DecodeError::invalid(W, "the body length is not the body's"));
        }
        let repo_id = r.array(W)?;
        let nl = r.u16(W)? as usize;
        let mut at = PREFIX_LEN + 32 + 2;
        let name = src.read(at, nl + 1)?;
        let set = std::str::from_utf8(&name[..nl])
            .map_err(|_| DecodeError::invalid(W, "set name is not UTF-8"))?
            .to_string();
        let tl = name[nl] as usize;
        at += nl + 1;
        let rest = src.read(at, tl + 16)?;
        let tag = &rest[..tl];
        if !valid_tag(tag) {
            return Err(DecodeError::invalid(W, "listing tag is not lowercase hex"));
        }
        let listing = String::from_utf8(tag.to_vec()).expect("hex is ASCII");
        let n = u32_at(&rest, tl) as usize;
        let m = u32_at(&rest, tl + 4) as usize;
        let p = u32_at(&rest, tl + 8) as usize;
        let uncataloged = u32_at(&rest, tl + 12) as usize;
        if uncataloged > n {
            return Err(DecodeError::invalid(
                W,
                "more snapshots uncataloged than rows",
            ));
        }
        let rows_at = at + tl + 16;
        let others_at = rows_at + n * ROW_LEN;
        let slots_at = others_at + m * 32;
        let data_at = slots_at + p * SLOT_LEN;
        if data_at > len {
            return Err(DecodeError::Truncated(W));
        }
        Ok(CatalogView {
            src,
            nonce,
            repo_id,
            set,
            listing,
            n,
            m,
            p,
            uncataloged,
            rows_at,
            others_at,
            slots_at,
            data_at,
        })
    }

    /// Snapshots in the catalog.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Snapshots whose paths are not cataloged (as the header says).
    pub fn uncataloged(&self) -> usize {
        self.uncataloged
    }

    /// Row `i` (`i < len()`); its snapshot's bytes lie in the data.
    pub fn row(&self, i: usize) -> DecodeResult<Row> {
        assert!(i < self.n, "row {i} of {}", self.n);
        let b = self.src.read(self.rows_at + i * ROW_LEN, ROW_LEN)?;
        let row = Row {
            time_ns: u64_at(&b, 0) as i64,
            id: SnapshotId(b[8..40].try_into().expect("32 bytes")),
            flags: b[40],
            at: u64_at(&b, 41),
            len: u32_at(&b, 49),
        };
        if row.flags & !(FLAG_CATALOGED | FLAG_SAFETY) != 0 {
            return Err(DecodeError::invalid(
                W,
                format!("unknown flags {:#x}", row.flags),
            ));
        }
        self.in_data(row.at, row.len)?;
        Ok(row)
    }

    fn in_data(&self, at: u64, len: u32) -> DecodeResult<()> {
        let end = at.checked_add(u64::from(len));
        if at < self.data_at as u64 || end.is_none_or(|e| e > self.src.body_len() as u64) {
            return Err(DecodeError::invalid(W, "an offset outside the data"));
        }
        Ok(())
    }

    /// Snapshot `i` decoded; its time and before-sync flag must agree with its row.
    pub fn snapshot(&self, i: usize) -> DecodeResult<Snapshot> {
        let row = self.row(i)?;
        let s = Snapshot::decode(&self.src.read(row.at as usize, row.len as usize)?)?;
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

    /// Reads the snapshots of rows `first..=last` in one go (they are read one by one next).
    pub fn prefetch_snapshots(&self, first: usize, last: usize) -> DecodeResult<()> {
        let (a, b) = (self.row(first)?, self.row(last)?);
        if a.at <= b.at {
            self.src
                .prefetch(a.at as usize, (b.at - a.at) as usize + b.len as usize)?;
        }
        Ok(())
    }

    /// The position of the row of `(time_ns, id)`, if there is one.
    pub fn find(&self, time_ns: i64, id: &SnapshotId) -> DecodeResult<Option<usize>> {
        let key = (time_ns, *id);
        let i = self.partition(|r| (r.time_ns, r.id) < key)?;
        if i < self.n {
            let r = self.row(i)?;
            if (r.time_ns, r.id) == key {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The first row for which `before` is false (rows are sorted by it): a binary search.
    pub fn partition(&self, before: impl Fn(&Row) -> bool) -> DecodeResult<usize> {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(&self.row(mid)?) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    pub fn others_len(&self) -> usize {
        self.m
    }

    pub fn other(&self, i: usize) -> DecodeResult<SnapshotId> {
        assert!(i < self.m, "other id {i} of {}", self.m);
        let b = self.src.read(self.others_at + i * 32, 32)?;
        Ok(SnapshotId(b[..].try_into().expect("32 bytes")))
    }

    pub fn paths_len(&self) -> usize {
        self.p
    }

    /// Where path entry `j` is, and its length.
    fn slot(&self, j: usize) -> DecodeResult<(u64, u32)> {
        assert!(j < self.p, "path {j} of {}", self.p);
        let b = self.src.read(self.slots_at + j * SLOT_LEN, SLOT_LEN)?;
        let (at, len) = (u64_at(&b, 0), u32_at(&b, 8));
        self.in_data(at, len)?;
        // The smallest entry: u16 len, an empty path, u32 e.
        if len < 6 {
            return Err(DecodeError::invalid(W, "a path entry is too short"));
        }
        Ok((at, len))
    }

    /// The path of entry `j` (only its first bytes are read).
    pub fn path_name(&self, j: usize) -> DecodeResult<Vec<u8>> {
        let (at, len) = self.slot(j)?;
        let pl =
            u16::from_le_bytes(self.src.read(at as usize, 2)?[..].try_into().expect("2")) as usize;
        if 2 + pl + 4 > len as usize {
            return Err(DecodeError::Truncated(W));
        }
        self.src.read(at as usize + 2, pl)
    }

    /// Entry `j`: its path and versions, checked.
    pub fn path_entry(&self, j: usize) -> DecodeResult<(Vec<u8>, PathVersions)> {
        let (at, len) = self.slot(j)?;
        let bytes = self.src.read(at as usize, len as usize)?;
        let mut r = Reader::new(&bytes);
        let pl = r.u16(W)? as usize;
        let path = r.bytes(pl, W)?.to_vec();
        let e = r.count(4 + 1, W)?;
        let mut versions: PathVersions = Vec::with_capacity(e);
        for _ in 0..e {
            let i = r.u32(W)?;
            if i as usize >= self.n {
                return Err(DecodeError::invalid(W, "version of an unknown snapshot"));
            }
            if !self.row(i as usize)?.cataloged() {
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
            match self.path_name(mid)?.as_slice().cmp(path) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(self.path_entry(mid)?.1)),
            }
        }
        Ok(None)
    }

    /// Checks the rules a lookup does not need: rows strictly ascending, the count of
    /// uncataloged rows, other ids ascending, paths ascending, and the snapshots then the path
    /// entries laid out one after another from the end of the tables to the end of the body.
    /// Reads every row, id and slot and every path's name.
    pub fn check_all(&self) -> DecodeResult<()> {
        let mut at = self.data_at as u64;
        let mut prev: Option<(i64, SnapshotId)> = None;
        let mut uncataloged = 0;
        for i in 0..self.n {
            let r = self.row(i)?;
            if prev.is_some_and(|p| p >= (r.time_ns, r.id)) {
                return Err(DecodeError::invalid(
                    W,
                    "snapshots not in ascending (time, id) order",
                ));
            }
            prev = Some((r.time_ns, r.id));
            uncataloged += usize::from(!r.cataloged());
            if r.at != at {
                return Err(DecodeError::invalid(
                    W,
                    "a snapshot is not where it follows",
                ));
            }
            at += u64::from(r.len);
        }
        if uncataloged != self.uncataloged {
            return Err(DecodeError::invalid(
                W,
                "the count of uncataloged snapshots",
            ));
        }
        let mut prev: Option<SnapshotId> = None;
        for i in 0..self.m {
            let id = self.other(i)?;
            if prev.is_some_and(|p| p >= id) {
                return Err(DecodeError::invalid(W, "other ids not ascending"));
            }
            prev = Some(id);
        }
        let mut prev: Option<Vec<u8>> = None;
        for j in 0..self.p {
            let (a, len) = self.slot(j)?;
            if a != at {
                return Err(DecodeError::invalid(
                    W,
                    "a path entry is not where it follows",
                ));
            }
            at += u64::from(len);
            let name = self.path_name(j)?;
            if prev.as_ref().is_some_and(|p| *p >= name) {
                return Err(DecodeError::invalid(W, "paths not ascending"));
            }
            prev = Some(name);
        }
        match at.cmp(&(self.src.body_len() as u64)) {
            std::cmp::Ordering::Greater => Err(DecodeError::Truncated(W)),
            std::cmp::Ordering::Less => {
                Err(DecodeError::Trailing(self.src.body_len() - at as usize))
            }
            std::cmp::Ordering::Equal => Ok(()),
        }
    }
}
