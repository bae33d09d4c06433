//! What a restic user types on the first day, against the real binary: `-r`, the exclude options,
//! dry runs, snapshot filters, `latest` per backed-up folder, `forget` refusing without a
//! policy, password prompts on a terminal (and never on a pipe), help on every argument, shell
//! completions and man pages.

mod cli_env;

use std::fs;
use std::process::{Command, Stdio};

use clap::CommandFactory;
use cli_env::*;
use serde_json::Value;

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// Every path `ls latest` shows, without the leading `/`.
fn listed(env: &Env, snapshot: &str) -> Vec<String> {
    env.ok(&["ls", snapshot])
        .lines()
        .map(|l| l.trim_start_matches('/').to_string())
        .collect()
}

// ---- the command tree ----------------------------------------------------------------------------

fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        let id = a.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        if a.get_help().is_none() && a.get_long_help().is_none() {
            missing.push(format!("{path} {id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_about().is_none() {
            missing.push(format!("{path} {} (the command itself)", sub.get_name()));
        }
        walk(sub, &format!("{path} {}", sub.get_name()), missing);
    }
}

/// Regression: NAME, DIR, PATH, SNAP_A, --keep-last, resolve --all, force-sync --dry-run had no
/// help text; a new argument without one fails here.
#[test]
fn every_argument_has_help_text() {
    let cmd = prism_sync::cli::Cli::command();
    cmd.clone().debug_assert(); // e.g. two arguments of one command sharing `--path`
    let mut missing = Vec::new();
    walk(&cmd, "prism-sync", &mut missing);
    assert!(
        missing.is_empty(),
        "arguments without help text:\n{}",
        missing.join("\n")
    );
}

#[test]
fn completions_and_man_pages_are_generated() {
    let env = Env::new();
    for (shell, marker) in [
        ("bash", "complete -F _prism__sync"),
        ("zsh", "#compdef prism-sync"),
        ("fish", "complete -c prism-sync"),
    ] {
        let out = env.ok(&["completions", shell]);
        assert!(out.contains(marker), "{shell} completion:\n{out}");
        assert!(out.contains("keep-last"), "{shell} completes options");
    }
    let dir = env.path("man");
    env.ok(&["man", dir.to_str().unwrap()]);
    let top = fs::read_to_string(dir.join("prism-sync.1")).expect("prism-sync.1");
    assert!(top.contains(".TH"), "a roff page: {top}");
    let backup = fs::read_to_string(dir.join("prism-sync-backup.1")).expect("per-command page");
    assert!(backup.contains("exclude"), "backup's page lists --exclude");
    assert!(
        !dir.join("prism-sync-daemon-run.1").exists(),
        "hidden commands get no page"
    );
}

// ---- -r, excludes, dry run ---------------------------------------------------------------------

#[test]
fn short_r_names_the_repository() {
    let env = Env::new();
    let other = env.path("other-repo");
    env.ok(&["-r", other.to_str().unwrap(), "repo", "init"]);
    assert!(other.join("config").is_file(), "-r picked the repository");
    assert!(!env.repo.exists(), "not the environment's one");
    let src = env.path("src");
    write(&src, "a", b"a");
    env.ok(&[
        "backup",
        "-r",
        other.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    let v = env.json(&["snapshots", "-r", other.to_str().unwrap()]);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn backup_excludes_as_restic_does() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "keep.txt", b"k");
    write(&src, "run.log", b"l");
    write(&src, "deep/er/also.log", b"l");
    write(&src, "Photo.JPG", b"p");
    write(&src, "build/out.o", b"o");
    write(&src, "build/keep.c", b"c");
    write(&src, "cache/big", b"c");
    write(&src, "notes/cache", b"a file named like the excluded dir");
    let excludes = env.path("excludes.txt");
    fs::write(&excludes, "# a comment\n\nbuild/*.o\n").unwrap();
    let abs_cache = src.join("cache");
    env.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude",
        "*.log",
        "--iexclude",
        "*.jpg",
        "--exclude-file",
        excludes.to_str().unwrap(),
        "--exclude",
        abs_cache.to_str().unwrap(),
    ]);
    let mut got = listed(&env, "latest");
    got.sort();
    assert_eq!(
        got,
        [
            "build",
            "build/keep.c",
            "deep",
            "deep/er",
            "keep.txt",
            "notes",
            "notes/cache"
        ],
        "excluded: *.log at any depth, *.JPG case-insensitively, build/*.o from the file, the absolute /…/cache"
    );

    let bad = env.run(&["backup", src.to_str().unwrap(), "--exclude", "a[b"]);
    assert_exit(&bad, 1, "an invalid glob");
    assert!(
        bad.err().contains("a[b"),
        "names the pattern: {}",
        bad.err()
    );
}

