//! A step records the heads it has merged, so that the daemon's cheap check ("did the heads
//! change since my last step?") never skips a change. Real steps on one in-memory repository;
//! a backend hook makes another endpoint publish at an exact moment of a step.

mod lib_fixtures;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lib_fixtures::{Call, Tapped};
use prism_sync::backend::{DynBackend, Kind, MemoryBackend};
use prism_sync::endpoint::{Endpoint, StepOptions, heads_changed, step};
use prism_sync::repository::{InitOptions, Repository};
use prism_sync::sync::Policy;

const SET: &str = "h";

#[test]
fn a_head_published_while_a_step_runs_is_not_recorded_as_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let backend: DynBackend = Arc::new(MemoryBackend::new());
    Repository::init(
        backend.clone(),
        &lib_fixtures::key_creds(&keys),
        &InitOptions::default(),
    )
    .unwrap();
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
    let run = |i: usize, b: DynBackend| {
        let ep = Endpoint::open(&homes[i], SET).unwrap();
        let repo = Repository::open(b, &lib_fixtures::key_creds(&keys)).unwrap();
        step(&ep, &repo, &StepOptions::default()).unwrap();
    };
    std::fs::write(folders[0].join("a.txt"), b"first").unwrap();
    run(0, backend.clone());
    run(1, backend.clone());
    assert_eq!(std::fs::read(folders[1].join("a.txt")).unwrap(), b"first");

    // The laptop changes a file; the workspace steps, and the laptop publishes in the middle of
    // that step: right after the workspace listed the heads, before it read and recorded them.
    std::fs::write(folders[0].join("b.txt"), b"second").unwrap();
    let (laptop_home, laptop_backend, k) = (homes[0].clone(), backend.clone(), keys.clone());
    // Right after the workspace's first listing of heads was taken (before it is returned).
    let publish = Mutex::new(Some(move || {
        let ep = Endpoint::open(&laptop_home, SET).unwrap();
        let repo = Repository::open(laptop_backend, &lib_fixtures::key_creds(&k)).unwrap();
        let r = step(&ep, &repo, &StepOptions::default()).unwrap();
        assert!(r.published.is_some(), "the laptop published b.txt");
    }));
    let hooked: DynBackend = Arc::new(Tapped::new(backend.clone(), move |call| {
        if let Call::List(Kind::Head) = call
            && let Some(publish) = publish.lock().unwrap().take()
        {
            publish();
        }
    }));
    run(1, hooked.clone());
    let ep = Endpoint::open(&homes[1], SET).unwrap();
    let repo = Repository::open(backend.clone(), &lib_fixtures::key_creds(&keys)).unwrap();
    let arrived = folders[1].join("b.txt").exists();
    assert!(
        arrived || heads_changed(&ep, &repo).unwrap(),
        "b.txt was not applied, yet the workspace records the laptop's new head as merged: \
         its daemon would never step for it"
    );
    // And the next step brings it.
    run(1, backend.clone());
    assert_eq!(std::fs::read(folders[1].join("b.txt")).unwrap(), b"second");
}
