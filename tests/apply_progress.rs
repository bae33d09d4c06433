//! A sync step counts what it applies to the folder, so that the progress line of its
//! "download + apply" phase shows done/total changes and bytes (issue: progress that tells the
//! truth). Real steps on an in-memory repository: the laptop publishes, the workspace's step
//! downloads, and its counters must end at their totals, the totals being what was written.

mod lib_fixtures;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prism_sync::archiver::Progress;
use prism_sync::endpoint::{Endpoint, StepOptions, StepReport, step};
use prism_sync::repository::Repository;
use prism_sync::sync::Policy;

const SET: &str = "p";

#[test]
fn a_step_counts_the_changes_and_bytes_it_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let backend = lib_fixtures::memory();
    lib_fixtures::init_repo(backend.clone(), &keys);
    let homes: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("h{i}"))).collect();
    let folders: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("f{i}"))).collect();
    for i in 0..2 {
        std::fs::create_dir_all(&folders[i]).unwrap();
        Endpoint::create(
            &homes[i],
            lib_fixtures::endpoint_config(SET, &folders[i], i, Policy::KeepBoth),
        )
        .unwrap();
    }
    let run = |i: usize, progress: Option<Arc<Progress>>| -> StepReport {
        let ep = Endpoint::open(&homes[i], SET).unwrap();
        let repo = Repository::open(backend.clone(), &lib_fixtures::creds(&keys)).unwrap();
        let r = step(
            &ep,
            &repo,
            &StepOptions {
                progress,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(r.halted.is_none() && r.failures.is_empty(), "{r:?}");
        r
    };

    lib_fixtures::write(&folders[0].join("big.bin"), &vec![7u8; 1_500_000]);
    lib_fixtures::write(&folders[0].join("d/small.txt"), b"small\n");
    std::os::unix::fs::symlink("big.bin", folders[0].join("link")).unwrap();
    run(0, None);

    let p = Arc::new(Progress::default());
    let r = run(1, Some(p.clone()));
    let total = p.actions_total.load(Ordering::Relaxed);
    assert_eq!(total, r.actions.len() as u64);
    assert!(total >= 4, "mkdir d, two files, a symlink: {:?}", r.actions);
    assert_eq!(p.actions_done.load(Ordering::Relaxed), total);
    assert_eq!(p.apply_bytes_total.load(Ordering::Relaxed), 1_500_000 + 6);
    assert_eq!(p.apply_bytes_done.load(Ordering::Relaxed), 1_500_000 + 6);
    assert_eq!(
        std::fs::read(folders[1].join("big.bin")).unwrap().len(),
        1_500_000
    );

    // Nothing new: nothing to apply, nothing counted.
    let p = Arc::new(Progress::default());
    run(1, Some(p.clone()));
    assert_eq!(p.actions_total.load(Ordering::Relaxed), 0);
    assert_eq!(p.actions_done.load(Ordering::Relaxed), 0);
    assert_eq!(p.apply_bytes_done.load(Ordering::Relaxed), 0);
}
