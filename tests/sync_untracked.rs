//! Paths a step could not track (still being written, unreadable) must come back in a later
//! step, wherever the step moved them, and a shared change made to them meanwhile must stay new
//! for this folder. Found by the randomized three-daemon test (seed 4401, `keep_both`): `local`
//! appended to `d3-m182/q/x3.csv` while its step turned `d3-m182` (which another endpoint had
//! made a file) into a conflict copy; the file was left for later, moved along with its
//! directory, and never looked at again — the daemon said "in sync" with a file no head had.
//!
//! Also B12 (seed 4343, `user_prompt`): a directory removal that failed because something
//! appeared in the directory during the step left the directory here for good once that was
//! gone — empty directories the shared state no longer had, with the endpoint idle.
//!
//! Real steps on an in-memory repository; the daemon's event-driven scan is what the worker
//! passes: the paths the watcher reported plus what the previous step asked to look at again.

mod lib_fixtures;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use prism_sync::backend::{DynBackend, Kind};
use prism_sync::endpoint::{Endpoint, StepOptions, StepReport, step};
use prism_sync::repository::Repository;
use prism_sync::sync::Policy;

const SET: &str = "u";
/// Long enough that a file written by the test is "still being written" for a step that uses it.
const SETTLE: Duration = Duration::from_secs(600);

struct Pair {
    _tmp: tempfile::TempDir,
    keys: PathBuf,
    backend: DynBackend,
    homes: Vec<PathBuf>,
    folders: Vec<PathBuf>,
}

impl Pair {
    fn new(policy: Policy) -> Pair {
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
                lib_fixtures::endpoint_config(SET, &folders[i], i, policy),
            )
            .unwrap();
        }
        Pair {
            _tmp: tmp,
            keys,
            backend,
            homes,
            folders,
        }
    }

    fn step(&self, i: usize, opts: &StepOptions) -> StepReport {
        let r = self.step_on(i, self.backend.clone(), opts);
        assert!(r.halted.is_none(), "endpoint {i} halted: {:?}", r.halted);
        assert!(r.failures.is_empty(), "endpoint {i}: {:?}", r.failures);
        r
    }

    fn step_on(&self, i: usize, backend: DynBackend, opts: &StepOptions) -> StepReport {
        let ep = Endpoint::open(&self.homes[i], SET).unwrap();
        let repo = Repository::open(backend, &lib_fixtures::creds(&self.keys)).unwrap();
        step(&ep, &repo, opts).unwrap()
    }

    fn sync(&self, i: usize) -> StepReport {
        self.step(i, &StepOptions::default())
    }

    /// Writes a file with an mtime an hour ago: settled for any step.
    fn write_old(&self, i: usize, rel: &str, data: &[u8]) {
        let p = self.folders[i].join(rel);
        lib_fixtures::write(&p, data);
        set_old(&p);
    }
}

fn set_old(p: &Path) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

/// The daemon's next event-driven step after `prev`: the paths the watcher reported, plus the
/// files the previous step left for later or asked to look at again.
fn next_daemon_step(prev: &StepReport, events: &[&[u8]]) -> StepOptions {
    let mut dirty: BTreeSet<Vec<u8>> = events.iter().map(|e| e.to_vec()).collect();
    dirty.extend(prev.deferred.iter().cloned());
    dirty.extend(prev.rescan.iter().cloned());
    StepOptions {
        dirty: Some(dirty),
        defer_recent: Some(Duration::from_millis(1)),
        ..Default::default()
    }
}

fn conflict_copy_of(folder: &Path, name: &str) -> String {
    let prefix = format!("{name}.conflict-");
    std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no conflict copy of {name} in {}", folder.display()))
}

/// The seed-4401 false "in sync": a file left for later inside a directory that the same step
/// keeps as a conflict copy is moved along with it; the next steps must look at it there and
/// publish it.
#[test]
fn a_file_left_for_later_inside_a_directory_kept_as_a_conflict_copy_is_published() {
    let w = Pair::new(Policy::KeepBoth);
    w.write_old(0, "d/p.txt", b"p v1\n");
    w.write_old(0, "d/q/x.txt", b"x v1\n");
    w.sync(0);
    w.sync(1);
    assert_eq!(
        std::fs::read(w.folders[1].join("d/q/x.txt")).unwrap(),
        b"x v1\n"
    );

    // The laptop turns the directory into a file; the workspace edits a file in it (settled)
    // and is writing another one when its step runs.
    std::fs::remove_dir_all(w.folders[0].join("d")).unwrap();
    w.write_old(0, "d", b"d is a file now\n");
    assert!(w.sync(0).published.is_some());
    w.write_old(1, "d/p.txt", b"p v2 from the workspace\n");
    lib_fixtures::write(&w.folders[1].join("d/q/x.txt"), b"x v2, being written\n");
    let first = w.step(
        1,
        &StepOptions {
            defer_recent: Some(SETTLE),
            ..Default::default()
        },
    );
    assert_eq!(first.deferred, vec![b"d/q/x.txt".to_vec()], "{first:?}");
    let copy = conflict_copy_of(&w.folders[1], "d");
    let moved = w.folders[1].join(&copy).join("q/x.txt");
    assert_eq!(
        std::fs::read(&moved).unwrap(),
        b"x v2, being written\n",
        "the file left for later moved with its directory"
    );

    // The daemon's next steps: the watcher saw the rename and the new file `d`.
    let mut prev = first;
    for _ in 0..2 {
        prev = w.step(1, &next_daemon_step(&prev, &[b"d", copy.as_bytes()]));
    }
    w.sync(0);
    let there = w.folders[0].join(&copy).join("q/x.txt");
    assert_eq!(
        std::fs::read(&there).ok().as_deref(),
        Some(&b"x v2, being written\n"[..]),
        "{copy}/q/x.txt was never published: the workspace looked at it under its old path only"
    );
}

