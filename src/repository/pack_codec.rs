//! Assembling and parsing packs (layout in `format::pack`).
//!
//! Owns: sealing blobs into a pack, reading a pack's table, opening one blob, salvaging a damaged
//! pack. Must not touch: backends, the index, uploading.

use crate::crypto::{Cipher, Keys, random_bytes};
use crate::format::pack::{
    self as layout, BLOB_HEADER_LEN, BLOB_HEADER_PLAIN_LEN, BlobEntry, BlobKind, HEADER_LEN,
    NONCE_DOMAIN_BODY, NONCE_DOMAIN_HEADER, NONCE_DOMAIN_TABLE, TAG_LEN, TRAILER_LEN, nonce,
};
use crate::format::{DecodeError, len_u32};
use crate::id::{BlobId, PackId};

/// Why a blob could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("authentication failed (damaged or tampered bytes)")]
    Auth,
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("content does not match its id")]
    IdMismatch,
}

/// Associated data of a blob body: its kind and id, so a blob cannot be swapped for another.
fn body_aad(kind: BlobKind, id: &BlobId) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = kind as u8;
    a[1..].copy_from_slice(&id.0);
    a
}

/// Blobs below this size are compressed harder ([`small_blob_level`]): they are cheap to
/// compress, and a folder of small files is where per-blob overhead makes a repository big.
pub const SMALL_BLOB: usize = 16 << 10;

/// The zstd level for blobs below [`SMALL_BLOB`], given the repository's level.
pub fn small_blob_level(level: i32) -> i32 {
    if level > 0 {
        (level + 4).min(19)
    } else {
        level
    }
}

/// Two reused zstd contexts: the repository's level for big blobs, a higher one for small ones.
pub struct Compressors {
    big: zstd::bulk::Compressor<'static>,
    small: zstd::bulk::Compressor<'static>,
}

impl Compressors {
    pub fn new(level: i32) -> Self {
        Compressors {
            big: zstd::bulk::Compressor::new(level).expect("zstd context"),
            small: zstd::bulk::Compressor::new(small_blob_level(level)).expect("zstd context"),
        }
    }

    /// The context for a blob of this size.
    pub fn for_len(&mut self, len: usize) -> &mut zstd::bulk::Compressor<'static> {
        if len < SMALL_BLOB {
            &mut self.small
        } else {
            &mut self.big
        }
    }
}

/// Compresses a blob with a reused zstd context; `None` when zstd does not make it smaller
/// (then the blob is stored raw — the format requires it).
pub fn compress(compressor: &mut zstd::bulk::Compressor<'_>, raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    compress_into(compressor, raw, &mut out).then_some(out)
}

/// [`compress`] into a reused buffer; `false` (and `out` undefined) when zstd does not help.
pub fn compress_into(
    compressor: &mut zstd::bulk::Compressor<'_>,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let bound = zstd::zstd_safe::compress_bound(raw.len());
    out.clear();
    out.reserve(bound + TAG_LEN);
    matches!(compressor.compress_to_buffer(raw, out), Ok(n) if n < raw.len())
}

/// A pack being filled in memory.
pub struct PackWriter {
    kind: BlobKind,
    salt: [u8; 32],
    cipher: Cipher,
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
    raw_bytes: u64,
}

/// A sealed pack, ready to store.
pub struct FinishedPack {
    pub id: PackId,
    pub kind: BlobKind,
    pub salt: [u8; 32],
    pub bytes: Vec<u8>,
    pub entries: Vec<BlobEntry>,
    pub raw_bytes: u64,
}

impl PackWriter {
    pub fn new(keys: &Keys, kind: BlobKind, capacity: usize) -> Self {
        Self::reusing(keys, kind, Vec::with_capacity(capacity))
    }

    /// A writer that fills `buf` (cleared first; e.g. the bytes of a pack already stored), so a
    /// backup does not fault in fresh memory for every pack.
    pub fn reusing(keys: &Keys, kind: BlobKind, buf: Vec<u8>) -> Self {
        Self::start(keys, kind, random_bytes(), buf)
    }

    /// A writer with a chosen salt: for test vectors only (a salt must never repeat).
    pub fn with_salt(keys: &Keys, kind: BlobKind, salt: [u8; 32], capacity: usize) -> Self {
        Self::start(keys, kind, salt, Vec::with_capacity(capacity))
    }

