//! Key files: one master key, any number of passwords (or local random secrets) that unwrap it.

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
    let salt: [u8; 32] = random_bytes();
    let mut kf = KeyFile {
        kdf,
        salt,
        created_ns: now_ns(),
        host: hostname(),
        user: username(),
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

fn try_unlock(files: &[(KeyId, KeyFile)], secret: &[u8], want_raw: bool) -> Option<(Keys, KeyId)> {
    files
        .iter()
        .filter(|(_, kf)| matches!(kf.kdf, Kdf::Raw) == want_raw)
        .find_map(|(id, kf)| {
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
    let has_password_keys = files.iter().any(|(_, kf)| !matches!(kf.kdf, Kdf::Raw));
    if let Some(pw) = &creds.password
        && has_password_keys
    {
        let (k, id) = try_unlock(&files, pw, false).ok_or(Error::WrongPassword { location })?;
        return Ok((k, id, false));
    }
    let keyfile = creds.local_key_path(repo_id);
    match read_local_key(&keyfile)? {
        Some(secret) => {
            let (k, id) =
                try_unlock(&files, &secret, true).ok_or(Error::WrongPassword { location })?;
            Ok((k, id, creds.password.is_some()))
        }
        None if creds.password.is_some() => Err(Error::WrongPassword { location }),
        None => Err(Error::NoPassword { location, keyfile }),
    }
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
        crypto::ARGON2_DEFAULT,
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
