//! "Restore this version" of one file into the live folder (`restore NAME --version ID --path
//! FILE --in-place | --beside`), through the real binary: it never overwrites an edit that no
//! version keeps, never replaces an existing copy, and the next sync publishes the result.

mod cli_env;

use std::fs;

use cli_env::*;

fn versions(env: &Env) -> Vec<String> {
    env.json(&["snapshots", "p"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn in_place_restore_refuses_an_unsynced_edit_and_beside_never_replaces_a_file() {
    let env = Env::with_repo();
    let folder = env.path("project");
    write(&folder, "notes.md", b"first\n");
    env.ok(&["init", folder.to_str().unwrap(), "--name", "p"]);
    env.ok(&["sync", "p"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write(&folder, "notes.md", b"second\n");
    env.ok(&["sync", "p"]);
    let v = versions(&env);
    assert_eq!(v.len(), 2);
    let first = &v[0][..8];

    // Beside: a dated copy next to the file; the file is untouched.
    let out = env.ok(&[
        "restore",
        "p",
        "--version",
        first,
        "--path",
        "notes.md",
        "--beside",
    ]);
    let copies: Vec<_> = fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("notes.restored-") && n.ends_with(".md"))
        .collect();
    assert_eq!(copies.len(), 1, "{out}");
    assert_eq!(fs::read(folder.join(&copies[0])).unwrap(), b"first\n");
    assert_eq!(fs::read(folder.join("notes.md")).unwrap(), b"second\n");
    // Again: the copy exists, so nothing is replaced.
    let o = env.run(&[
        "restore",
        "p",
        "--version",
        first,
        "--path",
        "notes.md",
        "--beside",
    ]);
    assert_exit(&o, 1, "a second copy beside");
    assert!(o.err().contains("already exists"), "{}", o.err());

    // In place over an edit no version holds: refused, the edit stays.
    write(&folder, "notes.md", b"unsynced edit\n");
    let o = env.run(&[
        "restore",
        "p",
        "--version",
        first,
        "--path",
        "notes.md",
        "--in-place",
    ]);
    assert_exit(&o, 1, "in place over an unsynced edit");
    assert!(
        o.err().contains("changed since the last sync") && o.err().contains("prism-sync sync p"),
        "{}",
        o.err()
    );
    assert_eq!(
        fs::read(folder.join("notes.md")).unwrap(),
        b"unsynced edit\n"
    );

    // Once synced (the edit is a version now), in place works, and the next sync publishes it.
    env.ok(&["sync", "p"]);
    env.ok(&[
        "restore",
        "p",
        "--version",
        first,
        "--path",
        "notes.md",
        "--in-place",
    ]);
    assert_eq!(fs::read(folder.join("notes.md")).unwrap(), b"first\n");
    env.ok(&["sync", "p"]);
    let latest = versions(&env).last().unwrap().clone();
    let shared = env.ok(&["dump", &latest, "notes.md"]);
    assert_eq!(
        shared, "first\n",
        "the restored content is the set's latest version"
    );
    let history = env.json(&["history", "p", "notes.md"]);
    assert_eq!(history.as_array().unwrap().len(), 4, "{history}");

    // A folder or a path not in the version: clear errors.
    let o = env.run(&[
        "restore",
        "p",
        "--version",
        first,
        "--path",
        "nope.txt",
        "--in-place",
    ]);
    assert_exit(&o, 1, "a path not in the version");
    assert!(o.err().contains("is not in that version"), "{}", o.err());
}
