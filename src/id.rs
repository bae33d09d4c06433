//! Identifiers. One newtype per kind so a pack id can never be passed where a blob id is meant.
//!
//! - [`BlobId`]: keyed BLAKE3 of a blob's plaintext (the key is secret, so ids reveal nothing).
//! - [`PackId`], [`IndexId`], [`SnapshotId`], [`KeyId`]: unkeyed BLAKE3 of the stored bytes of
//!   the object, which is also its name; anyone can verify storage integrity without a key.
//!
//! Text form: 64 lowercase hex digits; listings shorten to the first 8.

use std::fmt;

/// Length in bytes of every id.
pub const ID_LEN: usize = 32;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            pub fn to_hex(&self) -> String {
                hex_encode(&self.0)
            }

            /// The first 8 hex digits, as listings show them.
            pub fn short(&self) -> String {
                hex_encode(&self.0[..4])
            }

            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; ID_LEN];
                hex_decode(s, &mut out).then_some($name(out))
            }

            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            /// Id of stored bytes: unkeyed BLAKE3.
            pub fn of_bytes(bytes: &[u8]) -> Self {
                $name(*blake3::hash(bytes).as_bytes())
            }
        }

        /// As its hex string (how JSON state files keep ids).
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::from_hex(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "not a {} (64 hex digits): {s:?}",
                        stringify!($name)
                    ))
                })
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

define_id!(
    /// Keyed BLAKE3 of a blob's plaintext.
    BlobId
);
define_id!(
    /// BLAKE3 of a pack file's bytes.
    PackId
);
define_id!(
    /// BLAKE3 of an index file's bytes.
    IndexId
);
define_id!(
    /// BLAKE3 of a snapshot file's bytes.
    SnapshotId
);
define_id!(
    /// BLAKE3 of a key file's bytes.
    KeyId
);

pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Decodes exactly `out.len()` bytes of lowercase or uppercase hex; false on any other input.
pub fn hex_decode(s: &str, out: &mut [u8]) -> bool {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return false;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        match (nibble(b[2 * i]), nibble(b[2 * i + 1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return false,
        }
    }
    true
}

/// True if `s` is a plausible (lowercase) hex prefix of an id.
pub fn is_hex_prefix(s: &str) -> bool {
    !s.is_empty() && s.len() <= ID_LEN * 2 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = PackId::of_bytes(b"abc");
        assert_eq!(PackId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.short().len(), 8);
        assert!(PackId::from_hex("zz").is_none());
        assert!(PackId::from_hex(&"g".repeat(64)).is_none());
    }
}
