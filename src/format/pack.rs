//! Pack file layout. A pack holds blobs of one kind (data or tree), each sealed on its own, so a
//! damaged pack can be salvaged blob by blob; a sealed table at the end lists them all.
//!
//! ```text
//! 0   8  magic "PRSMPACK"
//! 8   1  version (1)
//! 9   7  reserved, 0
//! 16 32  salt: random per pack; pack key = keyed BLAKE3(pack-key key, salt)
//! 48  …  blob records, each:
//!          sealed blob header: 44 plaintext bytes + 16 tag, nonce N(1, offset of the record)
//!          sealed body: ciphertext + 16 tag, nonce N(2, offset of the body), AD = kind || id
//!  t  …  sealed table: u32 count, count × 48-byte entries, nonce N(3, t)
//!  …  4  sealed table length (u32 LE)
//!  …  4  magic "PRSE"
//! ```
//!
//! Nonce `N(domain, offset)` = domain byte, 3 zero bytes, offset as u64 LE: unique under the
//! pack's own key because offsets are unique and the domains distinct.
//!
//! Blob header plaintext: kind u8, flags u8 (bit 0: zstd), reserved u16, body length u32 (sealed,
//! with tag), raw length u32 (plaintext before compression), id (32). A table entry is the same
//! with the body's offset (u32) between flags/reserved and the body length.

use super::{DecodeError, DecodeResult, Put, Reader};
use crate::id::BlobId;

pub const MAGIC: &[u8; 8] = b"PRSMPACK";
pub const END_MAGIC: &[u8; 4] = b"PRSE";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 48;
pub const TAG_LEN: usize = 16;
pub const BLOB_HEADER_PLAIN_LEN: usize = 44;
pub const BLOB_HEADER_LEN: usize = BLOB_HEADER_PLAIN_LEN + TAG_LEN;
pub const TABLE_ENTRY_LEN: usize = 48;
pub const TRAILER_LEN: usize = 8;
/// Offsets are u32: a pack must stay below 4 GiB.
pub const PACK_LEN_MAX: u64 = u32::MAX as u64;
/// A blob's plaintext may not exceed this (the chunker's max is 16 MiB; trees stay far below).
pub const BLOB_RAW_LEN_MAX: u32 = 64 << 20;

pub const NONCE_DOMAIN_HEADER: u8 = 1;
pub const NONCE_DOMAIN_BODY: u8 = 2;
pub const NONCE_DOMAIN_TABLE: u8 = 3;

pub fn nonce(domain: u8, offset: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[0] = domain;
    n[4..].copy_from_slice(&offset.to_le_bytes());
    n
}

#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobKind {
    Data = 1,
    Tree = 2,
}

impl BlobKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(BlobKind::Data),
            2 => Some(BlobKind::Tree),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        }
    }
}

pub const FLAG_ZSTD: u8 = 1;

pub fn encode_pack_header(salt: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8] = VERSION;
    h[16..].copy_from_slice(salt);
    h
}

/// Returns the pack's salt.
pub fn decode_pack_header(bytes: &[u8]) -> DecodeResult<[u8; 32]> {
    let mut r = Reader::new(bytes);
    if r.bytes(8, "pack header")? != MAGIC {
        return Err(DecodeError::BadMagic("pack"));
    }
    let version = r.u8("pack header")?;
    if version != VERSION {
        return Err(DecodeError::Version {
            found: version.into(),
            supported: VERSION.into(),
        });
    }
    r.reserved(7, "pack header")?;
    r.array::<32>("pack header")
}

/// Where a blob sits in its pack and how to open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    pub kind: BlobKind,
    pub compressed: bool,
    /// Offset of the sealed body within the pack.
    pub offset: u32,
    /// Length of the sealed body, tag included.
    pub length: u32,
    pub raw_length: u32,
    pub id: BlobId,
}

impl BlobEntry {
    fn flags(&self) -> u8 {
        if self.compressed { FLAG_ZSTD } else { 0 }
    }

    /// The 44-byte plaintext of the sealed header in front of the body.
    pub fn encode_header(&self) -> [u8; BLOB_HEADER_PLAIN_LEN] {
        let mut v = Vec::with_capacity(BLOB_HEADER_PLAIN_LEN);
        v.put_u8(self.kind as u8);
        v.put_u8(self.flags());
        v.put_u16(0);
        v.put_u32(self.length);
        v.put_u32(self.raw_length);
        v.put(&self.id.0);
        v.try_into().expect("44 bytes")
    }

