//! End-to-end tests of the repository commands, driving the real `prism-sync` binary: the
//! new-user walkthrough, what a file is (metadata, sparse files, odd names, big directories),
//! unreadable files, damaged repositories and bad input, keys, JSON output and retention.

mod cli_env;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use cli_env::*;
use serde_json::Value;

// ---- the new-user walkthrough ----------------------------------------------------------------

/// The first state of the walkthrough's folder: every kind of entry and metadata that matters.
fn make_state1(src: &Path) {
    fs::create_dir_all(src).unwrap();
    let f = write(src, "readme.txt", b"hello\n");
    set_mtime(&f, 1_600_000_000, 123_456_789);
    let f = write(src, "run.sh", b"#!/bin/sh\necho hi\n");
    chmod(&f, 0o755);
    set_mtime(&f, 1_600_000_100, 1);
    write(src, "empty.dat", b"");
    write(src, "one.byte", b"x");
    let f = write(src, "data/big.bin", &random_bytes(2 << 20, 1));
    set_mtime(&f, 1_600_000_200, 999_999_999);
    write(src, "data/notes.md", b"# notes\n");
    write(src, "sub/dir/deep.txt", b"deep\n");
    write(src, "sub/dir/more.txt", b"more\n");
    write(src, "sub/other.txt", b"other\n");
    fs::create_dir(src.join("emptydir")).unwrap();
    fs::create_dir(src.join("sticky")).unwrap();
    let f = write(src, "ro_dir/ro_file", b"read only\n");
    chmod(&f, 0o444);
    symlink("readme.txt", src.join("link_rel")).unwrap();
    symlink("does/not/exist", src.join("link_dangling")).unwrap();
    symlink("sub", src.join("link_dir")).unwrap();
    symlink("/etc/passwd", src.join("link_abs")).unwrap();
    chmod(&src.join("data"), 0o750);
    chmod(&src.join("emptydir"), 0o700);
    chmod(&src.join("sticky"), 0o1777);
    // Directory times last, deepest first (creating entries changes them).
    for (i, d) in ["sub/dir", "sub", "data", "emptydir", "sticky", "ro_dir"]
        .iter()
        .enumerate()
    {
        set_mtime(
            &src.join(d),
            1_500_000_000 + i as u64,
            100_000_007 * i as u32 + 3,
        );
    }
    chmod(&src.join("ro_dir"), 0o555);
}

/// Edits, adds, deletes and renames files of state 1.
fn make_state2(src: &Path) {
    let f = write(src, "readme.txt", b"hello\nworld\n");
    set_mtime(&f, 1_600_000_300, 5);
    write(src, "new.txt", b"brand new\n");
    write(src, "sub/dir/added.txt", b"added\n");
    fs::remove_file(src.join("sub/other.txt")).unwrap();
    fs::rename(src.join("data/notes.md"), src.join("data/notes-renamed.md")).unwrap();
}

/// (code, path) pairs of `diff`'s human output.
fn diff_lines(out: &str) -> BTreeSet<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let code = it.next()?;
            let path = it.next()?;
            (["+", "-", "M", "U", "T"].contains(&code) && path.starts_with('/'))
                .then(|| (code.to_string(), path.to_string()))
        })
        .collect()
}

fn pair(code: &str, path: &str) -> (String, String) {
    (code.to_string(), path.to_string())
}

