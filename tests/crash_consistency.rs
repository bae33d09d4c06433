//! Invariant 1: a crash at any instant leaves a repository that `check` passes, and every
//! snapshot that was reported as written restores bit for bit.
//!
//! Two ways to crash: a backend that fails every write from the Nth on (for every N of a backup,
//! of a prune), and `kill -9` of the real binary at pseudo-random moments.

mod lib_fixtures;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use lib_fixtures::*;
use prism_sync::archiver::{self, BackupOptions};
use prism_sync::backend::{DynBackend, FaultBackend, FsBackend};
use prism_sync::maintenance::check::{ReadData, check};
use prism_sync::maintenance::prune::{PruneOptions, prune};
use prism_sync::repository::Repository;
use prism_sync::restorer::{RestoreOptions, restore};
use prism_sync::snapshot::select;

fn assert_consistent(
    backend: DynBackend,
    keys_dir: &Path,
    expected: &[(
        prism_sync::id::SnapshotId,
        std::collections::BTreeMap<std::path::PathBuf, String>,
    )],
    scratch: &Path,
) {
    let repo = Repository::open(backend, &creds(keys_dir)).unwrap();
    let report = check(&repo, &ReadData::All).unwrap();
    assert!(
        report.errors.is_empty(),
        "check errors: {:?}",
        report.errors
    );
    repo.load_index().unwrap();
    let snaps = repo.snapshots().unwrap();
    for (id, want) in expected {
        let (_, s) = select::resolve(&snaps, &id.to_hex()).unwrap();
        let target = scratch.join(format!("restore-{}", id.short()));
        let _ = std::fs::remove_dir_all(&target);
        let r = restore(&repo, &s.tree, &target, &RestoreOptions::default()).unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(
            &digest(&target),
            want,
            "snapshot {} restores bit for bit",
            id.short()
        );
        std::fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn a_failed_write_at_any_point_of_a_backup_leaves_a_consistent_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 1);
    let mut n = 1;
    loop {
        let keys_dir = tmp.path().join(format!("keys-{n}"));
        let inner = memory();
        let fault = Arc::new(FaultBackend::new(inner.clone()));
        let repo = init_repo(fault.clone(), &keys_dir);
        let first =
            archiver::backup(&repo, std::slice::from_ref(&src), &BackupOptions::default()).unwrap();
        let first_digest = digest(&src);
        // Change the tree, then fail the Nth write of the second backup.
        write(&src.join("data/raw/a.bin"), &bytes(100 + n, 1_200_000));
        write(&src.join(format!("new-{n}.txt")), &text(n, 3000));
        let second_digest = digest(&src);
        fault.fail_from(n);
        let second = archiver::backup(&repo, std::slice::from_ref(&src), &BackupOptions::default());
        fault.fail_from(0);
        let mut expected = vec![(first.id, first_digest)];
        let done = second.is_ok();
        if let Ok(r) = second {
            expected.push((r.id, second_digest));
        }
        assert_consistent(inner, &keys_dir, &expected, tmp.path());
        // Restore the source for the next round.
        std::fs::remove_dir_all(&src).unwrap();
        make_tree(&src, 1);
        if done {
            assert!(
                n > 4,
                "a backup needs several writes (session, packs, index, snapshot), got {n}"
            );
            break;
        }
        n += 1;
        assert!(n < 200, "backup never finished");
    }
}

