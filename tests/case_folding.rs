//! Invariant 9 on a real case-insensitive, normalization-insensitive file system (`foldfs`, a
//! FUSE mount made by the test, as a default macOS volume behaves): names a tree from a plain
//! Linux folder can hold side by side — `A` and `a`, NFC `é` and NFD `é` — are found before
//! anything is written and kept apart, and a symlink never becomes the way into a directory
//! that merely differs from it in case.
//!
//! These tests need root and `/dev/fuse` (CI runs as root and installs fuse3); without them they
//! fail with the reason, they never skip.

mod cli_env;
mod foldfs;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use cli_env::{Env, OutputExt, write};

const NFC: &str = "caf\u{e9}.txt";
const NFD: &str = "cafe\u{301}.txt";

/// Every entry below `dir` with its content, for "nothing changed here" checks.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let p = e.path();
            let c = if p.is_file() {
                fs::read(&p).unwrap()
            } else {
                vec![]
            };
            (e.file_name().to_string_lossy().into_owned(), c)
        })
        .collect();
    v.sort();
    v
}

/// A plain (case-sensitive) folder holding names a folding file system cannot keep apart: a
/// symlink `A` to `victim` and a directory `a/`, and one name in NFC and NFD.
fn hostile_folder(root: &Path, victim: &Path) {
    fs::create_dir_all(root).unwrap();
    symlink(victim, root.join("A")).unwrap();
    write(root, "a/x", b"inside a\n");
    write(root, NFC, b"composed\n");
    write(root, NFD, b"decomposed\n");
    // The Linux side really holds both spellings.
    assert_eq!(fs::read_dir(root).unwrap().count(), 4);
}

fn victim(env: &Env) -> std::path::PathBuf {
    let v = env.path("victim");
    write(&v, "keep.txt", b"the victim's own file\n");
    v
}

#[test]
fn the_test_file_system_really_folds_case_and_normalization() {
    let tmp = tempfile::tempdir().unwrap();
    let m = foldfs::mount(&tmp.path().join("mnt"));
    fs::write(m.path.join("Data.txt"), b"x").unwrap();
    assert_eq!(fs::read(m.path.join("DATA.TXT")).unwrap(), b"x");
    fs::write(m.path.join(NFC), b"n").unwrap();
    assert_eq!(fs::read(m.path.join(NFD)).unwrap(), b"n");
    let names: Vec<String> = contents(&m.path).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        vec!["Data.txt".to_string(), NFC.to_string()],
        "spelling preserved"
    );
    let d = prism_sync::fsx::Dir::open_root(&m.path).unwrap();
    let f = prism_sync::fsx::fold::probe(&d).unwrap();
    assert!(f.case && f.unicode, "{f:?}");
    assert_eq!(contents(&m.path).len(), 2, "the probe cleans up");
}

#[test]
fn init_and_join_record_what_the_folder_folds() {
    let env = Env::without_password();
    let m = foldfs::mount(&env.path("mnt"));
    let folder = m.path.join("proj");
    env.ok(&["init", folder.to_str().unwrap(), "--name", "p"]);
    let cfg = fs::read_to_string(env.home.join("sync/p.yml")).unwrap();
    assert!(cfg.contains("case_insensitive: true"), "{cfg}");
    assert!(cfg.contains("unicode_normalizing: true"), "{cfg}");
    // A plain folder folds nothing.
    env.ok(&["init", env.path("plain").to_str().unwrap(), "--name", "q"]);
    let cfg = fs::read_to_string(env.home.join("sync/q.yml")).unwrap();
    assert!(cfg.contains("case_insensitive: false"), "{cfg}");
    assert!(cfg.contains("unicode_normalizing: false"), "{cfg}");
    assert!(
        contents(&folder).is_empty(),
        "no probe file left: {:?}",
        contents(&folder)
    );
}

#[test]
fn restore_onto_a_folding_file_system_keeps_colliding_names_apart() {
    let env = Env::with_repo();
    let victim = victim(&env);
    let before = contents(&victim);
    let src = env.path("src");
    hostile_folder(&src, &victim);
    let id = env.backup_id(&src);
    let m = foldfs::mount(&env.path("mnt"));
    let target = m.path.join("restored");
    let o = env.run(&["restore", &id, "--target", target.to_str().unwrap()]);
    assert_eq!(
        o.code(),
        3,
        "names kept apart are reported\n{}",
        o.describe()
    );
    assert!(o.err().contains("a.name-conflict-1"), "{}", o.describe());
    assert_eq!(
        contents(&victim),
        before,
        "nothing was written through the symlink A"
    );
    assert!(fs::symlink_metadata(target.join("A")).unwrap().is_symlink());
    assert_eq!(
        fs::read(target.join("a.name-conflict-1/x")).unwrap(),
        b"inside a\n"
    );
    // NFD sorts first in the tree, so it keeps the name; NFC is kept apart.
    assert_eq!(fs::read(target.join(NFD)).unwrap(), b"decomposed\n");
    assert_eq!(
        fs::read(target.join("caf\u{e9}.name-conflict-1.txt")).unwrap(),
        b"composed\n"
    );
}

#[test]
fn a_sync_step_on_the_folding_side_never_merges_names_through_a_symlink() {
    let laptop = Env::without_password();
    let victim = victim(&laptop);
    let before = contents(&victim);
    let folder = laptop.path("laptop");
    hostile_folder(&folder, &victim);
    laptop.ok(&["init", folder.to_str().unwrap(), "--name", "s"]);
    laptop.ok(&["sync", "s"]);

    let ws = Env::without_password();
    let m = foldfs::mount(&ws.path("mnt"));
    let ws_folder = m.path.join("ws");
    // The workspace's own key, as add-instance made it.
    let v = laptop.json(&["add-instance", "s", "ws1"]);
    let key = std::path::PathBuf::from(v["key_file"].as_str().unwrap());
    ws.ok(&[
        "join",
        "s",
        ws_folder.to_str().unwrap(),
        "--repo",
        laptop.repo_str(),
        "--endpoint",
        "ws1",
        "--key-file",
        key.to_str().unwrap(),
    ]);
    let cfg = fs::read_to_string(ws.home.join("sync/s.yml")).unwrap();
    assert!(cfg.contains("case_insensitive: true"), "{cfg}");
    for round in 0..2 {
        let o = ws.run(&["sync", "s"]);
        assert_eq!(
            o.code(),
            3,
            "round {round}: collisions are reported\n{}",
            o.describe()
        );
        let all = format!("{}{}", o.out(), o.err());
        assert!(all.contains("differs only in case"), "round {round}: {all}");
        assert_eq!(
            contents(&victim),
            before,
            "round {round}: nothing written through A"
        );
        assert!(
            fs::symlink_metadata(ws_folder.join("A"))
                .unwrap()
                .is_symlink()
        );
        // `a` is the symlink A here; the directory a/ stays in the shared state only.
        assert!(
            fs::symlink_metadata(ws_folder.join("a"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(fs::read(ws_folder.join(NFD)).unwrap(), b"decomposed\n");
        assert_eq!(contents(&ws_folder).len(), 2, "{:?}", contents(&ws_folder));
    }
    // The laptop still has everything: nothing was lost or deleted on its side.
    laptop.ok(&["sync", "s"]);
    assert_eq!(fs::read(folder.join("a/x")).unwrap(), b"inside a\n");
    assert_eq!(fs::read(folder.join(NFC)).unwrap(), b"composed\n");
    assert!(fs::symlink_metadata(folder.join("A")).unwrap().is_symlink());
}