#[test]
fn new_user_walkthrough() {
    let env = Env::new();
    let src = env.path("project");

    // init with the documented form (--repo on the command line).
    let out = env.ok(&["repo", "init", "--repo", env.repo_str()]);
    assert!(out.contains("created"), "init says what it did:\n{out}");
    for d in ["config", "keys", "data", "index", "snapshots"] {
        assert!(env.repo.join(d).exists(), "repository has no {d}");
    }

    make_state1(&src);
    let state1 = capture(&src);
    let b1 = env.backup(&src);
    let s1 = b1["id"].as_str().unwrap().to_string();
    assert_eq!(b1["summary"]["errors"], 0, "{b1}");
    let between = jiff::Timestamp::now().to_string();

    make_state2(&src);
    let state2 = capture(&src);
    // The human output names the snapshot.
    let out = env.ok(&["backup", src.to_str().unwrap()]);
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2, "two snapshots: {snaps:?}");
    let s2 = snaps[1]["id"].as_str().unwrap().to_string();
    assert!(out.contains(&s2[..8]), "backup prints the new id:\n{out}");
    assert_eq!(snaps[0]["id"], s1.as_str(), "oldest first");
    for s in &snaps {
        assert_eq!(s["id"].as_str().unwrap().len(), 64);
        assert_eq!(s["paths"][0], src.to_str().unwrap(), "{s}");
    }
    let human = env.ok(&["snapshots"]);
    assert!(
        human.contains(&s1[..8]) && human.contains(&s2[..8]),
        "{human}"
    );

    // ls lists the files (and not the deleted ones).
    let ls1 = env.ok(&["ls", &s1]);
    let ls2 = env.ok(&["ls", "latest"]);
    for p in [
        "/readme.txt",
        "/run.sh",
        "/empty.dat",
        "/data/big.bin",
        "/sub/dir/deep.txt",
        "/emptydir",
        "/link_dangling",
        "/ro_dir/ro_file",
    ] {
        assert!(ls1.lines().any(|l| l == p), "ls {s1} lacks {p}:\n{ls1}");
        assert!(ls2.lines().any(|l| l == p), "ls latest lacks {p}:\n{ls2}");
    }
    assert!(ls1.lines().any(|l| l == "/sub/other.txt"), "{ls1}");
    assert!(!ls2.lines().any(|l| l == "/sub/other.txt"), "{ls2}");
    assert!(ls2.lines().any(|l| l == "/data/notes-renamed.md"), "{ls2}");
    let ls_sub = env.ok(&["ls", "latest", "sub/dir"]);
    let mut got: Vec<&str> = ls_sub.lines().collect();
    got.sort();
    assert_eq!(
        got,
        [
            "/sub/dir/added.txt",
            "/sub/dir/deep.txt",
            "/sub/dir/more.txt"
        ],
        "ls latest sub/dir"
    );
    let long = env.ok(&["ls", "-l", "latest"]);
    assert!(
        long.lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("/run.sh")),
        "ls -l shows the exec bit:\n{long}"
    );
    assert!(
        long.lines()
            .any(|l| l.starts_with('l') && l.contains("/link_dangling -> does/not/exist")),
        "ls -l shows symlink targets:\n{long}"
    );

    // diff shows +, - and M for the changes, and nothing for unchanged files.
    let d = diff_lines(&env.ok(&["diff", &s1, &s2]));
    for want in [
        pair("M", "/readme.txt"),
        pair("+", "/new.txt"),
        pair("+", "/sub/dir/added.txt"),
        pair("-", "/sub/other.txt"),
        pair("-", "/data/notes.md"),
        pair("+", "/data/notes-renamed.md"),
    ] {
        assert!(d.contains(&want), "diff lacks {want:?}: {d:?}");
    }
    for unchanged in ["/run.sh", "/data/big.bin", "/link_rel", "/empty.dat"] {
        assert!(
            !d.iter().any(|(_, p)| p == unchanged),
            "diff lists unchanged {unchanged}: {d:?}"
        );
    }

    // dump prints a file's bytes, as ls shows the path or without the slash.
    let o = env.run(&["dump", &s1, "readme.txt"]);
    assert_exit(&o, 0, "dump");
    assert_eq!(o.stdout, b"hello\n");
    let o = env.run(&["dump", "latest", "/readme.txt"]);
    assert_exit(&o, 0, "dump with a leading slash");
    assert_eq!(o.stdout, b"hello\nworld\n");
    let o = env.run(&["dump", "latest", "data/big.bin"]);
    assert_exit(&o, 0, "dump big");
    assert!(
        o.stdout == random_bytes(2 << 20, 1),
        "dump of big.bin differs"
    );
    let o = env.run(&["dump", "latest", "sub"]);
    assert_exit(&o, 1, "dump of a directory");

    // Restore each snapshot: bytes and metadata as the source was.
    let r1 = env.restore(&s1, "restore1");
    assert_same_tree(&state1, &capture(&r1), "restore of snapshot 1");
    let r2 = env.restore(&s2[..8], "restore2");
    assert_same_tree(&state2, &capture(&r2), "restore of snapshot 2 (by prefix)");
    assert_eq!(
        fs::read_link(r2.join("link_abs")).unwrap(),
        Path::new("/etc/passwd"),
        "symlink restored as a link, not followed"
    );
    assert!(
        fs::symlink_metadata(r2.join("link_dir"))
            .unwrap()
            .is_symlink()
    );

    // --at a time between the two backups gives the first state.
    let at = env.path("restore-at");
    env.ok(&[
        "restore",
        "--at",
        &between,
        "--target",
        at.to_str().unwrap(),
    ]);
    assert_same_tree(&state1, &capture(&at), "restore --at between the backups");

    // --include restores only that subtree (and the directories above it).
    let inc = env.path("restore-include");
    env.ok(&[
        "restore",
        "latest",
        "--include",
        "sub/dir",
        "--target",
        inc.to_str().unwrap(),
    ]);
    let got = capture(&inc);
    let keys: Vec<String> = got
        .keys()
        .map(|k| String::from_utf8_lossy(k).into())
        .collect();
    assert_eq!(
        keys,
        [
            "sub",
            "sub/dir",
            "sub/dir/added.txt",
            "sub/dir/deep.txt",
            "sub/dir/more.txt"
        ],
        "restore --include sub/dir"
    );
    for (k, v) in &got {
        if k.starts_with(b"sub/dir") {
            assert_eq!(Some(v), state2.get(k), "{}", String::from_utf8_lossy(k));
        }
    }

    // forget --keep-last 1 --prune: the newest stays, check passes, it still restores.
    let out = env.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert!(
        out.contains(&s1[..8]),
        "forget names what it removes:\n{out}"
    );
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], s2.as_str());
    env.ok(&["check", "--read-data"]);
    let r3 = env.restore("latest", "restore-after-prune");
    assert_same_tree(&state2, &capture(&r3), "restore after forget --prune");

    let st = env.json(&["stats"]);
    assert_eq!(st["snapshots"], 1, "{st}");
    assert!(st["packs"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["data_blobs"].as_u64().unwrap() >= 1, "{st}");
    assert!(
        st["raw_bytes"].as_u64().unwrap() >= 2 << 20,
        "big.bin is in the repository: {st}"
    );
}

