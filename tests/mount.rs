//! `prism-sync mount`, mounted for real (root and `/dev/fuse`, as CI runs) and read with the
//! tools people use on it: every snapshot's tree compared byte for byte and attribute for
//! attribute with the folder it was taken of, a big file read at random offsets, `cp -a`,
//! `diff -r`, `grep -r` and `rsync -a`; new snapshots appearing without a remount; Ctrl-C and
//! `umount` ending it with exit code 0. When the mount cannot be made, the tests fail and say
//! why — they never skip.

mod cli_env;
mod servers;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_env::*;
use servers::{Serve, TOKEN};

/// Generous: the machine is shared, and a debug binary opens the repository first.
const MOUNT_DEADLINE: Duration = Duration::from_secs(60);
const SHOW_DEADLINE: Duration = Duration::from_secs(30);

/// A running `prism-sync mount`; ended with SIGINT (and lazily unmounted, if it is stuck)
/// when dropped.
struct Mount {
    child: Option<Child>,
    point: PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

fn is_mounted(point: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let p = point.to_str().expect("utf-8 temp path");
    // "… MOUNTPOINT OPTIONS … - fuse prism-sync …" (or fuse.prism-sync through fusermount3).
    info.lines().any(|l| {
        l.split(' ').nth(4) == Some(p)
            && l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.contains("prism-sync"))
    })
}

impl Mount {
    /// Starts `prism-sync mount ARGS…` and waits until the kernel lists the mount. Panics with
    /// the program's output if it does not appear.
    fn start(env: &Env, args: &[&str], point: &Path) -> Mount {
        fs::create_dir_all(point).unwrap();
        let mut all: Vec<&str> = vec!["mount"];
        all.extend_from_slice(args);
        all.push(point.to_str().unwrap());
        let mut child = env
            .command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start prism-sync mount");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{l}\n"));
            }
        });
        // Made first, so a failure below still ends the program (Drop).
        let mut m = Mount {
            child: Some(child),
            point: point.to_path_buf(),
            stderr,
        };
        let deadline = Instant::now() + MOUNT_DEADLINE;
        while !is_mounted(point) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "prism-sync mount exited ({st}) before mounting {}: this test needs root and /dev/fuse (CI has both; install fuse3)\n{}",
                    point.display(),
                    m.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} was not mounted within {MOUNT_DEADLINE:?}\n{}",
                point.display(),
                m.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill");
    }

    /// Waits for the program to exit; returns its exit code.
    fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "prism-sync mount did not exit within {within:?}\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.point) {
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
    }
}

/// Waits until `cond` holds, or panics with `what`.
#[track_caller]
fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn run_tool(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (CI installs coreutils, diffutils, grep and rsync)")
    })
}

/// A folder with what a researcher's folder holds: nested directories with their own modes,
/// an executable, a private file, an empty file and directory, a symlink, a name that is not
/// UTF-8, a text file to grep, and a big incompressible file of many chunks. Every mtime is set
/// to the nanosecond.
fn research_folder(root: &Path, big: &[u8]) {
    write(root, "notes.md", b"# Notes\nthe needle is here\n");
    write(root, "analysis/run.py", b"print('hello')\n");
    chmod(&root.join("analysis/run.py"), 0o755);
    write(root, "analysis/secret.txt", b"private\n");
    chmod(&root.join("analysis/secret.txt"), 0o600);
    write(root, "data/empty.csv", b"");
    fs::create_dir_all(root.join("data/empty-dir")).unwrap();
    fs::write(root.join("data/big.bin"), big).unwrap();
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")),
        b"latin-1 name",
    )
    .unwrap();
    symlink("../notes.md", root.join("analysis/notes-link")).unwrap();
    for (i, rel) in [
        "notes.md",
        "analysis/run.py",
        "analysis/secret.txt",
        "data/empty.csv",
        "data/big.bin",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(
            &root.join(rel),
            1_700_000_000 + i as u64 * 1000,
            123_456_789 + i as u32,
        );
    }
    chmod(&root.join("analysis"), 0o750);
    set_mtime(&root.join("data/empty-dir"), 1_690_000_000, 5);
    set_mtime(&root.join("data"), 1_690_000_001, 7);
    set_mtime(&root.join("analysis"), 1_690_000_002, 9);
}

