//! Sync sets with several endpoints on this machine, each with its own `PRISM_HOME` and folder,
//! all on one repository directory, driven through the real binary. Daemon timings are
//! shortened for every command (they only matter to `start`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::BIN;

/// The set's name in every world.
pub const SET: &str = "p";

pub struct Ep {
    /// `local` (the laptop) or `ws1`, `ws2`, …
    pub name: String,
    pub home: PathBuf,
    pub folder: PathBuf,
}

pub struct World {
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub eps: Vec<Ep>,
}

impl Ep {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("PRISM_HOME", &self.home)
            .env("HOME", &self.home)
            .env_remove("PRISM_SYNC_PASSWORD")
            .env_remove("PRISM_SYNC_PASSWORD_FILE")
            .env_remove("PRISM_SYNC_REPO")
            .env_remove("PRISM_SYNC_KEY")
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .env("PRISM_SYNC_POLL_MS", "100")
            .env("PRISM_SYNC_SETTLE_MS", "50")
            .env("PRISM_SYNC_SETTLE_CAP_MS", "500")
            .env("PRISM_SYNC_FULL_RESCAN_S", "3")
            .env("PRISM_SYNC_BACKOFF_MAX_S", "1")
            .stdin(std::process::Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run prism-sync")
    }

    /// Runs and asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{}: prism-sync {args:?} failed ({:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.name,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs with `--json`, asserts success and parses stdout.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} --json: {e}\n{out}"))
    }

    pub fn status(&self) -> serde_json::Value {
        self.json(&["status", SET])
    }

    /// `sync` (must succeed); its JSON report.
    #[track_caller]
    pub fn sync(&self) -> serde_json::Value {
        self.json(&["sync", SET])
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.home.join("sync/daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.folder.join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.folder.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.folder.join(rel)).ok()
    }
}

impl World {
    /// A laptop (`local`, which has synced `start.txt`) and `n - 1` workspaces (`ws1`, …) that
    /// joined and synced once.
    pub fn new(n: usize) -> World {
        Self::with(n, &[], |_| {})
    }

    /// Like [`World::new`], with extra flags for `init` (`--mode …`, `--conflict-policy …`; the
    /// workspaces get what `add-instance` prints) and files written into the laptop's folder
    /// before its first sync.
    pub fn with(n: usize, init_flags: &[&str], before_first_sync: impl FnOnce(&Ep)) -> World {
        let tmp = tempfile::Builder::new()
            .prefix("prism-sets-")
            .tempdir()
            .unwrap();
        let repo = tmp.path().join("repo");
        let eps: Vec<Ep> = (0..n)
            .map(|i| Ep {
                name: if i == 0 {
                    "local".into()
                } else {
                    format!("ws{i}")
                },
                home: tmp.path().join(format!("home{i}")),
                folder: tmp.path().join(format!("folder{i}")),
            })
            .collect();
        let w = World { tmp, repo, eps };
        let laptop = &w.eps[0];
        laptop.write("start.txt", "hello\n");
        before_first_sync(laptop);
        let mut init = vec![
            "init",
            laptop.folder.to_str().unwrap(),
            "--repo",
            w.repo.to_str().unwrap(),
            "--name",
            SET,
        ];
        init.extend_from_slice(init_flags);
        laptop.ok(&init);
        laptop.ok(&["sync", SET]);
        for ep in w.eps.iter().skip(1) {
            let v = laptop.json(&["add-instance", SET, &ep.name]);
            // `prism-sync join NAME DIR --repo URL [flags…]`: keep the flags after the folder,
            // with the workspace's own key file (add-instance made it).
            let join = v["join"].as_str().unwrap().to_string();
            let key_file = v["key_file"].as_str().unwrap().to_string();
            let words: Vec<&str> = join.split_whitespace().collect();
            let start = words.iter().position(|w| *w == "join").unwrap() + 5;
            let mut flags: Vec<&str> = Vec::new();
            let mut rest = words[start..].iter();
            while let Some(w) = rest.next() {
                if *w == "--key-file" {
                    rest.next();
                    continue;
                }
                flags.push(w);
            }
            let folder = ep.folder.to_str().unwrap();
            let mut args = vec!["join", SET, folder, "--repo", w.repo.to_str().unwrap()];
            args.extend(flags);
            args.extend(["--key-file", &key_file]);
            let o = ep.cmd(&args).output().unwrap();
            assert!(
                o.status.success(),
                "join {}: {}",
                ep.name,
                String::from_utf8_lossy(&o.stderr)
            );
            ep.ok(&["sync", SET]);
        }
        w
    }

    /// Files under the repository's `heads/`.
    pub fn heads(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.repo.join("heads"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Never leave daemons behind.
        for e in &self.eps {
            if let Some(pid) = e.daemon_pid() {
                // SAFETY: signalling a daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Polls `f` every 25 ms until it holds; panics after `timeout`.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Every file and symlink below `root` with its content (symlinks: `-> target`), directories
/// as `path/`.
pub fn listing(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                walk(root, &p, out);
            } else if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", t.display()));
            } else {
                out.insert(
                    rel,
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into(),
                );
            }
        }
    }
    walk(root, root, &mut out);
    out
}