#[test]
fn unchanged_folder_backs_up_to_the_same_tree_and_adds_nothing() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "a.bin", &random_bytes(300_000, 3));
    write(&src, "b/c.txt", b"c\n");
    write(&src, "copy.bin", &random_bytes(300_000, 3));
    let first = env.backup(&src);
    let second = env.backup(&src);
    assert_eq!(first["tree"], second["tree"], "same folder, same tree id");
    assert_eq!(second["summary"]["blobs_added"], 0, "{second}");
    assert_eq!(second["summary"]["files_unchanged"], 3, "{second}");
    assert_eq!(second["summary"]["files_new"], 0, "{second}");
    // Identical content is stored once.
    let st = env.json(&["stats"]);
    let raw = st["raw_bytes"].as_u64().unwrap();
    assert!(
        raw < 2 * 300_000,
        "two identical 300 kB files are deduplicated: raw_bytes {raw}"
    );
}

// ---- what a file is ----------------------------------------------------------------------------

#[test]
fn odd_files_round_trip() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write(&src, "zero", b"");
    write(&src, "one", b"1");
    // Non-UTF-8 name.
    let latin1 = src.join(OsStr::from_bytes(b"caf\xe9.txt"));
    fs::write(&latin1, b"latin-1 name").unwrap();
    let weird_dir = src.join(OsStr::from_bytes(b"dir\xff\xfe"));
    fs::create_dir(&weird_dir).unwrap();
    fs::write(weird_dir.join("inside"), b"x").unwrap();
    // Names with spaces, newlines and leading dashes.
    write(&src, "with space", b"s");
    write(&src, "new\nline", b"n");
    write(&src, "-dash", b"d");
    // Deep nesting.
    let mut deep = String::new();
    for i in 0..100 {
        deep.push_str(&format!("d{i}/"));
    }
    write(&src, &format!("{deep}bottom.txt"), b"bottom");
    // A directory with 3000 entries.
    let many = src.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..3000 {
        fs::write(many.join(format!("f{i:04}")), format!("{i}\n")).unwrap();
    }
    // Symlinks, dangling too; the exec bit.
    symlink("zero", src.join("to_zero")).unwrap();
    symlink("../../nowhere", src.join("dangling")).unwrap();
    let x = write(&src, "tool", b"#!/bin/sh\n");
    chmod(&x, 0o700);
    let x = write(&src, "group_exec", b"g");
    chmod(&x, 0o610);
    let state = capture(&src);

    let b = env.backup(&src);
    assert_eq!(b["summary"]["errors"], 0, "{b}");
    let ls = env.json(&["ls", "latest"]);
    let ls = ls.as_array().unwrap();
    assert_eq!(
        ls.len(),
        state.len(),
        "ls --json lists every entry once (source has {})",
        state.len()
    );
    let many_count = ls
        .iter()
        .filter(|e| e["path"].as_str().unwrap().starts_with("/many/"))
        .count();
    assert_eq!(many_count, 3000);
    let zero = ls.iter().find(|e| e["path"] == "/zero").expect("zero");
    assert_eq!(zero["size"], 0);
    assert_eq!(zero["type"], "file");
    let link = ls
        .iter()
        .find(|e| e["path"] == "/dangling")
        .expect("dangling");
    assert_eq!(link["target"], "../../nowhere");

    let o = env.run(&["dump", "latest", "one"]);
    assert_exit(&o, 0, "dump one");
    assert_eq!(o.stdout, b"1");
    let o = env.run(&["dump", "latest", "zero"]);
    assert_exit(&o, 0, "dump zero");
    assert!(o.stdout.is_empty());

    let r = env.restore("latest", "out");
    let got = capture(&r);
    assert_same_tree(&state, &got, "odd files");
    assert!(r.join(OsStr::from_bytes(b"caf\xe9.txt")).is_file());
    assert_eq!(
        fs::read(r.join(OsStr::from_bytes(b"caf\xe9.txt"))).unwrap(),
        b"latin-1 name"
    );
    env.ok(&["check", "--read-data"]);
}

#[test]
fn sparse_file_stays_sparse() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let p = src.join("sparse.img");
    let f = fs::File::create(&p).unwrap();
    f.set_len(100 << 20).unwrap();
    f.write_all_at(b"needle in a haystack", 50 << 20).unwrap();
    f.write_all_at(b"tail", (100 << 20) - 4).unwrap();
    drop(f);
    let src_alloc = fs::metadata(&p).unwrap().blocks() * 512;
    assert!(
        src_alloc < 1 << 20,
        "the test file system must support sparse files ({src_alloc} bytes allocated)"
    );
    let want = hash_file(&p);

    let b = env.backup(&src);
    let stored = b["summary"]["bytes_added_stored"].as_u64().unwrap();
    assert!(
        stored < 1 << 20,
        "100 MB of mostly zeros is stored small: {stored} bytes"
    );
    let r = env.restore("latest", "out");
    let q = r.join("sparse.img");
    let md = fs::metadata(&q).unwrap();
    assert_eq!(md.len(), 100 << 20);
    assert_eq!(hash_file(&q), want, "content identical");
    let alloc = md.blocks() * 512;
    assert!(
        alloc < 16 << 20,
        "restored file is sparse: {alloc} bytes allocated for 100 MiB"
    );
}

// ---- unreadable files ----------------------------------------------------------------------------

