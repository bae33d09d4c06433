//! The envelope of every sealed small object (index, snapshot, session, head, lease, presence,
//! config body):
//!
//! ```text
//! 0   4  magic "PRSO"
//! 4   1  format version (1)
//! 5   1  object kind (ObjectKind)
//! 6   1  compression of the plaintext: 0 none, 1 zstd
//! 7   1  reserved, 0
//! 8  32  salt: random, fresh for every object; the object key is derived from it
//! 40  n  AES-256-GCM ciphertext, then the 16-byte tag; associated data = bytes 0..40
//! ```

use super::{DecodeError, DecodeResult, Reader};

pub const MAGIC: &[u8; 4] = b"PRSO";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 40;
pub const TAG_LEN: usize = 16;

#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Config = 1,
    Index = 2,
    Snapshot = 3,
    Session = 4,
    Head = 5,
    Lease = 6,
    Presence = 7,
}

impl ObjectKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => ObjectKind::Config,
            2 => ObjectKind::Index,
            3 => ObjectKind::Snapshot,
            4 => ObjectKind::Session,
            5 => ObjectKind::Head,
            6 => ObjectKind::Lease,
            7 => ObjectKind::Presence,
            _ => return None,
        })
    }
}

#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    pub kind: ObjectKind,
    pub compression: Compression,
    pub salt: [u8; 32],
}

impl EnvelopeHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[5] = self.kind as u8;
        h[6] = self.compression as u8;
        h[8..].copy_from_slice(&self.salt);
        h
    }

    /// Splits a stored object into its header and sealed body, checking magic, version and kind.
    pub fn decode(bytes: &[u8], expected: ObjectKind) -> DecodeResult<(EnvelopeHeader, &[u8])> {
        let mut r = Reader::new(bytes);
        if r.bytes(4, "object header")? != MAGIC {
            return Err(DecodeError::BadMagic("object"));
        }
        let version = r.u8("object header")?;
        if version != VERSION {
            return Err(DecodeError::Version {
                found: version.into(),
                supported: VERSION.into(),
            });
        }
        let kind = r.u8("object header")?;
        let kind = ObjectKind::from_u8(kind).ok_or_else(|| {
            DecodeError::invalid("object header", format!("unknown object kind {kind}"))
        })?;
        if kind != expected {
            return Err(DecodeError::invalid(
                "object header",
                format!("holds a {kind:?} object where a {expected:?} object belongs"),
            ));
        }
        let compression = match r.u8("object header")? {
            0 => Compression::None,
            1 => Compression::Zstd,
            c => {
                return Err(DecodeError::invalid(
                    "object header",
                    format!("unknown compression {c}"),
                ));
            }
        };
        r.reserved(1, "object header")?;
        let salt = r.array::<32>("object header")?;
        if r.remaining() < TAG_LEN {
            return Err(DecodeError::Truncated("sealed object"));
        }
        Ok((
            EnvelopeHeader {
                kind,
                compression,
                salt,
            },
            &bytes[HEADER_LEN..],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_kind_check() {
        let h = EnvelopeHeader {
            kind: ObjectKind::Index,
            compression: Compression::Zstd,
            salt: [7; 32],
        };
        let mut bytes = h.encode().to_vec();
        bytes.extend_from_slice(&[0; TAG_LEN]);
        let (d, body) = EnvelopeHeader::decode(&bytes, ObjectKind::Index).unwrap();
        assert_eq!(d, h);
        assert_eq!(body.len(), TAG_LEN);
        assert!(EnvelopeHeader::decode(&bytes, ObjectKind::Snapshot).is_err());
        bytes[4] = 9;
        assert_eq!(
            EnvelopeHeader::decode(&bytes, ObjectKind::Index).unwrap_err(),
            DecodeError::Version {
                found: 9,
                supported: 1
            }
        );
    }
}