    /// Decodes a header found at a record whose body starts at `body_offset`.
    pub fn decode_header(bytes: &[u8], body_offset: u32) -> DecodeResult<Self> {
        let mut r = Reader::new(bytes);
        let (kind, compressed) = decode_kind_flags(&mut r)?;
        let length = r.u32("blob header")?;
        let raw_length = r.u32("blob header")?;
        let id = BlobId(r.array("blob header")?);
        r.finish()?;
        let e = BlobEntry {
            kind,
            compressed,
            offset: body_offset,
            length,
            raw_length,
            id,
        };
        e.validate()?;
        Ok(e)
    }

    /// Checks the lengths against each other: a body holds at least its tag, a stored-raw body is
    /// exactly raw + tag, a compressed one strictly shorter (writers store raw unless zstd wins).
    pub fn validate(&self) -> DecodeResult<()> {
        let plain = self
            .length
            .checked_sub(TAG_LEN as u32)
            .ok_or_else(|| DecodeError::invalid("blob entry", "body shorter than its tag"))?;
        if self.raw_length > BLOB_RAW_LEN_MAX {
            return Err(DecodeError::invalid(
                "blob entry",
                "raw length above the limit",
            ));
        }
        let ok = if self.compressed {
            plain < self.raw_length
        } else {
            plain == self.raw_length
        };
        if !ok {
            return Err(DecodeError::invalid(
                "blob entry",
                format!(
                    "stored {plain} bytes for {} raw bytes (compressed: {})",
                    self.raw_length, self.compressed
                ),
            ));
        }
        Ok(())
    }
}

fn decode_kind_flags(r: &mut Reader) -> DecodeResult<(BlobKind, bool)> {
    let kind = r.u8("blob entry")?;
    let kind = BlobKind::from_u8(kind)
        .ok_or_else(|| DecodeError::invalid("blob entry", format!("unknown blob kind {kind}")))?;
    let flags = r.u8("blob entry")?;
    if flags & !FLAG_ZSTD != 0 {
        return Err(DecodeError::invalid(
            "blob entry",
            format!("unknown flags {flags:#x}"),
        ));
    }
    r.reserved(2, "blob entry")?;
    Ok((kind, flags & FLAG_ZSTD != 0))
}

/// The plaintext of a pack's table.
pub fn encode_table(entries: &[BlobEntry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + entries.len() * TABLE_ENTRY_LEN);
    v.put_u32(super::len_u32(entries.len()));
    for e in entries {
        v.put_u8(e.kind as u8);
        v.put_u8(e.flags());
        v.put_u16(0);
        v.put_u32(e.offset);
        v.put_u32(e.length);
        v.put_u32(e.raw_length);
        v.put(&e.id.0);
    }
    v
}

/// Decodes a table and checks that its entries lie inside `[HEADER_LEN, table_offset)`, in order
/// and without overlap.
pub fn decode_table(bytes: &[u8], table_offset: u64) -> DecodeResult<Vec<BlobEntry>> {
    let mut r = Reader::new(bytes);
    let n = r.count(TABLE_ENTRY_LEN, "pack table")?;
    let mut out = Vec::with_capacity(n);
    let mut next_free = HEADER_LEN as u64;
    for _ in 0..n {
        let (kind, compressed) = decode_kind_flags(&mut r)?;
        let offset = r.u32("pack table")?;
        let length = r.u32("pack table")?;
        let raw_length = r.u32("pack table")?;
        let id = BlobId(r.array("pack table")?);
        let e = BlobEntry {
            kind,
            compressed,
            offset,
            length,
            raw_length,
            id,
        };
        e.validate()?;
        let start = offset as u64;
        if start < next_free + BLOB_HEADER_LEN as u64 || start + length as u64 > table_offset {
            return Err(DecodeError::invalid(
                "pack table",
                "blob outside the pack or overlapping another",
            ));
        }
        next_free = start + length as u64;
        out.push(e);
    }
    r.finish()?;
    Ok(out)
}

pub fn encode_trailer(sealed_table_len: u32) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..4].copy_from_slice(&sealed_table_len.to_le_bytes());
    t[4..].copy_from_slice(END_MAGIC);
    t
}

/// Given the whole pack length and its last 8 bytes, returns the sealed table's offset and length.
pub fn decode_trailer(pack_len: u64, trailer: &[u8]) -> DecodeResult<(u64, u32)> {
    let t: [u8; TRAILER_LEN] = trailer
        .try_into()
        .map_err(|_| DecodeError::Truncated("pack trailer"))?;
    if &t[4..] != END_MAGIC {
        return Err(DecodeError::BadMagic("pack trailer"));
    }
    let len = u32::from_le_bytes(t[..4].try_into().expect("4 bytes"));
    let min = (HEADER_LEN + TRAILER_LEN) as u64 + len as u64;
    if (len as usize) < 4 + TAG_LEN || pack_len < min {
        return Err(DecodeError::invalid(
            "pack trailer",
            "table length does not fit the pack",
        ));
    }
    Ok((pack_len - TRAILER_LEN as u64 - len as u64, len))
}