#[test]
fn unreadable_file_is_listed_and_the_rest_is_committed() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "a.txt", b"a");
    write(&src, "sub/z.txt", b"z");
    let secret = write(&src, "sub/secret.txt", b"top secret");
    let how = Unreadable::make(&secret);

    let mut cmd = env.command(&[OsStr::new("backup"), src.as_os_str()]);
    how.apply(&mut cmd);
    let o = cmd.output().unwrap();
    assert_exit(&o, 3, "backup with an unreadable file");
    assert!(
        o.err().contains("secret.txt"),
        "the unreadable file is named on stderr:\n{}",
        o.describe()
    );
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "the snapshot is committed anyway");
    assert_eq!(snaps[0]["summary"]["errors"], 1, "{}", snaps[0]);
    let ls = env.ok(&["ls", "latest"]);
    assert!(ls.lines().any(|l| l == "/a.txt"), "{ls}");
    assert!(ls.lines().any(|l| l == "/sub/z.txt"), "{ls}");
    assert!(
        !ls.contains("secret"),
        "unreadable file is not in the snapshot:\n{ls}"
    );
    let r = env.restore("latest", "out");
    assert_eq!(fs::read(r.join("sub/z.txt")).unwrap(), b"z");
    env.ok(&["check"]);
}

// ---- bad input ----------------------------------------------------------------------------------------

#[test]
fn wrong_password_exits_12_with_one_line() {
    let env = Env::with_repo();
    let o = env.run_env(&["snapshots"], &[("PRISM_SYNC_PASSWORD", Some("nope"))]);
    assert_exit(&o, 12, "wrong password");
    let err = o.err();
    assert_eq!(err.trim().lines().count(), 1, "one-line message:\n{err}");
    assert!(err.to_lowercase().contains("password"), "{err}");
    // Also via --password-file, and for a command that writes.
    let pwf = env.path("pw.txt");
    fs::write(&pwf, "also wrong\n").unwrap();
    let src = env.path("src");
    write(&src, "f", b"f");
    let o = env.run(&[
        "backup",
        "--password-file",
        pwf.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    assert_exit(&o, 12, "backup with a wrong password file");
    assert!(env.repo_files("snapshots").is_empty(), "nothing written");
    // The right password in a file works (first line only).
    fs::write(&pwf, format!("{PASSWORD}\nsecond line is ignored\n")).unwrap();
    let o = env.run_env(
        &["snapshots", "--password-file", pwf.to_str().unwrap()],
        &[("PRISM_SYNC_PASSWORD", None)],
    );
    assert_exit(&o, 0, "right password file");
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::new();
    let o = env.run(&["snapshots"]);
    assert_exit(&o, 10, "snapshots without a repository");
    assert!(
        o.err().contains(env.repo_str()),
        "names the location:\n{}",
        o.describe()
    );
    assert!(!env.repo.exists(), "reading commands create nothing");
    // An empty existing directory is no repository either.
    fs::create_dir(&env.repo).unwrap();
    let src = env.path("src");
    write(&src, "f", b"f");
    let o = env.run(&["backup", src.to_str().unwrap()]);
    assert_exit(&o, 10, "backup into an empty directory");
    let o = env.run(&["check"]);
    assert_exit(&o, 10, "check of an empty directory");
}

#[test]
fn init_refuses_existing_repository_and_foreign_directory() {
    let env = Env::with_repo();
    let config = fs::read(env.repo.join("config")).unwrap();
    let o = env.run(&["repo", "init"]);
    assert_exit(&o, 1, "init twice");
    assert!(
        o.err().contains("already"),
        "clear message:\n{}",
        o.describe()
    );
    assert_eq!(
        fs::read(env.repo.join("config")).unwrap(),
        config,
        "config untouched"
    );
    assert_eq!(env.repo_files("keys").len(), 1, "no key added");

    let foreign = env.path("my-documents");
    write(&foreign, "thesis.tex", b"\\documentclass{article}");
    let o = env.run(&["repo", "init", "--repo", foreign.to_str().unwrap()]);
    assert_ne!(
        o.code(),
        0,
        "init into a non-empty folder:\n{}",
        o.describe()
    );
    assert_no_panic(&o, "init into a non-empty folder");
    assert!(o.err().contains("not empty"), "{}", o.describe());
    let names: Vec<_> = fs::read_dir(&foreign)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["thesis.tex"], "nothing scattered into the folder");
}

#[test]
fn unknown_snapshot_is_named() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "f", b"f");
    env.backup(&src);
    for (args, name) in [
        (vec!["ls", "deadbeef"], "deadbeef"),
        (vec!["dump", "deadbeef", "f"], "deadbeef"),
        (vec!["restore", "deadbeef", "--target", "out"], "deadbeef"),
        (vec!["diff", "latest", "deadbeef"], "deadbeef"),
        (vec!["ls", "not-an-id!"], "not-an-id!"),
    ] {
        let o = env.run(&args);
        assert_exit(&o, 1, &args.join(" "));
        assert!(
            o.err().contains(name),
            "{}: message names the snapshot:\n{}",
            args.join(" "),
            o.describe()
        );
    }
    assert!(
        !env.path("out").exists(),
        "failed restore created no target"
    );
    // A path that is not in the snapshot.
    let o = env.run(&["dump", "latest", "nope.txt"]);
    assert_exit(&o, 1, "dump of a missing path");
    assert!(o.err().contains("nope.txt"), "{}", o.describe());
    let o = env.run(&["restore", "latest", "--include", "nope", "--target", "out2"]);
    assert_exit(&o, 1, "restore --include of a missing path");
    assert!(o.err().contains("nope"), "{}", o.describe());
}

