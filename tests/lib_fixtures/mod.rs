//! Helpers for library-level tests: deterministic trees, tree digests, quick repositories.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prism_sync::backend::{BResult, Backend, DynBackend, Kind, ObjectInfo};
use prism_sync::endpoint::config::SetConfig;
use prism_sync::repository::{Credentials, InitOptions, Repository};
use prism_sync::sync::{Mode, Policy, Role};

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Compressible text.
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    let words = [
        "alpha ", "beta ", "gamma ", "delta ", "sample ", "result ", "0.125 ", "\n",
    ];
    let r = bytes(seed, len);
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(words[(r[i % r.len()] % 8) as usize].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A small research-like tree: text, binaries that span several chunks, a symlink, an empty dir.
pub fn make_tree(root: &Path, seed: u64) {
    write(&root.join("notes.md"), &text(seed, 5_000));
    write(&root.join("code/analysis.py"), &text(seed + 1, 20_000));
    write(&root.join("data/raw/a.bin"), &bytes(seed + 2, 1_500_000));
    write(&root.join("data/raw/b.bin"), &bytes(seed + 3, 700_000));
    write(&root.join("data/table.csv"), &text(seed + 4, 900_000));
    write(&root.join("empty.txt"), b"");
    std::fs::create_dir_all(root.join("results/empty-dir")).unwrap();
    let _ = std::os::unix::fs::symlink("notes.md", root.join("latest-notes"));
    std::fs::set_permissions(
        root.join("code/analysis.py"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

/// Type, mode, size, mtime and content hash of every entry below `root`.
pub fn digest(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let desc = if md.file_type().is_symlink() {
                format!("l {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                walk(root, &p, out);
                format!("d {:o}", md.mode() & 0o7777)
            } else {
                let h = blake3::hash(&std::fs::read(&p).unwrap());
                format!(
                    "f {:o} {} {} {}",
                    md.mode() & 0o7777,
                    md.len(),
                    md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                    h.to_hex()
                )
            };
            out.insert(rel, desc);
        }
    }
    walk(root, root, &mut out);
    out
}

/// Credentials for a password-less repository whose key file lives in `dir/keys`.
pub fn creds(dir: &Path) -> Credentials {
    key_creds(&dir.join("keys"))
}

/// Credentials for a password-less repository whose key file lives in `keys_dir`.
pub fn key_creds(keys_dir: &Path) -> Credentials {
    Credentials {
        password: None,
        local_keys_dir: keys_dir.to_path_buf(),
    }
}

/// The config of endpoint `i` of sync set `name` kept in `folder`, for library-level steps on an
/// in-memory repository: endpoint 0 is the laptop (`local`), the others workspaces `ws1`, `ws2`,
/// …; bidirectional, no deletion limits (the tests that need the guards set their own).
pub fn endpoint_config(name: &str, folder: &Path, i: usize, policy: Policy) -> SetConfig {
    SetConfig {
        name: name.into(),
        local_path: folder.to_path_buf(),
        repo: "memory".into(),
        endpoint: if i == 0 {
            "local".into()
        } else {
            format!("ws{i}")
        },
        role: if i == 0 { Role::Local } else { Role::Instance },
        sync_mode: Mode::Bidirectional,
        conflict_policy: policy,
        automatic_rules: vec![],
        exclude_patterns: vec![],
        builtin_excludes: true,
        rules: None,
        instances: vec![],
        retention: "30d".into(),
        max_delete_count: u64::MAX,
        max_delete_percent: 100.0,
        case_insensitive: false,
        unicode_normalizing: false,
        limit_upload: None,
        limit_download: None,
        conflict_resolution: None,
    }
}

/// A password-less repository with 1 MiB packs (so small trees span several packs).
pub fn init_repo(backend: DynBackend, keys_dir: &Path) -> Repository {
    let opts = InitOptions {
        pack_target_bytes: 1 << 20,
        ..Default::default()
    };
    Repository::init(backend, &creds(keys_dir), &opts).unwrap()
}

pub fn memory() -> DynBackend {
    Arc::new(prism_sync::backend::MemoryBackend::new())
}

/// A backend call as [`Tapped`] reports it, after the inner backend answered.
pub enum Call<'a> {
    List(Kind),
    Read(Kind, &'a str),
    ReadRange {
        kind: Kind,
        name: &'a str,
        offset: u64,
        length: u64,
    },
    Create(Kind, &'a str),
    Delete(Kind, &'a str),
}

/// A backend that passes every call to `inner` and then tells `tap` about it: for tests that
/// count requests or act at an exact moment (another endpoint publishing right after a listing).
pub struct Tapped {
    pub inner: DynBackend,
    pub tap: Box<dyn Fn(&Call) + Send + Sync>,
    /// Reported as the backend's parallelism instead of the inner one's.
    pub parallelism: Option<usize>,
}

impl Tapped {
    pub fn new(inner: DynBackend, tap: impl Fn(&Call) + Send + Sync + 'static) -> Tapped {
        Tapped {
            inner,
            tap: Box::new(tap),
            parallelism: None,
        }
    }
}

impl Backend for Tapped {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn prepare(&self) -> BResult<()> {
        self.inner.prepare()
    }
    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
        let r = self.inner.create(kind, name, data);
        (self.tap)(&Call::Create(kind, name));
        r
    }
    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
        let r = self.inner.read(kind, name);
        (self.tap)(&Call::Read(kind, name));
        r
    }
    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        let r = self.inner.read_range(kind, name, offset, length);
        (self.tap)(&Call::ReadRange {
            kind,
            name,
            offset,
            length,
        });
        r
    }
    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        let r = self.inner.list(kind);
        (self.tap)(&Call::List(kind));
        r
    }
    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        let r = self.inner.delete(kind, name);
        (self.tap)(&Call::Delete(kind, name));
        r
    }
    fn parallelism(&self) -> usize {
        self.parallelism.unwrap_or_else(|| self.inner.parallelism())
    }
    // What the medium says of itself comes from the backend below. (`list_unless` and
    // `watch_list` keep their defaults: they list through `list`, which the tap sees.)
    fn remove_stale_temp(&self, max_age: std::time::Duration) -> BResult<usize> {
        self.inner.remove_stale_temp(max_age)
    }
    fn probe_capabilities(&self) -> BResult<prism_sync::format::config::Capabilities> {
        self.inner.probe_capabilities()
    }
    fn append_only(&self) -> BResult<bool> {
        self.inner.append_only()
    }
    fn use_capabilities(&self, caps: prism_sync::format::config::Capabilities) {
        self.inner.use_capabilities(caps)
    }
    fn set_group_access(&self, on: bool) {
        self.inner.set_group_access(on)
    }
    fn set_bandwidth(&self, limits: prism_sync::backend::limit::Bandwidth) {
        self.inner.set_bandwidth(limits)
    }
}

