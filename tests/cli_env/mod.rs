//! Shared helpers for the CLI integration tests: a hermetic environment per test (its own temp
//! dir, `PRISM_HOME`, `HOME` and repository path) that runs the real `prism-sync` binary, plus
//! tools to capture a directory tree (content and metadata) and compare two captures.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

pub mod sets;
pub mod ui;

pub const BIN: &str = env!("CARGO_BIN_EXE_prism-sync");
pub const PASSWORD: &str = "correct horse battery staple";

/// Environment variables of prism-sync that must never leak in from the caller's shell.
const PRISM_VARS: &[&str] = &[
    "PRISM_HOME",
    "PRISM_SYNC_REPO",
    "PRISM_SYNC_PASSWORD",
    "PRISM_SYNC_PASSWORD_FILE",
    "PRISM_SYNC_NEW_PASSWORD",
    "PRISM_SYNC_REST_TOKEN",
];

/// One test's world: a temp dir holding `home/` (PRISM_HOME and HOME) and `repo/` (the
/// repository, passed as PRISM_SYNC_REPO unless a test gives `--repo`).
pub struct Env {
    pub dir: TempDir,
    pub home: PathBuf,
    pub repo: PathBuf,
    /// PRISM_SYNC_PASSWORD for every run (None: no password in the environment).
    pub password: Option<String>,
    /// Extra environment for every run.
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// An environment whose runs use [`PASSWORD`]. The repository is not created yet.
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("prism-cli-test-")
            .tempdir()
            .expect("temp dir");
        let home = dir.path().join("home");
        fs::create_dir_all(&home).expect("home");
        let repo = dir.path().join("repo");
        Env {
            dir,
            home,
            repo,
            password: Some(PASSWORD.to_string()),
            vars: Vec::new(),
        }
    }

    /// An environment without any password (password-less repositories use a local key file).
    pub fn without_password() -> Env {
        let mut e = Env::new();
        e.password = None;
        e
    }

    /// An environment with a repository already created.
    pub fn with_repo() -> Env {
        let e = Env::new();
        e.init();
        e
    }

    /// A path inside the test's temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn repo_str(&self) -> &str {
        self.repo.to_str().expect("utf-8 temp path")
    }

    /// The command with the test's environment, not yet run.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(BIN);
        for v in PRISM_VARS {
            c.env_remove(v);
        }
        c.env("HOME", &self.home)
            .env("PRISM_HOME", &self.home)
            .env("PRISM_SYNC_REPO", &self.repo)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            // Toy KDF parameters for password key files: thousands of commands, not 0.5 s each
            // (tests/credentials.rs checks the calibrated default).
            .env("PRISM_SYNC_INSECURE_TEST_KDF", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if let Some(p) = &self.password {
            c.env("PRISM_SYNC_PASSWORD", p);
        }
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.args(args);
        c
    }

    /// Runs the binary with `args` and returns its output, whatever the exit code.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command(args).output().expect("run prism-sync")
    }

    /// Runs with extra environment variables (`None` value: remove the variable).
    pub fn run_env<S: AsRef<OsStr>>(&self, args: &[S], vars: &[(&str, Option<&str>)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in vars {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.output().expect("run prism-sync")
    }

    /// Runs and asserts exit code 0; returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.code(),
            0,
            "prism-sync {} failed\n{}",
            show_args(args),
            o.describe()
        );
        o.out()
    }

    /// Runs with `--json`, asserts success and parses stdout.
    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> serde_json::Value {
        let mut all: Vec<&OsStr> = vec![OsStr::new("--json")];
        all.extend(args.iter().map(|a| a.as_ref()));
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "prism-sync {} --json: not JSON ({e}):\n{out}",
                show_args(args)
            )
        })
    }

    /// `repo init` (must succeed).
    pub fn init(&self) {
        self.ok(&["repo", "init"]);
        assert!(self.repo.join("config").is_file(), "init wrote no config");
    }

    /// Backs up `dir` (must exit 0); returns the snapshot's JSON (`id`, `summary`, …).
    pub fn backup(&self, dir: &Path) -> serde_json::Value {
        let v = self.json(&[OsStr::new("backup"), dir.as_os_str()]);
        assert!(v["id"].as_str().is_some_and(|s| s.len() == 64), "{v}");
        v
    }

    /// Backs up `dir` and returns only the snapshot id.
    pub fn backup_id(&self, dir: &Path) -> String {
        self.backup(dir)["id"].as_str().unwrap().to_string()
    }

    /// Restores `snapshot` into a new directory `name` under the temp dir (must exit 0).
    pub fn restore(&self, snapshot: &str, name: &str) -> PathBuf {
        let target = self.path(name);
        self.ok(&[
            "restore",
            snapshot,
            "--target",
            target.to_str().expect("utf-8"),
        ]);
        target
    }

    /// The snapshots as JSON (oldest first).
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        self.json(&["snapshots"])
            .as_array()
            .expect("snapshots --json is an array")
            .clone()
    }

    /// All files below `<repo>/<sub>` (recursively), sorted.
    pub fn repo_files(&self, sub: &str) -> Vec<PathBuf> {
        let mut v = Vec::new();
        collect_files(&self.repo.join(sub), &mut v);
        v.sort();
        v
    }
}

