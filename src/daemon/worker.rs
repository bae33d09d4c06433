//! One worker thread per sync set: collects dirty paths, polls the head, schedules steps.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use serde::Serialize;
use serde_json::json;

use super::Settings;
use super::control::Response;
use crate::endpoint::config::SetConfig;
use crate::endpoint::{Endpoint, StepOptions, step};
use crate::error::{Error, Result};
use crate::repository::heads::head_names;
use crate::repository::{Credentials, Repository, now_ns};
use crate::time::format_rfc3339;

pub enum Msg {
    Fs(Vec<PathBuf>),
    Rescan,
    /// A head changed in a local repository: check now.
    Heads,
    Pause,
    Resume,
    Flush(Sender<Response>, Instant),
    Stop,
}

/// What the worker is doing, for `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveStatus {
    pub set: String,
    /// `starting`, `idle`, `syncing`, `paused`, `halted`, `unreachable`, `error`.
    pub state: String,
    /// `inotify`, or `degraded: …` when the folder cannot be watched.
    pub watching: String,
    pub paused: bool,
    /// Paths changed locally and not synced yet.
    pub pending_paths: usize,
    pub steps: u64,
    pub last_step: Option<String>,
    pub last_step_ms: Option<u64>,
    pub last_change: Option<String>,
    pub last_error: Option<String>,
    pub unreachable_since: Option<String>,
    pub next_check_ms: u64,
    pub halt: Option<String>,
}

pub struct Handle {
    tx: Sender<Msg>,
    live: Arc<Mutex<LiveStatus>>,
    join: Option<JoinHandle<()>>,
}

