//! The daemon as users meet it: real daemon processes (started with `prism-sync start`, which
//! detaches them), real folders, the real control socket. Two endpoints on one machine share one
//! repository directory. Timings are shortened through the daemon's environment variables.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SET: &str = "p";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_prism-sync")
}

struct Ep {
    home: PathBuf,
    folder: PathBuf,
    /// The daemon's safety-net full rescan (`PRISM_SYNC_FULL_RESCAN_S`).
    full_rescan_s: &'static str,
}

struct World {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    eps: Vec<Ep>,
}

impl Ep {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("PRISM_HOME", &self.home)
            .env_remove("PRISM_SYNC_PASSWORD")
            .env_remove("PRISM_SYNC_REPO")
            .env("PRISM_SYNC_POLL_MS", "100")
            .env("PRISM_SYNC_SETTLE_MS", "50")
            .env("PRISM_SYNC_SETTLE_CAP_MS", "500")
            .env("PRISM_SYNC_FULL_RESCAN_S", self.full_rescan_s)
            .env("PRISM_SYNC_BACKOFF_MAX_S", "1");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "prism-sync {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", SET, "--json"])).unwrap()
    }

    fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.home.join("sync/daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.folder.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Never leave daemons behind.
        for e in &self.eps {
            if let Some(pid) = e.daemon_pid() {
                // SAFETY: signalling a pid we started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn content(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// A laptop and `n - 1` workspaces joined to one set, nothing running yet.
fn world(n: usize) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let mut eps = Vec::new();
    for i in 0..n {
        let home = tmp.path().join(format!("home{i}"));
        let folder = tmp.path().join(format!("folder{i}"));
        eps.push(Ep {
            home,
            folder,
            full_rescan_s: "3",
        });
    }
    let w = World { tmp, repo, eps };
    let laptop = &w.eps[0];
    laptop.write("start.txt", "hello\n");
    laptop.ok(&[
        "init",
        laptop.folder.to_str().unwrap(),
        "--repo",
        w.repo.to_str().unwrap(),
        "--name",
        SET,
    ]);
    laptop.ok(&["sync", SET]);
    for (i, ep) in w.eps.iter().enumerate().skip(1) {
        let ws = format!("ws{i}");
        let v: serde_json::Value =
            serde_json::from_str(&laptop.ok(&["add-instance", SET, &ws, "--json"])).unwrap();
        // Each workspace joins with its own key file (made by add-instance).
        let key_file = v["key_file"].as_str().unwrap().to_string();
        let o = ep
            .cmd(&[
                "join",
                SET,
                ep.folder.to_str().unwrap(),
                "--repo",
                w.repo.to_str().unwrap(),
                "--endpoint",
                &ws,
                "--key-file",
                &key_file,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    w
}

/// How long a change may take to reach every daemon. A step takes well under a second on a
/// quiet machine (benches/README.md §8); CI runs this beside other suites on two cores, where a
/// change crossing three daemons took over 15 s (a rename, once).
const T: Duration = Duration::from_secs(30);

#[test]
fn start_status_pause_resume_flush_stop() {
    let w = world(2);
    let (a, b) = (&w.eps[0], &w.eps[1]);
    let st = a.status();
    assert_eq!(st["daemon"]["running"], false, "{st}");
    a.ok(&["start", SET]);
    b.ok(&["start", SET]);
    let st = a.status();
    assert_eq!(st["daemon"]["running"], true, "{st}");
    assert_eq!(st["daemon"]["live"]["watching"], "inotify", "{st}");
    // A second start is harmless; a foreground start next to a running daemon is refused.
    a.ok(&["start", SET]);
    let o = a.run(&["start", SET, "--foreground"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("already runs"));

    wait_for("the workspace to receive the first state", T, || {
        content(&b.folder.join("start.txt")).as_deref() == Some("hello\n")
    });

    // Pause the workspace: nothing arrives until it is resumed.
    b.ok(&["pause", SET]);
    // B8: `pause` answers once the worker has stopped (after a step it may be in the middle
    // of: it just wrote start.txt), so from then on status says paused and no step runs.
    let st = b.status();
    assert_eq!(st["paused"], true, "{st}");
    assert_eq!(st["daemon"]["live"]["state"], "paused", "{st}");
    a.write("while-paused.txt", "x\n");
    a.ok(&["flush", SET]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !b.folder.join("while-paused.txt").exists(),
        "a paused endpoint applies nothing"
    );
    let o = b.run(&["sync", SET]);
    assert!(
        !o.status.success(),
        "a manual sync of a paused set is refused"
    );
    let o = b.run(&["flush", SET]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("paused"));
    b.ok(&["resume", SET]);
    wait_for("the resumed workspace to catch up", T, || {
        b.folder.join("while-paused.txt").exists()
    });

    // flush: right after it returns on both sides, the change is everywhere.
    b.write("flushed.txt", "from the workspace\n");
    b.ok(&["flush", SET]);
    a.ok(&["flush", SET]);
    assert_eq!(
        content(&a.folder.join("flushed.txt")).as_deref(),
        Some("from the workspace\n")
    );

    // Status tells the truth about activity, and the audit log records both directions.
    let st = a.status();
    assert_eq!(st["in_sync"], true, "{st}");
    let audit = std::fs::read_to_string(a.home.join(format!("sync/{SET}.audit.jsonl"))).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["direction"] == "up"
        && l["path"] == "while-paused.txt"
        && l["hash"].is_string()));
    assert!(
        lines
            .iter()
            .any(|l| l["direction"] == "down" && l["path"] == "flushed.txt" && l["size"] == 19)
    );

    a.ok(&["stop", SET]);
    b.ok(&["stop", SET]);
    wait_for("the daemons to exit", T, || {
        a.status()["daemon"]["running"] == false && b.status()["daemon"]["running"] == false
    });
}

#[test]
fn edits_flow_both_ways_and_conflicts_park_while_both_run() {
    let w = world(3);
    for e in &w.eps {
        e.ok(&["start", SET]);
    }
    let (a, b, c) = (&w.eps[0], &w.eps[1], &w.eps[2]);
    a.write("from-laptop.txt", "L\n");
    b.write("sub/from-ws1.txt", "W1\n");
    c.write("deep/er/from-ws2.txt", "W2\n");
    for e in &w.eps {
        for (f, want) in [
            ("from-laptop.txt", "L\n"),
            ("sub/from-ws1.txt", "W1\n"),
            ("deep/er/from-ws2.txt", "W2\n"),
        ] {
            wait_for(&format!("{f} everywhere"), T, || {
                content(&e.folder.join(f)).as_deref() == Some(want)
            });
        }
    }
    // Delete and move propagate too.
    std::fs::remove_file(b.folder.join("from-laptop.txt")).unwrap();
    std::fs::rename(c.folder.join("deep"), c.folder.join("moved")).unwrap();
    for e in &w.eps {
        wait_for("the deletion everywhere", T, || {
            !e.folder.join("from-laptop.txt").exists()
        });
        wait_for("the move everywhere", T, || {
            e.folder.join("moved/er/from-ws2.txt").exists() && !e.folder.join("deep").exists()
        });
    }
    // A conflict while everything runs: ws1 is paused, both edit the same file.
    b.ok(&["pause", SET]);
    a.write("shared.txt", "laptop version\n");
    a.ok(&["flush", SET]);
    b.write("shared.txt", "workspace version\n");
    b.ok(&["resume", SET]);
    wait_for("the conflict to be parked on ws1", T, || {
        b.status()["conflicts"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    });
    assert_eq!(
        content(&b.folder.join("shared.txt")).as_deref(),
        Some("workspace version\n"),
        "parked: each keeps its own"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        content(&a.folder.join("shared.txt")).as_deref(),
        Some("laptop version\n")
    );
    // Everything else still flows.
    a.write("after.txt", "still syncing\n");
    wait_for("other files to keep syncing", T, || {
        b.folder.join("after.txt").exists()
    });
    b.ok(&["resolve", SET, "shared.txt", "--keep", "local"]);
    wait_for("the resolution to reach the laptop", T, || {
        content(&a.folder.join("shared.txt")).as_deref() == Some("workspace version\n")
    });
}

/// B3 (found by the multi-daemon test): an idle daemon left local changes unpublished and said
/// "in sync" for 45 s+ — the changes were in directories that came into the folder in other
/// ways than a plain mkdir. With the safety-net rescan out of the way (600 s), every change
/// here must be noticed through the watcher alone, within seconds.
#[test]
fn an_idle_daemon_notices_changes_in_new_moved_and_applied_directories() {
    let mut w = world(2);
    for e in &mut w.eps {
        e.full_rescan_s = "600";
    }
    let (a, b) = (&w.eps[0], &w.eps[1]);
    a.ok(&["start", SET]);
    b.ok(&["start", SET]);
    wait_for("the first state", T, || b.folder.join("start.txt").exists());
    let arrives = |to: &Ep, rel: &str, want: &str| {
        wait_for(&format!("{rel} to arrive through the watcher"), T, || {
            content(&to.folder.join(rel)).as_deref() == Some(want)
        });
    };
    // A directory tree made and filled at once.
    std::fs::create_dir_all(a.folder.join("new/a/b")).unwrap();
    std::fs::write(a.folder.join("new/a/b/f.txt"), "f\n").unwrap();
    arrives(b, "new/a/b/f.txt", "f\n");
    // A file written into a directory the daemon's apply created.
    std::thread::sleep(Duration::from_millis(300));
    b.write("new/a/b/g.txt", "g\n");
    arrives(a, "new/a/b/g.txt", "g\n");
    // A directory renamed inside the folder, then written into.
    std::fs::rename(a.folder.join("new"), a.folder.join("moved")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    a.write("moved/a/b/h.txt", "h\n");
    arrives(b, "moved/a/b/h.txt", "h\n");
    // A tree moved in from outside the folder, then written into.
    let outside = w.tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("x/y")).unwrap();
    std::fs::write(outside.join("x/y/i.txt"), "i\n").unwrap();
    std::fs::rename(&outside, b.folder.join("came-in")).unwrap();
    arrives(a, "came-in/x/y/i.txt", "i\n");
    std::thread::sleep(Duration::from_millis(300));
    b.write("came-in/x/y/j.txt", "j\n");
    arrives(a, "came-in/x/y/j.txt", "j\n");
    // A directory moved by the apply (the other side renamed it), then written into here.
    std::fs::rename(b.folder.join("came-in"), b.folder.join("renamed")).unwrap();
    arrives(a, "renamed/x/y/j.txt", "j\n");
    std::thread::sleep(Duration::from_millis(300));
    a.write("renamed/x/y/k.txt", "k\n");
    arrives(b, "renamed/x/y/k.txt", "k\n");
    b.write("renamed/x/y/l.txt", "l\n");
    arrives(a, "renamed/x/y/l.txt", "l\n");
    // The shape B3 was seen in: a tree deleted at one end while the other, paused, moved a
    // directory into it; the move wins, the tree stays with only it; then a rename in there.
    for i in 0..3 {
        a.write(&format!("t/f{i}.txt"), "t\n");
    }
    a.write("d2/m.txt", "m\n");
    arrives(b, "t/f2.txt", "t\n");
    arrives(b, "d2/m.txt", "m\n");
    a.ok(&["pause", SET]);
    std::fs::rename(a.folder.join("d2"), a.folder.join("t/d2")).unwrap();
    std::fs::remove_dir_all(b.folder.join("t")).unwrap();
    b.ok(&["flush", SET]);
    a.ok(&["resume", SET]);
    arrives(b, "t/d2/m.txt", "m\n");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(a.folder.join("t/d2/m.txt"), a.folder.join("t/d2/m2.txt")).unwrap();
    arrives(b, "t/d2/m2.txt", "m\n");
    std::os::unix::fs::symlink("m2.txt", a.folder.join("t/d2/l")).unwrap();
    wait_for("the symlink to arrive through the watcher", T, || {
        std::fs::read_link(b.folder.join("t/d2/l")).is_ok()
    });
    for e in [a, b] {
        wait_for("both in sync", T, || e.status()["in_sync"] == true);
    }
    assert!(!a.folder.join("t/f0.txt").exists() && !b.folder.join("t/f0.txt").exists());
}

/// B3, the busy case: while another file keeps changing (so steps are forced by the settle cap
/// with fresh files around), trees made in one go — some inside directories the daemon's
/// apply made — must all be published, through the watcher alone.
#[test]
fn trees_made_while_the_folder_is_busy_are_all_published() {
    let mut w = world(2);
    for e in &mut w.eps {
        e.full_rescan_s = "600";
    }
    let (a, b) = (&w.eps[0], &w.eps[1]);
    b.write("from-b/inner/x.txt", "x\n");
    a.ok(&["start", SET]);
    b.ok(&["start", SET]);
    wait_for("the first state", T, || {
        a.folder.join("from-b/inner/x.txt").exists() && b.folder.join("start.txt").exists()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        let p = a.folder.join("busy.txt");
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(&p, format!("{n}\n")).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut made = Vec::new();
    for i in 0..40 {
        let parent = if i % 2 == 0 { "from-b/inner" } else { "mine" };
        let t = format!("{parent}/t{i}");
        std::fs::create_dir_all(a.folder.join(&t).join("s0")).unwrap();
        for k in 0..3 {
            std::fs::write(
                a.folder.join(&t).join(format!("n{k}.txt")),
                format!("{i}/{k}\n"),
            )
            .unwrap();
        }
        std::fs::write(a.folder.join(&t).join("s0/m.txt"), "m\n").unwrap();
        made.push(format!("{t}/s0/m.txt"));
        made.push(format!("{t}/n2.txt"));
        std::thread::sleep(Duration::from_millis(37 + (i * 13) % 60));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    for rel in &made {
        wait_for(&format!("{rel} to arrive"), Duration::from_secs(20), || {
            b.folder.join(rel).exists()
        });
    }
}

/// B3, found by the multi-daemon test: a symlink to a directory of the folder made the watcher
/// report that directory's changes under the symlink's path (it followed symlinks while adding
/// watches, and the directory's watch took the symlink's name), so the step looked at the
/// symlink and the change was never published — while `status` said in sync.
#[test]
fn symlinks_to_directories_do_not_hide_changes_in_them() {
    let mut w = world(2);
    for e in &mut w.eps {
        e.full_rescan_s = "600";
    }
    let (a, b) = (&w.eps[0], &w.eps[1]);
    a.write("real/first.txt", "1\n");
    a.write("deep/er/x.txt", "x\n");
    // Names before and after the directory's, so a walk meets some of them after it.
    for l in ["0-link", "a-link", "m-link", "s-link", "zz-link"] {
        std::os::unix::fs::symlink("real", a.folder.join(l)).unwrap();
        std::os::unix::fs::symlink("../real", a.folder.join("deep").join(l)).unwrap();
    }
    a.ok(&["sync", SET]);
    a.ok(&["start", SET]);
    b.ok(&["start", SET]);
    wait_for("the first state", T, || {
        b.folder.join("real/first.txt").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    a.write("real/second.txt", "2\n");
    wait_for(
        "a file written into the linked directory to arrive",
        T,
        || content(&b.folder.join("real/second.txt")).as_deref() == Some("2\n"),
    );
    // A directory made with a link inside it (its watch is added by a walk of it).
    std::fs::create_dir_all(a.folder.join("new")).unwrap();
    std::os::unix::fs::symlink("../deep/er", a.folder.join("new/link")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    a.write("deep/er/y.txt", "y\n");
    wait_for(
        "a file written into a directory linked from a new one",
        T,
        || content(&b.folder.join("deep/er/y.txt")).as_deref() == Some("y\n"),
    );
    for e in [a, b] {
        wait_for("both in sync", T, || e.status()["in_sync"] == true);
    }
}

#[test]
fn a_killed_daemon_loses_nothing_and_resumes() {
    let w = world(2);
    let (a, b) = (&w.eps[0], &w.eps[1]);
    a.ok(&["start", SET]);
    b.ok(&["start", SET]);
    wait_for("the first state", T, || b.folder.join("start.txt").exists());
    // Kill the workspace's daemon while a burst is being applied.
    for i in 0..300 {
        a.write(
            &format!("burst/{}/f{i}.txt", i % 10),
            &format!("content {i}\n"),
        );
    }
    let t0 = Instant::now();
    wait_for("the burst to start arriving", T, || {
        b.folder.join("burst").exists() || t0.elapsed() > Duration::from_secs(3)
    });
    let pid = b.daemon_pid().unwrap();
    // SAFETY: killing the daemon we started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(200));
    // No partial files under real names, and the repository is consistent.
    if let Ok(rd) = std::fs::read_dir(b.folder.join("burst")) {
        for d in rd.flatten() {
            for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.contains("prism-tmp") {
                    continue; // a temp file of the killed writer: never under a real name
                }
                let i: usize = name
                    .trim_start_matches('f')
                    .trim_end_matches(".txt")
                    .parse()
                    .unwrap();
                assert_eq!(
                    content(&f.path()).unwrap(),
                    format!("content {i}\n"),
                    "{name} is complete"
                );
            }
        }
    }
    let o = b
        .cmd(&["check", "--repo", w.repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Restart: everything arrives, nothing twice, no temp files left visible to the sync.
    b.ok(&["start", SET]);
    wait_for(
        "the whole burst after the restart",
        Duration::from_secs(30),
        || {
            (0..300).all(|i| {
                content(&b.folder.join(format!("burst/{}/f{i}.txt", i % 10))).as_deref()
                    == Some(&format!("content {i}\n"))
            })
        },
    );
    b.ok(&["flush", SET]);
    a.ok(&["flush", SET]);
    let st = a.status();
    assert_eq!(st["local"]["files"], st["shared"]["files"], "{st}");
    assert!(
        st["conflicts"].as_array().unwrap().is_empty(),
        "a restart must not create conflicts: {st}"
    );
}

#[test]
fn an_unreachable_repository_is_reported_and_recovered_from() {
    let w = world(2);
    let (a, b) = (&w.eps[0], &w.eps[1]);
    a.ok(&["start", SET]);
    b.ok(&["start", SET]);
    wait_for("the first state", T, || b.folder.join("start.txt").exists());
    let away = w.tmp.path().join("repo-away");
    std::fs::rename(&w.repo, &away).unwrap();
    a.write("offline.txt", "written while the repository was away\n");
    wait_for("status to report the repository unreachable", T, || {
        let st = a.status();
        st["daemon"]["live"]["state"] == "unreachable" || st["daemon"]["live"]["state"] == "error"
    });
    let st = a.status();
    assert!(st["daemon"]["live"]["last_error"].is_string(), "{st}");
    std::fs::rename(&away, &w.repo).unwrap();
    wait_for(
        "the change to arrive once the repository is back",
        Duration::from_secs(20),
        || b.folder.join("offline.txt").exists(),
    );
    wait_for("status to recover", T, || {
        a.status()["daemon"]["live"]["state"] == "idle"
    });
}

/// `prism-sync status` without a name failed for good after the first `start`
/// (`…/sync/daemon.yml: unknown field sets`), even after `stop`.
#[test]
fn status_without_a_name_works_after_start_and_after_stop() {
    let w = world(1);
    let a = &w.eps[0];
    let names = |a: &Ep| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&a.ok(&["status", "--json"])).unwrap();
        v.as_array()
            .unwrap_or_else(|| panic!("status --json lists every set: {v}"))
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    a.ok(&["start", SET]);
    assert_eq!(names(a), vec![SET.to_string()]);
    assert!(a.ok(&["status"]).contains(SET));
    a.ok(&["stop", SET]);
    wait_for("the daemon to exit", T, || {
        a.status()["daemon"]["running"] == false
    });
    assert_eq!(names(a), vec![SET.to_string()]);
    // A set cannot take the daemon's file's name.
    let o = a.run(&[
        "init",
        w.tmp.path().join("d").to_str().unwrap(),
        "--name",
        "daemon",
    ]);
    assert!(
        !o.status.success(),
        "a set named daemon would clash with daemon.yml"
    );
}
