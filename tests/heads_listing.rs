//! Reading a set's heads while other endpoints publish: a head deleted between the list and its
//! read (its successor merges it) must never make the set look empty or drop a state.

mod lib_fixtures;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prism_sync::backend::{BResult, Backend, DynBackend, Kind, ObjectInfo};
use prism_sync::format::head::Head;
use prism_sync::id::SnapshotId;
use prism_sync::repository::Repository;
use prism_sync::repository::heads::{list_heads, publish};

const SET: &str = "s";

fn head(n: u8, merged: Option<u8>) -> Head {
    Head {
        set: SET.into(),
        snapshot: SnapshotId([n; 32]),
        endpoint: format!("ep{n}"),
        time_ns: n as i64,
        merged: merged.map(|m| SnapshotId([m; 32])).into_iter().collect(),
        conflicts: vec![],
        confirmed_deletions: 0,
        extra: vec![],
    }
}

/// A backend where, on the first `races` reads of a head, another endpoint publishes the next
/// head (merging the one being read) between the reader's list and its read.
struct Racing {
    inner: DynBackend,
    races: AtomicUsize,
    publisher: Mutex<(Repository, u8)>,
}

impl Backend for Racing {
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
        if kind == Kind::Head
            && self
                .races
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
                .is_ok()
        {
            let mut p = self.publisher.lock().unwrap();
            let (repo, last) = &mut *p;
            publish(repo, &head(*last + 1, Some(*last)), &[name.to_string()]).unwrap();
            *last += 1;
        }
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        self.inner.read_range(kind, name, offset, length)
    }
    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        self.inner.list(kind)
    }
    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        self.inner.delete(kind, name)
    }
}

/// A reader whose head reads race with `races` publishes by another endpoint.
fn racing_reader(tmp: &std::path::Path, races: usize) -> Repository {
    let mem = lib_fixtures::memory();
    let publisher = lib_fixtures::init_repo(mem.clone(), tmp);
    publish(&publisher, &head(1, None), &[]).unwrap();
    let racing = Arc::new(Racing {
        inner: mem,
        races: AtomicUsize::new(races),
        publisher: Mutex::new((publisher, 1)),
    });
    Repository::open(racing, &lib_fixtures::creds(tmp)).unwrap()
}

#[test]
fn a_head_replaced_between_list_and_read_is_not_an_empty_set() {
    let tmp = tempfile::tempdir().unwrap();
    let reader = racing_reader(tmp.path(), 1);
    let heads = list_heads(&reader, SET).unwrap();
    let snaps: Vec<SnapshotId> = heads.iter().map(|(_, h)| h.snapshot).collect();
    assert_eq!(
        snaps,
        vec![SnapshotId([2; 32])],
        "the set had a head at every moment: the one that replaced the head being read"
    );
}

#[test]
fn heads_that_keep_changing_are_an_error_never_an_empty_set() {
    let tmp = tempfile::tempdir().unwrap();
    let reader = racing_reader(tmp.path(), usize::MAX);
    let err = list_heads(&reader, SET).unwrap_err().to_string();
    assert!(err.contains("kept changing"), "{err}");
    // Once the publishing stops, the listing is whole again.
    let calm = racing_reader(tempfile::tempdir().unwrap().path(), 3);
    assert_eq!(list_heads(&calm, SET).unwrap().len(), 1);
}
