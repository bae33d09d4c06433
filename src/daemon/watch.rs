//! Watching a folder: inotify (recursive, through `notify`) events become dirty paths for the
//! worker. Events are hints only — the step decides what changed — so their kinds barely matter:
//! opens and plain reads are dropped, everything else marks its paths. A queue overflow asks for
//! a full rescan. If the tree cannot be watched (the inotify watch limit), there is no watcher
//! and the worker falls back to periodic full rescans, which `status` reports. Symlinks are
//! never followed.
//! [`start_heads`] watches a local repository's heads the same way, and [`start_remote_heads`]
//! a remote one's through a listing the server holds until the heads change.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use super::worker::Msg;

pub fn start(root: &Path, tx: Sender<Msg>) -> (Option<RecommendedWatcher>, String) {
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            if ev.need_rescan() {
                let _ = tx.send(Msg::Rescan);
                return;
            }
            match ev.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
                EventKind::Access(_) => return,
                _ => {}
            }
            if !ev.paths.is_empty() {
                let _ = tx.send(Msg::Fs(ev.paths));
            }
        }
        Err(_) => {
            let _ = tx.send(Msg::Rescan);
        }
    };
    // Symlinks are synced as links, never followed: a watch added through a symlink to a
    // directory of the folder would take over that directory's watch under the link's name
    // (events then name the link, and the change is never looked at), and one to a directory
    // outside the folder would watch what is not synced.
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut w = match RecommendedWatcher::new(handler, config) {
        Ok(w) => w,
        Err(e) => {
            return (
                None,
                format!("degraded: cannot watch ({e}); rescanning periodically"),
            );
        }
    };
    match w.watch(root, RecursiveMode::Recursive) {
        Ok(()) => (Some(w), crate::sys::WATCH_BACKEND.into()),
        Err(e) => {
            let why = match e.kind {
                notify::ErrorKind::MaxFilesWatch => match crate::sys::watch_limit_hint() {
                    Some(hint) => format!(
                        "the {} watch limit is reached ({hint})",
                        crate::sys::WATCH_BACKEND
                    ),
                    None => format!("the {} watch limit is reached", crate::sys::WATCH_BACKEND),
                },
                _ => e.to_string(),
            };
            (None, format!("degraded: {why}; rescanning periodically"))
        }
    }
}

/// For a repository on a local directory: watch its `heads/` so another endpoint's publish
/// wakes the worker at once (inotify sees only this machine's writes, so on NFS/EFS the head
/// poll remains the guarantee).
pub fn start_heads(repo_dir: &Path, tx: Sender<Msg>) -> Option<RecommendedWatcher> {
    let heads = repo_dir.join("heads");
    if !heads.is_dir() {
        return None;
    }
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, EventKind::Access(_))
        {
            let _ = tx.send(Msg::Heads);
        }
    })
    .ok()?;
    w.watch(&heads, RecursiveMode::NonRecursive).ok()?;
    Some(w)
}

/// How long one waiting listing of a remote repository's heads is held by the server.
const REMOTE_WAIT: Duration = Duration::from_secs(25);
/// Pause after a failed waiting listing (the worker's own poll reports unreachability).
const REMOTE_RETRY: Duration = Duration::from_secs(5);

/// A thread holding a waiting listing of a remote repository's heads open; see
/// [`start_remote_heads`].
pub struct RemoteHeads {
    active: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl RemoteHeads {
    /// True while the server answers waiting listings: a change wakes the worker at once, so
    /// its own head poll is only a safety net.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}

impl Drop for RemoteHeads {
    fn drop(&mut self) {
        // The thread ends after its current wait (or at once if the worker is gone).
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// For a remote repository whose server can hold a listing (`prism-sync serve`): another
/// endpoint's publish wakes the worker within a round trip, and an idle daemon costs one request
/// per [`REMOTE_WAIT`] instead of one per poll. `None` when the URL does not open; a server that
/// cannot wait ends the thread, and the worker keeps polling.
pub fn start_remote_heads(url: &str, tx: Sender<Msg>) -> Option<RemoteHeads> {
    let backend = crate::repository::open_backend(url).ok()?;
    let active = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, st) = (active.clone(), stop.clone());
    std::thread::Builder::new()
        .name("remote heads".into())
        .spawn(move || {
            let mut known: Option<String> = None;
            while !st.load(Ordering::Relaxed) {
                let tag = known.as_deref().unwrap_or("");
                match backend.watch_list(crate::backend::Kind::Head, tag, REMOTE_WAIT) {
                    None => break,
                    Some(Ok(Some(listing))) => {
                        a.store(true, Ordering::Relaxed);
                        if known.is_some() && tx.send(Msg::Heads).is_err() {
                            break;
                        }
                        known = Some(listing.tag);
                    }
                    Some(Ok(None)) => a.store(true, Ordering::Relaxed),
                    Some(Err(_)) => {
                        a.store(false, Ordering::Relaxed);
                        std::thread::sleep(REMOTE_RETRY);
                    }
                }
            }
            a.store(false, Ordering::Relaxed);
        })
        .ok()?;
    Some(RemoteHeads { active, stop })
}
