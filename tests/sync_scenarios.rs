//! Scenario suite in the style of rclone bisync's golden tests: every directory under
//! `tests/scenarios/` is one case (`scenario.yml` plus the trees it names), run against the real
//! `prism-sync` binary with two or three endpoints on this machine — each endpoint with its own
//! `PRISM_HOME` and folder, all sharing one repository directory.
//!
//! The schema is documented in `tests/scenarios/README.md`. One test runs every case (several in
//! parallel), keeps going after a failure and reports every failing case by name, with the step
//! that failed, a readable diff and the last commands it ran. `PRISM_SCENARIO=substring` runs only
//! the matching cases; `PRISM_SCENARIO_JOBS=N` sets the parallelism (default 3).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::Deserialize;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_prism-sync");
/// The sync set's name in every scenario.
const SET: &str = "proj";
/// In an edit directory (top level only): paths to delete in the endpoint's folder, one a line.
const DELETE_FILE: &str = ".scenario-delete";
/// Anywhere in a tree directory: marks its directory as existing (git cannot hold empty ones);
/// the marker itself is never copied nor compared.
const KEEP_FILE: &str = ".scenario-keep";
/// Fixture name standing for `.git` (which git cannot commit inside a repository).
const DOT_GIT: &str = "dot-git";
/// A command that runs longer than this is killed and fails its scenario.
const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// Environment of prism-sync that must not leak in from the caller.
const PRISM_VARS: &[&str] = &[
    "PRISM_HOME",
    "PRISM_SYNC_REPO",
    "PRISM_SYNC_PASSWORD",
    "PRISM_SYNC_PASSWORD_FILE",
    "PRISM_SYNC_NEW_PASSWORD",
    "PRISM_SYNC_KEY",
    "PRISM_SYNC_REST_TOKEN",
];

