//! Keys and sealing: the key hierarchy under one master key, password and raw-secret key
//! encryption keys, and AES-256-GCM with nonces that never repeat under a key.
//!
//! Owns: KDFs, key derivation, AEAD. Must not touch: compression, backends, byte layouts beyond
//! the 12-byte nonce.
//!
//! Key hierarchy (BLAKE3 `derive_key` contexts are fixed strings, see `format-spec/keys.md`):
//! - blob id key: `BlobId = keyed BLAKE3(id key, plaintext)`;
//! - chunker key: the 256-entry gear table = BLAKE3 XOF keyed with it;
//! - pack-key key: each pack's key = keyed BLAKE3(pack-key key, pack salt);
//! - object-key key: each sealed object's key = keyed BLAKE3(object-key key, kind || salt).
//!
//! Every pack and object has a fresh random 32-byte salt, so every AES key seals one pack or one
//! object; inside a pack nonces are offsets (see `format::pack::nonce`), so no key ever comes near
//! GCM's message limits.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::format::keyfile::Kdf;
use crate::id::BlobId;

const CONTEXT_ID: &str = "prism-sync 2026-11-27 v1 blob id";
const CONTEXT_CHUNKER: &str = "prism-sync 2026-11-27 v1 chunker gear table";
const CONTEXT_PACK: &str = "prism-sync 2026-11-27 v1 pack key";
const CONTEXT_OBJECT: &str = "prism-sync 2026-11-27 v1 object key";
const CONTEXT_RAW_KEYFILE: &str = "prism-sync 2026-11-27 v1 raw key file";

/// New password key files: Argon2id with at least this much memory…
pub const ARGON2_MEMORY_KIB_MIN: u32 = 64 << 10;
/// …and as many passes as take about this long here (restic calibrates scrypt the same way).
pub const ARGON2_TARGET: std::time::Duration = std::time::Duration::from_millis(500);
/// Calibration never goes above these (a slow day must not produce a key that takes a minute
/// to open on a fast one; the key file decoder's limits are higher still).
pub const ARGON2_ITERATIONS_CALIBRATED_MAX: u32 = 10;
pub const ARGON2_MEMORY_KIB_CALIBRATED_MAX: u32 = 256 << 10;

// Whatever calibration picks, the key file decoder accepts.
const _: () = {
    use crate::format::keyfile as kf;
    assert!(
        ARGON2_MEMORY_KIB_CALIBRATED_MAX as u64 * ARGON2_ITERATIONS_CALIBRATED_MAX as u64
            <= kf::ARGON2_WORK_KIB_PASSES_MAX
    );
    assert!(ARGON2_MEMORY_KIB_CALIBRATED_MAX <= kf::ARGON2_MEMORY_KIB_MAX);
    assert!(ARGON2_ITERATIONS_CALIBRATED_MAX <= kf::ARGON2_ITERATIONS_MAX);
};

/// Test suites only: with this variable set to `1`, new password key files use toy Argon2id
/// parameters so thousands of test commands do not each spend half a second. Never set it for
/// real repositories: such key files fall to guessing at millions of passwords per second.
pub const INSECURE_TEST_KDF_ENV: &str = "PRISM_SYNC_INSECURE_TEST_KDF";

/// Argon2id parameters for a new password key file: at least 64 MiB and one pass, passes added
/// until one derivation takes about [`ARGON2_TARGET`] on this machine (then memory, on a machine
/// so fast that the pass limit is reached first), bounded above. Stored in the key file, so
/// every file keeps the cost it was made with.
pub fn password_kdf() -> Kdf {
    if std::env::var(INSECURE_TEST_KDF_ENV).is_ok_and(|v| v == "1") {
        return Kdf::Argon2id {
            memory_kib: 64,
            iterations: 1,
            lanes: 1,
        };
    }
    calibrate(ARGON2_TARGET)
}