/// A shared change to a file this folder could not track in a step stays new for the folder:
/// the step records the old base there, not the shared version, so the change is applied once
/// the file is tracked again. (Recording the shared version made base == head and folder ==
/// folder tree: nothing to do, "in sync", with the old file in the folder for good.)
#[test]
fn a_shared_change_to_a_file_left_for_later_is_applied_once_it_is_tracked_again() {
    let w = Pair::new(Policy::KeepBoth);
    w.write_old(
        0, "a.txt", b"v1
",
    );
    w.sync(0);
    w.sync(1);
    w.write_old(
        0,
        "a.txt",
        b"v2 from the laptop
",
    );
    assert!(w.sync(0).published.is_some());
    // The workspace's step cannot track its (unchanged) a.txt: it looks like it is being
    // written. Afterwards it is just as it was.
    let here = w.folders[1].join("a.txt");
    let mtime = std::fs::metadata(&here).unwrap().modified().unwrap();
    let f = std::fs::File::options().write(true).open(&here).unwrap();
    f.set_modified(SystemTime::now()).unwrap();
    let r = w.step(
        1,
        &StepOptions {
            defer_recent: Some(SETTLE),
            ..Default::default()
        },
    );
    assert_eq!(r.deferred, vec![b"a.txt".to_vec()]);
    assert_eq!(
        std::fs::read(&here).unwrap(),
        b"v1\n",
        "never replaced while untracked"
    );
    f.set_modified(mtime).unwrap();
    drop(f);
    w.sync(1);
    assert_eq!(
        std::fs::read(&here).unwrap(),
        b"v2 from the laptop\n",
        "the laptop's version never arrived: the workspace recorded it as seen while its \
         folder kept the old file"
    );
}

/// B12: the shared state removes a directory; while the workspace's step applies that, a file
/// appears in it (and the removal fails: not empty); then the file goes again. The next steps
/// must remove the directory, not keep it as "held by files that do not sync".
#[test]
fn a_directory_kept_because_a_file_appeared_in_it_is_removed_once_the_file_is_gone() {
    let w = Pair::new(Policy::UserPrompt);
    w.write_old(0, "d/a.txt", b"a\n");
    w.write_old(0, "d/sub/b.txt", b"b\n");
    w.sync(0);
    w.sync(1);
    std::fs::remove_dir_all(w.folders[0].join("d")).unwrap();
    w.write_old(0, "new.txt", b"new, to download\n");
    assert!(w.sync(0).published.is_some());

    // The workspace's step: the first data read (the download of new.txt, after the scan)
    // puts a file into d/sub.
    let holder = w.folders[1].join("d/sub/made-meanwhile.txt");
    let h = holder.clone();
    let armed = std::sync::Mutex::new(true);
    let hooked: DynBackend =
        std::sync::Arc::new(lib_fixtures::Tapped::new(w.backend.clone(), move |call| {
            let pack = matches!(
                call,
                lib_fixtures::Call::Read(Kind::Pack, _)
                    | lib_fixtures::Call::ReadRange {
                        kind: Kind::Pack,
                        ..
                    }
            );
            let mut armed = armed.lock().unwrap();
            if pack && *armed && h.parent().unwrap().is_dir() {
                *armed = false;
                std::fs::write(&h, b"made while the step ran\n").unwrap();
            }
        }));
    let first = w.step_on(1, hooked, &StepOptions::default());
    assert!(holder.exists(), "the hook ran: {first:?}");
    assert_eq!(
        std::fs::read(w.folders[1].join("new.txt")).unwrap(),
        b"new, to download\n"
    );
    // The file goes again before the next step (moved elsewhere, say); the watcher names it.
    std::fs::remove_file(&holder).unwrap();
    let mut prev = first;
    for _ in 0..2 {
        prev = w.step(
            1,
            &next_daemon_step(&prev, &[b"d/sub/made-meanwhile.txt", b"d/sub", b"d"]),
        );
    }
    assert!(
        !w.folders[1].join("d").exists(),
        "d stayed at the workspace although the shared state removed it and nothing holds it: {prev:?}"
    );
}