// ---- schema ------------------------------------------------------------------------------------

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Scenario {
    /// One or two sentences: what is tested and what must happen.
    description: String,
    /// `local` first (the laptop, created by `init`), then the workspaces (each `join`s).
    endpoints: Vec<String>,
    #[serde(default)]
    set: SetOptions,
    /// Per-workspace changes to the join command `add-instance` prints.
    #[serde(default)]
    join: BTreeMap<String, JoinOverride>,
    steps: Vec<Step>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct SetOptions {
    mode: Option<String>,
    conflict_policy: Option<String>,
    rules: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct JoinOverride {
    mode: Option<String>,
    conflict_policy: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct MtimeExpect {
    at: String,
    path: String,
    epoch: i64,
}

#[derive(Deserialize, Debug)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
enum Step {
    /// Apply an edit directory of the case to an endpoint's folder.
    Edit {
        at: String,
        dir: String,
    },
    /// `prism-sync sync proj` at an endpoint.
    Sync {
        at: String,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        exit: i32,
        #[serde(default)]
        stdout: Vec<String>,
        #[serde(default)]
        stderr: Vec<String>,
    },
    /// `sync` at each endpoint in order (each must exit 0), `times` times over.
    Round {
        endpoints: Vec<String>,
        #[serde(default = "one")]
        times: u32,
    },
    /// The endpoints sync "at the same moment": each starts from the heads as they were before
    /// this step and none sees the others' publications, so several heads are left.
    Concurrent {
        endpoints: Vec<String>,
    },
    ForceSync {
        at: String,
        direction: String,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        exit: i32,
        #[serde(default)]
        stdout: Vec<String>,
        #[serde(default)]
        stderr: Vec<String>,
    },
    Resolve {
        at: String,
        path: Option<String>,
        #[serde(default)]
        all: bool,
        keep: String,
        #[serde(default)]
        exit: i32,
        #[serde(default)]
        stdout: Vec<String>,
        #[serde(default)]
        stderr: Vec<String>,
    },
    /// Any prism-sync command at an endpoint; `{set}`, `{repo}` and `{folder}` are replaced.
    Run {
        at: String,
        args: Vec<String>,
        #[serde(default)]
        exit: i32,
        #[serde(default)]
        stdout: Vec<String>,
        #[serde(default)]
        stderr: Vec<String>,
    },
    /// Create or overwrite one file (parents are created).
    Write {
        at: String,
        path: String,
        content: String,
        #[serde(default)]
        executable: bool,
    },
    /// rename(2) inside an endpoint's folder (keeps inode and mtime), creating parents.
    Move {
        at: String,
        from: String,
        to: String,
    },
    Mkdir {
        at: String,
        path: String,
    },
    Symlink {
        at: String,
        path: String,
        target: String,
    },
    Chmod {
        at: String,
        path: String,
        executable: bool,
    },
    /// Set a file's modification time (seconds since the epoch).
    Mtime {
        at: String,
        path: String,
        epoch: i64,
    },
    /// Rename the endpoint's folder away (`<folder>.away`) / back.
    MoveRootAway {
        at: String,
    },
    MoveRootBack {
        at: String,
    },
    Sleep {
        seconds: f64,
    },
    /// Remember the current time under a name (`@name` in `restore`).
    Mark {
        name: String,
    },
    /// `prism-sync restore proj --at TIME [--path P] --target <new dir>`, compared with a tree.
    Restore {
        at: String,
        time: String,
        path: Option<String>,
        expect: String,
    },
    Expect {
        /// Endpoint → tree directory of the case: the folder must be exactly that tree.
        #[serde(default)]
        trees: BTreeMap<String, String>,
        /// These endpoints' folders must be identical to each other.
        #[serde(default)]
        same_trees: Vec<String>,
        /// Endpoint → the paths `conflicts` lists there (exactly).
        #[serde(default)]
        conflicts: BTreeMap<String, Vec<String>>,
        /// Endpoint → is the set halted there (`status --json`)?
        #[serde(default)]
        halted: BTreeMap<String, bool>,
        #[serde(default)]
        mtimes: Vec<MtimeExpect>,
        /// Every file has the same mtime (to the nanosecond) at these endpoints.
        #[serde(default)]
        same_mtimes: Vec<String>,
        /// Number of head objects in the repository.
        heads: Option<usize>,
    },
}

fn one() -> u32 {
    1
}

// ---- trees -------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Dir,
    File { data: Vec<u8>, exec: bool },
    Link(PathBuf),
}

impl Entry {
    fn describe(&self) -> String {
        match self {
            Entry::Dir => "directory".into(),
            Entry::File { data, exec } => format!(
                "{}file {}",
                if *exec { "executable " } else { "" },
                show(data)
            ),
            Entry::Link(t) => format!("symlink → {}", t.display()),
        }
    }
}

fn show(data: &[u8]) -> String {
    let s = String::from_utf8_lossy(data);
    let mut s: String = s.escape_debug().collect();
    if s.len() > 160 {
        s.truncate(160);
        s.push('…');
    }
    format!("\"{s}\"")
}

/// Replaces the time stamp of conflict copies (`.conflict-YYYYMMDD-HHMMSS-`) by letters.
fn normalize(path: &str) -> String {
    const TAG: &str = ".conflict-";
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find(TAG) {
        let (head, tail) = rest.split_at(i + TAG.len());
        out.push_str(head);
        let b = tail.as_bytes();
        let stamp = b.len() >= 16
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'-'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'-';
        if stamp {
            out.push_str("YYYYMMDD-HHMMSS-");
            rest = &tail[16..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

type Tree = BTreeMap<String, Entry>;

/// Every entry below `root` by relative path. `markers`: skip the scenario's control files.
fn capture(root: &Path, markers: bool) -> Result<Tree, String> {
    fn walk(root: &Path, dir: &Path, markers: bool, out: &mut Tree) -> Result<(), String> {
        let rd = fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("read {}: {e}", dir.display()))?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if markers && (name == KEEP_FILE || (dir == root && name == DELETE_FILE)) {
                continue;
            }
            let rel = p
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            let md = fs::symlink_metadata(&p).map_err(|e| format!("stat {}: {e}", p.display()))?;
            let entry = if md.file_type().is_symlink() {
                Entry::Link(fs::read_link(&p).map_err(|e| format!("{}: {e}", p.display()))?)
            } else if md.is_dir() {
                walk(root, &p, markers, out)?;
                Entry::Dir
            } else {
                Entry::File {
                    data: fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?,
                    exec: md.permissions().mode() & 0o100 != 0,
                }
            };
            // git cannot store a nested `.git/`: fixture trees spell it `dot-git/`.
            let rel = if markers {
                rel.split('/')
                    .map(|c| if c == DOT_GIT { ".git" } else { c })
                    .collect::<Vec<_>>()
                    .join("/")
            } else {
                rel
            };
            if out.insert(normalize(&rel), entry).is_some() {
                return Err(format!(
                    "{}: two entries normalize to the same name {}",
                    root.display(),
                    normalize(&rel)
                ));
            }
        }
        Ok(())
    }
    let mut out = Tree::new();
    walk(root, root, markers, &mut out)?;
    Ok(out)
}

fn listing(t: &Tree) -> String {
    if t.is_empty() {
        return "      (empty)\n".into();
    }
    t.iter()
        .map(|(p, e)| format!("      {p}: {}\n", e.describe()))
        .collect()
}

/// A readable diff of two trees, empty if they are equal.
fn diff(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut d = Vec::new();
    let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    for k in keys {
        match (expected.get(k), actual.get(k)) {
            (Some(e), None) => d.push(format!("missing   {k}: expected {}", e.describe())),
            (None, Some(a)) => d.push(format!("unexpected {k}: {}", a.describe())),
            (Some(e), Some(a)) if e != a => d.push(format!(
                "differs   {k}:\n        expected {}\n        actual   {}",
                e.describe(),
                a.describe()
            )),
            _ => {}
        }
    }
    d
}

/// Applies an edit directory: deletions listed in `.scenario-delete` first, then copies.
fn apply_edit(src: &Path, dst: &Path) -> Result<(), String> {
    if !src.is_dir() {
        return Err(format!("edit directory {} does not exist", src.display()));
    }
    if !dst.is_dir() {
        return Err(format!("endpoint folder {} does not exist", dst.display()));
    }
    if let Ok(list) = fs::read_to_string(src.join(DELETE_FILE)) {
        for line in list.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let p = dst.join(line);
            let md = fs::symlink_metadata(&p)
                .map_err(|e| format!("{DELETE_FILE}: cannot delete {}: {e}", p.display()))?;
            remove(&p, &md)?;
        }
    }
    copy_into(src, dst, true)
}

fn remove(p: &Path, md: &fs::Metadata) -> Result<(), String> {
    let r = if md.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    r.map_err(|e| format!("delete {}: {e}", p.display()))
}

fn copy_into(src: &Path, dst: &Path, top: bool) -> Result<(), String> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(|e| format!("read {}: {e}", src.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("read {}: {e}", src.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name == KEEP_FILE || (top && name == DELETE_FILE) {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        let md = fs::symlink_metadata(&from).map_err(|e| format!("{}: {e}", from.display()))?;
        let existing = fs::symlink_metadata(&to).ok();
        let err = |e: std::io::Error| format!("write {}: {e}", to.display());
        if md.file_type().is_symlink() {
            if let Some(x) = &existing {
                remove(&to, x)?;
            }
            symlink(fs::read_link(&from).map_err(err)?, &to).map_err(err)?;
        } else if md.is_dir() {
            if let Some(x) = existing.filter(|x| !x.is_dir()) {
                remove(&to, &x)?;
            }
            fs::create_dir_all(&to).map_err(err)?;
            copy_into(&from, &to, false)?;
        } else {
            if let Some(x) = existing.filter(|x| !x.is_file()) {
                remove(&to, &x)?;
            }
            fs::write(&to, fs::read(&from).map_err(err)?).map_err(err)?;
            let mode = md.permissions().mode() & 0o777;
            fs::set_permissions(&to, fs::Permissions::from_mode(mode)).map_err(err)?;
        }
    }
    Ok(())
}

/// Regular files' mtimes (ns) below `root`, by relative path.
fn mtimes(root: &Path) -> Result<BTreeMap<String, i128>, String> {
    let mut out = BTreeMap::new();
    for (p, e) in capture(root, false)? {
        if let Entry::File { .. } = e {
            out.insert(p.clone(), mtime_of(&root.join(&p))?);
        }
    }
    Ok(out)
}

fn mtime_of(p: &Path) -> Result<i128, String> {
    let md = fs::symlink_metadata(p).map_err(|e| format!("stat {}: {e}", p.display()))?;
    let t = md.modified().map_err(|e| e.to_string())?;
    Ok(match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    })
}

// ---- running one scenario ----------------------------------------------------------------------

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

struct World {
    case: PathBuf,
    tmp: TempDir,
    endpoints: Vec<String>,
    log: Vec<String>,
    marks: BTreeMap<String, String>,
    restores: usize,
}

impl World {
    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }
    fn home(&self, ep: &str) -> PathBuf {
        self.tmp.path().join(ep).join("home")
    }
    fn folder(&self, ep: &str) -> PathBuf {
        self.tmp.path().join(ep).join("project")
    }
    fn away(&self, ep: &str) -> PathBuf {
        self.tmp.path().join(ep).join("project.away")
    }
    fn case_dir(&self, name: &str) -> Result<PathBuf, String> {
        let p = self.case.join(name);
        if name.is_empty() || name.contains("..") || !p.is_dir() {
            return Err(format!("the case has no directory {name:?}"));
        }
        Ok(p)
    }
    fn check_ep(&self, ep: &str) -> Result<(), String> {
        if self.endpoints.iter().any(|e| e == ep) {
            Ok(())
        } else {
            Err(format!(
                "unknown endpoint {ep:?} (declared: {:?})",
                self.endpoints
            ))
        }
    }
    fn path_in(&self, ep: &str, rel: &str) -> Result<PathBuf, String> {
        self.check_ep(ep)?;
        if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            return Err(format!("{rel:?} is not a relative path inside the folder"));
        }
        Ok(self.folder(ep).join(rel))
    }

    /// Runs the binary as endpoint `ep`, with a clean environment of its own.
    fn run(&mut self, ep: &str, args: &[String], key: Option<&str>) -> Result<Output, String> {
        self.check_ep(ep)?;
        let n = self.log.len();
        let (out_p, err_p) = (
            self.tmp.path().join(format!("cmd-{n}.out")),
            self.tmp.path().join(format!("cmd-{n}.err")),
        );
        let mut cmd = Command::new(BIN);
        for v in PRISM_VARS {
            cmd.env_remove(v);
        }
        cmd.args(args)
            .env("PRISM_HOME", self.home(ep))
            .env("HOME", self.home(ep))
            .env("NO_COLOR", "1")
            .current_dir(self.tmp.path())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_p).map_err(|e| e.to_string())?)
            .stderr(fs::File::create(&err_p).map_err(|e| e.to_string())?);
        if let Some(k) = key {
            cmd.env("PRISM_SYNC_KEY", k);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| format!("spawn {BIN}: {e}"))?;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            if started.elapsed() > CMD_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "[{ep}] prism-sync {} did not finish within {CMD_TIMEOUT:?}",
                    args.join(" ")
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let out = Output {
            code: status.code().unwrap_or(-1),
            stdout: fs::read_to_string(&out_p).unwrap_or_default(),
            stderr: fs::read_to_string(&err_p).unwrap_or_default(),
        };
        let mut entry = format!(
            "[{ep}] $ prism-sync {}   → exit {} ({} ms)\n",
            args.join(" "),
            out.code,
            started.elapsed().as_millis()
        );
        for (tag, text) in [("out", &out.stdout), ("err", &out.stderr)] {
            let lines: Vec<&str> = text.lines().collect();
            for l in lines.iter().take(12) {
                let _ = writeln!(entry, "      {tag}| {l}");
            }
            if lines.len() > 12 {
                let _ = writeln!(entry, "      {tag}| … {} more line(s)", lines.len() - 12);
            }
        }
        self.log.push(entry);
        Ok(out)
    }

    fn run_checked(
        &mut self,
        ep: &str,
        args: &[String],
        exit: i32,
        stdout: &[String],
        stderr: &[String],
    ) -> Result<Output, String> {
        let out = self.run(ep, args, None)?;
        let mut problems = Vec::new();
        if out.code != exit {
            problems.push(format!("exit code {} (expected {exit})", out.code));
        }
        for s in stdout {
            if !out.stdout.contains(s.as_str()) {
                problems.push(format!("stdout lacks {s:?}"));
            }
        }
        for s in stderr {
            if !out.stderr.contains(s.as_str()) {
                problems.push(format!("stderr lacks {s:?}"));
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(format!(
                "[{ep}] prism-sync {}: {}\n    stdout:\n{}    stderr:\n{}",
                args.join(" "),
                problems.join("; "),
                indent(&out.stdout),
                indent(&out.stderr)
            ))
        }
    }

    fn sync(&mut self, ep: &str) -> Result<Output, String> {
        self.run_checked(ep, &args(&["sync", SET]), 0, &[], &[])
    }

    fn heads_dir(&self) -> PathBuf {
        self.repo().join("heads")
    }

    fn read_heads(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut out = BTreeMap::new();
        let dir = self.heads_dir();
        for e in fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            out.insert(name, fs::read(e.path()).map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    fn write_heads(&self, heads: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
        for name in self.read_heads()?.keys() {
            fs::remove_file(self.heads_dir().join(name)).map_err(|e| e.to_string())?;
        }
        for (name, bytes) in heads {
            fs::write(self.heads_dir().join(name), bytes).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn indent(s: &str) -> String {
    if s.trim().is_empty() {
        return "      (nothing)\n".into();
    }
    s.lines().map(|l| format!("      {l}\n")).collect()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `init` + first `sync` on the laptop, then `add-instance` / `join` / `sync` per workspace.
fn setup(w: &mut World, sc: &Scenario) -> Result<(), String> {
    if sc.endpoints.first().map(String::as_str) != Some("local") {
        return Err("the first endpoint must be `local` (the laptop)".into());
    }
    let unique: BTreeSet<&String> = sc.endpoints.iter().collect();
    if unique.len() != sc.endpoints.len() || sc.endpoints.len() < 2 {
        return Err("endpoints: at least two, each named once".into());
    }
    for ws in sc.join.keys() {
        if ws == "local" || !sc.endpoints.contains(ws) {
            return Err(format!("join: {ws:?} is not a declared workspace"));
        }
    }
    for ep in &sc.endpoints {
        fs::create_dir_all(w.home(ep)).map_err(|e| e.to_string())?;
        fs::create_dir_all(w.folder(ep)).map_err(|e| e.to_string())?;
        let init = if ep == "local" {
            "initial".to_string()
        } else {
            format!("initial-{ep}")
        };
        if w.case.join(&init).is_dir() {
            apply_edit(&w.case.join(&init), &w.folder(ep))?;
        }
    }
    let mut init = args(&["init"]);
    init.push(w.folder("local").display().to_string());
    init.extend(args(&["--repo"]));
    init.push(w.repo().display().to_string());
    init.extend(args(&["--name", SET]));
    for (flag, v) in [
        ("--mode", &sc.set.mode),
        ("--conflict-policy", &sc.set.conflict_policy),
        ("--rules", &sc.set.rules),
    ] {
        if let Some(v) = v {
            init.push(flag.into());
            init.push(v.clone());
        }
    }
    w.run_checked("local", &init, 0, &[], &[])?;
    w.sync("local")?;
    for ws in &sc.endpoints[1..] {
        let mut a = args(&["add-instance", SET, ws, "--json", "--dir"]);
        a.push(w.folder(ws).display().to_string());
        let out = w.run_checked("local", &a, 0, &[], &[])?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .map_err(|e| format!("add-instance --json printed no JSON ({e}): {}", out.stdout))?;
        let join = v["join"]
            .as_str()
            .ok_or_else(|| format!("add-instance --json has no \"join\" string: {v}"))?;
        // The workspace's own key: the join command names the file as copied to the workspace;
        // on this one machine it is where add-instance wrote it.
        let key_file = v["key_file"]
            .as_str()
            .ok_or_else(|| format!("add-instance --json has no \"key_file\": {v}"))?;
        if join.contains("PRISM_SYNC_KEY") {
            return Err(format!("the join command carries a key: {join}"));
        }
        let tokens: Vec<&str> = join.split_whitespace().collect();
        let at = tokens
            .iter()
            .position(|t| *t == "join")
            .ok_or_else(|| format!("not a join command: {join}"))?;
        let mut ja: Vec<String> = tokens[at..].iter().map(|s| s.to_string()).collect();
        match ja.iter().position(|t| t == "--key-file") {
            Some(i) if i + 1 < ja.len() => ja[i + 1] = key_file.to_string(),
            _ => return Err(format!("the join command names no --key-file: {join}")),
        }
        if let Some(o) = sc.join.get(ws) {
            for (flag, v) in [
                ("--mode", &o.mode),
                ("--conflict-policy", &o.conflict_policy),
            ] {
                let Some(v) = v else { continue };
                match ja.iter().position(|t| t == flag) {
                    Some(i) if i + 1 < ja.len() => ja[i + 1] = v.clone(),
                    _ => {
                        ja.push(flag.into());
                        ja.push(v.clone());
                    }
                }
            }
        }
        let out = w.run(ws, &ja, None)?;
        if out.code != 0 {
            return Err(format!(
                "[{ws}] join failed (exit {}):\n{}",
                out.code,
                indent(&out.stderr)
            ));
        }
        w.sync(ws)?;
    }
    Ok(())
}

fn step(w: &mut World, s: &Step) -> Result<(), String> {
    match s {
        Step::Edit { at, dir } => {
            w.check_ep(at)?;
            let src = w.case_dir(dir)?;
            apply_edit(&src, &w.folder(at))?;
        }
        Step::Sync {
            at,
            dry_run,
            exit,
            stdout,
            stderr,
        } => {
            let mut a = args(&["sync", SET]);
            if *dry_run {
                a.push("--dry-run".into());
            }
            w.run_checked(at, &a, *exit, stdout, stderr)?;
        }
        Step::Round { endpoints, times } => {
            for _ in 0..*times {
                for ep in endpoints {
                    w.sync(ep)?;
                }
            }
        }
        Step::Concurrent { endpoints } => {
            let before = w.read_heads()?;
            let (mut new, mut gone) = (BTreeMap::new(), BTreeSet::new());
            for ep in endpoints {
                w.write_heads(&before)?;
                w.sync(ep)?;
                let now = w.read_heads()?;
                for (n, b) in &now {
                    if !before.contains_key(n) {
                        new.insert(n.clone(), b.clone());
                    }
                }
                gone.extend(before.keys().filter(|n| !now.contains_key(*n)).cloned());
            }
            let mut after: BTreeMap<String, Vec<u8>> = before
                .into_iter()
                .filter(|(n, _)| !gone.contains(n))
                .collect();
            after.extend(new);
            w.write_heads(&after)?;
        }
        Step::ForceSync {
            at,
            direction,
            dry_run,
            exit,
            stdout,
            stderr,
        } => {
            let mut a = args(&["force-sync", SET, "--direction", direction]);
            if *dry_run {
                a.push("--dry-run".into());
            }
            w.run_checked(at, &a, *exit, stdout, stderr)?;
        }
        Step::Resolve {
            at,
            path,
            all,
            keep,
            exit,
            stdout,
            stderr,
        } => {
            let mut a = args(&["resolve", SET]);
            match (path, all) {
                (Some(p), false) => a.push(p.clone()),
                (None, true) => a.push("--all".into()),
                _ => return Err("resolve: give `path` or `all: true`".into()),
            }
            a.extend(args(&["--keep", keep]));
            w.run_checked(at, &a, *exit, stdout, stderr)?;
        }
        Step::Run {
            at,
            args: a,
            exit,
            stdout,
            stderr,
        } => {
            w.check_ep(at)?;
            let (repo, folder) = (w.repo(), w.folder(at));
            let a: Vec<String> = a
                .iter()
                .map(|x| {
                    x.replace("{set}", SET)
                        .replace("{repo}", &repo.display().to_string())
                        .replace("{folder}", &folder.display().to_string())
                })
                .collect();
            w.run_checked(at, &a, *exit, stdout, stderr)?;
        }
        Step::Move { at, from, to } => {
            let (f, t) = (w.path_in(at, from)?, w.path_in(at, to)?);
            if let Some(parent) = t.parent() {
                fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            fs::rename(&f, &t).map_err(|e| format!("move {from} → {to}: {e}"))?;
        }
        Step::Write {
            at,
            path,
            content,
            executable,
        } => {
            let p = w.path_in(at, path)?;
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            fs::write(&p, content).map_err(|e| format!("write {path}: {e}"))?;
            let mode = if *executable { 0o755 } else { 0o644 };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {path}: {e}"))?;
        }
        Step::Mkdir { at, path } => {
            let p = w.path_in(at, path)?;
            fs::create_dir_all(&p).map_err(|e| format!("mkdir {path}: {e}"))?;
        }
        Step::Symlink { at, path, target } => {
            let p = w.path_in(at, path)?;
            if let Ok(md) = fs::symlink_metadata(&p) {
                remove(&p, &md)?;
            }
            symlink(target, &p).map_err(|e| format!("symlink {path}: {e}"))?;
        }
        Step::Chmod {
            at,
            path,
            executable,
        } => {
            let p = w.path_in(at, path)?;
            let mode = if *executable { 0o755 } else { 0o644 };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {path}: {e}"))?;
        }
        Step::Mtime { at, path, epoch } => {
            let p = w.path_in(at, path)?;
            let t = if *epoch >= 0 {
                UNIX_EPOCH + Duration::from_secs(*epoch as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs(epoch.unsigned_abs())
            };
            fs::File::options()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_times(fs::FileTimes::new().set_modified(t)))
                .map_err(|e| format!("set mtime of {path}: {e}"))?;
        }
        Step::MoveRootAway { at } => {
            w.check_ep(at)?;
            fs::rename(w.folder(at), w.away(at)).map_err(|e| e.to_string())?;
        }
        Step::MoveRootBack { at } => {
            w.check_ep(at)?;
            fs::rename(w.away(at), w.folder(at)).map_err(|e| e.to_string())?;
        }
        Step::Sleep { seconds } => std::thread::sleep(Duration::from_secs_f64(*seconds)),
        Step::Mark { name } => {
            w.marks
                .insert(name.clone(), jiff::Timestamp::now().to_string());
        }
        Step::Restore {
            at,
            time,
            path,
            expect,
        } => {
            let time = match time.strip_prefix('@') {
                Some(m) => w
                    .marks
                    .get(m)
                    .cloned()
                    .ok_or_else(|| format!("restore: no mark {m:?}"))?,
                None => time.clone(),
            };
            w.restores += 1;
            let target = w.tmp.path().join(format!("restore-{}", w.restores));
            let mut a = args(&["restore", SET, "--at", &time]);
            if let Some(p) = path {
                a.extend(args(&["--path", p]));
            }
            a.push("--target".into());
            a.push(target.display().to_string());
            w.run_checked(at, &a, 0, &[], &[])?;
            let want = capture(&w.case_dir(expect)?, true)?;
            let got = capture(&target, false)?;
            let d = diff(&want, &got);
            if !d.is_empty() {
                return Err(format!(
                    "restored tree differs from {expect}/:\n    {}\n    restored:\n{}",
                    d.join("\n    "),
                    listing(&got)
                ));
            }
        }
        Step::Expect {
            trees,
            same_trees,
            conflicts,
            halted,
            mtimes: mt,
            same_mtimes,
            heads,
        } => expect(
            w,
            trees,
            same_trees,
            conflicts,
            halted,
            mt,
            same_mtimes,
            *heads,
        )?,
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn expect(
    w: &mut World,
    trees: &BTreeMap<String, String>,
    same_trees: &[String],
    conflicts: &BTreeMap<String, Vec<String>>,
    halted: &BTreeMap<String, bool>,
    mt: &[MtimeExpect],
    same_mtimes: &[String],
    heads: Option<usize>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for (ep, dir) in trees {
        w.check_ep(ep)?;
        let want = capture(&w.case_dir(dir)?, true)?;
        let got = capture(&w.folder(ep), false)?;
        let d = diff(&want, &got);
        if !d.is_empty() {
            problems.push(format!(
                "{ep}'s folder differs from {dir}/:\n    {}\n    {ep} holds:\n{}",
                d.join("\n    "),
                listing(&got)
            ));
        }
    }
    if let Some((first, rest)) = same_trees.split_first() {
        w.check_ep(first)?;
        let a = capture(&w.folder(first), false)?;
        for ep in rest {
            w.check_ep(ep)?;
            let b = capture(&w.folder(ep), false)?;
            let d = diff(&a, &b);
            if !d.is_empty() {
                problems.push(format!(
                    "{ep}'s folder differs from {first}'s (expected = {first}):\n    {}",
                    d.join("\n    ")
                ));
            }
        }
    }
    for (ep, want) in conflicts {
        let out = w.run_checked(ep, &args(&["conflicts", SET, "--json"]), 0, &[], &[])?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .map_err(|e| format!("[{ep}] conflicts --json: {e}: {}", out.stdout))?;
        let mut got: Vec<String> = v
            .as_array()
            .ok_or_else(|| format!("[{ep}] conflicts --json is not an array: {v}"))?
            .iter()
            .map(|c| c["path"].as_str().unwrap_or("?").to_string())
            .collect();
        got.sort();
        let mut want = want.clone();
        want.sort();
        if got != want {
            problems.push(format!("[{ep}] conflicts lists {got:?}, expected {want:?}"));
        }
    }
    for (ep, want) in halted {
        let out = w.run_checked(ep, &args(&["status", SET, "--json"]), 0, &[], &[])?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .map_err(|e| format!("[{ep}] status --json: {e}: {}", out.stdout))?;
        let got = !v["halt"].is_null();
        if got != *want {
            problems.push(format!(
                "[{ep}] halted = {got} (expected {want}); status: state {}, halt {}",
                v["state"], v["halt"]
            ));
        }
    }
    for m in mt {
        let p = w.path_in(&m.at, &m.path)?;
        let got = mtime_of(&p)?;
        let want = m.epoch as i128 * 1_000_000_000;
        if got != want {
            problems.push(format!(
                "[{}] mtime of {} is {got} ns, expected {want} ns",
                m.at, m.path
            ));
        }
    }
    if let Some((first, rest)) = same_mtimes.split_first() {
        w.check_ep(first)?;
        let a = mtimes(&w.folder(first))?;
        for ep in rest {
            w.check_ep(ep)?;
            let b = mtimes(&w.folder(ep))?;
            for (p, t) in &a {
                match b.get(p) {
                    Some(u) if u != t => problems.push(format!(
                        "mtime of {p}: {first} {t} ns, {ep} {u} ns (differ by {} ns)",
                        u - t
                    )),
                    _ => {}
                }
            }
        }
    }
    if let Some(n) = heads {
        let got = w.read_heads()?.len();
        if got != n {
            problems.push(format!("{got} head(s) in the repository, expected {n}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

fn describe_step(s: &Step) -> String {
    let d = format!("{s:?}");
    if d.len() > 200 {
        format!("{}…", &d[..200])
    } else {
        d
    }
}

fn load(case: &Path) -> Result<Scenario, String> {
    let text = fs::read_to_string(case.join("scenario.yml"))
        .map_err(|e| format!("read scenario.yml: {e}"))?;
    let sc: Scenario =
        serde_saphyr::from_str(&text).map_err(|e| format!("scenario.yml does not parse: {e}"))?;
    if sc.description.trim().is_empty() || sc.steps.is_empty() {
        return Err("scenario.yml needs a description and steps".into());
    }
    Ok(sc)
}

/// Runs one case; on failure returns the report: what failed, and the last commands run.
fn run_case(case: &Path, sc: &Scenario) -> Result<(), String> {
    let tmp = tempfile::Builder::new()
        .prefix("prism-scenario-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut w = World {
        case: case.to_path_buf(),
        tmp,
        endpoints: sc.endpoints.clone(),
        log: Vec::new(),
        marks: BTreeMap::new(),
        restores: 0,
    };
    let fail = |w: &World, at: String, msg: String| {
        let mut r = format!("{at}:\n  {msg}\n  last commands (oldest first):\n");
        let skip = w.log.len().saturating_sub(8);
        for l in &w.log[skip..] {
            for line in l.lines() {
                let _ = writeln!(r, "    {line}");
            }
        }
        r
    };
    if let Err(e) = setup(&mut w, sc) {
        return Err(fail(&w, "setup (init / add-instance / join)".into(), e));
    }
    for (i, s) in sc.steps.iter().enumerate() {
        if let Err(e) = step(&mut w, s) {
            let at = format!(
                "step {} of {} ({})",
                i + 1,
                sc.steps.len(),
                describe_step(s)
            );
            return Err(fail(&w, at, e));
        }
    }
    Ok(())
}

#[test]
fn sync_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e} — the scenario suite is missing", root.display()))
        .map(|e| e.expect("read scenarios").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "no scenarios under {}: the suite must not pass empty",
        root.display()
    );
    let loaded: Vec<(String, PathBuf, Result<Scenario, String>)> = cases
        .into_iter()
        .map(|c| {
            let name = c.file_name().unwrap().to_string_lossy().into_owned();
            let sc = load(&c);
            (name, c, sc)
        })
        .collect();
    let three = loaded
        .iter()
        .filter(|(_, _, s)| s.as_ref().is_ok_and(|s| s.endpoints.len() >= 3))
        .count();
    assert!(
        three >= 3,
        "only {three} scenario(s) use three endpoints: the suite needs several"
    );
    let filter = std::env::var("PRISM_SCENARIO")
        .ok()
        .filter(|f| !f.is_empty());
    let selected: Vec<&(String, PathBuf, Result<Scenario, String>)> = loaded
        .iter()
        .filter(|(n, _, _)| filter.as_ref().is_none_or(|f| n.contains(f.as_str())))
        .collect();
    assert!(
        !selected.is_empty(),
        "PRISM_SCENARIO={filter:?} matches no case"
    );
    let jobs: usize = std::env::var("PRISM_SCENARIO_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(3)
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(String, Result<(), String>)>> = Mutex::new(Vec::new());
    let suite = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(selected.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((name, case, sc)) = selected.get(i).copied() else {
                        break;
                    };
                    let started = Instant::now();
                    let r = match sc {
                        Ok(sc) => run_case(case, sc),
                        Err(e) => Err(e.clone()),
                    };
                    eprintln!(
                        "scenario {name}: {} ({} endpoints, {:.1}s)",
                        if r.is_ok() { "ok" } else { "FAILED" },
                        sc.as_ref().map(|s| s.endpoints.len()).unwrap_or(0),
                        started.elapsed().as_secs_f64()
                    );
                    results.lock().unwrap().push((name.clone(), r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    eprintln!(
        "{} scenario(s) in {:.1}s",
        results.len(),
        suite.elapsed().as_secs_f64()
    );
    let failed: Vec<(&String, &String)> = results
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| (n, e)))
        .collect();
    if !failed.is_empty() {
        let mut report = format!(
            "{} of {} scenario(s) failed: {}\n",
            failed.len(),
            results.len(),
            failed
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (name, e) in &failed {
            let _ = write!(report, "\n==== scenario {name} ====\n{e}\n");
        }
        panic!("{report}");
    }
}

#[test]
fn harness_normalizes_conflict_stamps_and_diffs_trees() {
    assert_eq!(
        normalize("sub/notes.conflict-20251127-120345-ws1.txt"),
        "sub/notes.conflict-YYYYMMDD-HHMMSS-ws1.txt"
    );
    assert_eq!(
        normalize("a.conflict-2025-b.conflict-20251127-120345-local"),
        "a.conflict-2025-b.conflict-YYYYMMDD-HHMMSS-local"
    );
    assert_eq!(normalize("plain.txt"), "plain.txt");
    let file = |s: &str, exec| Entry::File {
        data: s.as_bytes().to_vec(),
        exec,
    };
    let want = Tree::from([
        ("a".into(), file("x", false)),
        ("d".into(), Entry::Dir),
        ("l".into(), Entry::Link("a".into())),
    ]);
    assert!(diff(&want, &want).is_empty());
    let got = Tree::from([
        ("a".into(), file("x", true)),
        ("l".into(), Entry::Link("b".into())),
        ("z".into(), Entry::Dir),
    ]);
    assert_eq!(diff(&want, &got).len(), 4, "{:?}", diff(&want, &got));
}