/// Measures one pass over [`ARGON2_MEMORY_KIB_MIN`] and scales to `target`.
pub fn calibrate(target: std::time::Duration) -> Kdf {
    let one_pass = |memory_kib: u32| {
        let kdf = Kdf::Argon2id {
            memory_kib,
            iterations: 1,
            lanes: 1,
        };
        let t0 = std::time::Instant::now();
        let _ = key_encryption_key(kdf, b"calibration", &[0; 32]);
        t0.elapsed()
    };
    // The first run also pays for faulting the memory in: take the faster of two.
    let pass = one_pass(ARGON2_MEMORY_KIB_MIN)
        .min(one_pass(ARGON2_MEMORY_KIB_MIN))
        .max(std::time::Duration::from_micros(100));
    let ratio = target.as_secs_f64() / pass.as_secs_f64();
    let iterations = (ratio.round() as u32).clamp(1, ARGON2_ITERATIONS_CALIBRATED_MAX);
    let memory_kib = if ratio > ARGON2_ITERATIONS_CALIBRATED_MAX as f64 {
        let scale = ratio / ARGON2_ITERATIONS_CALIBRATED_MAX as f64;
        ((ARGON2_MEMORY_KIB_MIN as f64 * scale) as u32)
            .clamp(ARGON2_MEMORY_KIB_MIN, ARGON2_MEMORY_KIB_CALIBRATED_MAX)
    } else {
        ARGON2_MEMORY_KIB_MIN
    };
    Kdf::Argon2id {
        memory_kib,
        iterations,
        lanes: 1,
    }
}

/// What a KDF costs to run, for ordering attempts (KiB·passes; raw secrets cost nothing).
pub fn kdf_work(kdf: Kdf) -> u64 {
    match kdf {
        Kdf::Argon2id {
            memory_kib,
            iterations,
            ..
        } => memory_kib as u64 * iterations as u64,
        Kdf::Raw => 0,
    }
}

/// Authentication failed: wrong key or damaged bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed (wrong key or damaged bytes)")]
pub struct AuthError;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    b
}

/// The master key and every key derived from it.
#[derive(Clone)]
pub struct Keys {
    master: [u8; 32],
    id_key: [u8; 32],
    chunker_key: [u8; 32],
    pack_kdf: [u8; 32],
    object_kdf: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    pub fn from_master(master: [u8; 32]) -> Self {
        Keys {
            master,
            id_key: blake3::derive_key(CONTEXT_ID, &master),
            chunker_key: blake3::derive_key(CONTEXT_CHUNKER, &master),
            pack_kdf: blake3::derive_key(CONTEXT_PACK, &master),
            object_kdf: blake3::derive_key(CONTEXT_OBJECT, &master),
        }
    }

    pub fn generate() -> Self {
        Self::from_master(random_bytes())
    }

    pub fn master(&self) -> &[u8; 32] {
        &self.master
    }

    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// Keyed hash of arbitrary bytes under the id key (used for tree split points).
    pub fn keyed(&self, bytes: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, bytes).as_bytes()
    }

    /// The secret 256-entry gear table of the content-defined chunker.
    pub fn gear_table(&self) -> [u64; 256] {
        let mut bytes = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(&self.chunker_key)
            .update(b"gear")
            .finalize_xof()
            .fill(&mut bytes);
        let mut table = [0u64; 256];
        for (t, c) in table.iter_mut().zip(bytes.chunks_exact(8)) {
            *t = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        }
        table
    }

    pub fn pack_cipher(&self, salt: &[u8; 32]) -> Cipher {
        Cipher::new(blake3::keyed_hash(&self.pack_kdf, salt).as_bytes())
    }

    pub fn object_cipher(&self, kind: u8, salt: &[u8; 32]) -> Cipher {
        let mut h = blake3::Hasher::new_keyed(&self.object_kdf);
        h.update(&[kind]).update(salt);
        Cipher::new(h.finalize().as_bytes())
    }
}