#[test]
fn backup_dry_run_stores_nothing() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "a.txt", b"12345");
    write(&src, "b.log", b"xx");
    write(&src, "d/c.txt", b"123");
    let before = env.repo_files("");
    let v = env.json(&[
        "backup",
        "--dry-run",
        "--exclude",
        "*.log",
        src.to_str().unwrap(),
    ]);
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["files"], 2, "{v}");
    assert_eq!(v["bytes"], 8, "{v}");
    assert_eq!(v["excluded"], 1, "{v}");
    let out = env.ok(&["backup", "-n", src.to_str().unwrap()]);
    assert!(out.contains("3 files"), "{out}");
    assert_eq!(
        env.repo_files(""),
        before,
        "nothing written to the repository"
    );
    assert!(env.snapshots().is_empty());
}

// ---- snapshots, latest, forget -----------------------------------------------------------------

/// Two folders, two hosts, tags: a1 (host a, tag x), b1 (host b, tags x,y), a2 (host a), f1
/// (host a, another folder). Returns the ids in that order.
fn four_snapshots(env: &Env) -> Vec<String> {
    let one = env.path("one");
    let two = env.path("two");
    write(&one, "f", b"one v1");
    write(&two, "only-in-two", b"two");
    let b = |args: &[&str]| -> String {
        let v = env.json(args);
        v["id"].as_str().unwrap().to_string()
    };
    let a1 = b(&["backup", one.to_str().unwrap(), "--host", "a", "--tag", "x"]);
    let b1 = b(&[
        "backup",
        one.to_str().unwrap(),
        "--host",
        "b",
        "--tag",
        "x,y",
    ]);
    write(&one, "f", b"one v2");
    let a2 = b(&["backup", one.to_str().unwrap(), "--host", "a"]);
    let f1 = b(&["backup", two.to_str().unwrap(), "--host", "a"]);
    vec![a1, b1, a2, f1]
}

#[test]
fn snapshots_filters_latest_and_tags() {
    let env = Env::with_repo();
    let s = four_snapshots(&env);
    assert_eq!(
        ids(&env.json(&["snapshots", "--host", "b"])),
        [s[1].clone()]
    );
    assert_eq!(
        ids(&env.json(&["snapshots", "--tag", "x"])),
        [s[0].clone(), s[1].clone()]
    );
    assert_eq!(
        ids(&env.json(&["snapshots", "--tag", "x,y"])),
        [s[1].clone()],
        "a,b needs both tags"
    );
    assert_eq!(
        ids(&env.json(&["snapshots", "--latest", "1"])),
        [s[1].clone(), s[2].clone(), s[3].clone()],
        "the newest of each host and paths"
    );
    let two = env.path("two");
    assert_eq!(
        ids(&env.json(&["snapshots", "--path", two.to_str().unwrap()])),
        [s[3].clone()]
    );
    let table = env.ok(&["snapshots"]);
    assert!(table.lines().next().unwrap().contains("Tags"), "{table}");
    let b1 = table
        .lines()
        .find(|l| l.starts_with(&s[1][..8]))
        .expect("b1 row");
    assert!(b1.contains("x,y"), "tags shown: {table}");
    assert!(table.contains("4 snapshots"), "{table}");
}