#[test]
fn empty_repository_and_restore_arguments() {
    let env = Env::with_repo();
    let human = env.ok(&["snapshots"]);
    assert!(human.contains("No snapshots"), "{human}");
    assert_eq!(env.json(&["snapshots"]), Value::Array(vec![]));
    let o = env.run(&["ls", "latest"]);
    assert_exit(&o, 1, "ls latest of an empty repository");
    assert!(o.err().contains("no snapshots"), "{}", o.describe());

    let src = env.path("src");
    write(&src, "f", b"f");
    let id = env.backup_id(&src);
    let o = env.run(&["restore", "latest"]);
    assert_exit(&o, 1, "restore without --target");
    assert!(o.err().contains("--target"), "{}", o.describe());
    let o = env.run(&["restore", &id, "--at", "1 h ago", "--target", "x"]);
    assert_exit(&o, 1, "restore with both a snapshot and --at");
    let o = env.run(&["restore", "--at", "2001-01-01", "--target", "x"]);
    assert_exit(&o, 1, "restore --at before the first snapshot");
    assert!(o.err().contains("no snapshot"), "{}", o.describe());
    let o = env.run(&["restore", "--at", "yesterday-ish", "--target", "x"]);
    assert_exit(&o, 1, "restore --at with a bad time");
    assert!(o.err().contains("yesterday-ish"), "{}", o.describe());
    // "N ago" and a bare date work.
    env.ok(&["restore", "--at", "0s ago", "--target", "y"]);
    assert_eq!(fs::read(env.path("y/f")).unwrap(), b"f");
    let today = jiff::Zoned::now().date().to_string();
    env.ok(&["restore", "--at", &today, "--target", "z"]);
    assert_eq!(fs::read(env.path("z/f")).unwrap(), b"f");

    // A non-empty target needs --overwrite.
    let target = env.path("busy");
    write(&target, "f", b"old");
    write(&target, "keep.txt", b"mine");
    let o = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&o, 1, "restore into a non-empty target");
    assert_eq!(fs::read(target.join("f")).unwrap(), b"old", "untouched");
    env.ok(&[
        "restore",
        "latest",
        "--overwrite",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(target.join("f")).unwrap(), b"f");
    assert_eq!(fs::read(target.join("keep.txt")).unwrap(), b"mine");

    // Backing up a path that does not exist commits nothing.
    let o = env.run(&["backup", env.path("no-such-dir").to_str().unwrap()]);
    assert_ne!(o.code(), 0, "{}", o.describe());
    assert_no_panic(&o, "backup of a missing path");
    assert!(o.err().contains("no-such-dir"), "{}", o.describe());
    assert_eq!(env.snapshots().len(), 1);
}

#[test]
fn unknown_format_version_is_named() {
    let env = Env::with_repo();
    let config = env.repo.join("config");
    chmod(&config, 0o644);
    let mut b = fs::read(&config).unwrap();
    assert_eq!(&b[..4], b"PRSC");
    b[4] = 9;
    fs::write(&config, &b).unwrap();
    for cmd in ["snapshots", "check", "stats"] {
        let o = env.run(&[cmd]);
        assert_exit(&o, 1, cmd);
        let err = o.err();
        assert!(
            err.contains("version") && err.contains('9'),
            "{cmd}: error mentions the format version:\n{err}"
        );
    }
}

/// A repository with a snapshot of good files, then a second snapshot adding `victim.bin`,
/// whose data is in pack(s) of its own. Returns (env, source, good snapshot, victim snapshot,
/// the largest pack the second backup wrote).
fn repo_with_victim() -> (Env, PathBuf, String, String, PathBuf) {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "good1.bin", &random_bytes(300_000, 2));
    write(&src, "sub/good2.txt", b"good two\n");
    let s1 = env.backup_id(&src);
    let before: BTreeSet<PathBuf> = env.repo_files("data").into_iter().collect();
    write(&src, "victim.bin", &random_bytes(1 << 20, 9));
    let s2 = env.backup_id(&src);
    let pack = env
        .repo_files("data")
        .into_iter()
        .filter(|p| !before.contains(p))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("the second backup wrote packs");
    assert!(
        fs::metadata(&pack).unwrap().len() > 512 << 10,
        "the victim's data pack"
    );
    (env, src, s1, s2, pack)
}

fn pack_short(pack: &Path) -> String {
    pack.file_name().unwrap().to_str().unwrap()[..8].to_string()
}

