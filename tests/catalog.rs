//! The per-set snapshot catalog (`snapshot::catalog`) says exactly what the trees say: after
//! steps that create, edit, delete and turn directories into files, after a snapshot that
//! arrives out of time order, after snapshots are forgotten and the repository pruned, and when
//! the catalog file is damaged or missing. The oracle walks every snapshot's whole tree, which is
//! what `history` did before the catalog; `history` prints the same with and without the file.

mod lib_fixtures;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prism_sync::backend::Kind;
use prism_sync::endpoint::{StepOptions, step};
use prism_sync::home::Home;
use prism_sync::snapshot::catalog::Catalog;
use prism_sync::snapshot::tree::walk;
use prism_sync::snapshot::{Node, Snapshot};

const SET: &str = "s";

use lib_fixtures::cli_ok as ok;

fn write(p: &Path, data: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// A set with a few files in nested directories.
type World = lib_fixtures::CliSet;

fn world() -> World {
    lib_fixtures::CliSet::new(SET, |folder| {
        write(&folder.join("notes.txt"), "v0\n");
        write(&folder.join("a.txt"), "a\n");
        write(&folder.join("d/b.txt"), "b\n");
        write(&folder.join("d/e/c.txt"), "c\n");
    })
}

impl World {
    fn step(&self) {
        step(&self.ep, &self.repo, &StepOptions::default()).unwrap();
    }

    /// A catalog brought up to date as `history` does it, and saved.
    fn catalog(&self) -> Catalog {
        let mut c = Catalog::open(&self.home, &self.repo, SET);
        let errors = c.refresh(&self.repo).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        self.repo.load_index().unwrap();
        c.catalog_paths(&self.repo).unwrap();
        c.save(&self.repo);
        c
    }

    fn file(&self) -> PathBuf {
        Home::new(&self.home).catalog(&self.repo.repo_id(), SET)
    }

    /// The set's snapshots read from the repository (oldest first).
    fn set_snapshots(&self) -> Vec<(prism_sync::id::SnapshotId, Snapshot)> {
        self.repo
            .snapshots()
            .unwrap()
            .into_iter()
            .filter(|(_, s)| s.sync_set.as_deref() == Some(SET))
            .collect()
    }

    /// Checks every path of every snapshot of the set against a walk of its whole tree.
    fn check(&self, c: &Catalog) {
        let snaps = self.set_snapshots();
        assert_eq!(
            c.snapshots(true)
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>(),
            snaps.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            "the catalog lists the set's snapshots in time order"
        );
        let cataloged: Vec<Vec<u8>> = c.paths().map(<[u8]>::to_vec).collect();
        for (id, s) in &snaps {
            let mut nodes: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
            walk(&self.repo, &s.tree, &mut |p, n| {
                nodes.insert(p.to_vec(), n.clone());
                Ok(true)
            })
            .unwrap();
            for p in nodes.keys().chain(cataloged.iter()) {
                assert_eq!(
                    c.node_at(id, p),
                    nodes.get(p).cloned(),
                    "{} in snapshot {}",
                    String::from_utf8_lossy(p),
                    id.short()
                );
            }
        }
    }
}

#[test]
fn the_catalog_says_what_the_trees_say_through_edits_forget_prune_and_damage() {
    let w = world();
    let f = &w.folder;
    for n in 1..=14 {
        write(&f.join("notes.txt"), &format!("v{n}\n"));
        match n {
            3 => std::fs::remove_file(f.join("d/b.txt")).unwrap(),
            5 => {
                std::fs::remove_dir_all(f.join("d/e")).unwrap();
                write(&f.join("d/e"), "now a file\n");
            }
            7 => {
                std::fs::remove_file(f.join("d/e")).unwrap();
                write(&f.join("d/e/c.txt"), "c again\n");
                write(&f.join("d/e/new.txt"), "new\n");
            }
            9 => write(&f.join("a.txt"), "a, longer now\n"),
            11 => write(&f.join("a.txt"), "a\n"),
            _ => {}
        }
        w.step();
        if n % 4 == 0 {
            // Built a few snapshots at a time, as commands run now and then.
            w.check(&w.catalog());
        }
    }
    w.check(&w.catalog());

    // A snapshot of the set that sorts between two cataloged ones (a slow endpoint's clock).
    let snaps = w.set_snapshots();
    let (_, mid) = &snaps[4];
    let (_, next) = &snaps[5];
    let (_, last) = snaps.last().unwrap();
    let late = Snapshot {
        time_ns: mid.time_ns + (next.time_ns - mid.time_ns) / 2,
        tree: last.tree,
        ..mid.clone()
    };
    w.repo.save_snapshot(&late).unwrap();
    w.check(&w.catalog());

    // Forget the first, a middle one (the late one's neighbour) and the late one's successor,
    // then prune: versions move to the next snapshot kept, no tree of a forgotten one is read.
    let snaps = w.set_snapshots();
    for i in [0, 4, 6] {
        w.repo
            .backend()
            .delete(Kind::Snapshot, &snaps[i].0.to_hex())
            .unwrap();
    }
    ok(&w.home, &["--repo", w.repo_dir.to_str().unwrap(), "prune"]);
    w.check(&w.catalog());

    // A damaged file is ignored and rebuilt: same answers. Its blocks are verified as they are
    // read, so damage past the first block is found by the read that reaches it, which then
    // rebuilds the catalog from the repository and answers from that.
    let mut bytes = std::fs::read(w.file()).unwrap();
    let stride = prism_sync::format::catalog::BLOCK + 32;
    let i = bytes.len() - 100;
    assert!(i >= stride, "past the first block: {} bytes", bytes.len());
    bytes[i] ^= 0x20;
    std::fs::write(w.file(), &bytes).unwrap();
    let before = prism_sync::repository::counters::now();
    let mut c = w.catalog();
    let listed: prism_sync::Result<Vec<_>> = c.read(&w.repo, |c| Ok(c.snapshots(true)));
    let after = prism_sync::repository::counters::now();
    assert_eq!(listed.unwrap().len(), w.set_snapshots().len());
    assert!(
        after.0 - before.0 >= w.set_snapshots().len() as u64,
        "a damaged catalog is not trusted: its snapshots are read again"
    );
    w.check(&c);
    assert_ne!(std::fs::read(w.file()).unwrap(), bytes, "and rewritten");
    // Damage in the first block (the header): ignored when opened.
    let mut bytes = std::fs::read(w.file()).unwrap();
    bytes[60] ^= 1;
    std::fs::write(w.file(), &bytes).unwrap();
    let before = prism_sync::repository::counters::now();
    let c = w.catalog();
    let after = prism_sync::repository::counters::now();
    assert!(after.0 - before.0 >= w.set_snapshots().len() as u64);
    w.check(&c);
    // Truncated, or not a catalog at all.
    let good = std::fs::read(w.file()).unwrap();
    for bad in [&good[..good.len() - 1], &good[..10], b"garbage".as_slice()] {
        std::fs::write(w.file(), bad).unwrap();
        w.check(&w.catalog());
    }
}

#[test]
fn history_and_snapshots_print_the_same_with_and_without_the_catalog() {
    let w = world();
    let f = &w.folder;
    for n in 1..=8 {
        write(&f.join("notes.txt"), &format!("v{n}\n"));
        if n == 3 {
            std::fs::remove_file(f.join("notes.txt")).unwrap();
        }
        if n == 6 {
            std::fs::remove_dir_all(f.join("d")).unwrap();
            write(&f.join("d"), "a file now\n");
        }
        w.step();
    }
    let commands: Vec<Vec<&str>> = vec![
        vec!["--json", "history", SET, "notes.txt"],
        vec!["--json", "history", SET, "d/e/c.txt"],
        vec!["--json", "history", SET, "d"],
        vec!["--json", "history", SET, "a.txt"],
        vec!["--json", "snapshots", SET],
        vec!["--json", "ls", SET],
    ];
    let run_all = || -> Vec<String> { commands.iter().map(|c| ok(&w.home, c)).collect() };
    let fresh = run_all(); // builds the catalog
    assert!(w.file().is_file(), "the catalog was written");
    assert!(fresh[0].contains("\"deleted\""), "{}", fresh[0]);
    assert_eq!(run_all(), fresh, "from the catalog");
    let mut bytes = std::fs::read(w.file()).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    std::fs::write(w.file(), &bytes).unwrap();
    assert_eq!(run_all(), fresh, "with a damaged catalog");
    std::fs::remove_dir_all(w.file().parent().unwrap()).unwrap();
    assert_eq!(run_all(), fresh, "without a catalog");

    // More steps, a forget and a prune: the incremental catalog and a new one agree.
    for n in 9..=12 {
        write(&f.join("notes.txt"), &format!("v{n}\n"));
        w.step();
    }
    let snaps = w.set_snapshots();
    w.repo
        .backend()
        .delete(Kind::Snapshot, &snaps[3].0.to_hex())
        .unwrap();
    ok(&w.home, &["--repo", w.repo_dir.to_str().unwrap(), "prune"]);
    let incremental = run_all();
    std::fs::remove_file(w.file()).unwrap();
    assert_eq!(run_all(), incremental, "rebuilt from the repository");
}
