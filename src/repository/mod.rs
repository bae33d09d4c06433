//! The repository: opening and creating it, keys, sealed objects, reading and writing blobs, and
//! the write ordering that makes a crash at any instant harmless:
//!
//! 1. packs (each stored before anything refers to it),
//! 2. an index file listing them,
//! 3. the snapshot — the commit. A snapshot only refers to blobs in indexed packs.
//!
//! Three modules say which side of a pack they are: `format::pack` is the byte layout,
//! [`pack_codec`] seals blobs into a pack and opens them (no I/O), [`packer`] writes packs to the
//! backend; likewise `format::index` is an index file's bytes and [`index`] the in-memory index
//! merged from those files.
//!
//! Owns: open/init, write ordering, sessions, the maintenance lease (check and prune, which walk
//! trees, are `maintenance`'s). Must not touch: local folders, printing, snapshot trees.

pub(crate) mod cache;
pub mod heads;
pub mod index;
mod keys;
pub mod lease;
pub mod pack_codec;
pub(crate) mod packer;
pub mod presence;
pub mod reader;
pub(crate) mod session;
mod url;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::backend::{self, DynBackend, ErrorKind, Kind, object_name};
use crate::chunker::Chunker;
use crate::crypto::{Keys, random_bytes};
use crate::error::{Error, Result};
use crate::format::config::{self as config_layout, Capabilities, RepoConfig};
use crate::format::envelope::{self, Compression, EnvelopeHeader, ObjectKind};
use crate::format::index::{DeletionMark, IndexFile, IndexPack};
use crate::format::pack::{BlobEntry, BlobKind};
use crate::format::snapshot::Snapshot;
use crate::id::{BlobId, IndexId, KeyId, PackId, SnapshotId, hex_encode};
use cache::{CacheKind, MetaCache};
use index::Index;
use pack_codec::FinishedPack;

pub use keys::{KeyInfo, add_key, add_workspace_key, list_keys, remove_key};
pub use packer::Packer;
pub use url::open_backend;

/// Defaults of a new repository.
pub const CHUNK_MIN_BYTES: u32 = 512 << 10;
pub const CHUNK_AVG_BYTES: u32 = 1 << 20;
pub const CHUNK_MAX_BYTES: u32 = 4 << 20;
pub const NORMALIZATION: u32 = 1;
pub const ZSTD_LEVEL: i64 = 3;
pub const PACK_TARGET_BYTES: u64 = 16 << 20;
/// Blobs per index file: keeps each file small enough to load and rewrite cheaply.
pub const INDEX_FILE_BLOBS_MAX: usize = 65_536;
/// Tree packs up to this size are fetched whole into the metadata cache on first use; a bigger
/// one (written before tree packs were capped) is read blob by blob.
pub const TREE_PACK_CACHE_BYTES_MAX: u32 = 64 << 20;

/// Snapshots with their ids, oldest first.
pub type SnapshotList = Vec<(SnapshotId, Snapshot)>;
/// Objects that could be read, and the errors of those that could not.
pub type Lenient<T> = (Vec<T>, Vec<Error>);

/// How to unlock a repository. Its `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    /// A password, if the user gave one.
    pub password: Option<Vec<u8>>,
    /// Where local key files (random secrets for password-less repositories) live.
    pub local_keys_dir: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("local_keys_dir", &self.local_keys_dir)
            .finish()
    }
}

impl Credentials {
    pub fn local_key_path(&self, repo_id: &[u8; 32]) -> PathBuf {
        self.local_keys_dir
            .join(format!("{}.key", hex_encode(repo_id)))
    }
}

#[derive(Clone, Debug)]
pub struct InitOptions {
    pub chunk_min_bytes: u32,
    pub chunk_avg_bytes: u32,
    pub chunk_max_bytes: u32,
    pub zstd_level: i64,
    pub pack_target_bytes: u64,
    /// Capabilities to use where the backend proves them: `init` records these bits and'ed
    /// with [`crate::backend::Backend::probe_capabilities`].
    pub capabilities: Capabilities,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunk_min_bytes: CHUNK_MIN_BYTES,
            chunk_avg_bytes: CHUNK_AVG_BYTES,
            chunk_max_bytes: CHUNK_MAX_BYTES,
            zstd_level: ZSTD_LEVEL,
            pack_target_bytes: PACK_TARGET_BYTES,
            capabilities: Capabilities(Capabilities::CREATE_ONLY | Capabilities::COMPARE_AND_SWAP),
        }
    }
}