#[test]
fn corrupted_pack_is_found_and_never_restored_as_wrong_bytes() {
    let (env, src, s1, s2, pack) = repo_with_victim();
    flip_middle_byte(&pack);
    let short = pack_short(&pack);

    let o = env.run(&["check", "--read-data"]);
    assert_ne!(
        o.code(),
        0,
        "check --read-data finds the damage:\n{}",
        o.describe()
    );
    assert_no_panic(&o, "check --read-data");
    let all = o.out() + &o.err();
    assert!(all.contains(&short), "check names pack {short}:\n{all}");
    let v: Value = serde_json::from_str(&env.run(&["--json", "check", "--read-data"]).out())
        .expect("check --json prints JSON even when it finds errors");
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["errors"].to_string().contains(&short), "{v}");

    let target = env.path("out");
    let o = env.run(&["restore", &s2, "--target", target.to_str().unwrap()]);
    assert!(
        [1, 3].contains(&o.code()),
        "restore of a damaged snapshot exits 3 (or 1):\n{}",
        o.describe()
    );
    assert_no_panic(&o, "restore of a damaged file");
    assert!(
        o.err().contains("victim.bin"),
        "names the file:\n{}",
        o.describe()
    );
    assert!(
        !target.join("victim.bin").exists(),
        "no wrong or partial bytes under the real name"
    );
    let leftovers: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
    assert_eq!(
        hash_file(&target.join("good1.bin")),
        hash_file(&src.join("good1.bin"))
    );
    assert_eq!(
        fs::read(target.join("sub/good2.txt")).unwrap(),
        b"good two\n"
    );

    let o = env.run(&["dump", &s2, "victim.bin"]);
    assert_ne!(
        o.code(),
        0,
        "dump of a damaged file fails:\n{}",
        o.describe()
    );
    assert_no_panic(&o, "dump of a damaged file");
    assert!(
        o.stdout.len() < 1 << 20,
        "dump did not print the whole damaged file"
    );

    // The first snapshot does not use the damaged pack.
    let r = env.restore(&s1, "out1");
    assert_eq!(fs::read(r.join("sub/good2.txt")).unwrap(), b"good two\n");
    assert!(!r.join("victim.bin").exists());
}

#[test]
fn deleted_pack_is_reported_missing() {
    let (env, _src, _s1, s2, pack) = repo_with_victim();
    let short = pack_short(&pack);
    fs::remove_file(&pack).unwrap();
    let o = env.run(&["check"]);
    assert_ne!(
        o.code(),
        0,
        "check notices the missing pack:\n{}",
        o.describe()
    );
    assert_no_panic(&o, "check");
    let all = o.out() + &o.err();
    assert!(
        all.contains(&short) && all.contains("missing"),
        "check names pack {short} as missing:\n{all}"
    );
    let target = env.path("out");
    let o = env.run(&["restore", &s2, "--target", target.to_str().unwrap()]);
    assert!([1, 3].contains(&o.code()), "{}", o.describe());
    assert!(o.err().contains("victim.bin"), "{}", o.describe());
    assert!(!target.join("victim.bin").exists());
}

#[test]
fn deleted_index_is_reported() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "a.bin", &random_bytes(100_000, 5));
    write(&src, "sub/b.txt", b"b");
    env.backup(&src);
    let index = env.repo_files("index");
    assert!(!index.is_empty());
    for f in &index {
        fs::remove_file(f).unwrap();
    }
    let o = env.run(&["check"]);
    assert_ne!(o.code(), 0, "check without an index:\n{}", o.describe());
    assert_no_panic(&o, "check without an index");
    let all = (o.out() + &o.err()).to_lowercase();
    assert!(
        all.contains("missing") || all.contains("not in") || all.contains("no index"),
        "check explains that blobs are missing:\n{all}"
    );
    let o = env.run(&["restore", "latest", "--target", "out"]);
    assert_ne!(
        o.code(),
        0,
        "restore without an index cannot succeed:\n{}",
        o.describe()
    );
    assert_no_panic(&o, "restore without an index");
}

/// Two snapshots, the second one's file truncated. Returns (env, good id, damaged id).
fn repo_with_truncated_snapshot() -> (Env, String, String) {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "a", b"a");
    let good = env.backup_id(&src);
    write(&src, "b", b"b");
    let bad = env.backup_id(&src);
    let file = env.repo.join("snapshots").join(&bad);
    assert!(file.is_file(), "snapshots/<id> layout");
    chmod(&file, 0o644);
    let len = fs::metadata(&file).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    (env, good, bad)
}

#[test]
fn truncated_snapshot_is_named() {
    let (env, _good, bad) = repo_with_truncated_snapshot();

    let o = env.run(&["snapshots"]);
    assert_no_panic(&o, "snapshots");
    let listed_ok = o.code() == 0;
    assert!(
        listed_ok || o.err().contains(&bad[..8]),
        "snapshots fails naming the damaged snapshot:\n{}",
        o.describe()
    );
    let o = env.run(&["check"]);
    assert_ne!(
        o.code(),
        0,
        "check reports the damaged snapshot:\n{}",
        o.describe()
    );
    assert_no_panic(&o, "check");
    let all = o.out() + &o.err();
    assert!(
        all.contains(&bad[..8]),
        "check names snapshot {}:\n{all}",
        &bad[..8]
    );
}

/// One damaged snapshot must not make the others unusable (restic loads only the snapshot it
/// is asked for).
#[test]
fn damaged_snapshot_does_not_block_the_others() {
    let (env, good, _bad) = repo_with_truncated_snapshot();
    let target = env.path("out");
    let o = env.run(&["restore", &good, "--target", target.to_str().unwrap()]);
    assert_exit(&o, 0, "restore of an intact snapshot by full id");
    assert_eq!(fs::read(target.join("a")).unwrap(), b"a");
    let o = env.run(&["ls", &good]);
    assert_exit(&o, 0, "ls of an intact snapshot");
    let o = env.run(&["dump", &good, "a"]);
    assert_exit(&o, 0, "dump from an intact snapshot");
    assert_eq!(o.stdout, b"a");
}

