//! Key files (`keys/<id>`): each wraps the one master key under a key-encryption key derived from
//! a password (Argon2id, parameters stored per file) or from a random local secret.
//!
//! ```text
//! 0   4  magic "PRSK"
//! 4   1  version (1)
//! 5   1  kdf: 1 Argon2id (password), 2 raw (256-bit random secret, no stretching)
//! 6   2  reserved, 0
//! 8   4  Argon2id memory in KiB (u32 LE; 0 for raw)
//! 12  4  Argon2id iterations (0 for raw)
//! 16  4  Argon2id lanes (0 for raw)
//! 20 32  salt
//! 52  8  created, ns since the Unix epoch (i64 LE)
//! 60  2  host name length h (u16 LE), then h bytes UTF-8 — in clear (see threat-model.md)
//!  …  2  user name length u, then u bytes UTF-8 — in clear
//!  … 48  the 32-byte master key sealed with AES-256-GCM under the KEK: ciphertext, then tag;
//!        nonce 0, associated data = every byte before it
//! ```

use super::tlv::utf8;
use super::{DecodeError, DecodeResult, Put, Reader};

pub const MAGIC: &[u8; 4] = b"PRSK";
pub const VERSION: u8 = 1;
pub const SEALED_LEN: usize = 48;
/// Bounds on Argon2id parameters a key file may ask for, checked before any KDF runs: a forged
/// or planted file must not make an open allocate gigabytes or spin for minutes. They sit above
/// anything calibration ever chooses (`crypto::ARGON2_*_CALIBRATED_MAX`).
pub const ARGON2_MEMORY_KIB_MAX: u32 = 1 << 20;
pub const ARGON2_ITERATIONS_MAX: u32 = 16;
pub const ARGON2_LANES_MAX: u32 = 16;
/// Memory × iterations at most (KiB·passes): 4 GiB-passes, a few seconds on a laptop.
pub const ARGON2_WORK_KIB_PASSES_MAX: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    Argon2id {
        memory_kib: u32,
        iterations: u32,
        lanes: u32,
    },
    Raw,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub kdf: Kdf,
    pub salt: [u8; 32],
    pub created_ns: i64,
    pub host: String,
    pub user: String,
    pub sealed_master: [u8; SEALED_LEN],
}

impl KeyFile {
    /// The bytes the sealed master key is bound to (everything before it).
    pub fn encode_aad(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(128);
        v.put(MAGIC);
        v.put_u8(VERSION);
        let (k, m, t, p) = match self.kdf {
            Kdf::Argon2id {
                memory_kib,
                iterations,
                lanes,
            } => (1, memory_kib, iterations, lanes),
            Kdf::Raw => (2, 0, 0, 0),
        };
        v.put_u8(k);
        v.put_u16(0);
        v.put_u32(m);
        v.put_u32(t);
        v.put_u32(p);
        v.put(&self.salt);
        v.put_i64(self.created_ns);
        for s in [&self.host, &self.user] {
            let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
            v.put_u16(b.len() as u16);
            v.put(b);
        }
        v
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.encode_aad();
        v.put(&self.sealed_master);
        v
    }

    /// Returns the key file and the length of its associated-data prefix.
    pub fn decode(bytes: &[u8]) -> DecodeResult<Self> {
        const W: &str = "key file";
        let mut r = Reader::new(bytes);
        if r.bytes(4, W)? != MAGIC {
            return Err(DecodeError::BadMagic(W));
        }
        let version = r.u8(W)?;
        if version != VERSION {
            return Err(DecodeError::Version {
                found: version.into(),
                supported: VERSION.into(),
            });
        }
        let kdf = r.u8(W)?;
        r.reserved(2, W)?;
        let (m, t, p) = (r.u32(W)?, r.u32(W)?, r.u32(W)?);
        let kdf = match kdf {
            1 => {
                if !(8..=ARGON2_MEMORY_KIB_MAX).contains(&m)
                    || !(1..=ARGON2_ITERATIONS_MAX).contains(&t)
                    || !(1..=ARGON2_LANES_MAX).contains(&p)
                    || m < 8 * p
                    || m as u64 * t as u64 > ARGON2_WORK_KIB_PASSES_MAX
                {
                    return Err(DecodeError::invalid(
                        W,
                        format!("Argon2id parameters m={m} t={t} p={p} out of range"),
                    ));
                }
                Kdf::Argon2id {
                    memory_kib: m,
                    iterations: t,
                    lanes: p,
                }
            }
            2 if (m, t, p) == (0, 0, 0) => Kdf::Raw,
            2 => return Err(DecodeError::invalid(W, "raw key file with KDF parameters")),
            k => return Err(DecodeError::invalid(W, format!("unknown KDF {k}"))),
        };
        let salt = r.array::<32>(W)?;
        let created_ns = r.i64(W)?;
        let hl = r.u16(W)? as usize;
        let host = utf8(r.bytes(hl, W)?, W)?;
        let ul = r.u16(W)? as usize;
        let user = utf8(r.bytes(ul, W)?, W)?;
        let sealed_master = r.array::<SEALED_LEN>(W)?;
        r.finish()?;
        Ok(KeyFile {
            kdf,
            salt,
            created_ns,
            host,
            user,
            sealed_master,
        })
    }
}
