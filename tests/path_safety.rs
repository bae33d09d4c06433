//! Invariant 9: no write of restore or sync apply leaves its root, whatever the folder holds.
//!
//! Each test is a reproduction of a way writes used to escape through a symlink; the folder
//! outside (`victim`) must come out byte for byte and mode for mode as it went in.

mod cli_env;
mod lib_fixtures;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use cli_env::{Env, OutputExt, assert_exit, write};
use prism_sync::endpoint::apply::{Failure, apply};
use prism_sync::fsx::fold::Folding;
use prism_sync::id::BlobId;
use prism_sync::snapshot::{Content, Node, NodeKind};
use prism_sync::sync::merge::Action;

/// Every entry below `dir`: relative path, mode, content (empty for directories).
fn inventory(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, u32, Vec<u8>)>) {
        let mut entries: Vec<_> = fs::read_dir(d).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let content = if md.is_file() {
                fs::read(&p).unwrap()
            } else {
                vec![]
            };
            out.push((rel, md.permissions().mode(), content));
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let md = fs::symlink_metadata(dir).unwrap();
    out.push((".".into(), md.permissions().mode(), vec![]));
    walk(dir, dir, &mut out);
    out
}

/// A directory outside every target, holding something worth protecting.
fn victim(env: &Env) -> std::path::PathBuf {
    let v = env.path("victim");
    write(&v, "keep.txt", b"the victim's own file\n");
    fs::set_permissions(&v, fs::Permissions::from_mode(0o750)).unwrap();
    v
}

#[test]
fn restore_overwrite_replaces_a_symlinked_directory_instead_of_writing_through_it() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "d/keep.txt", b"from the snapshot\n");
    write(&src, "d/sub/deep.txt", b"deeper\n");
    fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o777)).unwrap();
    let id = env.backup_id(&src);
    let victim = victim(&env);
    let before = inventory(&victim);
    // An earlier restore (or anyone with write access to the target) left d -> victim.
    let target = env.path("target");
    fs::create_dir_all(&target).unwrap();
    symlink(&victim, target.join("d")).unwrap();
    let o = env.run(&[
        "restore",
        &id,
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_exit(&o, 0, "restore --overwrite");
    assert_eq!(
        inventory(&victim),
        before,
        "nothing was written outside the target"
    );
    let d = fs::symlink_metadata(target.join("d")).unwrap();
    assert!(d.is_dir(), "the symlink was replaced by the directory");
    assert_eq!(
        fs::read(target.join("d/keep.txt")).unwrap(),
        b"from the snapshot\n"
    );
    assert_eq!(
        fs::read(target.join("d/sub/deep.txt")).unwrap(),
        b"deeper\n"
    );
}

#[test]
fn restore_overwrite_replaces_a_symlinked_file_and_a_symlink_deeper_down() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src, "a/b/c/file.txt", b"restored\n");
    write(&src, "top.txt", b"top\n");
    let id = env.backup_id(&src);
    let victim = victim(&env);
    let before = inventory(&victim);
    let target = env.path("target");
    fs::create_dir_all(target.join("a")).unwrap();
    symlink(&victim, target.join("a/b")).unwrap();
    symlink(victim.join("keep.txt"), target.join("top.txt")).unwrap();
    let o = env.run(&[
        "restore",
        &id,
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_exit(&o, 0, "restore --overwrite");
    assert_eq!(inventory(&victim), before);
    assert!(
        fs::symlink_metadata(target.join("top.txt"))
            .unwrap()
            .is_file()
    );
    assert_eq!(fs::read(target.join("top.txt")).unwrap(), b"top\n");
    assert_eq!(
        fs::read(target.join("a/b/c/file.txt")).unwrap(),
        b"restored\n"
    );
}

// ---- sync apply --------------------------------------------------------------------------------

fn dir_node(name: &str) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::Dir {
            subtree: BlobId([0; 32]),
        },
        mode: 0o755,
        mtime_ns: 0,
        uid: 0,
        gid: 0,
    }
}

fn empty_file(name: &str) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::File {
            size: 0,
            content: Content::Direct(vec![]),
        },
        mode: 0o644,
        mtime_ns: 1_700_000_000_000_000_000,
        uid: 0,
        gid: 0,
    }
}