/// Regression: `latest` meant the newest snapshot of any folder, so `dump latest FILE` failed
/// after a newer backup of another folder.
#[test]
fn latest_is_the_newest_snapshot_of_the_folder_holding_the_path() {
    let env = Env::with_repo();
    let s = four_snapshots(&env);
    // The newest snapshot (f1, folder `two`) has no `f`; the newest of `one` is a2.
    assert_eq!(env.ok(&["dump", "latest", "f"]), "one v2");
    assert_eq!(env.ok(&["dump", "latest", "only-in-two"]), "two");
    // restic's filters pick among the folders' newest snapshots.
    assert_eq!(env.ok(&["dump", "latest", "f", "--host", "b"]), "one v1");
    let v = env.json(&["ls", "latest", "--tag", "y"]);
    assert!(
        v.as_array().unwrap().iter().any(|e| e["name"] == "f"),
        "{v}"
    );
    // Deleted in its folder's newest snapshot: not served from an older one.
    let one = env.path("one");
    fs::remove_file(one.join("f")).unwrap();
    write(&one, "g", b"g");
    env.json(&["backup", one.to_str().unwrap(), "--host", "a"]);
    let o = env.run(&["dump", "latest", "f", "--host", "a"]);
    assert_exit(&o, 1, "f is gone from its folder's newest snapshot");
    assert!(
        o.err().contains("not in the newest snapshot"),
        "{}",
        o.err()
    );
    // An id still reaches it.
    assert_eq!(env.ok(&["dump", &s[2][..8], "f"]), "one v2");
}

/// Regression: `forget` without a --keep option silently applied 30 days.
#[test]
fn forget_without_a_policy_refuses_and_filters_choose_what_it_considers() {
    let env = Env::with_repo();
    let s = four_snapshots(&env);
    let o = env.run(&["forget"]);
    assert_exit(&o, 1, "forget without --keep");
    assert!(
        o.err().contains("--keep-last") && o.err().lines().count() == 1,
        "one line naming the fix: {}",
        o.err()
    );
    assert_eq!(env.snapshots().len(), 4);

    // --host: only host a's snapshots are considered (per host and paths: a1 goes).
    let v = env.json(&["forget", "--keep-last", "1", "--host", "a", "--dry-run"]);
    assert_eq!(v["removed"], 1, "{v}");
    let removed: Vec<&Value> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["remove"].as_array().unwrap())
        .collect();
    assert_eq!(removed, [&Value::from(s[0].as_str())], "{v}");

    // --group-by host: a's two folders form one group (a1, a2 go; f1 stays); b untouched.
    let v = env.json(&[
        "forget",
        "--keep-last",
        "1",
        "--group-by",
        "host",
        "--dry-run",
    ]);
    assert_eq!(v["removed"], 2, "{v}");
    // One group for everything: all but the newest go.
    let v = env.json(&["forget", "--keep-last", "1", "--group-by", "", "--dry-run"]);
    assert_eq!(v["removed"], 3, "{v}");
    // --tag x: a1 and b1, different hosts: each the newest of its group, nothing goes.
    env.ok(&["forget", "--keep-last", "1", "--tag", "x"]);
    assert_eq!(env.snapshots().len(), 4);
    env.ok(&["forget", "--keep-last", "1", "--group-by", "paths"]);
    assert_eq!(
        ids(&env.json(&["snapshots"])),
        [s[2].clone(), s[3].clone()],
        "the newest of each folder stays"
    );

    let o = env.run(&["forget", "--keep-last", "1", "--group-by", "colour"]);
    assert_exit(&o, 1, "an unknown --group-by field");
}

// ---- passwords on a terminal ------------------------------------------------------------------

