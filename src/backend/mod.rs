//! Backends move opaque bytes by (kind, name). They never see keys or plaintext.
//!
//! Owns: storage I/O and its error classification. Must not touch: keys, plaintext, layouts.
//!
//! Contract (every backend passes `tests/backend_conformance.rs`):
//! - `create` is write-once and atomic: readers see the whole object or nothing, and creating
//!   a name that exists fails with [`ErrorKind::AlreadyExists`] without changing it;
//! - an object that `create` acknowledged survives a crash of the writer (and of the machine,
//!   where the medium honours fsync);
//! - `read_range` returns exactly the bytes asked for, or an error;
//! - `list` shows every acknowledged object of a kind (it may also show ones being deleted).

pub mod aws;
pub mod efs;
mod fault;
mod fs;
pub mod limit;
mod memory;
pub mod rest;
pub mod retry;
pub mod rt;
pub mod s3;

use std::fmt;
use std::sync::Arc;

pub use fault::FaultBackend;
pub use fs::{FsBackend, STAMP_SETTLED, is_temp_name as fs_is_temp_name};
pub use memory::MemoryBackend;
pub use rest::RestBackend;
pub use retry::{RetryBackend, RetryPolicy};
pub use s3::S3Backend;

use crate::format::config::Capabilities;

/// The kinds of objects a repository stores; each lives in its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    Session,
    Head,
    Lease,
    Presence,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Config,
        Kind::Key,
        Kind::Pack,
        Kind::Index,
        Kind::Snapshot,
        Kind::Session,
        Kind::Head,
        Kind::Lease,
        Kind::Presence,
    ];

    /// Directory (or key prefix) of the kind.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Config => "",
            Kind::Key => "keys",
            Kind::Pack => "data",
            Kind::Index => "index",
            Kind::Snapshot => "snapshots",
            Kind::Session => "sessions",
            Kind::Head => "heads",
            Kind::Lease => "leases",
            Kind::Presence => "presence",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Key => "key",
            Kind::Pack => "pack",
            Kind::Index => "index",
            Kind::Snapshot => "snapshot",
            Kind::Session => "session",
            Kind::Head => "head",
            Kind::Lease => "maintenance lease",
            Kind::Presence => "presence",
        }
    }

    /// The object's path relative to the repository root (`data/ab/abcd…` for packs).
    pub fn path(self, name: &str) -> String {
        match self {
            Kind::Config => "config".to_string(),
            Kind::Pack => format!("data/{}/{}", &name[..2.min(name.len())], name),
            _ => format!("{}/{}", self.dir(), name),
        }
    }
}

/// Human name of an object, for messages: "pack 1a2b3c4d".
pub fn object_name(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Config => "the repository config".into(),
        _ => format!("{} {}", kind.noun(), name),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    /// Worth retrying (timeouts, throttling, a server restarting).
    Transient,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    pub kind: ErrorKind,
    pub object: String,
    pub message: String,
}

impl BackendError {
    pub fn new(kind: ErrorKind, object: impl Into<String>, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            object: object.into(),
            message: message.into(),
        }
    }
    pub fn not_found(object: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, object, "not found")
    }
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

impl std::error::Error for BackendError {}

pub type BResult<T> = Result<T, BackendError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

/// Object names: 1..=128 of `[A-Za-z0-9_.-]`, not starting with `.` (temp files do).
pub fn valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Is `name` exactly the form the repository layout gives objects of `kind`? Keys, packs, index
/// files, snapshots and sessions: 64 lowercase hex digits; heads: 16, `-`, 64; leases: 16; presence: 16, `-`, 16, `-`, 16; the
/// config: no name. `serve` stores nothing else (no `keys/ZZ_not_hex`, no new directories under `data/`).
pub fn layout_name(kind: Kind, name: &str) -> bool {
    match kind {
        Kind::Config => name.is_empty(),
        Kind::Head => name
            .split_once('-')
            .is_some_and(|(set, snap)| lower_hex(set, 16) && lower_hex(snap, 64)),
        Kind::Lease => lower_hex(name, 16),
        Kind::Presence => {
            let parts: Vec<&str> = name.split('-').collect();
            parts.len() == 3 && parts.iter().all(|p| lower_hex(p, 16))
        }
        _ => lower_hex(name, 64),
    }
}

pub trait Backend: Send + Sync {
    /// Where the repository is, as the user would write it.
    fn location(&self) -> String;

    /// Prepares an empty location for a new repository (creates directories).
    fn prepare(&self) -> BResult<()>;

    /// Stores a new object; fails with `AlreadyExists` if the name is taken.
    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()>;

    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>>;

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>>;

    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>>;

    /// Removes an object; `NotFound` if it was not there.
    fn delete(&self, kind: Kind, name: &str) -> BResult<()>;

    /// Removes leftovers of interrupted writes older than `max_age`; returns how many.
    fn remove_stale_temp(&self, _max_age: std::time::Duration) -> BResult<usize> {
        Ok(0)
    }

    /// Finds out, by trying, which write guarantees the medium really gives; `repo init`
    /// records the answer in the config. The default: `create` is atomically create-only
    /// (`link(2)`, a lock), and there is no compare-and-swap.
    fn probe_capabilities(&self) -> BResult<Capabilities> {
        Ok(Capabilities(Capabilities::CREATE_ONLY))
    }

    /// Whether the repository refuses to delete data through this backend (a `serve
    /// --append-only` server): retention and prune cannot run through it, only where the
    /// repository lives. Asked only when maintenance is due.
    fn append_only(&self) -> BResult<bool> {
        Ok(false)
    }