#[test]
fn a_failed_write_at_any_point_of_a_prune_leaves_a_consistent_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut n = 1;
    loop {
        std::fs::remove_dir_all(&src).ok();
        make_tree(&src, 7);
        let keys_dir = tmp.path().join(format!("keys-{n}"));
        let inner = memory();
        let fault = Arc::new(FaultBackend::new(inner.clone()));
        let repo = init_repo(fault.clone(), &keys_dir);
        let opts = BackupOptions::default();
        let old = archiver::backup(&repo, std::slice::from_ref(&src), &opts).unwrap();
        write(&src.join("data/raw/a.bin"), &bytes(99, 1_500_000));
        std::fs::remove_file(src.join("data/raw/b.bin")).unwrap();
        let kept = archiver::backup(&repo, std::slice::from_ref(&src), &opts).unwrap();
        let kept_digest = digest(&src);
        repo.backend()
            .delete(prism_sync::backend::Kind::Snapshot, &old.id.to_hex())
            .unwrap();
        fault.fail_from(n);
        let r = prune(
            &repo,
            &PruneOptions {
                max_unused_percent: 0.0,
                ..Default::default()
            },
        );
        fault.fail_from(0);
        assert_consistent(
            inner.clone(),
            &keys_dir,
            &[(kept.id, kept_digest.clone())],
            tmp.path(),
        );
        if let Ok(report) = r {
            assert!(
                report.packs_deleted + report.packs_repacked > 0,
                "prune had something to do"
            );
            // A second prune finishes whatever the interrupted ones left.
            let repo = Repository::open(inner.clone(), &creds(&keys_dir)).unwrap();
            prune(&repo, &PruneOptions::default()).unwrap();
            assert_consistent(inner, &keys_dir, &[(kept.id, kept_digest)], tmp.path());
            break;
        }
        // An interrupted prune is finished by the next one.
        let repo = Repository::open(inner.clone(), &creds(&keys_dir)).unwrap();
        prune(
            &repo,
            &PruneOptions {
                max_unused_percent: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        assert_consistent(inner, &keys_dir, &[(kept.id, kept_digest)], tmp.path());
        n += 1;
        assert!(n < 300, "prune never finished");
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_prism-sync")
}

#[test]
fn kill_9_of_a_running_backup_never_breaks_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let repo_dir = tmp.path().join("repo");
    let src = tmp.path().join("src");
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("PRISM_HOME", &home)
            .env_remove("PRISM_SYNC_PASSWORD")
            .env_remove("PRISM_SYNC_REPO")
            .output()
            .unwrap()
    };
    let repo_s = repo_dir.to_str().unwrap();
    assert!(
        run(&["repo", "init", "--repo", repo_s, "--pack-size", "1"])
            .status
            .success()
    );
    make_tree(&src, 3);
    for i in 0..12u64 {
        write(
            &src.join(format!("batch-{i}/big.bin")),
            &bytes(1000 + i, 6_000_000),
        );
        write(
            &src.join(format!("batch-{i}/notes.txt")),
            &text(2000 + i, 200_000),
        );
    }
    let out = run(&["backup", "--repo", repo_s, "--json", src.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first_id = first["id"].as_str().unwrap().to_string();
    let first_digest = digest(&src);

    // How long a full backup takes here, to spread the kills over its whole duration.
    let t0 = std::time::Instant::now();
    let full = run(&[
        "backup",
        "--repo",
        repo_s,
        "--no-cache",
        src.to_str().unwrap(),
    ]);
    assert!(full.status.success());
    let full_ms = t0.elapsed().as_millis() as u64;
    let mut killed = 0;
    for round in 0..8u64 {
        write(
            &src.join(format!("round-{round}.bin")),
            &bytes(5000 + round, 4_000_000),
        );
        let mut child = Command::new(bin())
            .args([
                "backup",
                "--repo",
                repo_s,
                "--no-cache",
                src.to_str().unwrap(),
            ])
            .env("PRISM_HOME", &home)
            .env_remove("PRISM_SYNC_PASSWORD")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Pseudo-random moments between 3 % and 90 % of a full backup's duration.
        let frac = 3 + (blake3::hash(&round.to_le_bytes()).as_bytes()[0] as u64) * 87 / 255;
        let delay = (full_ms * frac / 100).max(1);
        std::thread::sleep(std::time::Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        let check = run(&["check", "--repo", repo_s, "--read-data"]);
        assert!(
            check.status.success(),
            "round {round}: check failed after kill: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    assert!(
        killed >= 4,
        "most rounds must kill a running backup (killed {killed})"
    );
    let backend: DynBackend = Arc::new(FsBackend::new(&repo_dir));
    let id = prism_sync::id::SnapshotId::from_hex(&first_id).unwrap();
    assert_consistent(
        backend,
        &home.join("sync"),
        &[(id, first_digest)],
        tmp.path(),
    );
    // Prune cleans up what the killed backups left, and the repository stays consistent.
    let p = run(&["prune", "--repo", repo_s]);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let check = run(&["check", "--repo", repo_s, "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let check_json = run(&["check", "--repo", repo_s, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&check_json.stdout).unwrap();
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| !w.as_str().unwrap().contains("in no index")),
        "prune removed orphan packs: {v}"
    );
}
