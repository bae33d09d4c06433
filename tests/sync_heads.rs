//! A step records the heads it has merged, so that the daemon's cheap check ("did the heads
//! change since my last step?") never skips a change. Real steps on one in-memory repository;
//! a backend hook makes another endpoint publish at an exact moment of a step.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prism_sync::backend::{BResult, Backend, DynBackend, Kind, MemoryBackend, ObjectInfo};
use prism_sync::endpoint::config::SetConfig;
use prism_sync::endpoint::{Endpoint, StepOptions, heads_changed, step};
use prism_sync::repository::{Credentials, InitOptions, Repository};
use prism_sync::sync::{Mode, Policy, Role};

const SET: &str = "h";

type Hook = Box<dyn FnOnce() + Send>;

/// Runs `hook` right after the `at`-th listing of heads was taken (before it is returned).
struct HookedHeads {
    inner: DynBackend,
    listings: AtomicUsize,
    at: usize,
    hook: Mutex<Option<Hook>>,
}

impl Backend for HookedHeads {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn prepare(&self) -> BResult<()> {
        self.inner.prepare()
    }
    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
        self.inner.create(kind, name, data)
    }
    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        self.inner.read_range(kind, name, offset, length)
    }
    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        let listing = self.inner.list(kind);
        if kind == Kind::Head && self.listings.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            let hook = self.hook.lock().unwrap().take();
            if let Some(h) = hook {
                h();
            }
        }
        listing
    }
    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        self.inner.delete(kind, name)
    }
}

fn creds(keys: &Path) -> Credentials {
    Credentials {
        password: None,
        local_keys_dir: keys.to_path_buf(),
    }
}

fn endpoint(home: &Path, folder: &Path, i: usize) {
    std::fs::create_dir_all(folder).unwrap();
    let cfg = SetConfig {
        name: SET.into(),
        local_path: folder.to_path_buf(),
        repo: "memory".into(),
        endpoint: if i == 0 { "local".into() } else { "ws".into() },
        role: if i == 0 { Role::Local } else { Role::Instance },
        sync_mode: Mode::Bidirectional,
        conflict_policy: Policy::KeepBoth,
        automatic_rules: vec![],
        exclude_patterns: vec![],
        builtin_excludes: true,
        rules: None,
        instances: vec![],
        retention: "30d".into(),
        max_delete_count: u64::MAX,
        max_delete_percent: 100.0,
        case_insensitive: false,
        unicode_normalizing: false,
        limit_upload: None,
        limit_download: None,
    };
    Endpoint::create(home, cfg).unwrap();
}

#[test]
fn a_head_published_while_a_step_runs_is_not_recorded_as_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let backend: DynBackend = Arc::new(MemoryBackend::new());
    Repository::init(backend.clone(), &creds(&keys), &InitOptions::default()).unwrap();
    let homes: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("h{i}"))).collect();
    let folders: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("f{i}"))).collect();
    for i in 0..2 {
        endpoint(&homes[i], &folders[i], i);
    }
    let run = |i: usize, b: DynBackend| {
        let ep = Endpoint::open(&homes[i], SET).unwrap();
        let repo = Repository::open(b, &creds(&keys)).unwrap();
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
    let hooked: DynBackend = Arc::new(HookedHeads {
        inner: backend.clone(),
        listings: AtomicUsize::new(0),
        at: 1,
        hook: Mutex::new(Some(Box::new(move || {
            let ep = Endpoint::open(&laptop_home, SET).unwrap();
            let repo = Repository::open(laptop_backend, &creds(&k)).unwrap();
            let r = step(&ep, &repo, &StepOptions::default()).unwrap();
            assert!(r.published.is_some(), "the laptop published b.txt");
        }))),
    });
    run(1, hooked.clone());
    let ep = Endpoint::open(&homes[1], SET).unwrap();
    let repo = Repository::open(backend.clone(), &creds(&keys)).unwrap();
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