/// Runs prism-sync under a pseudo-terminal (`script`), typing `lines` one by one with pauses
/// (so that each arrives after the prompt turned echo off); returns what the terminal showed.
fn on_terminal(env: &Env, args: &[&str], lines: &[&str]) -> (i32, String) {
    let template = env.command(args);
    let mut typing = String::from("sleep 1");
    for l in lines {
        typing.push_str(&format!("; printf '%s\\n' '{l}'; sleep 1"));
    }
    let cmdline = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("({typing}) | script -qec \"{cmdline}\" /dev/null"))
        .current_dir(env.dir.path())
        .stdin(Stdio::null());
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.output().expect("script (util-linux) runs");
    (o.status.code().unwrap_or(-1), o.out() + &o.err())
}

/// Regression: no prompt on a terminal (`key add` → "set PRISM_SYNC_NEW_PASSWORD"; `repo init`
/// likewise).
#[test]
fn passwords_are_asked_on_a_terminal_without_echo() {
    let mut env = Env::new();
    env.password = None;
    let (code, shown) = on_terminal(&env, &["repo", "init"], &["tty-secret-1", "tty-secret-1"]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("Password for the new repository"), "{shown}");
    assert!(shown.contains("again"), "asks to confirm: {shown}");
    assert!(!shown.contains("tty-secret-1"), "no echo: {shown}");
    assert!(shown.contains("Key: password"), "{shown}");

    // The repository needs that password: a pipe never prompts, it fails at once.
    let o = env.run(&["snapshots"]);
    assert_exit(&o, 1, "no password on a pipe");
    assert!(o.err().contains("PRISM_SYNC_PASSWORD"), "{}", o.err());
    let o = env.run_env(
        &["snapshots"],
        &[("PRISM_SYNC_PASSWORD", Some("tty-secret-1"))],
    );
    assert_exit(&o, 0, "the typed password is the repository's");

    // Opening it on a terminal asks once; a wrong one is exit code 12.
    let (code, shown) = on_terminal(&env, &["snapshots"], &["tty-secret-1"]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("Password for"), "{shown}");
    assert!(shown.contains("No snapshots yet"), "{shown}");
    let (code, _) = on_terminal(&env, &["snapshots"], &["wrong"]);
    assert_eq!(code, 12, "wrong password");

    // key add: the current password from the environment, the new one typed twice.
    env.password = Some("tty-secret-1".into());
    let (code, shown) = on_terminal(&env, &["key", "add"], &["tty-secret-2", "tty-secret-2"]);
    assert_eq!(code, 0, "{shown}");
    assert!(!shown.contains("tty-secret-2"), "no echo: {shown}");
    let o = env.run_env(
        &["snapshots"],
        &[("PRISM_SYNC_PASSWORD", Some("tty-secret-2"))],
    );
    assert_exit(&o, 0, "the new key opens the repository");
    // Two different answers change nothing.
    let (code, shown) = on_terminal(&env, &["key", "add"], &["one", "two"]);
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("differ"), "{shown}");
    assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 2);
    // On a pipe `key add` never waits: it says what to set.
    let o = env.run(&["key", "add"]);
    assert_exit(&o, 1, "key add on a pipe");
    assert!(o.err().contains("PRISM_SYNC_NEW_PASSWORD"), "{}", o.err());

    // The environment still wins over a terminal: nothing is asked.
    let (code, shown) = on_terminal(&env, &["snapshots"], &[]);
    assert_eq!(code, 0, "{shown}");
    assert!(!shown.contains("Password for"), "{shown}");
}

/// Regression: `--mode upload_only` (the plan's spelling) was rejected while `--conflict-policy`
/// wanted underscores; both spellings work for both now.
#[test]
fn mode_and_policy_take_both_spellings() {
    let env = Env::new();
    let dir = env.path("proj");
    fs::create_dir_all(&dir).unwrap();
    let v = env.json(&[
        "init",
        dir.to_str().unwrap(),
        "--mode",
        "upload_only",
        "--conflict-policy",
        "keep-both",
    ]);
    assert_eq!(v["mode"], "upload-only", "{v}");
    assert_eq!(v["conflict_policy"], "keep_both", "{v}");
    let o = env.run(&["init", dir.to_str().unwrap(), "--mode", "sideways"]);
    assert_exit(&o, 1, "an unknown mode");
}