    fn start(keys: &Keys, kind: BlobKind, salt: [u8; 32], mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(&layout::encode_pack_header(&salt));
        PackWriter {
            kind,
            salt,
            cipher: keys.pack_cipher(&salt),
            buf,
            entries: Vec::new(),
            raw_bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn kind(&self) -> BlobKind {
        self.kind
    }

    /// Seals and appends a blob. `body` holds the stored plaintext (zstd output when `compressed`,
    /// else the raw bytes).
    pub fn add(
        &mut self,
        id: BlobId,
        raw_length: usize,
        compressed: bool,
        body: Vec<u8>,
    ) -> BlobEntry {
        self.add_slice(id, raw_length, compressed, &body)
    }

    /// [`Self::add`] from a borrowed body: it is copied into the pack and encrypted there.
    pub fn add_slice(
        &mut self,
        id: BlobId,
        raw_length: usize,
        compressed: bool,
        body: &[u8],
    ) -> BlobEntry {
        let record = self.buf.len() as u64;
        let body_offset = record + BLOB_HEADER_LEN as u64;
        let entry = BlobEntry {
            kind: self.kind,
            compressed,
            offset: u32::try_from(body_offset).expect("packs stay below 4 GiB"),
            length: len_u32(body.len() + TAG_LEN),
            raw_length: len_u32(raw_length),
            id,
        };
        let start = self.buf.len();
        self.buf.extend_from_slice(&entry.encode_header());
        self.cipher.seal_tail(
            nonce(NONCE_DOMAIN_HEADER, record),
            &[],
            &mut self.buf,
            start,
        );
        let start = self.buf.len();
        self.buf.extend_from_slice(body);
        self.cipher.seal_tail(
            nonce(NONCE_DOMAIN_BODY, body_offset),
            &body_aad(self.kind, &id),
            &mut self.buf,
            start,
        );
        self.entries.push(entry);
        self.raw_bytes += raw_length as u64;
        entry
    }

    pub fn finish(mut self) -> FinishedPack {
        let table_offset = self.buf.len() as u64;
        let mut table = layout::encode_table(&self.entries);
        self.cipher
            .seal_in_place(nonce(NONCE_DOMAIN_TABLE, table_offset), &[], &mut table);
        self.buf.extend_from_slice(&table);
        self.buf
            .extend_from_slice(&layout::encode_trailer(len_u32(table.len())));
        FinishedPack {
            id: PackId::of_bytes(&self.buf),
            kind: self.kind,
            salt: self.salt,
            bytes: self.buf,
            entries: self.entries,
            raw_bytes: self.raw_bytes,
        }
    }
}

/// Opens one blob's sealed body: decrypts, decompresses and checks the id.
pub fn open_blob(
    keys: &Keys,
    cipher: &Cipher,
    entry: &BlobEntry,
    sealed: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let mut buf = sealed.to_vec();
    cipher
        .open_in_place(
            nonce(NONCE_DOMAIN_BODY, entry.offset as u64),
            &body_aad(entry.kind, &entry.id),
            &mut buf,
        )
        .map_err(|_| BlobError::Auth)?;
    let plain = if entry.compressed {
        let out = zstd::bulk::decompress(&buf, entry.raw_length as usize)
            .map_err(|e| BlobError::Decompress(e.to_string()))?;
        if out.len() != entry.raw_length as usize {
            return Err(BlobError::Decompress(format!(
                "{} bytes instead of {}",
                out.len(),
                entry.raw_length
            )));
        }
        out
    } else {
        buf
    };
    if keys.blob_id(&plain) != entry.id {
        return Err(BlobError::IdMismatch);
    }
    Ok(plain)
}

/// Reads a pack's table from the whole pack's bytes (or from a tail plus the header's salt).
pub fn read_table(keys: &Keys, pack: &[u8]) -> Result<([u8; 32], Vec<BlobEntry>), DecodeError> {
    let salt = layout::decode_pack_header(pack)?;
    let len = pack.len() as u64;
    if len < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(DecodeError::Truncated("pack"));
    }
    let (table_offset, table_len) = layout::decode_trailer(len, &pack[pack.len() - TRAILER_LEN..])?;
    let sealed = &pack[table_offset as usize..table_offset as usize + table_len as usize];
    let table = keys
        .pack_cipher(&salt)
        .open(nonce(NONCE_DOMAIN_TABLE, table_offset), &[], sealed)
        .map_err(|_| DecodeError::invalid("pack table", "authentication failed"))?;
    Ok((salt, layout::decode_table(&table, table_offset)?))
}

/// One blob found by [`salvage`].
pub struct Salvaged {
    pub entry: BlobEntry,
    pub plaintext: Result<Vec<u8>, BlobError>,
}

/// Recovers what can be recovered from a damaged pack: every blob the table lists, or, when the
/// table is unreadable, every blob whose sealed header opens when walking the records (a damaged
/// record is skipped by scanning for the next header that authenticates at its own offset).
pub fn salvage(keys: &Keys, pack: &[u8]) -> Result<Vec<Salvaged>, DecodeError> {
    let salt = layout::decode_pack_header(pack)?;
    let cipher = keys.pack_cipher(&salt);
    let open = |entry: BlobEntry| {
        let start = entry.offset as usize;
        let end = start + entry.length as usize;
        let plaintext = match pack.get(start..end) {
            Some(sealed) => open_blob(keys, &cipher, &entry, sealed),
            None => Err(BlobError::Auth),
        };
        Salvaged { entry, plaintext }
    };
    if let Ok((_, entries)) = read_table(keys, pack) {
        return Ok(entries.into_iter().map(open).collect());
    }
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    while pos + BLOB_HEADER_LEN <= pack.len() {
        match try_header(&cipher, pack, pos) {
            Some(entry) => {
                pos = entry.offset as usize + entry.length as usize;
                out.push(open(entry));
            }
            None => pos += 1,
        }
    }
    Ok(out)
}

fn try_header(cipher: &Cipher, pack: &[u8], pos: usize) -> Option<BlobEntry> {
    let sealed = pack.get(pos..pos + BLOB_HEADER_LEN)?;
    let plain = cipher
        .open(nonce(NONCE_DOMAIN_HEADER, pos as u64), &[], sealed)
        .ok()?;
    debug_assert_eq!(plain.len(), BLOB_HEADER_PLAIN_LEN);
    let body_offset = u32::try_from(pos + BLOB_HEADER_LEN).ok()?;
    let entry = BlobEntry::decode_header(&plain, body_offset).ok()?;
    (entry.offset as usize + entry.length as usize <= pack.len()).then_some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack_with(keys: &Keys, blobs: &[&[u8]]) -> FinishedPack {
        let mut w = PackWriter::new(keys, BlobKind::Data, 1 << 16);
        let mut z = zstd::bulk::Compressor::new(3).unwrap();
        for b in blobs {
            let id = keys.blob_id(b);
            match compress(&mut z, b) {
                Some(c) => w.add(id, b.len(), true, c),
                None => w.add(id, b.len(), false, b.to_vec()),
            };
        }
        w.finish()
    }

    #[test]
    fn blobs_round_trip_through_a_pack() {
        let keys = Keys::from_master([5; 32]);
        let text = b"hello hello hello hello hello hello hello".repeat(20);
        let random: Vec<u8> = (0..500u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let p = pack_with(&keys, &[&text, &random, b""]);
        assert_eq!(PackId::of_bytes(&p.bytes), p.id);
        let (salt, entries) = read_table(&keys, &p.bytes).unwrap();
        assert_eq!(entries, p.entries);
        assert!(entries[0].compressed);
        let cipher = keys.pack_cipher(&salt);
        for (e, want) in entries.iter().zip([&text[..], &random[..], b""]) {
            let sealed = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(open_blob(&keys, &cipher, e, sealed).unwrap(), want);
        }
    }

    #[test]
    fn a_wrong_key_or_flipped_bit_fails_authentication() {
        let keys = Keys::from_master([5; 32]);
        let p = pack_with(&keys, &[b"abc"]);
        assert!(read_table(&Keys::from_master([6; 32]), &p.bytes).is_err());
        let e = p.entries[0];
        let mut bytes = p.bytes.clone();
        bytes[e.offset as usize] ^= 0x80;
        let cipher = keys.pack_cipher(&p.salt);
        let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
        assert_eq!(open_blob(&keys, &cipher, &e, sealed), Err(BlobError::Auth));
    }

    #[test]
    fn salvage_walks_records_when_the_table_is_destroyed() {
        let keys = Keys::from_master([7; 32]);
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + i as usize]).collect();
        let refs: Vec<&[u8]> = blobs.iter().map(|b| &b[..]).collect();
        let p = pack_with(&keys, &refs);
        let mut bytes = p.bytes.clone();
        let n = bytes.len();
        bytes[n - 20] ^= 1; // the table
        let second = p.entries[1];
        bytes[second.offset as usize - 30] ^= 1; // the second blob's header
        let got = salvage(&keys, &bytes).unwrap();
        let ok: Vec<_> = got
            .iter()
            .filter_map(|s| s.plaintext.as_ref().ok().cloned())
            .collect();
        assert_eq!(
            ok,
            vec![
                blobs[0].clone(),
                blobs[2].clone(),
                blobs[3].clone(),
                blobs[4].clone()
            ]
        );
    }
}
