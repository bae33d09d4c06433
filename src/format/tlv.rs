//! Tag-length-value records, the extensible encoding of small structures (config, snapshot,
//! session). Record: `tag u16 LE | len u32 LE | value`. Canonical form: tags in non-decreasing
//! order, a repeated field's values in their meaning's order. Tags below [`CRITICAL`] may be
//! skipped by a reader that does not know them (they are kept and re-encoded unchanged); a reader
//! must refuse a structure with an unknown tag at or above [`CRITICAL`].

use super::{DecodeError, DecodeResult, Put, Reader, len_u32};

/// Tags at or above this value change the meaning of the structure: unknown ones are fatal.
pub const CRITICAL: u16 = 0x8000;

/// Upper bound of one value, far above any real field.
pub const VALUE_LEN_MAX: usize = 16 << 20;

#[derive(Default)]
pub struct TlvWriter {
    fields: Vec<(u16, Vec<u8>)>,
}

impl TlvWriter {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn bytes(&mut self, tag: u16, v: &[u8]) -> &mut Self {
        self.fields.push((tag, v.to_vec()));
        self
    }
    pub fn u32(&mut self, tag: u16, v: u32) -> &mut Self {
        self.bytes(tag, &v.to_le_bytes())
    }
    pub fn u64(&mut self, tag: u16, v: u64) -> &mut Self {
        self.bytes(tag, &v.to_le_bytes())
    }
    pub fn i64(&mut self, tag: u16, v: i64) -> &mut Self {
        self.bytes(tag, &v.to_le_bytes())
    }
    pub fn extra(&mut self, extra: &[(u16, Vec<u8>)]) -> &mut Self {
        self.fields.extend(extra.iter().cloned());
        self
    }
    pub fn finish(mut self) -> Vec<u8> {
        // Stable: values of one tag keep their order.
        self.fields.sort_by_key(|(t, _)| *t);
        let mut out = Vec::new();
        for (tag, v) in &self.fields {
            out.put_u16(*tag);
            out.put_u32(len_u32(v.len()));
            out.put(v);
        }
        out
    }
}

/// The decoded records of one structure, validated for order.
pub struct Fields<'a> {
    records: Vec<(u16, &'a [u8])>,
}

impl<'a> Fields<'a> {
    pub fn parse(buf: &'a [u8], what: &'static str) -> DecodeResult<Self> {
        let mut r = Reader::new(buf);
        let mut records = Vec::new();
        let mut last = 0u16;
        while r.remaining() > 0 {
            let tag = r.u16(what)?;
            let len = r.u32(what)? as usize;
            if len > VALUE_LEN_MAX {
                return Err(DecodeError::invalid(
                    what,
                    format!("field {tag} is {len} bytes long"),
                ));
            }
            let v = r.bytes(len, what)?;
            if tag < last {
                return Err(DecodeError::invalid(what, "fields out of order"));
            }
            last = tag;
            records.push((tag, v));
        }
        Ok(Fields { records })
    }

    pub fn all(&self, tag: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.records
            .iter()
            .filter(move |(t, _)| *t == tag)
            .map(|(_, v)| *v)
    }

    pub fn opt(&self, tag: u16, what: &'static str) -> DecodeResult<Option<&'a [u8]>> {
        let mut it = self.all(tag);
        let first = it.next();
        if it.next().is_some() {
            return Err(DecodeError::invalid(
                what,
                format!("field {tag} appears twice"),
            ));
        }
        Ok(first)
    }

    pub fn req(&self, tag: u16, what: &'static str) -> DecodeResult<&'a [u8]> {
        self.opt(tag, what)?
            .ok_or_else(|| DecodeError::invalid(what, format!("required field {tag} is missing")))
    }

    pub fn req_u32(&self, tag: u16, what: &'static str) -> DecodeResult<u32> {
        fixed(self.req(tag, what)?, what).map(u32::from_le_bytes)
    }
    pub fn req_u64(&self, tag: u16, what: &'static str) -> DecodeResult<u64> {
        fixed(self.req(tag, what)?, what).map(u64::from_le_bytes)
    }
    pub fn req_i64(&self, tag: u16, what: &'static str) -> DecodeResult<i64> {
        fixed(self.req(tag, what)?, what).map(i64::from_le_bytes)
    }
    pub fn opt_u64(&self, tag: u16, what: &'static str) -> DecodeResult<Option<u64>> {
        self.opt(tag, what)?
            .map(|v| fixed(v, what).map(u64::from_le_bytes))
            .transpose()
    }
    pub fn req_str(&self, tag: u16, what: &'static str) -> DecodeResult<String> {
        utf8(self.req(tag, what)?, what)
    }
    pub fn opt_str(&self, tag: u16, what: &'static str) -> DecodeResult<Option<String>> {
        self.opt(tag, what)?.map(|v| utf8(v, what)).transpose()
    }

    /// Returns the records whose tags are not in `known`; fails on an unknown critical tag.
    pub fn unknown(&self, known: &[u16], what: &'static str) -> DecodeResult<Vec<(u16, Vec<u8>)>> {
        let mut extra = Vec::new();
        for (t, v) in &self.records {
            if known.contains(t) {
                continue;
            }
            if *t >= CRITICAL {
                return Err(DecodeError::invalid(
                    what,
                    format!("field {t:#06x} is not known to this prism-sync: upgrade prism-sync"),
                ));
            }
            extra.push((*t, v.to_vec()));
        }
        Ok(extra)
    }
}

pub fn fixed<const N: usize>(v: &[u8], what: &'static str) -> DecodeResult<[u8; N]> {
    v.try_into()
        .map_err(|_| DecodeError::invalid(what, format!("a field is {} bytes, not {N}", v.len())))
}

pub fn utf8(v: &[u8], what: &'static str) -> DecodeResult<String> {
    String::from_utf8(v.to_vec()).map_err(|_| DecodeError::invalid(what, "text is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_optional_fields_survive_a_round_trip() {
        let mut w = TlvWriter::new();
        w.u32(1, 7).bytes(9, b"future").bytes(2, b"x");
        let bytes = w.finish();
        let f = Fields::parse(&bytes, "t").unwrap();
        assert_eq!(f.req_u32(1, "t").unwrap(), 7);
        let extra = f.unknown(&[1, 2], "t").unwrap();
        let mut w = TlvWriter::new();
        w.u32(1, 7).bytes(2, b"x").extra(&extra);
        assert_eq!(w.finish(), bytes);
    }

    #[test]
    fn unknown_critical_field_is_refused() {
        let mut w = TlvWriter::new();
        w.bytes(CRITICAL + 1, b"");
        let bytes = w.finish();
        let f = Fields::parse(&bytes, "t").unwrap();
        assert!(f.unknown(&[], "t").is_err());
    }

    #[test]
    fn out_of_order_fields_are_refused() {
        let mut v = Vec::new();
        for tag in [2u16, 1] {
            v.put_u16(tag);
            v.put_u32(0);
        }
        assert!(Fields::parse(&v, "t").is_err());
    }
}
