//! Curious neighbours: another local (or EFS) user reads nothing of a repository or of
//! `$PRISM_HOME`, and cannot reach the daemon; a silent client of the control socket blocks
//! nobody. Commands run under umask 000, the most permissive a user could have.

mod cli_env;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cli_env::{Env, OutputExt, write};

/// Runs prism-sync with the test's environment under umask 000.
fn run_umask0(env: &Env, args: &[&str]) -> Output {
    let c = env.command(args);
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(c.get_program())
        .args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    if let Some(d) = c.get_current_dir() {
        sh.current_dir(d);
    }
    sh.output().unwrap()
}

fn ok_umask0(env: &Env, args: &[&str]) -> String {
    let o = run_umask0(env, args);
    assert_eq!(o.code(), 0, "prism-sync {args:?}\n{}", o.describe());
    o.out()
}

/// Every entry below `dir` that lets group or others in: (path, mode).
fn open_to_others(dir: &Path, group_ok: bool) -> Vec<(String, u32)> {
    let mut bad = Vec::new();
    let mask = if group_ok { 0o007 } else { 0o077 };
    fn walk(d: &Path, mask: u32, bad: &mut Vec<(String, u32)>) {
        for e in fs::read_dir(d).unwrap().flatten() {
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.file_type().is_symlink() {
                continue;
            }
            if md.mode() & mask != 0 {
                bad.push((e.path().display().to_string(), md.mode() & 0o7777));
            }
            if md.is_dir() {
                walk(&e.path(), mask, bad);
            }
        }
    }
    walk(dir, mask, &mut bad);
    bad
}

#[test]
fn repository_and_home_let_nobody_else_in_even_under_umask_000() {
    let env = Env::without_password();
    let folder = env.path("folder");
    write(&folder, "notes.txt", b"private notes\n");
    ok_umask0(&env, &["init", folder.to_str().unwrap(), "--name", "s"]);
    ok_umask0(&env, &["sync", "s"]);
    ok_umask0(&env, &["backup", folder.to_str().unwrap()]);
    ok_umask0(&env, &["start", "s"]);
    let sock = env.home.join("sync/daemon.sock");
    let t0 = Instant::now();
    while !sock.exists() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sock.exists(), "the daemon made its socket");
    let sync_dir = fs::metadata(env.home.join("sync")).unwrap();
    assert_eq!(
        sync_dir.mode() & 0o777,
        0o700,
        "the socket's directory is private"
    );
    let bad_home = open_to_others(&env.home, false);
    let bad_repo = open_to_others(&env.repo, false);
    ok_umask0(&env, &["stop", "s"]);
    assert!(
        bad_home.is_empty(),
        "$PRISM_HOME entries open to others: {bad_home:?}"
    );
    assert!(
        bad_repo.is_empty(),
        "repository entries open to others: {bad_repo:?}"
    );
    // Objects are written once and read-only, as restic's.
    let key = fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(key.metadata().unwrap().mode() & 0o777, 0o400);
    assert_eq!(fs::metadata(&env.repo).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn a_repository_made_with_group_access_shares_with_its_group_only() {
    let env = Env::without_password();
    let folder = env.path("folder");
    write(&folder, "shared.txt", b"for the lab\n");
    ok_umask0(&env, &["repo", "init", "--group-access"]);
    ok_umask0(&env, &["backup", folder.to_str().unwrap()]);
    let bad = open_to_others(&env.repo, true);
    assert!(bad.is_empty(), "open to others: {bad:?}");
    assert_eq!(fs::metadata(&env.repo).unwrap().mode() & 0o777, 0o750);
    let pack_dir = env.repo.join("data");
    let any_pack = fs::read_dir(&pack_dir)
        .unwrap()
        .flatten()
        .flat_map(|d| fs::read_dir(d.path()).unwrap().flatten())
        .next()
        .expect("a pack");
    assert_eq!(any_pack.metadata().unwrap().mode() & 0o777, 0o440);
    let o = env.run(&["repo", "init", "--group-access", "--repo", "s3://bucket/x"]);
    assert_eq!(o.code(), 1, "{}", o.describe());
    assert!(o.err().contains("--group-access"), "{}", o.describe());
}

#[test]
fn a_silent_control_client_blocks_no_other_request() {
    let env = Env::without_password();
    let folder = env.path("folder");
    write(&folder, "a.txt", b"a\n");
    env.ok(&["init", folder.to_str().unwrap(), "--name", "s"]);
    env.ok(&["start", "s"]);
    let sock = env.home.join("sync/daemon.sock");
    // Clients that connect and never send a byte.
    let silent: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let t0 = Instant::now();
    let o = env.run(&["status", "s", "--json"]);
    let took = t0.elapsed();
    env.ok(&["stop", "s"]);
    drop(silent);
    assert_eq!(o.code(), 0, "{}", o.describe());
    let v: serde_json::Value = serde_json::from_str(&o.out()).unwrap();
    assert!(
        v.to_string().contains("\"pid\""),
        "the daemon answered: {v}"
    );
    assert!(
        took < Duration::from_secs(4),
        "status waited {took:?} behind silent clients"
    );
}

#[test]
fn a_silent_client_is_told_and_disconnected_after_the_read_deadline() {
    let env = Env::without_password();
    let folder = env.path("folder");
    write(&folder, "a.txt", b"a\n");
    env.ok(&["init", folder.to_str().unwrap(), "--name", "s"]);
    env.ok(&["start", "s"]);
    let mut s = UnixStream::connect(env.home.join("sync/daemon.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t0 = Instant::now();
    let mut answer = String::new();
    use std::io::Read;
    s.read_to_string(&mut answer).unwrap();
    env.ok(&["stop", "s"]);
    assert!(answer.contains("no request within"), "{answer}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

#[test]
fn private_file_modes_survive_a_permissive_umask_for_existing_homes_too() {
    // A home made by an older version (0755) is tightened on the next write.
    let env = Env::without_password();
    let folder = env.path("folder");
    write(&folder, "a.txt", b"a\n");
    fs::create_dir_all(env.home.join("sync")).unwrap();
    fs::set_permissions(env.home.join("sync"), fs::Permissions::from_mode(0o755)).unwrap();
    ok_umask0(&env, &["init", folder.to_str().unwrap(), "--name", "s"]);
    assert_eq!(
        fs::metadata(env.home.join("sync")).unwrap().mode() & 0o777,
        0o700
    );
}