/// Seed 4603: a file of a directory that the step keeps as a conflict copy is rewritten between
/// the scan and the rename; the copy is published with the scanned version, and the watcher
/// names the write at the old path. The next steps must look at the copy's files again.
#[test]
fn a_file_written_while_its_directory_becomes_a_conflict_copy_is_published() {
    let w = Pair::new(Policy::KeepBoth);
    w.write_old(0, "d/p.txt", b"p v1\n");
    w.write_old(0, "d/q/x.txt", b"x v1\n");
    w.sync(0);
    w.sync(1);
    std::fs::remove_dir_all(w.folders[0].join("d")).unwrap();
    w.write_old(0, "d", b"d is a file now\n");
    assert!(w.sync(0).published.is_some());
    w.write_old(1, "d/p.txt", b"p v2 from the workspace\n");
    // The write lands during the step's apply (first data read: the download of the file d).
    let target = w.folders[1].join("d/q/x.txt");
    let t = target.clone();
    let armed = std::sync::Mutex::new(true);
    let hooked: DynBackend =
        std::sync::Arc::new(lib_fixtures::Tapped::new(w.backend.clone(), move |call| {
            let pack = matches!(
                call,
                lib_fixtures::Call::Read(Kind::Pack, _)
                    | lib_fixtures::Call::ReadRange {
                        kind: Kind::Pack,
                        ..
                    }
            );
            let mut armed = armed.lock().unwrap();
            if pack && *armed && t.is_file() {
                *armed = false;
                std::fs::write(&t, b"x v3, written during the step\n").unwrap();
            }
        }));
    let first = w.step_on(1, hooked, &StepOptions::default());
    let copy = conflict_copy_of(&w.folders[1], "d");
    assert_eq!(
        std::fs::read(w.folders[1].join(&copy).join("q/x.txt")).unwrap(),
        b"x v3, written during the step\n",
        "the hook ran before the rename: {first:?}"
    );
    let mut prev = first;
    for _ in 0..2 {
        prev = w.step(
            1,
            &next_daemon_step(&prev, &[b"d/q/x.txt", b"d", copy.as_bytes()]),
        );
    }
    w.sync(0);
    assert_eq!(
        std::fs::read(w.folders[0].join(&copy).join("q/x.txt"))
            .ok()
            .as_deref(),
        Some(&b"x v3, written during the step\n"[..]),
        "{copy}/q/x.txt: the workspace's last version never published"
    );
}

/// B5 (seed 7002, `keep_both`): a burst's writer was descheduled between creating a file and
/// writing it, for longer than the settle window; the daemon's step took the empty file and
/// published it. An empty file just created or truncated waits longer than one with content
/// (`EMPTY_SETTLE` in the spec) before a daemon's step takes it; a plain `sync` takes it at once.
#[test]
fn a_daemon_step_leaves_a_file_that_was_just_emptied_for_later() {
    let w = Pair::new(Policy::KeepBoth);
    w.write_old(0, "kept.txt", b"kept\n");
    w.sync(0);

    // Created empty and written 50 ms later: past a 1 ms settle window, not past the empty one.
    lib_fixtures::write(&w.folders[0].join("new.txt"), b"");
    lib_fixtures::write(&w.folders[0].join("full.txt"), b"content\n");
    std::thread::sleep(Duration::from_millis(50));
    let first = w.step(
        0,
        &next_daemon_step(&StepReport::default(), &[b"new.txt", b"full.txt"]),
    );
    assert_eq!(first.deferred, vec![b"new.txt".to_vec()], "{first:?}");
    w.sync(1);
    assert!(
        !w.folders[1].join("new.txt").exists(),
        "the empty state was published"
    );
    assert_eq!(
        std::fs::read(w.folders[1].join("full.txt")).unwrap(),
        b"content\n",
        "a file with content waits for the settle window only"
    );

    // The writer comes back: the content is what the next step takes.
    lib_fixtures::write(&w.folders[0].join("new.txt"), b"new content\n");
    std::thread::sleep(Duration::from_millis(50));
    let second = w.step(0, &next_daemon_step(&first, &[]));
    assert!(second.deferred.is_empty(), "{second:?}");
    w.sync(1);
    assert_eq!(
        std::fs::read(w.folders[1].join("new.txt")).unwrap(),
        b"new content\n"
    );

    // A file meant to be empty is taken once it has held still long enough, and a plain `sync`
    // (no settle window) takes it at once.
    lib_fixtures::write(&w.folders[0].join("empty-for-good.txt"), b"");
    lib_fixtures::write(&w.folders[0].join("__init__.py"), b"");
    set_old(&w.folders[0].join("empty-for-good.txt"));
    let third = w.step(
        0,
        &next_daemon_step(&second, &[b"empty-for-good.txt", b"__init__.py"]),
    );
    assert_eq!(third.deferred, vec![b"__init__.py".to_vec()], "{third:?}");
    let plain = w.sync(0);
    assert!(plain.deferred.is_empty(), "{plain:?}");
    w.sync(1);
    for name in ["empty-for-good.txt", "__init__.py"] {
        assert_eq!(std::fs::read(w.folders[1].join(name)).unwrap(), b"");
    }
}