    /// Tells the backend what the repository's config says was proven at init. A backend
    /// relies on no capability it was not told about (the s3 backend's `create` is then
    /// HEAD-then-PUT).
    fn use_capabilities(&self, _caps: Capabilities) {}

    /// Asks a new repository (before `prepare`) to let its group read it, where the medium has
    /// such a thing (a directory: modes 0750/0440 instead of 0700/0400).
    fn set_group_access(&self, _on: bool) {}

    /// Requests worth having in flight at once. A network backend: its connection budget
    /// ([`connections`]); a directory: a few (a local disk gains little, an NFS/EFS mount
    /// answers each request in milliseconds and serves several at once).
    fn parallelism(&self) -> usize {
        DIRECTORY_PARALLELISM
    }

    /// Limits the bytes per second this backend sends and receives (network backends; a
    /// directory ignores it). See [`limit`].
    fn set_bandwidth(&self, _limits: limit::Bandwidth) {}

    /// The names of `kind` unless their [`listing_tag`] is `known` (`Ok(None)`: the same names;
    /// the empty string matches nothing). The default lists and compares; a server that can
    /// compare answers "unchanged" without sending the names.
    fn list_unless(&self, kind: Kind, known: &str) -> BResult<Option<Listing>> {
        let names: Vec<String> = self.list(kind)?.into_iter().map(|o| o.name).collect();
        let tag = listing_tag(&names);
        Ok((tag != known).then_some(Listing { names, tag }))
    }

    /// Waits up to `timeout` for the names of `kind` to differ from a listing whose
    /// [`listing_tag`] is `known` (the empty string matches nothing), the server holding the
    /// request: one request per change or per `timeout`, instead of one per poll. `Some(Ok(Some))`
    /// is the new listing (at once if it already differs), `Some(Ok(None))` means nothing changed
    /// in time, and `None` that this backend cannot wait (the caller polls instead).
    fn watch_list(
        &self,
        _kind: Kind,
        _known: &str,
        _timeout: std::time::Duration,
    ) -> Option<BResult<Option<Listing>>> {
        None
    }
}

/// The names in a namespace and their [`listing_tag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub names: Vec<String>,
    pub tag: String,
}

/// A short digest of a set of names (order does not matter): BLAKE3 over the sorted names, each
/// followed by a newline, the first 16 bytes in hex. Client and server compute it alike.
pub fn listing_tag(names: &[String]) -> String {
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    let mut h = blake3::Hasher::new();
    for n in sorted {
        h.update(n.as_bytes());
        h.update(b"\n");
    }
    crate::id::hex_encode(&h.finalize().as_bytes()[..16])
}

/// Requests in flight at once on a directory backend.
pub const DIRECTORY_PARALLELISM: usize = 4;
/// Connections (and so requests in flight) per network backend unless `--connections` or
/// `PRISM_SYNC_CONNECTIONS` say otherwise: enough to fill a long fat link (each connection is
/// limited by its own congestion window), few enough not to crowd a shared one.
pub const CONNECTIONS_DEFAULT: usize = 8;
/// The most connections a user may ask for.
pub const CONNECTIONS_MAX: usize = 64;
/// Env var for [`connections`].
pub const CONNECTIONS_ENV: &str = "PRISM_SYNC_CONNECTIONS";

static CONNECTIONS_OVERRIDE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Sets the connections per network backend for this process (the CLI's `--connections`).
pub fn set_connections(n: usize) {
    let _ = CONNECTIONS_OVERRIDE.set(n.clamp(1, CONNECTIONS_MAX));
}

/// Connections per network backend: `--connections`, else `PRISM_SYNC_CONNECTIONS`, else
/// [`CONNECTIONS_DEFAULT`]; at most [`CONNECTIONS_MAX`].
pub fn connections() -> usize {
    if let Some(n) = CONNECTIONS_OVERRIDE.get() {
        return *n;
    }
    std::env::var(CONNECTIONS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(CONNECTIONS_DEFAULT, |n| n.clamp(1, CONNECTIONS_MAX))
}

pub type DynBackend = Arc<dyn Backend>;

/// Opens the backend a repository URL names: a path or `file://…` (a directory), `s3://bucket/prefix`,
/// `rest:http(s)://host:port/…`, `efs://fs-ID[/path]` (the directory where it is mounted).
/// Network backends come wrapped in [`RetryBackend`].
/// Schemes of repository URLs that are not local directories.
const REMOTE_SCHEMES: [&str; 6] = ["s3:", "rest:", "efs:", "sftp:", "http:", "https:"];

/// The directory a repository URL names, if it is a local one (a path or `file://…`); paths
/// may contain `:`.
pub fn local_dir(url: &str) -> Option<std::path::PathBuf> {
    if let Some(p) = url.strip_prefix("file://") {
        return Some(p.into());
    }
    (!url.is_empty() && !REMOTE_SCHEMES.iter().any(|s| url.starts_with(s))).then(|| url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_tags_ignore_order_and_match_the_spec() {
        let ab = listing_tag(&["b".into(), "a".into()]);
        assert_eq!(ab, listing_tag(&["a".into(), "b".into()]));
        // The vectors of format-spec/rest.md, "Waiting listings".
        assert_eq!(ab, "41153ec5e22e7e1d208eec929ef45dcd");
        assert_eq!(listing_tag(&[]), "af1349b9f5f9a1a6a0404dea36dcc949");
        assert_ne!(ab, listing_tag(&["ab".into()]));
    }
}
