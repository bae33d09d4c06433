//! Key files: one master key, any number of passwords (or local random secrets) that unwrap it.
//!
//! Opening tries the key file that opened this repository last time on this machine first (its
//! id is remembered in `$PRISM_HOME/sync/keys/<repository id>.last-key`), then the others from
//! the cheapest KDF up: a planted key file with expensive (but allowed) parameters costs an open
//! nothing once the right key is known. Parameters above the decoder's limits never reach a KDF.

use super::{Credentials, Repository, hostname, now_ns, read_local_key, username};
use crate::backend::{Backend, Kind, object_name};
use crate::crypto::{self, Keys, key_encryption_key, random_bytes, unwrap_master, wrap_master};
use crate::error::{Error, Result};
use crate::format::keyfile::{Kdf, KeyFile};
use crate::id::KeyId;

pub(super) fn write_key_file(
    backend: &dyn Backend,
    keys: &Keys,
    kdf: Kdf,
    secret: &[u8],
) -> Result<KeyId> {
    write_labelled_key_file(backend, keys, kdf, secret, hostname(), username())
}

/// A key file with the given host and user labels (stored in clear: `key list` shows them).
fn write_labelled_key_file(
    backend: &dyn Backend,
    keys: &Keys,
    kdf: Kdf,
    secret: &[u8],
    host: String,
    user: String,
) -> Result<KeyId> {
    let salt: [u8; 32] = random_bytes();
    let mut kf = KeyFile {
        kdf,
        salt,
        created_ns: now_ns(),
        host,
        user,
        sealed_master: [0; 48],
    };
    let kek = key_encryption_key(kdf, secret, &salt);
    kf.sealed_master = wrap_master(&kek, &kf.encode_aad(), keys.master());
    let bytes = kf.encode();
    let id = KeyId::of_bytes(&bytes);
    backend.create(Kind::Key, &id.to_hex(), &bytes)?;
    Ok(id)
}

/// Key files as a list and their contents.
pub(super) type KeyFiles = Vec<(KeyId, KeyFile)>;

pub(super) fn read_key_files(backend: &dyn Backend) -> Result<KeyFiles> {
    let mut out = Vec::new();
    for o in backend.list(Kind::Key)? {
        let Some(id) = KeyId::from_hex(&o.name) else {
            continue;
        };
        let bytes = match backend.read(Kind::Key, &o.name) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        // A damaged or foreign key file must not lock everyone out: skip it; `check` reports it.
        if KeyId::of_bytes(&bytes) != id {
            continue;
        }
        if let Ok(kf) = KeyFile::decode(&bytes) {
            out.push((id, kf));
        }
    }
    Ok(out)
}

/// Tries the key files of one kind: the one remembered from last time first, then from the
/// cheapest KDF up.
fn try_unlock(
    files: &[(KeyId, KeyFile)],
    secret: &[u8],
    want_raw: bool,
    remembered: Option<KeyId>,
) -> Option<(Keys, KeyId)> {
    let mut order: Vec<&(KeyId, KeyFile)> = files
        .iter()
        .filter(|(_, kf)| matches!(kf.kdf, Kdf::Raw) == want_raw)
        .collect();
    order.sort_by_key(|(id, kf)| (Some(*id) != remembered, crypto::kdf_work(kf.kdf), *id));
    order.into_iter().find_map(|(id, kf)| {
        let kek = key_encryption_key(kf.kdf, secret, &kf.salt);
        unwrap_master(&kek, &kf.encode_aad(), &kf.sealed_master)
            .ok()
            .map(|m| (Keys::from_master(m), *id))
    })
}