/// One AES-256-GCM key.
#[derive(Clone)]
pub struct Cipher(Aes256Gcm);

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Self {
        Cipher(Aes256Gcm::new_from_slice(key).expect("32-byte key"))
    }

    /// Encrypts `buf` in place and appends the 16-byte tag.
    pub fn seal_in_place(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) {
        self.0
            .encrypt_in_place(&Nonce::from(nonce), aad, buf)
            .expect("AES-GCM cannot fail for in-memory sizes below 64 GiB");
    }

    /// Encrypts `buf[start..]` in place and appends the 16-byte tag: sealing a record at the
    /// end of a larger buffer (a pack) without a copy.
    pub fn seal_tail(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>, start: usize) {
        let tag = self
            .0
            .encrypt_inout_detached(&Nonce::from(nonce), aad, (&mut buf[start..]).into())
            .expect("AES-GCM cannot fail for in-memory sizes below 64 GiB");
        buf.extend_from_slice(tag.as_slice());
    }

    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(plaintext.len() + 16);
        v.extend_from_slice(plaintext);
        self.seal_in_place(nonce, aad, &mut v);
        v
    }

    /// Verifies and decrypts `buf` (ciphertext then tag) in place, dropping the tag.
    pub fn open_in_place(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), AuthError> {
        if buf.len() < 16 {
            return Err(AuthError);
        }
        self.0
            .decrypt_in_place(&Nonce::from(nonce), aad, buf)
            .map_err(|_| AuthError)
    }

    pub fn open(&self, nonce: [u8; 12], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        let mut v = sealed.to_vec();
        self.open_in_place(nonce, aad, &mut v)?;
        Ok(v)
    }
}

/// The key-encryption key of a key file.
pub fn key_encryption_key(kdf: Kdf, secret: &[u8], salt: &[u8; 32]) -> [u8; 32] {
    match kdf {
        Kdf::Argon2id {
            memory_kib,
            iterations,
            lanes,
        } => {
            let params = argon2::Params::new(memory_kib, iterations, lanes, Some(32))
                .expect("parameters validated by the key file decoder");
            let argon =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut out = [0u8; 32];
            argon
                .hash_password_into(secret, salt, &mut out)
                .expect("valid Argon2id input");
            out
        }
        Kdf::Raw => {
            let mut material = Vec::with_capacity(secret.len() + 32);
            material.extend_from_slice(secret);
            material.extend_from_slice(salt);
            blake3::derive_key(CONTEXT_RAW_KEYFILE, &material)
        }
    }
}

/// Seals the master key under a KEK; nonce 0 because every KEK seals exactly one message.
pub fn wrap_master(kek: &[u8; 32], aad: &[u8], master: &[u8; 32]) -> [u8; 48] {
    Cipher::new(kek)
        .seal([0; 12], aad, master)
        .try_into()
        .expect("32 + 16 bytes")
}

pub fn unwrap_master(kek: &[u8; 32], aad: &[u8], sealed: &[u8; 48]) -> Result<[u8; 32], AuthError> {
    let m = Cipher::new(kek).open([0; 12], aad, sealed)?;
    Ok(m.try_into().expect("32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_bind_nonce_and_aad() {
        let c = Cipher::new(&[1; 32]);
        let sealed = c.seal([0; 12], b"kind", b"hello");
        assert_eq!(c.open([0; 12], b"kind", &sealed).unwrap(), b"hello");
        assert!(c.open([1; 12], b"kind", &sealed).is_err());
        assert!(c.open([0; 12], b"other", &sealed).is_err());
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(c.open([0; 12], b"kind", &bad).is_err());
        assert!(c.open([0; 12], b"", &[1, 2, 3]).is_err());
    }

    #[test]
    fn derived_keys_differ_and_are_deterministic() {
        let a = Keys::from_master([3; 32]);
        let b = Keys::from_master([3; 32]);
        assert_eq!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), Keys::from_master([4; 32]).blob_id(b"x"));
        assert_eq!(a.gear_table(), b.gear_table());
        assert_ne!(a.id_key, a.chunker_key);
    }

    #[test]
    fn calibration_meets_the_floor_and_stays_bounded() {
        let Kdf::Argon2id {
            memory_kib,
            iterations,
            lanes,
        } = calibrate(std::time::Duration::from_millis(50))
        else {
            panic!("not Argon2id");
        };
        assert!(memory_kib >= ARGON2_MEMORY_KIB_MIN);
        assert!(memory_kib <= ARGON2_MEMORY_KIB_CALIBRATED_MAX);
        assert!((1..=ARGON2_ITERATIONS_CALIBRATED_MAX).contains(&iterations));
        assert_eq!(lanes, 1);
    }

    #[test]
    fn raw_kek_depends_on_salt() {
        assert_ne!(
            key_encryption_key(Kdf::Raw, b"s", &[0; 32]),
            key_encryption_key(Kdf::Raw, b"s", &[1; 32])
        );
    }
}