impl Drop for Env {
    /// Makes everything writable again so the temp dir can be removed even when a test left
    /// read-only directories behind and the tests do not run as root.
    fn drop(&mut self) {
        fn open_up(p: &Path) {
            if let Ok(md) = fs::symlink_metadata(p)
                && md.is_dir()
            {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
                if let Ok(rd) = fs::read_dir(p) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
        open_up(self.dir.path());
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn show_args<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Convenience accessors on a finished process.
pub trait OutputExt {
    /// The exit code (-1 when killed by a signal).
    fn code(&self) -> i32;
    fn out(&self) -> String;
    fn err(&self) -> String;
    /// Exit code, stdout and stderr, for assertion messages.
    fn describe(&self) -> String;
}

impl OutputExt for Output {
    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    fn describe(&self) -> String {
        format!(
            "exit status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.out(),
            self.err()
        )
    }
}

/// Asserts the exit code and that the program did not panic.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32, what: &str) {
    assert_eq!(o.code(), code, "{what}: wrong exit code\n{}", o.describe());
    assert_no_panic(o, what);
}

#[track_caller]
pub fn assert_no_panic(o: &Output, what: &str) {
    assert!(
        !o.err().contains("panicked"),
        "{what}: prism-sync panicked\n{}",
        o.describe()
    );
}

// ---- building source trees ------------------------------------------------------------------

/// Writes `content` to `root/rel`, creating parent directories.
pub fn write(root: &Path, rel: &str, content: &[u8]) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    p
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets the mtime (and atime) of a file or directory, to the nanosecond.
pub fn set_mtime(p: &Path, secs: u64, nanos: u32) {
    let t = UNIX_EPOCH + Duration::new(secs, nanos);
    let f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap_or_else(|e| panic!("set times of {}: {e}", p.display()));
}

/// Deterministic pseudo-random (incompressible) bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

// ---- capturing and comparing trees -------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Size and BLAKE3 of the content.
    File {
        size: u64,
        hash: String,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    Other,
}

/// What a restore must reproduce of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits incl. setuid/setgid/sticky (mode & 0o7777).
    pub mode: u32,
    pub mtime_s: i64,
    pub mtime_ns: i64,
    pub uid: u32,
    pub gid: u32,
}

/// Every entry below `root` (not `root` itself), keyed by its path bytes relative to `root`.
pub type Tree = BTreeMap<Vec<u8>, Entry>;

pub fn capture(root: &Path) -> Tree {
    let mut t = Tree::new();
    capture_into(root, b"", &mut t);
    t
}

fn capture_into(dir: &Path, prefix: &[u8], t: &mut Tree) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        let name = e.file_name();
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink {
                target: fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_file() {
            Kind::File {
                size: md.len(),
                hash: hash_file(&p),
            }
        } else {
            Kind::Other
        };
        t.insert(
            rel.clone(),
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                mtime_s: md.mtime(),
                mtime_ns: md.mtime_nsec(),
                uid: md.uid(),
                gid: md.gid(),
            },
        );
        if ft.is_dir() {
            capture_into(&p, &rel, t);
        }
    }
}

pub fn hash_file(p: &Path) -> String {
    let mut h = blake3::Hasher::new();
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().to_hex().to_string()
}

fn show(p: &[u8]) -> String {
    p.escape_ascii().to_string()
}

/// Asserts two captures are identical, listing every difference.
#[track_caller]
pub fn assert_same_tree(expected: &Tree, actual: &Tree, what: &str) {
    let mut problems = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => problems.push(format!("missing: {}", show(p))),
            Some(a) if a != e => problems.push(format!(
                "differs: {}\n    expected {e:?}\n    actual   {a:?}",
                show(p)
            )),
            Some(_) => {}
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            problems.push(format!("unexpected: {}", show(p)));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: restored tree differs from the source ({} problem(s)):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Seconds since the epoch now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Flips one byte in the middle of `path` (repository files are read-only: made writable first).
pub fn flip_middle_byte(path: &Path) {
    chmod(path, 0o644);
    let mut b = fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    fs::write(path, &b).unwrap();
    chmod(path, 0o444);
}

// ---- an unreadable file, also when running as root -----------------------------------------------

/// How a test makes a file that prism-sync cannot read.
///
/// As a normal user, `chmod 000` is enough. As root (CI containers), `chmod 000` does not stop
/// reads: root's CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH bypass permission bits. Then the binary
/// is started with both capabilities dropped from its bounding set (`prctl(PR_CAPBSET_DROP)` in
/// the child before `exec`); a root process whose inheritable set is empty gets exactly the
/// bounding set as its permitted set after `exec`, so `open` of a mode-000 file fails with EACCES
/// as for anyone else. Everything else prism-sync touches belongs to root with normal modes, so
/// nothing else changes. [`Unreadable::apply`] verifies with `cat` that the file really is
/// unreadable for a process started that way and panics loudly otherwise: never a silent skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// chmod 000 alone makes the file unreadable (not privileged).
    Chmod,
    /// Privileged: start the binary without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH.
    DropCaps,
}

const CAP_DAC_OVERRIDE: libc::c_ulong = 1;
const CAP_DAC_READ_SEARCH: libc::c_ulong = 2;

impl Unreadable {
    /// Makes `file` unreadable (chmod 000) and works out how to start processes that cannot
    /// read it.
    pub fn make(file: &Path) -> Unreadable {
        chmod(file, 0o000);
        let how = if fs::read(file).is_err() {
            Unreadable::Chmod
        } else {
            Unreadable::DropCaps
        };
        let mut cat = Command::new("cat");
        cat.arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        how.apply(&mut cat);
        let st = cat.status().expect("run cat");
        assert!(
            !st.success(),
            "cannot make an unreadable file here ({how:?}): `cat` still reads a mode-000 file. \
             This test needs either a non-root user or permission to drop capabilities."
        );
        how
    }

    /// Prepares `cmd` so the process it starts cannot read the file.
    pub fn apply(self, cmd: &mut Command) {
        if self == Unreadable::DropCaps {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    for cap in [CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH] {
                        if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
    }
}