/// Finds a key among `files` (see [`read_key_files`]) that opens with the credentials. The flag
/// is true when a password was given but went unused because the repository has only local
/// (raw) key files.
pub(super) fn unlock_with(
    backend: &dyn Backend,
    files: KeyFiles,
    creds: &Credentials,
    repo_id: &[u8; 32],
) -> Result<(Keys, KeyId, bool)> {
    let location = backend.location();
    if files.is_empty() {
        return Err(Error::corrupt(
            format!("the repository at {location}"),
            "it has no readable key files, so nothing can open it",
        ));
    }
    let remembered = remembered_key(creds, repo_id);
    let has_password_keys = files.iter().any(|(_, kf)| !matches!(kf.kdf, Kdf::Raw));
    let r = if let Some(pw) = &creds.password
        && has_password_keys
    {
        let (k, id) =
            try_unlock(&files, pw, false, remembered).ok_or(Error::WrongPassword { location })?;
        (k, id, false)
    } else {
        let keyfile = creds.local_key_path(repo_id);
        match read_local_key(&keyfile)? {
            Some(secret) => {
                let (k, id) = try_unlock(&files, &secret, true, remembered)
                    .ok_or(Error::WrongPassword { location })?;
                (k, id, creds.password.is_some())
            }
            None if creds.password.is_some() => return Err(Error::WrongPassword { location }),
            None => return Err(Error::NoPassword { location, keyfile }),
        }
    };
    if remembered != Some(r.1) {
        remember_key(creds, repo_id, r.1);
    }
    Ok(r)
}

fn remembered_path(creds: &Credentials, repo_id: &[u8; 32]) -> std::path::PathBuf {
    creds
        .local_keys_dir
        .join(format!("{}.last-key", crate::id::hex_encode(repo_id)))
}

/// The key file that opened the repository last time on this machine.
fn remembered_key(creds: &Credentials, repo_id: &[u8; 32]) -> Option<KeyId> {
    let s = std::fs::read_to_string(remembered_path(creds, repo_id)).ok()?;
    KeyId::from_hex(s.trim())
}

/// Remembers which key file opened the repository (best effort: a read-only home only costs
/// the next open a little time).
fn remember_key(creds: &Credentials, repo_id: &[u8; 32], id: KeyId) {
    let _ = crate::fsx::private::write_atomic(
        &remembered_path(creds, repo_id),
        format!("{}\n", id.to_hex()).as_bytes(),
    );
}

/// Adds a key for one workspace: a fresh random secret (no stretching needed, like the local
/// key file of a password-less repository) in its own key file labelled with the workspace's
/// name, so `key remove` revokes that workspace alone. Returns the key's id and the secret, to
/// be delivered to the workspace (never through instance user-data).
pub fn add_workspace_key(repo: &Repository, workspace: &str) -> Result<(KeyId, [u8; 32])> {
    let secret: [u8; 32] = random_bytes();
    let id = write_labelled_key_file(
        &**repo.backend(),
        repo.keys(),
        Kdf::Raw,
        &secret,
        workspace.to_string(),
        "prism-sync workspace".into(),
    )?;
    Ok((id, secret))
}

#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: KeyId,
    pub current: bool,
    pub kdf: Kdf,
    pub host: String,
    pub user: String,
    pub created_ns: i64,
}

pub fn list_keys(repo: &Repository) -> Result<Vec<KeyInfo>> {
    let mut v: Vec<KeyInfo> = read_key_files(&**repo.backend())?
        .into_iter()
        .map(|(id, kf)| KeyInfo {
            id,
            current: id == repo.key_id(),
            kdf: kf.kdf,
            host: kf.host,
            user: kf.user,
            created_ns: kf.created_ns,
        })
        .collect();
    v.sort_by_key(|k| (k.created_ns, k.id));
    Ok(v)
}

/// Adds a password key for the repository's master key.
pub fn add_key(repo: &Repository, password: &[u8]) -> Result<KeyId> {
    if password.is_empty() {
        return Err(Error::invalid(
            "the new password is empty: choose a non-empty password",
        ));
    }
    write_key_file(
        &**repo.backend(),
        repo.keys(),
        crypto::password_kdf(),
        password,
    )
}

/// Removes a key file; refuses to remove the key in use or the last key.
pub fn remove_key(repo: &Repository, id: &KeyId) -> Result<()> {
    let keys = list_keys(repo)?;
    if !keys.iter().any(|k| k.id == *id) {
        return Err(Error::invalid(format!(
            "no key {} in the repository: see `prism-sync key list`",
            id.short()
        )));
    }
    if *id == repo.key_id() {
        return Err(Error::invalid(
            "that is the key this command opened the repository with: open with another key to remove it",
        ));
    }
    repo.backend().delete(Kind::Key, &id.to_hex()).map_err(|e| {
        if e.is_not_found() {
            Error::Missing {
                object: object_name(Kind::Key, &id.to_hex()),
            }
        } else {
            e.into()
        }
    })
}
