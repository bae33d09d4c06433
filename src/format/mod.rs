//! Byte layouts: magic and version bytes, canonical encodings, bounds-checked decoding.
//!
//! Owns: the exact bytes of every stored structure (see `format-spec/`). Must not touch: I/O,
//! crypto, paths. Every decoder here takes untrusted bytes and returns [`DecodeError`] on any
//! malformed input — never panics, never allocates more than the input justifies — and every
//! encoder is canonical: `encode(decode(b)) == b` for every accepted `b`.

pub mod catalog;
pub mod config;
pub mod envelope;
pub mod head;
pub mod index;
pub mod keyfile;
pub mod lease;
pub mod pack;
pub mod presence;
pub mod session;
pub mod snapshot;
pub mod tlv;
pub mod tree;

/// Why bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: {0} needs more bytes than are there")]
    Truncated(&'static str),
    #[error("not a prism-sync {0} (wrong magic bytes)")]
    BadMagic(&'static str),
    #[error("format version {found}, supported {supported}")]
    Version { found: u32, supported: u32 },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{0} trailing bytes after the end of the structure")]
    Trailing(usize),
}

impl DecodeError {
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        DecodeError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

pub type DecodeResult<T> = Result<T, DecodeError>;

/// A bounds-checked little-endian cursor over untrusted bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> DecodeResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(what));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> DecodeResult<[u8; N]> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> DecodeResult<u8> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn i64(&mut self, what: &'static str) -> DecodeResult<i64> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// A count of items that each take at least `min_item_len` bytes; rejects counts the remaining
    /// input cannot hold, so a forged count cannot make the caller allocate.
    pub fn count(&mut self, min_item_len: usize, what: &'static str) -> DecodeResult<usize> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.remaining() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n)
    }

    /// Requires that every byte was consumed.
    pub fn finish(&self) -> DecodeResult<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    /// Requires that a reserved field is zero (so it can be given a meaning later).
    pub fn reserved(&mut self, n: usize, what: &'static str) -> DecodeResult<()> {
        if self.bytes(n, what)?.iter().any(|&b| b != 0) {
            return Err(DecodeError::invalid(what, "reserved bytes are not zero"));
        }
        Ok(())
    }
}

/// Little-endian writers for `Vec<u8>`.
pub trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_i64(&mut self, v: i64);
    fn put(&mut self, b: &[u8]);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// Converts a length to the u32 a layout stores; layouts bound every length far below 4 GiB.
pub fn len_u32(n: usize) -> u32 {
    u32::try_from(n).expect("length bounded by the format's limits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_counts_larger_than_input() {
        let mut v = Vec::new();
        v.put_u32(1_000_000);
        v.put(&[0u8; 10]);
        let mut r = Reader::new(&v);
        assert_eq!(
            r.count(32, "entries"),
            Err(DecodeError::Truncated("entries"))
        );
    }

    #[test]
    fn reader_reports_trailing_bytes() {
        let r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.finish(), Err(DecodeError::Trailing(3)));
    }
}