impl Handle {
    pub fn send(&self, m: Msg) {
        let _ = self.tx.send(m);
    }
    pub fn sender(&self) -> Sender<Msg> {
        self.tx.clone()
    }
    pub fn live(&self) -> LiveStatus {
        self.live.lock().expect("live status").clone()
    }
    pub fn stop(mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

pub fn spawn(home: &Path, set: &str, settings: Settings, creds: Credentials) -> Result<Handle> {
    let (tx, rx) = unbounded();
    let live = Arc::new(Mutex::new(LiveStatus {
        set: set.to_string(),
        state: "starting".into(),
        ..Default::default()
    }));
    let w = Worker {
        home: home.to_path_buf(),
        set: set.to_string(),
        settings,
        creds,
        tx: tx.clone(),
        rx,
        live: live.clone(),
    };
    let join = std::thread::Builder::new()
        .name(format!("sync {set}"))
        .spawn(move || w.run())
        .map_err(|e| Error::invalid(format!("cannot start a worker thread: {e}")))?;
    Ok(Handle {
        tx,
        live,
        join: Some(join),
    })
}

/// Asks a worker to flush and waits for its answer.
pub fn flush(tx: &Sender<Msg>, timeout: Duration) -> Response {
    let (rtx, rrx) = bounded(1);
    if tx.send(Msg::Flush(rtx, Instant::now() + timeout)).is_err() {
        return Response::err("the set's worker has stopped");
    }
    match rrx.recv_timeout(timeout + Duration::from_secs(5)) {
        Ok(r) => r,
        Err(_) => Response::err(format!(
            "flush did not finish within {} s",
            timeout.as_secs()
        )),
    }
}

struct Worker {
    home: PathBuf,
    set: String,
    settings: Settings,
    creds: Credentials,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    live: Arc<Mutex<LiveStatus>>,
}

/// The head poll while the server wakes the worker on every change (see
/// `watch::start_remote_heads`).
const WATCHED_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// Repeated flush rounds before giving up on reaching a quiet state.
const FLUSH_ROUNDS_MAX: u32 = 20;

impl Worker {
    fn update(&self, f: impl FnOnce(&mut LiveStatus)) {
        f(&mut self.live.lock().expect("live status"));
    }

    fn run(self) {
        // The set's files may briefly be missing (a daemon started with a set whose config was
        // just written): retry until it opens or we are told to stop.
        let ep = loop {
            match Endpoint::open(&self.home, &self.set) {
                Ok(ep) => break ep,
                Err(e) => {
                    self.update(|l| {
                        l.state = "error".into();
                        l.last_error = Some(e.to_string());
                    });
                    if matches!(self.rx.recv_timeout(Duration::from_secs(2)), Ok(Msg::Stop)) {
                        return;
                    }
                }
            }
        };
        let mut ep = ep;
        let root = ep.cfg.local_path.clone();
        let (watcher, mode) = super::watch::start(&root, self.tx.clone());
        let local_repo = crate::backend::local_dir(&ep.cfg.repo);
        let remote_heads = match &local_repo {
            Some(_) => None,
            None => super::watch::start_remote_heads(&ep.cfg.repo, self.tx.clone()),
        };
        let heads_watcher = local_repo.and_then(|d| super::watch::start_heads(&d, self.tx.clone()));
        let degraded = watcher.is_none();
        let s = &self.settings;
        let rescan_every = if degraded {
            s.degraded_rescan
        } else {
            s.full_rescan
        };
        let mut paused = ep.state.meta().map(|m| m.paused).unwrap_or(false);
        self.update(|l| {
            l.watching = mode;
            l.paused = paused;
            l.state = if paused {
                "paused".into()
            } else {
                "idle".into()
            };
        });
        let mut repo: Option<Repository> = None;
        let mut dirty: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut full = true; // the first step after a start scans everything
        let mut first_at: Option<Instant> = None;
        let mut last_at = Instant::now();
        let mut next_poll = Instant::now();
        let mut backoff = s.poll_interval;
        let mut next_full = Instant::now() + rescan_every;
        let mut flushes: Vec<(Sender<Response>, Instant)> = Vec::new();
        let mut flush_rounds = 0u32;
        let mut unreachable_since: Option<i64> = None;
        loop {
            let now = Instant::now();
            let mut wake = next_poll.min(next_full);
            if let Some(f) = first_at {
                wake = wake.min((f + s.settle_cap).min(last_at + s.settle));
            }
            if !paused && (full || !flushes.is_empty()) && repo.is_some() {
                wake = now;
            }
            match self.rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Msg::Fs(paths)) => {
                    for p in paths {
                        match p.strip_prefix(&root) {
                            Ok(rel) if rel.as_os_str().is_empty() => full = true,
                            Ok(rel) => {
                                dirty.insert(rel.as_os_str().as_bytes().to_vec());
                            }
                            Err(_) => full = true, // the folder itself moved
                        }
                    }
                    let t = Instant::now();
                    first_at.get_or_insert(t);
                    last_at = t;
                    self.update(|l| l.pending_paths = dirty.len());
                    continue;
                }
                Ok(Msg::Rescan) => {
                    full = true;
                    continue;
                }
                Ok(Msg::Heads) => {
                    next_poll = Instant::now();
                    continue;
                }
                Ok(Msg::Pause) => {
                    paused = true;
                    let _ = ep.state.update_meta(|m| m.paused = true);
                    self.update(|l| {
                        l.paused = true;
                        l.state = "paused".into();
                    });
                    for (tx, _) in flushes.drain(..) {
                        let _ = tx.send(Response::err(format!(
                            "{} was paused: resume it first",
                            self.set
                        )));
                    }
                    continue;
                }
                Ok(Msg::Resume) => {
                    paused = false;
                    full = true; // catch up with everything that happened meanwhile
                    let _ = ep.state.update_meta(|m| m.paused = false);
                    self.update(|l| {
                        l.paused = false;
                        l.state = "idle".into();
                    });
                    continue;
                }
                Ok(Msg::Flush(tx, deadline)) => {
                    if paused {
                        let _ = tx.send(Response::err(format!(
                            "{} is paused: resume it first (prism-sync resume {})",
                            self.set, self.set
                        )));
                    } else {
                        flushes.push((tx, deadline));
                        full = true;
                        flush_rounds = 0;
                    }
                    continue;
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            flushes.retain(|(tx, deadline)| {
                if now < *deadline {
                    return true;
                }
                let _ = tx.send(Response::err(
                    "flush timed out: the set did not reach a quiet state in time",
                ));
                false
            });
            if paused {
                next_poll = now + s.poll_interval;
                next_full = next_full.max(now + s.poll_interval);
                continue;
            }

            // Remote: the cheap head check; the repository handle is (re)opened here too.
            let mut remote_due = false;
            if now >= next_poll || repo.is_none() {
                let checked = match &repo {
                    Some(r) => head_names(r, &self.set),
                    None => Repository::open_url(&ep.cfg.repo, &self.creds).and_then(|r| {
                        let r = r.with_cache(&crate::repository::cache::cache_root(&self.home));
                        r.backend().set_bandwidth(ep.cfg.bandwidth());
                        let names = head_names(&r, &self.set);
                        repo = Some(r);
                        names
                    }),
                };
                match checked {
                    Ok(names) => {
                        backoff = s.poll_interval;
                        // A server that wakes us on a change leaves polling as a safety net.
                        next_poll = now
                            + match &remote_heads {
                                Some(w) if w.active() => s.poll_interval.max(WATCHED_POLL_INTERVAL),
                                _ => s.poll_interval,
                            };
                        if unreachable_since.take().is_some() {
                            full = true;
                        }
                        let seen = ep.state.meta().map(|m| m.heads).unwrap_or_default();
                        remote_due = names != seen;
                        self.update(|l| {
                            l.unreachable_since = None;
                            l.next_check_ms = s.poll_interval.as_millis() as u64;
                            if l.state == "unreachable" {
                                l.state = "idle".into();
                                l.last_error = None;
                            }
                        });
                    }
                    Err(e) => {
                        repo = None;
                        backoff = (backoff * 2).min(s.backoff_max);
                        next_poll = now + backoff;
                        let since = *unreachable_since.get_or_insert(now_ns());
                        self.update(|l| {
                            l.state = "unreachable".into();
                            l.last_error = Some(e.to_string());
                            l.unreachable_since = Some(format_rfc3339(since));
                            l.next_check_ms = backoff.as_millis() as u64;
                        });
                        continue;
                    }
                }
            }
            let Some(r) = repo.as_ref() else { continue };
            let settle_due =
                first_at.is_some_and(|f| now >= f + s.settle_cap || now >= last_at + s.settle);
            let full_due = full || now >= next_full;
            if !(settle_due || full_due || remote_due || !flushes.is_empty()) {
                continue;
            }

            // A step: event-driven (dirty paths only) unless a full scan is due.
            let step_dirty = if full_due {
                dirty.clear();
                None
            } else {
                Some(std::mem::take(&mut dirty))
            };
            first_at = None;
            if let Ok(cfg) = SetConfig::load(&super::sync_dir(&self.home), &self.set) {
                ep.cfg = cfg; // edits to the set's config take effect
                r.backend().set_bandwidth(ep.cfg.bandwidth());
            }
            self.update(|l| {
                l.state = "syncing".into();
                l.pending_paths = 0;
            });
            let started = Instant::now();
            let opts = StepOptions {
                dirty: step_dirty.clone(),
                defer_recent: Some(s.settle),
                ..Default::default()
            };
            match step(&ep, r, &opts) {
                Ok(report) => {
                    full = false;
                    if full_due {
                        next_full = now + rescan_every;
                    }
                    for d in &report.deferred {
                        dirty.insert(d.clone());
                    }
                    if !report.deferred.is_empty() {
                        first_at = Some(Instant::now());
                        last_at = Instant::now();
                    }
                    let halt = report.halted.clone();
                    let changed = report.changed();
                    self.update(|l| {
                        l.steps += 1;
                        l.last_step = Some(format_rfc3339(now_ns()));
                        l.last_step_ms = Some(started.elapsed().as_millis() as u64);
                        if changed {
                            l.last_change = l.last_step.clone();
                        }
                        l.halt = halt.clone();
                        l.state = if halt.is_some() {
                            "halted".into()
                        } else {
                            "idle".into()
                        };
                        l.last_error = None;
                        l.pending_paths = dirty.len();
                    });
                    if !flushes.is_empty() {
                        if changed {
                            flush_rounds += 1;
                        }
                        if let Some(h) = &halt {
                            for (tx, _) in flushes.drain(..) {
                                let _ =
                                    tx.send(Response::err(format!("{} is halted: {h}", self.set)));
                            }
                        } else if !changed && report.deferred.is_empty() {
                            for (tx, _) in flushes.drain(..) {
                                let _ = tx.send(Response::ok(
                                    json!({"set": self.set, "rounds": flush_rounds}),
                                ));
                            }
                        } else if flush_rounds >= FLUSH_ROUNDS_MAX {
                            for (tx, _) in flushes.drain(..) {
                                let _ = tx.send(Response::err(
                                    "flush gave up: the folder keeps changing",
                                ));
                            }
                        } else if changed {
                            full = true; // another round until nothing moves
                        }
                        // Deferred files (still being written) come back through `dirty` once
                        // they settle; the flush waits for that round.
                    }
                    if halt.is_some() {
                        // Do not spin on a halted set: wait for the next change or check.
                        next_poll = Instant::now() + s.poll_interval.max(Duration::from_secs(1));
                    }
                }
                Err(e) => {
                    // Keep the work for the next try; a failing repository is reopened.
                    if let Some(d) = step_dirty {
                        dirty.extend(d);
                    }
                    full = full || full_due;
                    repo = None;
                    backoff = (backoff * 2).min(s.backoff_max);
                    next_poll = Instant::now() + backoff;
                    let msg = e.to_string();
                    let _ = ep.state.update_meta(|m| m.last_error = Some(msg.clone()));
                    self.update(|l| {
                        l.state = "error".into();
                        l.last_error = Some(msg);
                        l.next_check_ms = backoff.as_millis() as u64;
                    });
                }
            }
        }
        drop(watcher);
        drop(heads_watcher);
        drop(remote_heads);
        for (tx, _) in flushes {
            let _ = tx.send(Response::err("the set was stopped"));
        }
    }
}