#[test]
fn closed_stdout_is_not_a_panic() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "a", b"a");
    env.backup(&src);
    env.backup(&src);
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["--json", "stats"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = env
            .command(&args)
            .stdout(writer)
            .output()
            .expect("run prism-sync");
        assert_no_panic(
            &o,
            &format!("prism-sync {} | (closed pipe)", args.join(" ")),
        );
    }
}

// ---- keys --------------------------------------------------------------------------------------------

fn keys(env: &Env, password: &str) -> Vec<Value> {
    let o = env.run_env(
        &["--json", "key", "list"],
        &[("PRISM_SYNC_PASSWORD", Some(password))],
    );
    assert_exit(&o, 0, "key list");
    serde_json::from_str::<Value>(&o.out())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn keys_add_list_remove_passwd() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "f", b"f");
    env.backup(&src);
    let o = env.run_env(
        &["key", "add"],
        &[("PRISM_SYNC_NEW_PASSWORD", Some("second pw"))],
    );
    assert_exit(&o, 0, "key add");

    // Either password opens the repository.
    for pw in [PASSWORD, "second pw"] {
        let o = env.run_env(&["snapshots"], &[("PRISM_SYNC_PASSWORD", Some(pw))]);
        assert_exit(&o, 0, &format!("open with {pw:?}"));
    }
    let list = keys(&env, PASSWORD);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(
        list.iter().filter(|k| k["current"] == true).count(),
        1,
        "exactly one current key: {list:?}"
    );
    let first = list.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let list2 = keys(&env, "second pw");
    let second = list2.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second, "current follows the password used");

    // The key in use cannot be removed.
    let o = env.run(&["key", "remove", &first[..8]]);
    assert_exit(&o, 1, "remove the current key");
    assert!(!o.err().is_empty());
    assert_eq!(keys(&env, PASSWORD).len(), 2);
    let o = env.run(&["key", "remove", "ffffffffffff"]);
    assert_exit(&o, 1, "remove an unknown key");

    // Remove the other one, with the first password.
    env.ok(&["key", "remove", &second[..8]]);
    let o = env.run_env(
        &["snapshots"],
        &[("PRISM_SYNC_PASSWORD", Some("second pw"))],
    );
    assert_exit(&o, 12, "removed key no longer opens");

    // passwd: the old password stops working, the new one works.
    let pwf = env.path("new-pw");
    fs::write(&pwf, "third pw\n").unwrap();
    env.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        pwf.to_str().unwrap(),
    ]);
    let o = env.run(&["snapshots"]);
    assert_exit(&o, 12, "old password after passwd");
    let o = env.run_env(&["snapshots"], &[("PRISM_SYNC_PASSWORD", Some("third pw"))]);
    assert_exit(&o, 0, "new password after passwd");
    assert_eq!(keys(&env, "third pw").len(), 1);
    let o = env.run_env(
        &["check", "--read-data"],
        &[("PRISM_SYNC_PASSWORD", Some("third pw"))],
    );
    assert_exit(&o, 0, "check after passwd");

    // A new password must be given and non-empty.
    let o = env.run_env(
        &["key", "add"],
        &[("PRISM_SYNC_PASSWORD", Some("third pw"))],
    );
    assert_exit(&o, 1, "key add without a new password");
    assert!(
        o.err().contains("PRISM_SYNC_NEW_PASSWORD"),
        "{}",
        o.describe()
    );
}