pub struct Repository {
    backend: DynBackend,
    keys: Keys,
    config: RepoConfig,
    key_id: KeyId,
    /// True if a password was given but the repository has no password keys, so the local key
    /// file opened it (the CLI warns: the password protects nothing).
    password_unused: bool,
    /// The index as last loaded.
    index: RwLock<Arc<Index>>,
    /// Packs this process stored that the loaded index does not list yet.
    added: RwLock<Index>,
    /// Local copies of immutable metadata (remote repositories; see [`cache`]).
    cache: Option<MetaCache>,
    /// Tree packs being fetched into the cache, so two readers fetch a pack once.
    tree_fetches: Mutex<HashMap<PackId, Arc<Mutex<()>>>>,
    /// When a blob the index did not know last made [`Repository::locate`] load it again.
    index_reloaded: Mutex<Option<std::time::Instant>>,
}

/// A blob the loaded index does not know loads the index again (new index files only, with a
/// metadata cache) at most this often: a head published after this process loaded the index
/// names packs it has not seen, while a damaged repository must not reload on every miss.
const INDEX_RELOAD_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_secs(1);

pub fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

pub fn hostname() -> String {
    crate::sys::hostname()
}

pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", crate::sys::uid()))
}

fn write_local_key(path: &Path, secret: &[u8; 32]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().expect("key path has a parent");
    crate::fsx::private::create_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut f = crate::fsx::private::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(format!("{}\n", hex_encode(secret)).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn read_local_key(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let mut secret = [0u8; 32];
            if !crate::id::hex_decode(s.trim(), &mut secret) {
                return Err(Error::invalid(format!(
                    "local key file {} is damaged: it must hold 64 hex digits",
                    path.display()
                )));
            }
            Ok(Some(secret.to_vec()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

impl Repository {
    /// Creates a repository. Without a password, a random secret is written to a local key file
    /// (mode 0600) so no password is ever needed on this machine.
    pub fn init(
        backend: DynBackend,
        creds: &Credentials,
        opts: &InitOptions,
    ) -> Result<Repository> {
        match backend.read(Kind::Config, "") {
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "a repository already exists at {}: use it, or choose another location",
                    backend.location()
                )));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        backend.prepare()?;
        let proven = backend.probe_capabilities()?;
        let capabilities = Capabilities(opts.capabilities.0 & proven.0);
        backend.use_capabilities(capabilities);
        let keys = Keys::generate();
        let repo_id: [u8; 32] = random_bytes();
        let config = RepoConfig {
            repo_id,
            chunk_min_bytes: opts.chunk_min_bytes,
            chunk_avg_bytes: opts.chunk_avg_bytes,
            chunk_max_bytes: opts.chunk_max_bytes,
            normalization: NORMALIZATION,
            zstd_level: opts.zstd_level,
            pack_target_bytes: opts.pack_target_bytes,
            created_ns: now_ns(),
            capabilities,
            extra: vec![],
        };
        config
            .validate()
            .map_err(|e| Error::invalid(format!("repository parameters: {e}")))?;
        let key_id = match &creds.password {
            Some(pw) => keys::write_key_file(&*backend, &keys, crate::crypto::password_kdf(), pw)?,
            None => {
                let secret: [u8; 32] = random_bytes();
                let path = creds.local_key_path(&repo_id);
                write_local_key(&path, &secret)?;
                keys::write_key_file(&*backend, &keys, crate::format::keyfile::Kdf::Raw, &secret)?
            }
        };
        // The config is written last: a repository without one does not exist yet.
        let mut bytes = config_layout::encode_header(&repo_id).to_vec();
        bytes.extend_from_slice(&seal_object(
            &keys,
            ObjectKind::Config,
            &config.encode(),
            false,
        ));
        backend.create(Kind::Config, "", &bytes)?;
        Ok(Repository {
            backend,
            keys,
            config,
            key_id,
            password_unused: false,
            index: RwLock::new(Arc::new(Index::default())),
            added: RwLock::new(Index::default()),
            index_reloaded: Mutex::new(None),
            cache: None,
            tree_fetches: Mutex::new(HashMap::new()),
        })
    }

    /// Opens a repository: reads its config, finds a key that opens with the credentials.
    pub fn open(backend: DynBackend, creds: &Credentials) -> Result<Repository> {
        let location = backend.location();
        // The config and the key files are independent reads: one round trip, not two.
        let (config, key_files) = std::thread::scope(|s| {
            let keys = s.spawn(|| keys::read_key_files(&*backend));
            let config = backend.read(Kind::Config, "");
            (config, keys.join().expect("key reader"))
        });
        let bytes = match config {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(Error::RepoNotFound { location }),
            Err(e) => return Err(e.into()),
        };
        let (repo_id, sealed) = config_layout::decode_header(&bytes)
            .map_err(|e| Error::decode("the repository config", e))?;
        let (keys, key_id, password_unused) =
            keys::unlock_with(&*backend, key_files?, creds, &repo_id)?;
        let plain = open_object(&keys, ObjectKind::Config, "the repository config", sealed)?;
        let config =
            RepoConfig::decode(&plain).map_err(|e| Error::decode("the repository config", e))?;
        if config.repo_id != repo_id {
            return Err(Error::corrupt(
                "the repository config",
                "repository id does not match its header",
            ));
        }
        backend.use_capabilities(config.capabilities);
        Ok(Repository {
            backend,
            keys,
            config,
            key_id,
            password_unused,
            index: RwLock::new(Arc::new(Index::default())),
            added: RwLock::new(Index::default()),
            index_reloaded: Mutex::new(None),
            cache: None,
            tree_fetches: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps immutable metadata (index files, snapshots, tree packs) of a remote repository in a
    /// local cache below `root` (`$PRISM_HOME/sync/cache`), so that it is fetched once per
    /// machine instead of once per process or step. A local directory repository gets no cache
    /// (it would only copy the disk to itself). A cache directory that cannot be made is no
    /// error: the repository then reads everything from the backend.
    pub fn with_cache(mut self, root: &Path) -> Repository {
        if self.is_remote() {
            self.cache = MetaCache::open(root, &self.config.repo_id).ok();
        }
        self
    }

    /// [`Repository::with_cache`] for any backend (tests of the cache over a local backend).
    pub fn with_cache_always(mut self, root: &Path) -> Repository {
        self.cache = MetaCache::open(root, &self.config.repo_id).ok();
        self
    }

    /// True for a repository reached over a network (s3, rest), not a directory.
    pub fn is_remote(&self) -> bool {
        backend::local_dir(&self.backend.location()).is_none()
    }

    /// The metadata cache, if this repository has one.
    pub fn cache(&self) -> Option<&MetaCache> {
        self.cache.as_ref()
    }

    /// True if a password was given but played no part in opening the repository (it has only
    /// local key files).
    pub fn password_unused(&self) -> bool {
        self.password_unused
    }

    /// Opens a repository by URL.
    pub fn open_url(url: &str, creds: &Credentials) -> Result<Repository> {
        Self::open(open_backend(url)?, creds)
    }

    pub fn backend(&self) -> &DynBackend {
        &self.backend
    }
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    pub fn location(&self) -> String {
        self.backend.location()
    }
    pub fn repo_id(&self) -> [u8; 32] {
        self.config.repo_id
    }

    pub fn chunker(&self) -> Chunker {
        let c = &self.config;
        Chunker::new(
            self.keys.gear_table(),
            c.chunk_min_bytes as usize,
            c.chunk_avg_bytes as usize,
            c.chunk_max_bytes as usize,
            c.normalization,
        )
    }

    // ---- sealed objects ------------------------------------------------------------------

    /// Seals and stores a small object under the hash of its bytes; returns that hash.
    pub fn save_object(
        &self,
        kind: Kind,
        okind: ObjectKind,
        plaintext: &[u8],
        compress: bool,
    ) -> Result<[u8; 32]> {
        let bytes = seal_object(&self.keys, okind, plaintext, compress);
        let id = *blake3::hash(&bytes).as_bytes();
        let name = hex_encode(&id);
        match self.backend.create(kind, &name, &bytes) {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        self.cache_put(kind, &name, &bytes);
        Ok(id)
    }

    /// The cache kind of a repository object kind, if such objects are cached.
    fn cached_kind(&self, kind: Kind) -> Option<(&MetaCache, CacheKind)> {
        let c = self.cache.as_ref()?;
        match kind {
            Kind::Index => Some((c, CacheKind::Index)),
            Kind::Snapshot => Some((c, CacheKind::Snapshot)),
            _ => None,
        }
    }

    fn cache_put(&self, kind: Kind, name: &str, bytes: &[u8]) {
        if let Some((c, k)) = self.cached_kind(kind) {
            c.put(k, name, bytes);
        }
    }

    /// The stored bytes of a content-addressed object (named by the BLAKE3 hash of its bytes):
    /// from the cache when a verified copy is there, else from the backend (then cached).
    fn read_addressed(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        let what = object_name(kind, name);
        let cached = self.cached_kind(kind);
        if let Some((c, k)) = cached
            && let Some(bytes) = c.get(k, name)
        {
            if hex_encode(blake3::hash(&bytes).as_bytes()) == name {
                return Ok(bytes);
            }
            c.remove(k, name); // damaged: fetch again
        }
        let bytes = self.backend.read(kind, name).map_err(|e| match e.kind {
            ErrorKind::NotFound => Error::Missing {
                object: what.clone(),
            },
            _ => e.into(),
        })?;
        if hex_encode(blake3::hash(&bytes).as_bytes()) != name {
            return Err(Error::corrupt(
                what,
                "contents do not match the name (hash mismatch)",
            ));
        }
        if let Some((c, k)) = cached {
            c.put(k, name, &bytes);
        }
        Ok(bytes)
    }

    /// Reads a content-addressed object, checks its name against its hash, and opens it.
    pub fn load_object(&self, kind: Kind, okind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        let bytes = self.read_addressed(kind, name)?;
        open_object(&self.keys, okind, &object_name(kind, name), &bytes)
    }

    // ---- snapshots -------------------------------------------------------------------------

    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        Ok(SnapshotId(self.save_object(
            Kind::Snapshot,
            ObjectKind::Snapshot,
            &snap.encode(),
            true,
        )?))
    }

    /// Stores a snapshot sealed with a salt derived from its content: equal snapshots from
    /// different writers become the same object (used when combining sync heads).
    pub fn save_snapshot_deterministic(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let plain = snap.encode();
        let mut salt_input = b"deterministic snapshot\0".to_vec();
        salt_input.extend_from_slice(&plain);
        let salt = self.keys.keyed(&salt_input);
        let bytes = seal_object_with_salt(&self.keys, ObjectKind::Snapshot, &plain, true, salt);
        let id = SnapshotId::of_bytes(&bytes);
        match self.backend.create(Kind::Snapshot, &id.to_hex(), &bytes) {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        self.cache_put(Kind::Snapshot, &id.to_hex(), &bytes);
        Ok(id)
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        counters::count(&counters::SNAPSHOTS_OPENED);
        let name = id.to_hex();
        let plain = self.load_object(Kind::Snapshot, ObjectKind::Snapshot, &name)?;
        Snapshot::decode(&plain).map_err(|e| Error::decode(object_name(Kind::Snapshot, &name), e))
    }

    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let ids: Vec<SnapshotId> = self
            .backend
            .list(Kind::Snapshot)?
            .into_iter()
            .filter_map(|o| SnapshotId::from_hex(&o.name))
            .collect();
        if let Some(c) = &self.cache {
            // Forgotten snapshots leave the cache too.
            c.retain(
                CacheKind::Snapshot,
                &ids.iter().map(SnapshotId::to_hex).collect(),
            );
        }
        Ok(ids)
    }

    /// The repository's snapshot ids and their listing tag, unless the tag is `known` (`None`:
    /// the same snapshots as then). Over `serve`, an unchanged listing is one request without
    /// the names.
    pub fn snapshot_ids_unless(&self, known: &str) -> Result<Option<(Vec<SnapshotId>, String)>> {
        let Some(listing) = self.backend.list_unless(Kind::Snapshot, known)? else {
            return Ok(None);
        };
        let ids: Vec<SnapshotId> = listing
            .names
            .iter()
            .filter_map(|n| SnapshotId::from_hex(n))
            .collect();
        if let Some(c) = &self.cache {
            // Forgotten snapshots leave the cache too.
            c.retain(
                CacheKind::Snapshot,
                &ids.iter().map(SnapshotId::to_hex).collect(),
            );
        }
        Ok(Some((ids, listing.tag)))
    }

    /// Every readable snapshot, oldest first, plus the errors of unreadable ones. Snapshots not
    /// in the cache are fetched several at a time.
    pub fn snapshots_lenient(&self) -> Result<Lenient<(SnapshotId, Snapshot)>> {
        let ids = self.snapshot_ids()?;
        let loaded = map_parallel(ids, self.backend.parallelism(), |id| {
            (id, self.load_snapshot(&id))
        });
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (id, r) in loaded {
            match r {
                Ok(s) => out.push((id, s)),
                Err(Error::Missing { .. }) => {} // deleted by a concurrent forget
                Err(e) => errors.push(e),
            }
        }
        out.sort_by(|a, b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
        Ok((out, errors))
    }

    /// Every snapshot, oldest first; fails on the first unreadable one.
    pub fn snapshots(&self) -> Result<SnapshotList> {
        let (out, mut errors) = self.snapshots_lenient()?;
        match errors.pop() {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    // ---- index -----------------------------------------------------------------------------

    /// Reads every index file (those not in the cache several at a time); returns them with
    /// the errors of unreadable ones.
    pub fn index_files_lenient(&self) -> Result<Lenient<(IndexId, IndexFile)>> {
        let t = crate::timing::span("index: list");
        let ids: Vec<IndexId> = self
            .backend
            .list(Kind::Index)?
            .into_iter()
            .filter_map(|o| IndexId::from_hex(&o.name))
            .collect();
        if let Some(c) = &self.cache {
            c.retain(CacheKind::Index, &ids.iter().map(|i| i.to_hex()).collect());
        }
        drop(t);
        let _t = crate::timing::span("index: read, open and decode the files");
        let loaded = map_parallel(ids, self.backend.parallelism(), |id| {
            let name = id.to_hex();
            let r = self
                .load_object(Kind::Index, ObjectKind::Index, &name)
                .and_then(|p| {
                    IndexFile::decode(&p)
                        .map_err(|e| Error::decode(object_name(Kind::Index, &name), e))
                });
            (id, r)
        });
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for (id, r) in loaded {
            match r {
                Ok(f) => files.push((id, f)),
                Err(Error::Missing { .. }) => {} // superseded and deleted meanwhile
                Err(e) => errors.push(e),
            }
        }
        Ok((files, errors))
    }

    /// Makes `index` the one reads use: `check` builds it from the index files it could read,
    /// so blobs of the readable ones resolve even when another file is damaged.
    pub(crate) fn set_index(&self, index: Index) {
        *self.index.write().expect("index lock") = Arc::new(index);
    }

    /// Loads the index; an unreadable index file is an error (run `check`).
    pub fn load_index(&self) -> Result<Arc<Index>> {
        let (files, mut errors) = self.index_files_lenient()?;
        if let Some(e) = errors.pop() {
            return Err(e);
        }
        let t = crate::timing::span("index: merge and sort");
        let idx = Arc::new(Index::from_files(files));
        drop(t);
        let _t = crate::timing::span("index: cache upkeep");
        if let Some(c) = &self.cache {
            // Tree packs that prune removed leave the cache too.
            let added = self.added.read().expect("index lock");
            let live = idx
                .packs()
                .iter()
                .chain(added.packs())
                .filter(|p| p.kind == BlobKind::Tree)
                .map(|p| p.id.to_hex())
                .collect();
            c.retain(CacheKind::TreePack, &live);
        }
        let mut added = self.added.write().expect("index lock");
        let mut still = Index::default();
        for p in added.packs() {
            if idx.pack(&p.id).is_none() {
                still.add_pack(&added.index_pack(&p.id).expect("listed pack"));
            }
        }
        *added = still;
        *self.index.write().expect("index lock") = idx.clone();
        Ok(idx)
    }

    /// The index as last loaded (without packs stored since; see [`Repository::has_blob`]).
    pub fn index(&self) -> Arc<Index> {
        self.index.read().expect("index lock").clone()
    }

    /// True if the blob is stored in a pack that is not marked for deletion.
    pub fn has_blob(&self, kind: BlobKind, id: &BlobId) -> bool {
        self.index().has_live(kind, id) || self.added.read().expect("index lock").has_live(kind, id)
    }

    /// Writes index files for packs (split into files of bounded size), with optional marks and
    /// superseded files (all in the first file). Returns the new files' ids.
    pub fn write_index(
        &self,
        packs: Vec<IndexPack>,
        supersedes: Vec<IndexId>,
        marks: Vec<DeletionMark>,
    ) -> Result<Vec<IndexId>> {
        let mut files = Vec::new();
        let mut current = IndexFile {
            supersedes,
            marks,
            packs: Vec::new(),
        };
        let mut blobs = 0;
        let marked: std::collections::HashSet<_> = current.marks.iter().map(|m| m.pack).collect();
        // Marked packs must be in the same file as their marks.
        let (mut with_marks, rest): (Vec<_>, Vec<_>) =
            packs.into_iter().partition(|p| marked.contains(&p.id));
        current.packs.append(&mut with_marks);
        for p in rest {
            if blobs + p.blobs.len() > INDEX_FILE_BLOBS_MAX && !current.packs.is_empty() {
                files.push(std::mem::take(&mut current));
                blobs = 0;
            }
            blobs += p.blobs.len();
            current.packs.push(p);
        }
        if !current.packs.is_empty() || !current.supersedes.is_empty() || !current.marks.is_empty()
        {
            files.push(current);
        }
        let mut ids = Vec::new();
        for mut f in files {
            f.canonicalize();
            ids.push(IndexId(self.save_object(
                Kind::Index,
                ObjectKind::Index,
                &f.encode(),
                false,
            )?));
        }
        Ok(ids)
    }

    // ---- blobs -----------------------------------------------------------------------------

    /// Stores a finished pack and makes it visible to this process's index.
    pub fn store_pack(&self, p: &FinishedPack) -> Result<IndexPack> {
        match self.backend.create(Kind::Pack, &p.id.to_hex(), &p.bytes) {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        if p.kind == BlobKind::Tree
            && let Some(c) = &self.cache
        {
            // The next step reads these trees back: keep them instead of fetching them again.
            c.put(CacheKind::TreePack, &p.id.to_hex(), &p.bytes);
        }
        let ip = IndexPack {
            id: p.id,
            kind: p.kind,
            length: u32::try_from(p.bytes.len()).expect("packs stay below 4 GiB"),
            salt: p.salt,
            blobs: p
                .entries
                .iter()
                .map(|e| crate::format::index::IndexBlob {
                    id: e.id,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                })
                .collect(),
        };
        self.added.write().expect("index lock").add_pack(&ip);
        Ok(ip)
    }

    /// Where a blob is: pack, salt, entry and the pack's length. A blob the loaded index does
    /// not know loads the index again first (see [`INDEX_RELOAD_INTERVAL_MIN`]).
    pub(crate) fn locate(
        &self,
        kind: BlobKind,
        id: &BlobId,
    ) -> Option<(PackId, [u8; 32], BlobEntry, u32)> {
        if let Some(found) = self.locate_loaded(kind, id) {
            return Some(found);
        }
        {
            let mut last = self.index_reloaded.lock().expect("reload lock");
            if last.is_some_and(|t| t.elapsed() < INDEX_RELOAD_INTERVAL_MIN) {
                return None;
            }
            *last = Some(std::time::Instant::now());
        }
        self.load_index().ok()?;
        self.locate_loaded(kind, id)
    }

    fn locate_loaded(
        &self,
        kind: BlobKind,
        id: &BlobId,
    ) -> Option<(PackId, [u8; 32], BlobEntry, u32)> {
        let found = {
            let idx = self.index();
            idx.lookup(kind, id)
                .map(|l| (l.pack.id, l.pack.salt, l.entry, l.pack.length))
        };
        found.or_else(|| {
            let added = self.added.read().expect("index lock");
            added
                .lookup(kind, id)
                .map(|l| (l.pack.id, l.pack.salt, l.entry, l.pack.length))
        })
    }

    /// Reads, verifies and returns a blob's plaintext. Tree blobs of a repository with a
    /// metadata cache come from their whole tree pack, fetched once into the cache.
    pub fn read_blob(&self, kind: BlobKind, id: &BlobId) -> Result<Vec<u8>> {
        if kind == BlobKind::Tree {
            counters::count(&counters::TREE_BLOBS_READ);
        }
        let what = format!("{} blob {}", kind.name(), id.short());
        let (pack_id, salt, entry, pack_len) =
            self.locate(kind, id).ok_or_else(|| Error::Missing {
                object: what.clone(),
            })?;
        if kind == BlobKind::Tree
            && pack_len <= TREE_PACK_CACHE_BYTES_MAX
            && let Some(c) = &self.cache
        {
            return self.read_tree_blob_cached(c, pack_id, &salt, &entry, &what);
        }
        let sealed = self
            .backend
            .read_range(
                Kind::Pack,
                &pack_id.to_hex(),
                entry.offset as u64,
                entry.length as u64,
            )
            .map_err(|e| missing_pack(e, &pack_id, &what))?;
        self.open_blob(&pack_id, &salt, &entry, &sealed, &what)
    }

    /// Opens a sealed blob read from pack `pack_id`.
    pub fn open_blob(
        &self,
        pack_id: &PackId,
        salt: &[u8; 32],
        entry: &BlobEntry,
        sealed: &[u8],
        what: &str,
    ) -> Result<Vec<u8>> {
        pack_codec::open_blob(&self.keys, &self.keys.pack_cipher(salt), entry, sealed)
            .map_err(|e| Error::corrupt(format!("{what} in pack {}", pack_id.short()), e))
    }

    /// A tree blob from the cached copy of its pack; a missing or damaged copy is fetched (whole,
    /// once, however many threads ask) and checked against the pack's name first.
    fn read_tree_blob_cached(
        &self,
        c: &MetaCache,
        pack_id: PackId,
        salt: &[u8; 32],
        entry: &BlobEntry,
        what: &str,
    ) -> Result<Vec<u8>> {
        let name = pack_id.to_hex();
        let (offset, length) = (entry.offset as u64, entry.length as usize);
        let from_cache = || {
            let sealed = c.get_range(CacheKind::TreePack, &name, offset, length)?;
            match self.open_blob(&pack_id, salt, entry, &sealed, what) {
                Ok(p) => Some(p),
                Err(_) => {
                    c.remove(CacheKind::TreePack, &name); // damaged: fetch again
                    None
                }
            }
        };
        if let Some(p) = from_cache() {
            return Ok(p);
        }
        let lock = self
            .tree_fetches
            .lock()
            .expect("lock")
            .entry(pack_id)
            .or_default()
            .clone();
        let _fetching = lock.lock().expect("lock");
        if let Some(p) = from_cache() {
            return Ok(p); // another thread fetched it meanwhile
        }
        let r = self.backend.read(Kind::Pack, &name);
        self.tree_fetches.lock().expect("lock").remove(&pack_id);
        let bytes = r.map_err(|e| missing_pack(e, &pack_id, what))?;
        if PackId::of_bytes(&bytes) != pack_id {
            return Err(Error::corrupt(
                format!("pack {}", pack_id.short()),
                "contents do not match the name (hash mismatch)",
            ));
        }
        c.put(CacheKind::TreePack, &name, &bytes);
        let sealed = usize::try_from(offset)
            .ok()
            .and_then(|o| bytes.get(o..o.checked_add(length)?))
            .ok_or_else(|| {
                Error::corrupt(
                    format!("pack {}", pack_id.short()),
                    format!("shorter than the index says ({} bytes)", bytes.len()),
                )
            })?;
        self.open_blob(&pack_id, salt, entry, sealed, what)
    }
}

/// What this process has read, counted: tests and benchmarks assert that a command's work
/// does not grow with the age of a set (e.g. `history` after 10 and after 1,000 steps).
pub mod counters {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Snapshots opened (read and decrypted) by [`super::Repository::load_snapshot`].
    pub static SNAPSHOTS_OPENED: AtomicU64 = AtomicU64::new(0);
    /// Tree blobs read and decrypted by [`super::Repository::read_blob`].
    pub static TREE_BLOBS_READ: AtomicU64 = AtomicU64::new(0);

    /// Snapshots and path entries decoded from a stored snapshot catalog
    /// (`snapshot::catalog`).
    pub static CATALOG_ENTRIES_DECODED: AtomicU64 = AtomicU64::new(0);

    /// Bytes read from stored snapshot catalog files (blocks and their MACs).
    pub static CATALOG_BYTES_READ: AtomicU64 = AtomicU64::new(0);

    /// Catalog bytes read so far.
    pub fn catalog_bytes_read() -> u64 {
        CATALOG_BYTES_READ.load(Ordering::Relaxed)
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Catalog entries decoded so far.
    pub fn catalog_decoded() -> u64 {
        CATALOG_ENTRIES_DECODED.load(Ordering::Relaxed)
    }

    pub(crate) fn count(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (snapshots opened, tree blobs read) so far.
    pub fn now() -> (u64, u64) {
        (
            SNAPSHOTS_OPENED.load(Ordering::Relaxed),
            TREE_BLOBS_READ.load(Ordering::Relaxed),
        )
    }
}

/// A backend error reading a pack, with "missing" named as such.
pub(crate) fn missing_pack(e: backend::BackendError, pack_id: &PackId, what: &str) -> Error {
    match e.kind {
        ErrorKind::NotFound => Error::Missing {
            object: format!("pack {} (holding {what})", pack_id.short()),
        },
        _ => Error::Backend(e),
    }
}

/// `f` over `items` on up to `threads` threads; results in the order of `items`. For fetching
/// many small objects from a backend whose latency, not bandwidth, is the cost.
pub(crate) fn map_parallel<T, R, F>(items: Vec<T>, threads: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let queue = Mutex::new(items.into_iter().enumerate());
    let results = Mutex::new((0..n).map(|_| None).collect::<Vec<Option<R>>>());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some((i, item)) = next else { break };
                    let r = f(item);
                    results.lock().expect("results")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.expect("every item was mapped"))
        .collect()
}

/// Seals a small object in an envelope with a fresh salt.
pub fn seal_object(keys: &Keys, kind: ObjectKind, plaintext: &[u8], compress: bool) -> Vec<u8> {
    seal_object_with_salt(keys, kind, plaintext, compress, random_bytes())
}

/// Seals with a chosen salt: for test vectors only (a salt must never repeat).
pub fn seal_object_with_salt(
    keys: &Keys,
    kind: ObjectKind,
    plaintext: &[u8],
    compress: bool,
    salt: [u8; 32],
) -> Vec<u8> {
    let compressed = if compress {
        zstd::bulk::compress(plaintext, 3)
            .ok()
            .filter(|c| c.len() < plaintext.len())
    } else {
        None
    };
    let header = EnvelopeHeader {
        kind,
        compression: if compressed.is_some() {
            Compression::Zstd
        } else {
            Compression::None
        },
        salt,
    };
    let h = header.encode();
    let mut body = compressed.unwrap_or_else(|| plaintext.to_vec());
    keys.object_cipher(kind as u8, &salt)
        .seal_in_place([0; 12], &h, &mut body);
    let mut out = Vec::with_capacity(h.len() + body.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&body);
    out
}

/// Decompressed plaintext of a sealed object is bounded, so a forged object cannot make us
/// allocate without limit.
pub const OBJECT_PLAINTEXT_MAX: usize = 256 << 20;

pub fn open_object(keys: &Keys, kind: ObjectKind, what: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let (h, sealed) = EnvelopeHeader::decode(bytes, kind).map_err(|e| Error::decode(what, e))?;
    let header = &bytes[..envelope::HEADER_LEN];
    let mut body = sealed.to_vec();
    keys.object_cipher(kind as u8, &h.salt)
        .open_in_place([0; 12], header, &mut body)
        .map_err(|_| {
            Error::corrupt(
                what,
                "authentication failed (damaged, or sealed with another key)",
            )
        })?;
    match h.compression {
        Compression::None => Ok(body),
        Compression::Zstd => zstd::bulk::decompress(&body, OBJECT_PLAINTEXT_MAX)
            .map_err(|e| Error::corrupt(what, format!("decompression failed: {e}"))),
    }
}

#[cfg(test)]
mod credentials_tests {
    use super::Credentials;

    #[test]
    fn debug_of_credentials_never_shows_the_password() {
        let c = Credentials {
            password: Some(b"hunter2-secret".to_vec()),
            local_keys_dir: "/k".into(),
        };
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("104, 117"), "{shown}"); // nor as bytes
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
