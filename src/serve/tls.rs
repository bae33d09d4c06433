//! The server's TLS identity: a self-signed certificate generated once and kept (DER files,
//! the key with mode 0600), so that its fingerprint — what clients pin — survives restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::id::hex_encode;

pub struct TlsIdentity {
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
    /// Where it is kept (None: made for this run only).
    pub dir: Option<PathBuf>,
}

/// Hex SHA-256 of a DER certificate: what `rest:https://…/#sha256=` pins.
pub fn fingerprint_hex(cert_der: &[u8]) -> String {
    hex_encode(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref())
}

const CERT_FILE: &str = "tls-cert.der";
const KEY_FILE: &str = "tls-key.der";

impl TlsIdentity {
    /// A fresh self-signed certificate for `names` (host names or IP addresses).
    pub fn generate(names: Vec<String>) -> Result<TlsIdentity, String> {
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| format!("cannot generate a TLS certificate: {e}"))?;
        Ok(TlsIdentity {
            cert_der: ck.cert.der().to_vec(),
            key_der: ck.signing_key.serialize_der(),
            dir: None,
        })
    }

    /// The identity kept in `dir`, or a new one generated and written there.
    pub fn load_or_generate(dir: &Path, names: Vec<String>) -> Result<TlsIdentity, String> {
        let (cert_p, key_p) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if cert_p.exists() || key_p.exists() {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| {
                    format!(
                        "{}: {e} (delete {} and {} to make a new certificate; clients must then pin the new fingerprint)",
                        p.display(),
                        cert_p.display(),
                        key_p.display()
                    )
                })
            };
            let id = TlsIdentity {
                cert_der: read(&cert_p)?,
                key_der: read(&key_p)?,
                dir: Some(dir.to_path_buf()),
            };
            id.acceptor().map_err(|e| {
                format!(
                    "the kept TLS identity in {} is unusable ({e}): delete {} and {} to make a new one",
                    dir.display(),
                    CERT_FILE,
                    KEY_FILE
                )
            })?;
            return Ok(id);
        }
        let mut id = Self::generate(names)?;
        crate::fsx::private::create_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        write_private(&key_p, &id.key_der)?;
        write_private(&cert_p, &id.cert_der)?;
        id.dir = Some(dir.to_path_buf());
        Ok(id)
    }

    pub fn fingerprint(&self) -> String {
        fingerprint_hex(&self.cert_der)
    }

    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::try_from(self.key_der.clone())
            .map_err(|e| format!("TLS key: {e}"))?;
        let cert = rustls::pki_types::CertificateDer::from(self.cert_der.clone());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(|e| format!("TLS certificate: {e}"))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    }
}

/// Writes a file only its owner can read, atomically (temp file + rename).
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    crate::fsx::private::write_atomic(path, data).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_kept_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let a = TlsIdentity::load_or_generate(tmp.path(), vec!["localhost".into()]).unwrap();
        let b = TlsIdentity::load_or_generate(tmp.path(), vec!["other".into()]).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        std::fs::write(tmp.path().join(KEY_FILE), b"garbage").unwrap();
        let e = TlsIdentity::load_or_generate(tmp.path(), vec![])
            .err()
            .unwrap();
        assert!(e.contains("delete"), "{e}");
    }
}
