//! Warming the kernel's inode and directory caches ahead of the scan.
//!
//! Owns: a few threads that list and `lstat` a tree in parallel, in inode order within each
//! directory, and throw the answers away. Must not touch: anything the scan decides; the scan
//! stays single-threaded and ordered, and is correct with or without this running.
//!
//! Why: on a cold cache a scan that finds nothing to read (a no-change backup) waits on one
//! metadata read at a time. Several outstanding requests let the disk answer them together, and
//! inode order turns scattered inode-table reads into nearly sequential ones. Started before the
//! key is derived and the index loaded, it also overlaps with those.

use std::fs;
use std::os::unix::fs::DirEntryExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Directories waiting to be listed (a stack: depth-first, near the order the scan walks in) and
/// how many are listed or being listed.
struct Work {
    stack: Mutex<(Vec<PathBuf>, usize)>,
    ready: Condvar,
    stop: AtomicBool,
    stats: AtomicUsize,
}

/// Running prefetch threads; dropping it stops them.
pub struct Prefetch {
    work: Arc<Work>,
    threads: Vec<JoinHandle<()>>,
}

impl Prefetch {
    /// Starts `threads` threads (none: a no-op) over the trees at `roots` (files among them are
    /// just stat'ed).
    pub fn start(roots: &[PathBuf], threads: usize) -> Prefetch {
        let work = Arc::new(Work {
            stack: Mutex::new((roots.iter().rev().cloned().collect(), 0)),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            stats: AtomicUsize::new(0),
        });
        let threads = (0..threads)
            .filter_map(|i| {
                let w = work.clone();
                std::thread::Builder::new()
                    .name(format!("prefetch-{i}"))
                    .spawn(move || worker(&w))
                    .ok()
            })
            .collect();
        Prefetch { work, threads }
    }

    /// Waits until the whole tree has been visited; returns how many entries were stat'ed.
    pub fn wait(mut self) -> usize {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.work.stats.load(Ordering::Relaxed)
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.work.stop.store(true, Ordering::Relaxed);
        self.work.ready.notify_all();
        // Not joined: a thread blocked in a slow stat finishes it and then sees `stop`.
    }
}

fn worker(w: &Work) {
    loop {
        let dir = {
            let mut g = w.stack.lock().expect("prefetch lock");
            loop {
                if w.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(d) = g.0.pop() {
                    g.1 += 1;
                    break d;
                }
                if g.1 == 0 {
                    // Nothing queued and nobody listing: the tree is done.
                    w.ready.notify_all();
                    return;
                }
                g = w.ready.wait(g).expect("prefetch lock");
            }
        };
        let subdirs = visit(w, dir);
        let mut g = w.stack.lock().expect("prefetch lock");
        // Reversed so that the first subdirectory in name order is listed next.
        g.0.extend(subdirs.into_iter().rev());
        g.1 -= 1;
        w.ready.notify_all();
    }
}

/// Lists one directory and stats its entries in inode order; returns its subdirectories.
fn visit(w: &Work, dir: PathBuf) -> Vec<PathBuf> {
    let Ok(md) = fs::symlink_metadata(&dir) else {
        return Vec::new();
    };
    w.stats.fetch_add(1, Ordering::Relaxed);
    if !md.is_dir() {
        return Vec::new();
    }
    let Ok(rd) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut entries: Vec<(u64, fs::DirEntry)> = rd.flatten().map(|e| (e.ino(), e)).collect();
    entries.sort_unstable_by_key(|(ino, _)| *ino);
    let mut subdirs = Vec::new();
    for (_, e) in entries {
        if w.stop.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let path = e.path();
        match fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => subdirs.push(path),
            Ok(_) => {
                w.stats.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
    subdirs.sort();
    subdirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_every_entry_once() {
        let t = tempfile::tempdir().unwrap();
        let mut expected = 1; // the root
        for d in 0..5 {
            let dir = t.path().join(format!("d{d}")).join("inner");
            fs::create_dir_all(&dir).unwrap();
            expected += 2;
            for f in 0..7 {
                fs::write(dir.join(format!("f{f}")), b"x").unwrap();
                expected += 1;
            }
        }
        std::os::unix::fs::symlink("d0", t.path().join("link")).unwrap();
        expected += 1;
        let p = Prefetch::start(&[t.path().to_path_buf()], 4);
        assert_eq!(p.wait(), expected);
    }

    #[test]
    fn a_missing_root_is_not_an_error() {
        let p = Prefetch::start(&[PathBuf::from("/nonexistent/prism-prefetch")], 2);
        assert_eq!(p.wait(), 0);
    }
}