/// Runs the real binary with `PRISM_HOME=home` (no password or repository taken from the
/// environment); returns its output.
pub fn cli(home: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_prism-sync"))
        .args(args)
        .env("PRISM_HOME", home)
        .env_remove("PRISM_SYNC_PASSWORD")
        .env_remove("PRISM_SYNC_REPO")
        .output()
        .unwrap()
}

/// [`cli`] that must succeed; returns its stdout.
pub fn cli_ok(home: &Path, args: &[&str]) -> String {
    let o = cli(home, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `files` small files spread over the directories `d0`, `d1`, … (`dirs` of them), and
/// `notes.txt` holding `v0`.
pub fn numbered_files(folder: &Path, files: usize, dirs: usize) {
    for i in 0..files {
        write(
            &folder.join(format!("d{}/f{i}.txt", i % dirs)),
            format!("file {i}\n").as_bytes(),
        );
    }
    write(&folder.join("notes.txt"), b"v0\n");
}

/// A set made as a user makes one — `init FOLDER --repo DIR --name SET` and a first `sync`, by
/// the real binary, on a directory repository — then opened in-process, so that a test can run
/// steps and count their work.
pub struct CliSet {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub folder: PathBuf,
    pub repo_dir: PathBuf,
    pub ep: prism_sync::endpoint::Endpoint,
    pub repo: Repository,
}

impl CliSet {
    /// `fill` writes the folder's first content.
    pub fn new(set: &str, fill: impl FnOnce(&Path)) -> CliSet {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let folder = tmp.path().join("folder");
        let repo_dir = tmp.path().join("repo");
        std::fs::create_dir_all(&folder).unwrap();
        fill(&folder);
        cli_ok(
            &home,
            &[
                "init",
                folder.to_str().unwrap(),
                "--repo",
                repo_dir.to_str().unwrap(),
                "--name",
                set,
            ],
        );
        cli_ok(&home, &["sync", set]);
        let ep = prism_sync::endpoint::Endpoint::open(&home, set).unwrap();
        let creds = Credentials {
            password: None,
            local_keys_dir: home.join("sync/keys"),
        };
        let repo = Repository::open_url(&ep.cfg.repo, &creds).unwrap();
        CliSet {
            tmp,
            home,
            folder,
            repo_dir,
            ep,
            repo,
        }
    }

    /// One step per `n` in `versions`, each after writing `v{n}` into `notes.txt`.
    pub fn edit_notes(&self, versions: std::ops::RangeInclusive<u32>) {
        for n in versions {
            write(&self.folder.join("notes.txt"), format!("v{n}\n").as_bytes());
            prism_sync::endpoint::step(
                &self.ep,
                &self.repo,
                &prism_sync::endpoint::StepOptions::default(),
            )
            .unwrap();
        }
    }
}