#[test]
fn passwordless_repository_uses_the_local_key_file() {
    let env = Env::without_password();
    let out = env.ok(&["repo", "init"]);
    let keydir = env.home.join("sync/keys");
    let keyfiles: Vec<PathBuf> = fs::read_dir(&keydir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keyfiles.len(), 1, "one local key file: {keyfiles:?}");
    let keyfile = &keyfiles[0];
    assert_eq!(
        fs::metadata(keyfile).unwrap().permissions().mode() & 0o777,
        0o600,
        "key file is private"
    );
    assert!(
        out.contains(keyfile.to_str().unwrap()),
        "init tells where the key file is:\n{out}"
    );

    let src = env.path("src");
    write(&src, "f", b"content");
    env.backup(&src);
    let o = env.run(&["dump", "latest", "f"]);
    assert_exit(&o, 0, "dump without a password");
    assert_eq!(o.stdout, b"content");
    let list = env.json(&["key", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Without the key file: a clear error naming it.
    fs::remove_file(keyfile).unwrap();
    let o = env.run(&["snapshots"]);
    assert_ne!(o.code(), 0, "{}", o.describe());
    assert_no_panic(&o, "snapshots without the key file");
    assert!(
        o.err().contains(keyfile.to_str().unwrap()),
        "names the key file:\n{}",
        o.describe()
    );
    assert_eq!(o.err().trim().lines().count(), 1, "{}", o.describe());
}

#[test]
fn password_for_passwordless_repository_is_not_silently_ignored() {
    let env = Env::without_password();
    env.ok(&["repo", "init"]);
    let src = env.path("src");
    write(&src, "f", b"content");
    env.backup(&src);
    // A password that opens no key must not be silently ignored: either it is a wrong
    // password (exit 12), or the user is at least told that the local key file was used
    // instead (else they believe their password protects a repository only the key file opens).
    let o = env.run_env(&["snapshots"], &[("PRISM_SYNC_PASSWORD", Some("guess"))]);
    assert_no_panic(&o, "password for a password-less repository");
    assert!(
        o.code() == 12 || (o.code() == 0 && o.err().contains("key file")),
        "a password for a password-less repository is ignored silently:\n{}",
        o.describe()
    );
}

#[test]
fn default_repository_lives_under_home() {
    let env = Env::without_password();
    let unset = [("PRISM_SYNC_REPO", None)];
    let o = env.run_env(&["repo", "init"], &unset);
    assert_exit(&o, 0, "init of the default repository");
    let default = env.home.join("sync/repos/default");
    assert!(default.join("config").is_file(), "{}", o.describe());
    let src = env.path("src");
    write(&src, "f", b"f");
    let o = env.run_env(&["backup", src.to_str().unwrap()], &unset);
    assert_exit(&o, 0, "backup into the default repository");
    let o = env.run_env(&["--json", "snapshots"], &unset);
    assert_exit(&o, 0, "snapshots of the default repository");
    let v: Value = serde_json::from_str(&o.out()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert!(!env.repo.exists(), "PRISM_SYNC_REPO was not used");
    // --repo beats the environment variable.
    let o = env.run_env(
        &["--repo", default.to_str().unwrap(), "snapshots"],
        &[("PRISM_SYNC_REPO", Some("/nonexistent/prism-repo"))],
    );
    assert_exit(&o, 0, "--repo overrides PRISM_SYNC_REPO");
}

// ---- JSON and retention ------------------------------------------------------------------------------

#[test]
fn json_outputs_parse() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "a.txt", b"a");
    write(&src, "d/b.txt", b"b");
    let s1 = env.backup_id(&src);
    write(&src, "a.txt", b"aa");
    write(&src, "c.txt", b"c");
    fs::remove_file(src.join("d/b.txt")).unwrap();
    let s2 = env.backup_id(&src);

    let snaps = env.json(&["snapshots"]);
    let arr = snaps.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for s in arr {
        for k in ["id", "short_id", "time", "tree", "host", "paths", "summary"] {
            assert!(!s[k].is_null(), "snapshot JSON has {k}: {s}");
        }
        assert!(
            s["time"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok(),
            "time is RFC 3339: {s}"
        );
    }
    assert_eq!(arr[1]["parents"][0], s1.as_str(), "parent recorded");

    let ls = env.json(&["ls", &s1]);
    let paths: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/a.txt", "/d", "/d/b.txt"]);
    let d = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/d")
        .unwrap();
    assert_eq!(d["type"], "dir");

    let diff = env.json(&["diff", &s1, &s2]);
    assert_eq!(diff["from"], s1.as_str());
    assert_eq!(diff["to"], s2.as_str());
    let changes: BTreeSet<(String, String)> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        pair("M", "/a.txt"),
        pair("+", "/c.txt"),
        pair("-", "/d/b.txt"),
    ] {
        assert!(changes.contains(&want), "{want:?} in {changes:?}");
    }

    let check = env.json(&["check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["snapshots"], 2);
    assert!(check["packs_read"].as_u64().unwrap() >= 1, "{check}");
    for subset in ["1/2", "2/2", "50%"] {
        let c = env.json(&["check", "--read-data-subset", subset]);
        assert_eq!(c["ok"], true, "{c}");
    }
    let o = env.run(&["check", "--read-data-subset", "3/2"]);
    assert_exit(&o, 1, "bad subset");

    let stats = env.json(&["stats"]);
    for k in [
        "snapshots",
        "packs",
        "pack_bytes",
        "data_blobs",
        "tree_blobs",
        "raw_bytes",
        "stored_bytes",
    ] {
        assert!(stats[k].is_u64(), "stats has {k}: {stats}");
    }
    assert_eq!(stats["snapshots"], 2);

    let forget = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(forget["dry_run"], true, "{forget}");
    assert_eq!(forget["removed"], 1, "{forget}");
    let removed: Vec<&Value> = forget["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["remove"].as_array().unwrap())
        .collect();
    assert_eq!(removed, [&Value::from(s1.as_str())], "{forget}");

    let key = env.json(&["key", "list"]);
    assert_eq!(key.as_array().unwrap().len(), 1);
}

#[test]
fn forget_dry_run_and_no_policy_remove_nothing() {
    let env = Env::with_repo();
    let src = env.path("src");
    for i in 0..3 {
        write(&src, "f", format!("version {i}").as_bytes());
        env.backup(&src);
    }
    let before = env.repo_files("");

    let out = env.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(out.to_lowercase().contains("dry run"), "{out}");
    assert_eq!(env.snapshots().len(), 3, "dry run removes nothing");
    let out = env.ok(&["forget", "--keep-last", "1", "--prune", "--dry-run"]);
    assert_eq!(
        env.snapshots().len(),
        3,
        "dry run with --prune removes nothing:\n{out}"
    );
    assert_eq!(
        env.repo_files(""),
        before,
        "no file of the repository changed"
    );

    // No keep option: refused (restic's habit), naming the fix; nothing removed.
    let o = env.run(&["forget"]);
    assert_exit(&o, 1, "forget without a --keep option");
    assert!(o.err().contains("--keep"), "names the fix:\n{}", o.err());
    assert_eq!(env.snapshots().len(), 3, "a refused forget removes nothing");

    // A real forget removes, prune reclaims, check passes, the newest restores.
    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(env.snapshots().len(), 1);
    env.ok(&["prune"]);
    env.ok(&["check", "--read-data"]);
    let r = env.restore("latest", "out");
    assert_eq!(fs::read(r.join("f")).unwrap(), b"version 2");
}
