//! The repository `config` object: who the repository is and how it cuts, compresses and packs.
//!
//! ```text
//! 0   4  magic "PRSC"
//! 4   1  repository format version (1)
//! 5   3  reserved, 0
//! 8  32  repository id (random, public: it names the local key file and caches)
//! 40  …  envelope (kind Config) sealing the TLV fields below
//! ```
//!
//! TLV fields: 1 repository id (again; must match), 2/3/4 chunk min/avg/max bytes (u32),
//! 5 normalization level (u32), 6 zstd level for data (i64), 7 pack target bytes (u64),
//! 8 created (i64, ns since the Unix epoch), 9 backend capabilities (u32 bit set, see
//! [`Capabilities`]).

use super::tlv::{Fields, TlvWriter, fixed};
use super::{DecodeError, DecodeResult, Reader};

pub const MAGIC: &[u8; 4] = b"PRSC";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 40;

/// The clear part of the config file.
pub fn encode_header(repo_id: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[8..].copy_from_slice(repo_id);
    h
}

/// Splits the config file into the repository id and the sealed envelope.
pub fn decode_header(bytes: &[u8]) -> DecodeResult<([u8; 32], &[u8])> {
    let mut r = Reader::new(bytes);
    if r.bytes(4, "config")? != MAGIC {
        return Err(DecodeError::BadMagic("repository config"));
    }
    let version = r.u8("config")?;
    if version != VERSION {
        return Err(DecodeError::Version {
            found: version.into(),
            supported: VERSION.into(),
        });
    }
    r.reserved(3, "config")?;
    let id = r.array::<32>("config")?;
    Ok((id, &bytes[HEADER_LEN..]))
}

/// What the backend was proven to support when the repository was created (bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// Creating an object that exists fails atomically (S3 `If-None-Match: *`, `link(2)`).
    pub const CREATE_ONLY: u32 = 1;
    /// Replace-if-unchanged (S3 `If-Match`).
    pub const COMPARE_AND_SWAP: u32 = 2;

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoConfig {
    pub repo_id: [u8; 32],
    pub chunk_min_bytes: u32,
    pub chunk_avg_bytes: u32,
    pub chunk_max_bytes: u32,
    pub normalization: u32,
    pub zstd_level: i64,
    pub pack_target_bytes: u64,
    pub created_ns: i64,
    pub capabilities: Capabilities,
    pub extra: Vec<(u16, Vec<u8>)>,
}

/// Chunk sizes the chunker accepts (fastcdc v2020 bounds, even numbers).
pub const CHUNK_MIN_LOW: u32 = 64;
pub const CHUNK_MAX_HIGH: u32 = 16 << 20;
/// Pack sizes a writer may target; readers accept any pack below 4 GiB.
pub const PACK_TARGET_LOW: u64 = 1 << 20;
pub const PACK_TARGET_HIGH: u64 = 1 << 30;

impl RepoConfig {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.bytes(1, &self.repo_id)
            .u32(2, self.chunk_min_bytes)
            .u32(3, self.chunk_avg_bytes)
            .u32(4, self.chunk_max_bytes)
            .u32(5, self.normalization)
            .i64(6, self.zstd_level)
            .u64(7, self.pack_target_bytes)
            .i64(8, self.created_ns)
            .u32(9, self.capabilities.0)
            .extra(&self.extra);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> DecodeResult<Self> {
        const W: &str = "config";
        let f = Fields::parse(bytes, W)?;
        let c = RepoConfig {
            repo_id: fixed(f.req(1, W)?, W)?,
            chunk_min_bytes: f.req_u32(2, W)?,
            chunk_avg_bytes: f.req_u32(3, W)?,
            chunk_max_bytes: f.req_u32(4, W)?,
            normalization: f.req_u32(5, W)?,
            zstd_level: f.req_i64(6, W)?,
            pack_target_bytes: f.req_u64(7, W)?,
            created_ns: f.req_i64(8, W)?,
            capabilities: Capabilities(f.req_u32(9, W)?),
            extra: f.unknown(&[1, 2, 3, 4, 5, 6, 7, 8, 9], W)?,
        };
        c.validate()?;
        Ok(c)
    }

    /// Rejects parameters the chunker or packer cannot work with.
    pub fn validate(&self) -> DecodeResult<()> {
        let (min, avg, max) = (
            self.chunk_min_bytes,
            self.chunk_avg_bytes,
            self.chunk_max_bytes,
        );
        let even = min % 2 == 0 && avg % 2 == 0 && max % 2 == 0;
        if !(even && CHUNK_MIN_LOW <= min && min < avg && avg < max && max <= CHUNK_MAX_HIGH) {
            return Err(DecodeError::invalid(
                "config",
                format!(
                    "chunk sizes {min}/{avg}/{max} are not even with 64 <= min < avg < max <= 16 MiB"
                ),
            ));
        }
        if self.normalization > 3 {
            return Err(DecodeError::invalid(
                "config",
                "normalization level above 3",
            ));
        }
        if !(-7..=22).contains(&self.zstd_level) {
            return Err(DecodeError::invalid("config", "zstd level outside -7..=22"));
        }
        if !(PACK_TARGET_LOW..=PACK_TARGET_HIGH).contains(&self.pack_target_bytes) {
            return Err(DecodeError::invalid(
                "config",
                "pack target outside 1 MiB..=1 GiB",
            ));
        }
        Ok(())
    }
}
