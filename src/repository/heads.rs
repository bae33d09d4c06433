//! Heads of sync sets: create-only objects naming the snapshot that is a set's current state.
//!
//! Publishing never needs a lock: a new head is created under a name derived from its snapshot
//! (so two publishers of the same state write the same name), then the heads it merged are
//! deleted. Two endpoints publishing at once leave two heads; the next step merges them. A head
//! whose snapshot another head lists as merged is superseded (its deletion was interrupted) and
//! ignored. Listing the `heads/` namespace is the cheap "did anything change" check.

use super::Repository;
use crate::backend::{Kind, object_name};
use crate::error::{Error, Result};
use crate::format::envelope::ObjectKind;
use crate::format::head::Head;
use crate::id::{SnapshotId, hex_encode};

/// The name prefix of a set's heads: keyed, so the set's name is not visible in storage.
pub fn set_key(repo: &Repository, set: &str) -> String {
    let mut input = b"sync set head key\0".to_vec();
    input.extend_from_slice(set.as_bytes());
    hex_encode(&repo.keys().keyed(&input)[..8])
}

/// The name of the head that publishes `snapshot` for `set`.
pub fn head_name(repo: &Repository, set: &str, snapshot: &SnapshotId) -> String {
    format!("{}-{}", set_key(repo, set), snapshot.to_hex())
}

/// Names of the set's head objects (one list call; no reads).
pub fn head_names(repo: &Repository, set: &str) -> Result<Vec<String>> {
    let prefix = format!("{}-", set_key(repo, set));
    let mut v: Vec<String> = repo
        .backend()
        .list(Kind::Head)?
        .into_iter()
        .map(|o| o.name)
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    Ok(v)
}

/// The set's heads as listed and read at one moment.
#[derive(Debug, Default)]
pub struct HeadListing {
    /// Current heads, oldest first (by time, then snapshot id).
    pub current: Vec<(String, Head)>,
    /// Heads another head lists as merged (their publisher stopped before deleting them):
    /// ignored, and safe to delete.
    pub superseded: Vec<String>,
}

/// The set's current heads (superseded ones dropped), oldest first.
///
/// A head can be deleted between the list and its read: its publisher's successor created the
/// head that merges it, then deleted it. Skipping it would drop that state (and, for the only
/// head, read as "the set has no state", which a step would take as every file deleted), so
/// [`read_heads`] takes the listing again until every listed head could be read.
pub fn list_heads(repo: &Repository, set: &str) -> Result<Vec<(String, Head)>> {
    Ok(read_heads(repo, set)?.current)
}

/// Listings taken at most when heads vanish between the list and their read.
const RELIST_MAX: usize = 8;

/// Lists and reads the set's heads (one list call, one read per head).
///
/// A head is deleted only after the head that replaces it exists, so a listed head that is
/// gone when read means a newer one was published meanwhile: the listing is taken again (up to
/// [`RELIST_MAX`] times) rather than left without it — which could make a set look empty.
pub fn read_heads(repo: &Repository, set: &str) -> Result<HeadListing> {
    let mut tries = 0;
    loop {
        tries += 1;
        match read_listed(repo, set)? {
            Some(listing) => return Ok(listing),
            None if tries < RELIST_MAX => continue,
            None => {
                return Err(Error::invalid(format!(
                    "the heads of sync set {set:?} kept changing while they were read ({RELIST_MAX} listings): try again"
                )));
            }
        }
    }
}

/// One listing and its reads; `None` if a listed head vanished before it was read.
fn read_listed(repo: &Repository, set: &str) -> Result<Option<HeadListing>> {
    let mut heads = Vec::new();
    for name in head_names(repo, set)? {
        let bytes = match repo.backend().read(Kind::Head, &name) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None), // replaced meanwhile: list again
            Err(e) => return Err(e.into()),
        };
        let what = object_name(Kind::Head, &name);
        let plain = super::open_object(repo.keys(), ObjectKind::Head, &what, &bytes)?;
        let head = Head::decode(&plain).map_err(|e| Error::decode(&what, e))?;
        if head.set != set || name != head_name(repo, set, &head.snapshot) {
            return Err(Error::corrupt(
                what,
                "it names another sync set or snapshot than its name says",
            ));
        }
        heads.push((name, head));
    }
    let merged: std::collections::HashSet<SnapshotId> = heads
        .iter()
        .flat_map(|(_, h)| h.merged.iter().copied())
        .collect();
    let (superseded, mut current): (Vec<_>, Vec<_>) = heads
        .into_iter()
        .partition(|(_, h)| merged.contains(&h.snapshot));
    current.sort_by(|a, b| {
        a.1.time_ns
            .cmp(&b.1.time_ns)
            .then(a.1.snapshot.cmp(&b.1.snapshot))
    });
    Ok(Some(HeadListing {
        current,
        superseded: superseded.into_iter().map(|(n, _)| n).collect(),
    }))
}

/// Deletes heads by name (already gone is fine).
pub fn delete_heads(repo: &Repository, names: &[String]) -> Result<()> {
    for old in names {
        match repo.backend().delete(Kind::Head, old) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Publishes a head (create-only; an identical head already there is fine), then removes the
/// heads it merged.
pub fn publish(repo: &Repository, head: &Head, replaces: &[String]) -> Result<String> {
    let name = head_name(repo, &head.set, &head.snapshot);
    // Deterministic salt: equal heads from two publishers are equal bytes under one name.
    let plain = head.encode();
    let mut salt_input = b"head salt\0".to_vec();
    salt_input.extend_from_slice(&plain);
    let salt = repo.keys().keyed(&salt_input);
    let bytes = super::seal_object_with_salt(repo.keys(), ObjectKind::Head, &plain, false, salt);
    match repo.backend().create(Kind::Head, &name, &bytes) {
        Ok(()) => {}
        Err(e) if e.kind == crate::backend::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    let old: Vec<String> = replaces.iter().filter(|n| **n != name).cloned().collect();
    delete_heads(repo, &old)?;
    Ok(name)
}