#[test]
fn apply_does_not_write_through_a_symlink_after_its_mkdir_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = lib_fixtures::init_repo(lib_fixtures::memory(), tmp.path());
    let (root, victim) = (tmp.path().join("folder"), tmp.path().join("victim"));
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&victim).unwrap();
    // Between the scan and the apply, `a` became a symlink to somewhere else.
    symlink(&victim, root.join("a")).unwrap();
    let actions = vec![
        Action::Mkdir {
            path: b"a".to_vec(),
            node: dir_node("a"),
        },
        Action::Write {
            path: b"a/x".to_vec(),
            node: empty_file("x"),
            expect: None,
        },
        Action::Mkdir {
            path: b"a/deeper".to_vec(),
            node: dir_node("deeper"),
        },
    ];
    let r = apply(&repo, &root, &actions, None, Folding::default()).unwrap();
    assert!(matches!(&r[0], Err(Failure::Changed(_))), "{:?}", r[0]);
    assert!(
        matches!(&r[1], Err(Failure::ParentFailed(d)) if d == "a"),
        "{:?}",
        r[1]
    );
    assert!(matches!(&r[2], Err(Failure::ParentFailed(_))), "{:?}", r[2]);
    assert_eq!(
        fs::read_dir(&victim).unwrap().count(),
        0,
        "nothing written through a"
    );
    assert!(fs::symlink_metadata(root.join("a")).unwrap().is_symlink());
}

#[test]
fn apply_treats_a_symlink_on_the_way_as_a_local_change() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = lib_fixtures::init_repo(lib_fixtures::memory(), tmp.path());
    let (root, victim) = (tmp.path().join("folder"), tmp.path().join("victim"));
    fs::create_dir_all(root.join("data")).unwrap();
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("x"), b"victim").unwrap();
    // The scan saw data/sub/ as a directory; now it is a symlink. Neither a write, a delete nor
    // a rename below it may follow it.
    symlink(&victim, root.join("data/sub")).unwrap();
    let old = Node {
        kind: NodeKind::File {
            size: 6,
            content: Content::Direct(vec![]),
        },
        ..empty_file("x")
    };
    let actions = vec![
        Action::Write {
            path: b"data/sub/new".to_vec(),
            node: empty_file("new"),
            expect: None,
        },
        Action::Delete {
            path: b"data/sub/x".to_vec(),
            expect: old.clone(),
        },
        Action::Rename {
            from: b"data/sub/x".to_vec(),
            to: b"data/y".to_vec(),
            expect: old,
            node: None,
        },
        Action::Rmdir {
            path: b"data/sub/d".to_vec(),
        },
    ];
    let r = apply(&repo, &root, &actions, None, Folding::default()).unwrap();
    for (i, res) in r.iter().take(3).enumerate() {
        match res {
            Err(Failure::Changed(why)) => assert!(why.contains("symlink"), "{i}: {why}"),
            other => panic!("action {i}: {other:?}"),
        }
    }
    assert_eq!(fs::read(victim.join("x")).unwrap(), b"victim");
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
    assert!(!root.join("data/y").exists());
}

#[test]
fn a_sync_step_never_follows_a_symlink_the_other_side_replaced_a_directory_with() {
    // Laptop publishes dir/ with files; the workspace, before its first sync, has dir -> victim.
    let env = Env::without_password();
    let victim = victim(&env);
    let before = inventory(&victim);
    let laptop = env.path("laptop");
    write(&laptop, "dir/a.txt", b"a\n");
    write(&laptop, "dir/b.txt", b"b\n");
    env.ok(&["init", laptop.to_str().unwrap(), "--name", "s"]);
    env.ok(&["sync", "s"]);
    let ws = Env::without_password();
    let v = env.json(&["add-instance", "s", "ws1"]);
    let key_file = std::path::PathBuf::from(v["key_file"].as_str().unwrap());
    let folder = ws.path("ws");
    fs::create_dir_all(&folder).unwrap();
    symlink(&victim, folder.join("dir")).unwrap();
    let o = ws.run(&[
        "join",
        "s",
        folder.to_str().unwrap(),
        "--repo",
        env.repo_str(),
        "--endpoint",
        "ws1",
        "--key-file",
        key_file.to_str().unwrap(),
    ]);
    assert_exit(&o, 0, "join");
    let o = ws.run(&["sync", "s"]);
    assert!(o.code() == 0 || o.code() == 3, "{}", o.describe());
    assert_eq!(inventory(&victim), before, "nothing written through dir");
    assert!(
        fs::symlink_metadata(folder.join("dir"))
            .unwrap()
            .is_symlink()
    );
}