#[test]
fn repository_view_shows_every_snapshot_exactly_and_common_tools_work_on_it() {
    let env = Env::with_repo();
    let src = env.path("src");
    let big = random_bytes(24 << 20, 7);
    research_folder(&src, &big);
    let first = env.json(&["backup", src.to_str().unwrap(), "--tag", "paper/v1"]);
    let first_tree = capture(&src);
    write(&src, "notes.md", b"# Notes\nthe needle moved\n");
    set_mtime(&src.join("notes.md"), 1_700_100_000, 42);
    fs::remove_file(src.join("analysis/secret.txt")).unwrap();
    set_mtime(&src.join("analysis"), 1_690_000_002, 9);
    let second = env.json(&["backup", src.to_str().unwrap()]);
    let second_tree = capture(&src);

    let mp = env.path("mnt");
    let mut m = Mount::start(&env, &[], &mp);

    // The layout: every snapshot by time and id, latest, hosts, tags.
    assert_eq!(names(&mp), ["hosts", "latest", "snapshots", "tags"]);
    let listed = names(&mp.join("snapshots"));
    assert_eq!(listed.len(), 2, "{listed:?}");
    let short = |v: &serde_json::Value| v["id"].as_str().unwrap()[..8].to_string();
    // Folder names sort by time, then id (two backups may fall in one second).
    let snaps: Vec<String> = [&first, &second]
        .iter()
        .map(|v| {
            let s = listed
                .iter()
                .find(|s| s.ends_with(&format!("-{}", short(v))))
                .unwrap_or_else(|| panic!("no folder for {v} in {listed:?}"));
            assert_eq!(s.len(), "2026-11-30T19:53:02-".len() + 8, "{s}");
            assert_eq!(&s[10..11], "T", "{s}");
            s.clone()
        })
        .collect();
    let host = names(&mp.join("hosts"));
    assert_eq!(host.len(), 1);
    assert_eq!(names(&mp.join("tags")), ["paper_v1"]);
    assert_eq!(
        names(&mp.join("tags/paper_v1")),
        [snaps[0].as_str(), "latest"]
    );

    // Byte for byte and attribute for attribute (mode, mtime to the ns, owner, link targets).
    assert_same_tree(
        &first_tree,
        &capture(&mp.join("snapshots").join(&snaps[0])),
        "first snapshot",
    );
    assert_same_tree(
        &second_tree,
        &capture(&mp.join("snapshots").join(&snaps[1])),
        "second snapshot",
    );
    assert_same_tree(&second_tree, &capture(&mp.join("latest")), "latest/");
    assert_same_tree(
        &second_tree,
        &capture(&mp.join("hosts").join(&host[0]).join("latest")),
        "hosts/<host>/latest/",
    );
    assert_same_tree(
        &first_tree,
        &capture(&mp.join("tags/paper_v1/latest")),
        "tags/<tag>/latest/",
    );

    // The big file at random offsets and lengths, across chunk boundaries and past the end.
    let f = fs::File::open(mp.join("latest/data/big.bin")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), big.len() as u64);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % (big.len() as u64 + 4096)) as usize;
        let len = 1 + (x >> 40) as usize % (3 << 20);
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = f.read_at(&mut buf[got..], (off + got) as u64).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        let want = &big[off.min(big.len())..(off + len).min(big.len())];
        assert_eq!(got, want.len(), "read {i}: {len} bytes at {off}");
        assert!(buf[..got] == *want, "read {i}: {len} bytes at {off} differ");
    }
    drop(f);

    // The tools people use on it.
    let o = run_tool(
        Command::new("diff")
            .arg("-r")
            .arg(&src)
            .arg(mp.join("latest")),
    );
    assert!(
        o.status.success(),
        "diff -r: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let cp = env.path("cp-a");
    let o = run_tool(Command::new("cp").arg("-a").arg(mp.join("latest")).arg(&cp));
    assert!(
        o.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same_tree(&second_tree, &capture(&cp), "cp -a of latest/");
    let rs = env.path("rsync");
    let o = run_tool(
        Command::new("rsync")
            .arg("-a")
            .arg(format!(
                "{}/",
                mp.join("snapshots").join(&snaps[0]).display()
            ))
            .arg(&rs),
    );
    assert!(
        o.status.success(),
        "rsync -a: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same_tree(&first_tree, &capture(&rs), "rsync -a of the first snapshot");
    let o = run_tool(
        Command::new("grep")
            .arg("-r")
            .arg("needle")
            .arg(mp.join("snapshots")),
    );
    let hits = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(hits.lines().count(), 2, "grep -r: {hits}");
    assert!(hits.contains("the needle is here") && hits.contains("the needle moved"));

    // Read-only: writes are refused and nothing changes.
    let e = fs::write(mp.join("latest/new.txt"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert!(
        fs::OpenOptions::new()
            .write(true)
            .open(mp.join("latest/notes.md"))
            .is_err()
    );

    // A new snapshot shows without remounting, in snapshots/ and as latest/.
    write(&src, "later.txt", b"written after the mount");
    let third = env.json(&["backup", src.to_str().unwrap()]);
    let third_tree = capture(&src);
    wait_until("the new snapshot in snapshots/", SHOW_DEADLINE, || {
        names(&mp.join("snapshots")).len() == 3
    });
    wait_until("latest/ naming the new snapshot", SHOW_DEADLINE, || {
        mp.join("latest/later.txt").exists()
    });
    assert!(
        names(&mp.join("snapshots"))
            .iter()
            .any(|s| s.ends_with(&short(&third)))
    );
    assert_same_tree(
        &third_tree,
        &capture(&mp.join("latest")),
        "latest/ after a new backup",
    );

    // Ctrl-C while a file is open: the mount stays (busy) and says so; once closed, the next
    // Ctrl-C ends it with exit code 0 and nothing is left mounted.
    let held = fs::File::open(mp.join("latest/notes.md")).unwrap();
    m.signal(libc::SIGINT);
    wait_until("a message about the busy mount", SHOW_DEADLINE, || {
        m.stderr().contains("cannot unmount")
    });
    assert!(is_mounted(&mp), "a busy mount stays");
    drop(held);
    m.signal(libc::SIGINT);
    assert_eq!(m.wait_exit(SHOW_DEADLINE), 0, "{}", m.stderr());
    assert!(!is_mounted(&mp), "nothing is left mounted after Ctrl-C");
    assert!(!m.stderr().contains("panicked"), "{}", m.stderr());
}

#[test]
fn sync_set_view_lists_versions_and_an_outside_umount_ends_it() {
    let env = Env::with_repo();
    let folder = env.path("project");
    write(&folder, "a.txt", b"version one\n");
    write(&folder, "sub/b.bin", &random_bytes(3 << 20, 3));
    env.ok(&["init", folder.to_str().unwrap(), "--name", "p"]);
    env.ok(&["sync", "p"]);
    let v1 = capture(&folder);
    std::thread::sleep(Duration::from_millis(1100)); // versions are named by the second
    write(&folder, "a.txt", b"version two\n");
    env.ok(&["sync", "p"]);
    let v2 = capture(&folder);
    // A snapshot outside the set is not one of its versions.
    let other = env.path("other");
    write(&other, "x", b"x");
    env.backup(&other);

    let mp = env.path("mnt-set");
    let mut m = Mount::start(&env, &["p"], &mp);
    assert_eq!(names(&mp), ["latest", "versions"]);
    let versions = names(&mp.join("versions"));
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(
        versions
            .iter()
            .all(|v| v.len() == "2026-11-30T19:53:02".len()),
        "{versions:?}"
    );
    // Sync trees carry no owner: the mount shows the mounting user's.
    let me = (unsafe { libc::getuid() }, unsafe { libc::getgid() });
    let md = fs::metadata(mp.join("latest/a.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), me);
    // Sync trees record no directory mtimes: a version's directories show its time.
    let as_shown = |t: &Tree, version: &Path| -> Tree {
        let at = fs::metadata(version).unwrap();
        t.iter()
            .map(|(p, e)| {
                let mut e = e.clone();
                (e.uid, e.gid) = me;
                if e.kind == Kind::Dir {
                    (e.mtime_s, e.mtime_ns) = (at.mtime(), at.mtime_nsec());
                }
                (p.clone(), e)
            })
            .collect()
    };
    let first = mp.join("versions").join(&versions[0]);
    assert_same_tree(&as_shown(&v1, &first), &capture(&first), "first version");
    let latest = mp.join("latest");
    assert_same_tree(&as_shown(&v2, &latest), &capture(&latest), "latest version");
    let times: Vec<i64> = env
        .json(&["snapshots", "p"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| prism_sync::time::parse_time(s["time"].as_str().unwrap()).unwrap() / 1_000_000_000)
        .collect();
    assert_eq!(
        fs::metadata(&first).unwrap().mtime(),
        times[0],
        "a version's folder has the version's time"
    );
    assert_eq!(
        fs::read(mp.join("versions").join(&versions[0]).join("a.txt")).unwrap(),
        b"version one\n"
    );

    let o = run_tool(Command::new("umount").arg(&mp));
    assert!(
        o.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(m.wait_exit(SHOW_DEADLINE), 0, "{}", m.stderr());
    assert!(!is_mounted(&mp));
}

#[test]
fn mount_on_a_missing_directory_fails_with_the_fix() {
    let env = Env::with_repo();
    let o = env.run(&["mount", env.path("no/such/dir").to_str().unwrap()]);
    assert_exit(&o, 1, "mount on a missing directory");
    assert!(
        o.err().contains("does not exist") && o.err().contains("mkdir -p"),
        "{}",
        o.err()
    );
    let o = env.run(&["mount", "nosuchset", env.path(".").to_str().unwrap()]);
    assert_exit(&o, 1, "mount of an unknown set");
}

#[test]
fn a_remote_repository_mounts_through_serve() {
    let env = Env::with_repo();
    let src = env.path("src");
    let big = random_bytes(6 << 20, 11);
    write(&src, "big.bin", &big);
    write(&src, "sub/small.txt", b"small");
    env.backup(&src);
    let tree = capture(&src);
    let serve = Serve::start(env.dir.path(), &env.repo, false, false);
    let mut env = env;
    env.vars
        .push(("PRISM_SYNC_REST_TOKEN".into(), TOKEN.into()));
    let mp = env.path("mnt-rest");
    let mut m = Mount::start(&env, &["--repo", &serve.url], &mp);
    assert_same_tree(&tree, &capture(&mp.join("latest")), "latest/ through serve");
    let f = fs::File::open(mp.join("latest/big.bin")).unwrap();
    let mut buf = vec![0u8; 100_000];
    let n = f.read_at(&mut buf, 4_000_000).unwrap();
    assert!(n > 0 && buf[..n] == big[4_000_000..4_000_000 + n]);
    drop(f);
    // A snapshot written by another client shows up through the server too.
    write(&src, "later.txt", b"later");
    env.backup(&src);
    wait_until("the new snapshot through serve", SHOW_DEADLINE, || {
        mp.join("latest/later.txt").exists()
    });
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait_exit(SHOW_DEADLINE), 0, "{}", m.stderr());
    assert!(!is_mounted(&mp));
    drop(serve);
}
