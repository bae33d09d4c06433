//! One worker thread per sync set: a scheduler that collects the watcher's dirty paths, checks
//! the set's heads and decides when a step runs. What it is doing is an explicit
//! [`WorkerState`]; what is due is in [`Schedule`].
//!
//! A step is due when local changes settled, a full rescan is due, a flush waits, the last step
//! left something to retry (failed actions, files still being written), or the heads listed
//! differ from the heads the last step merged (`Meta::heads`: the step records only those, so a
//! head published by another endpoint during a step is still new afterwards). Right after each
//! step the heads are checked again, so concurrent publishes converge at once, not at the next
//! poll. When the set has been idle for a while (no step for `Intervals::idle`) and their time
//! has come, retention and prune run on a thread of their own ([`crate::endpoint::maintain`];
//! `LiveStatus::maintaining`): steps go on meanwhile, as they would beside another endpoint's
//! prune.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Settings;
use super::control::Response;
use crate::endpoint::config::SetConfig;
use crate::endpoint::maintain::{self, Intervals};
use crate::endpoint::{Endpoint, StepOptions, StepReport, step};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::repository::heads::head_names;
use crate::repository::{Credentials, Repository, now_ns};
use crate::time::format_rfc3339;

/// Maintenance is looked at no more often than this (it reads the set's state).
const MAINTENANCE_CHECK_MIN: Duration = Duration::from_secs(1);

pub enum Msg {
    Fs(Vec<PathBuf>),
    Rescan,
    /// A head changed in a local repository: check now.
    Heads,
    /// Stop stepping; the sender (if any) hears back once the worker is paused (after a step
    /// in progress).
    Pause(Option<Sender<()>>),
    Resume,
    Flush(Sender<Response>, Instant),
    Stop,
}

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Opening the set (its files may briefly be missing).
    #[default]
    Starting,
    /// Waiting for a change, a check or a timer.
    Idle,
    /// A step runs.
    Syncing,
    /// `pause`d: nothing is applied or published until `resume`.
    Paused,
    /// A guard stopped the last step; it is retried on the next change.
    Halted,
    /// The repository cannot be reached; checks back off.
    Unreachable,
    /// The last step failed; it is retried with backoff.
    Error,
}

/// What the worker is doing, for `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveStatus {
    pub set: String,
    pub state: WorkerState,
    /// `inotify`, or `degraded: …` when the folder cannot be watched.
    pub watching: String,
    pub paused: bool,
    /// Paths changed locally and not synced yet.
    pub pending_paths: usize,
    /// The last check listed heads the last step did not merge: a step is due.
    pub remote_pending: bool,
    /// The last step left something to retry (failed actions, files being written).
    pub retry_pending: bool,
    pub steps: u64,
    pub last_step: Option<String>,
    pub last_step_ms: Option<u64>,
    pub last_change: Option<String>,
    pub last_error: Option<String>,
    pub unreachable_since: Option<String>,
    pub next_check_ms: u64,
    pub halt: Option<String>,
    /// Retention, prune or compaction of the set's repository runs (beside the steps).
    pub maintaining: bool,
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

/// The head poll while the server wakes the worker on every change (see
/// `watch::start_remote_heads`).
const WATCHED_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// Repeated flush rounds before giving up on reaching a quiet state.
const FLUSH_ROUNDS_MAX: u32 = 20;
/// First wait before retrying a step that left something undone; doubles up to the backoff
/// maximum.
const RETRY_FIRST: Duration = Duration::from_millis(500);

/// Everything that decides when the next step runs.
struct Schedule {
    /// Local paths changed since the last step (the watcher's hints).
    dirty: BTreeSet<Vec<u8>>,
    /// The next step scans everything.
    full: bool,
    /// First and last event of the burst being settled.
    burst: Option<(Instant, Instant)>,
    next_poll: Instant,
    /// Poll interval while the repository is unreachable (doubles up to the maximum).
    backoff: Duration,
    next_full: Instant,
    rescan_every: Duration,
    /// The last check listed heads that the last step did not merge.
    remote_due: bool,
    /// The last step left work to retry; when.
    retry_at: Option<Instant>,
    retry_wait: Duration,
    /// Heads listed when the set halted: a halted set steps again only when they (or the
    /// folder) change.
    halted_heads: Option<Vec<String>>,
    unreachable_since: Option<i64>,
    flushes: Vec<(Sender<Response>, Instant)>,
    flush_rounds: u32,
}

impl Schedule {
    fn new(s: &Settings, rescan_every: Duration) -> Schedule {
        let now = Instant::now();
        Schedule {
            dirty: BTreeSet::new(),
            full: true, // the first step after a start scans everything
            burst: None,
            next_poll: now,
            backoff: s.poll_interval,
            next_full: now + rescan_every,
            rescan_every,
            remote_due: false,
            retry_at: None,
            retry_wait: RETRY_FIRST,
            halted_heads: None,
            unreachable_since: None,
            flushes: Vec::new(),
            flush_rounds: 0,
        }
    }

    /// How long to sleep before anything can be due.
    fn wake_in(&self, s: &Settings, paused: bool, connected: bool) -> Duration {
        let now = Instant::now();
        let mut wake = self.next_poll.min(self.next_full);
        if let Some((first, last)) = self.burst {
            wake = wake.min((first + s.settle_cap).min(last + s.settle));
        }
        if let Some(r) = self.retry_at.filter(|_| self.halted_heads.is_none()) {
            wake = wake.min(r);
        }
        if !paused && connected && self.due(s, now).is_some() {
            wake = now;
        }
        wake.saturating_duration_since(now)
    }

    /// Notes changed paths. Changes only in `real_time: false` categories (`later`) wait for
    /// the next step that runs anyway (another change, a new head, the periodic rescan).
    fn note_paths(&mut self, root: &Path, paths: Vec<PathBuf>, later: &dyn Fn(&[u8]) -> bool) {
        let mut now_due = false;
        for p in paths {
            match p.strip_prefix(root) {
                Ok(rel) if rel.as_os_str().is_empty() => (self.full, now_due) = (true, true),
                Ok(rel) => {
                    let rel = rel.as_os_str().as_bytes();
                    now_due |= !later(rel);
                    self.dirty.insert(rel.to_vec());
                }
                Err(_) => (self.full, now_due) = (true, true), // the folder itself moved
            }
        }
        if !now_due {
            return;
        }
        let t = Instant::now();
        self.burst = Some((self.burst.map_or(t, |(f, _)| f), t));
    }

    /// Is a step due now, and is it a full scan? A halted set steps again only for a local
    /// change, a flush, the periodic rescan, or new heads (which clear `halted_heads`).
    fn due(&self, s: &Settings, now: Instant) -> Option<bool> {
        let settled = self
            .burst
            .is_some_and(|(first, last)| now >= first + s.settle_cap || now >= last + s.settle);
        let rescan = now >= self.next_full;
        let flush = !self.flushes.is_empty();
        let due = if self.halted_heads.is_some() {
            settled || rescan || flush
        } else {
            let retry = self.retry_at.is_some_and(|r| now >= r);
            settled || rescan || flush || retry || self.full || self.remote_due
        };
        due.then_some(self.full || rescan)
    }

    fn expire_flushes(&mut self) {
        let now = Instant::now();
        self.flushes.retain(|(tx, deadline)| {
            if now < *deadline {
                return true;
            }
            let _ = tx.send(Response::err(
                "flush timed out: the set did not reach a quiet state in time",
            ));
            false
        });
    }

    fn answer_flushes(&mut self, r: impl Fn() -> Response) {
        for (tx, _) in self.flushes.drain(..) {
            let _ = tx.send(r());
        }
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

/// Whether the worker goes on after a message.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl Worker {
    fn update(&self, f: impl FnOnce(&mut LiveStatus)) {
        f(&mut self.live.lock().expect("live status"));
    }

    /// The set's files may briefly be missing (a daemon started with a set whose config was
    /// just written): retry until it opens or we are told to stop.
    fn open_endpoint(&self) -> Option<Endpoint> {
        loop {
            match Endpoint::open(&self.home, &self.set) {
                Ok(ep) => return Some(ep),
                Err(e) => {
                    self.update(|l| {
                        l.state = WorkerState::Error;
                        l.last_error = Some(e.to_string());
                    });
                    if matches!(self.rx.recv_timeout(Duration::from_secs(2)), Ok(Msg::Stop)) {
                        return None;
                    }
                }
            }
        }
    }

    fn run(self) {
        let Some(mut ep) = self.open_endpoint() else {
            return;
        };
        let root = ep.cfg.local_path.clone();
        let (watcher, mode) = super::watch::start(&root, self.tx.clone());
        let local_repo = crate::backend::local_dir(&ep.cfg.repo);
        let remote_heads = match &local_repo {
            Some(_) => None,
            None => super::watch::start_remote_heads(&ep.cfg.repo, self.tx.clone()),
        };
        let heads_watcher = local_repo.and_then(|d| super::watch::start_heads(&d, self.tx.clone()));
        let s = self.settings.clone();
        let rescan_every = if watcher.is_none() {
            s.degraded_rescan
        } else {
            s.full_rescan
        };
        let mut paused = ep.state.meta().map(|m| m.paused).unwrap_or(false);
        self.update(|l| {
            l.watching = mode;
            l.paused = paused;
            l.state = if paused {
                WorkerState::Paused
            } else {
                WorkerState::Idle
            };
        });
        let mut sched = Schedule::new(&s, rescan_every);
        let mut repo: Option<Repository> = None;
        let maint = Intervals::from_env();
        // The first look counts from the daemon's start (a first maintenance is due an
        // interval after it), not from the first idle moment.
        let _ = maintain::due(&ep, &maint, now_ns());
        let mut next_maintenance = Instant::now();
        let mut last_step = Instant::now();
        let mut maintainer: Option<JoinHandle<()>> = None;
        let started_ns = now_ns();
        // Started once, with the first repository opened (`Some(None)`: it could not start).
        let mut beacon: Option<Option<super::presence::Beacon>> = None;
        loop {
            let timeout = sched.wake_in(&s, paused, repo.is_some());
            match self.rx.recv_timeout(timeout) {
                Ok(msg) => {
                    if self.on_msg(msg, &mut sched, &ep, &root, &mut paused) == Flow::Stop {
                        break;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            sched.expire_flushes();
            let now = Instant::now();
            if paused {
                sched.next_poll = now + s.poll_interval;
                sched.next_full = sched.next_full.max(now + s.poll_interval);
                continue;
            }
            if now >= sched.next_poll || repo.is_none() {
                self.check_heads(&ep, &mut repo, &mut sched);
                // A server that wakes us on a change leaves polling as a safety net.
                if sched.unreachable_since.is_none()
                    && remote_heads.as_ref().is_some_and(|w| w.active())
                {
                    sched.next_poll = sched.next_poll.max(now + WATCHED_POLL_INTERVAL);
                }
            }
            let Some(r) = repo.as_ref() else { continue };
            if beacon.is_none() {
                beacon = Some(super::presence::Beacon::start(r, &ep, started_ns));
            }
            let Some(full) = sched.due(&s, now) else {
                if now >= next_maintenance && now.duration_since(last_step) >= maint.idle {
                    next_maintenance = now + s.poll_interval.max(MAINTENANCE_CHECK_MIN);
                    if maintainer.as_ref().is_none_or(|j| j.is_finished()) {
                        maintainer = self.start_maintenance(&ep, &maint);
                    }
                }
                continue;
            };
            if !self.run_step(&mut ep, r, full, &mut sched) {
                repo = None;
            }
            last_step = Instant::now();
        }
        drop(beacon); // marks the endpoint stopped
        drop(watcher);
        drop(heads_watcher);
        drop(remote_heads);
        sched.answer_flushes(|| Response::err("the set was stopped"));
    }

    fn on_msg(
        &self,
        msg: Msg,
        sched: &mut Schedule,
        ep: &Endpoint,
        root: &Path,
        paused: &mut bool,
    ) -> Flow {
        match msg {
            Msg::Fs(paths) => {
                let rules = later_rules(ep, root);
                // A path, or a directory whose entries are, in a `real_time: false` category
                // (`data/` names what is below `data`).
                let later = |rel: &[u8]| {
                    rules.as_ref().is_some_and(|r| {
                        !r.real_time(rel) || !r.real_time(&[rel, b"/entry"].concat())
                    })
                };
                sched.note_paths(root, paths, &later);
                sched.halted_heads = None; // a local change may lift a halt
                self.update(|l| l.pending_paths = sched.dirty.len());
            }
            Msg::Rescan => sched.full = true,
            Msg::Heads => sched.next_poll = Instant::now(),
            Msg::Pause(ack) => {
                *paused = true;
                let _ = ep.state.update_meta(|m| m.paused = true);
                self.update(|l| {
                    l.paused = true;
                    l.state = WorkerState::Paused;
                });
                let set = &self.set;
                sched
                    .answer_flushes(|| Response::err(format!("{set} was paused: resume it first")));
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
            Msg::Resume => {
                *paused = false;
                sched.full = true; // catch up with everything that happened meanwhile
                sched.halted_heads = None;
                let _ = ep.state.update_meta(|m| m.paused = false);
                self.update(|l| {
                    l.paused = false;
                    l.state = WorkerState::Idle;
                });
            }
            Msg::Flush(tx, deadline) => {
                if *paused {
                    let _ = tx.send(Response::err(format!(
                        "{} is paused: resume it first (prism-sync resume {})",
                        self.set, self.set
                    )));
                } else {
                    sched.flushes.push((tx, deadline));
                    sched.full = true;
                    sched.halted_heads = None;
                    sched.flush_rounds = 0;
                }
            }
            Msg::Stop => return Flow::Stop,
        }
        Flow::Continue
    }

    /// The cheap remote check (one list call); (re)opens the repository if needed.
    fn check_heads(&self, ep: &Endpoint, repo: &mut Option<Repository>, sched: &mut Schedule) {
        if repo.is_none() {
            match Repository::open_url(&ep.cfg.repo, &self.creds) {
                Ok(r) => {
                    let r = r.with_cache(&Home::new(&self.home).cache_root());
                    r.backend().set_bandwidth(ep.cfg.bandwidth());
                    *repo = Some(r)
                }
                Err(e) => return self.unreachable(e, sched),
            }
        }
        let r = repo.as_ref().expect("opened above");
        match head_names(r, &self.set) {
            Ok(names) => self.heads_listed(ep, &names, sched),
            Err(e) => {
                *repo = None;
                self.unreachable(e, sched);
            }
        }
    }

    /// Marks a step due when the heads listed differ from those the last step merged.
    fn heads_listed(&self, ep: &Endpoint, names: &[String], sched: &mut Schedule) {
        let s = &self.settings;
        sched.backoff = s.poll_interval;
        sched.next_poll = Instant::now() + s.poll_interval;
        if sched.unreachable_since.take().is_some() {
            sched.full = true;
        }
        let meta = ep.state.meta().unwrap_or_default();
        sched.remote_due = names != meta.heads.as_slice();
        if sched.halted_heads.as_deref().is_some_and(|h| h != names) || meta.halt.is_none() {
            sched.halted_heads = None; // the shared state moved, or a `sync` lifted the halt
        }
        let due = sched.remote_due;
        self.update(|l| {
            l.unreachable_since = None;
            l.next_check_ms = s.poll_interval.as_millis() as u64;
            l.remote_pending = due;
            if l.state == WorkerState::Unreachable {
                l.state = WorkerState::Idle;
                l.last_error = None;
            }
        });
    }

    fn unreachable(&self, e: Error, sched: &mut Schedule) {
        let s = &self.settings;
        sched.backoff = (sched.backoff * 2).min(s.backoff_max);
        sched.next_poll = Instant::now() + sched.backoff;
        let since = *sched.unreachable_since.get_or_insert(now_ns());
        let backoff = sched.backoff;
        self.update(|l| {
            l.state = WorkerState::Unreachable;
            l.last_error = Some(e.to_string());
            l.unreachable_since = Some(format_rfc3339(since));
            l.next_check_ms = backoff.as_millis() as u64;
        });
    }

    /// Starts retention and prune on a thread of their own when due and the set is idle (see
    /// [`crate::endpoint::maintain`]); steps go on meanwhile. The thread opens the repository
    /// itself and shares the set's state. A failure is recorded in the set's maintenance
    /// record and retried later; it never stops the worker.
    fn start_maintenance(&self, ep: &Endpoint, iv: &Intervals) -> Option<JoinHandle<()>> {
        match maintain::due(ep, iv, now_ns()) {
            Ok((false, false)) | Err(_) => return None,
            Ok(_) => {}
        }
        let state = self.live.lock().expect("live status").state;
        if state != WorkerState::Idle {
            return None; // halted, paused or failing sets are not maintained
        }
        let mine = Endpoint {
            home: ep.home.clone(),
            cfg: ep.cfg.clone(),
            state: ep.state.clone(),
        };
        let (creds, live, home, iv) = (
            self.creds.clone(),
            self.live.clone(),
            self.home.clone(),
            *iv,
        );
        live.lock().expect("live status").maintaining = true;
        let spawned = std::thread::Builder::new()
            .name(format!("maintain {}", self.set))
            .spawn(move || {
                let run = || -> Result<()> {
                    let repo = Repository::open_url(&mine.cfg.repo, &creds)?
                        .with_cache(&Home::new(&home).cache_root());
                    repo.backend().set_bandwidth(mine.cfg.bandwidth());
                    maintain::maintain(&mine, &repo, &iv, false).map(|_| ())
                };
                if let Err(e) = run() {
                    let msg = e.to_string();
                    let _ = mine.state.update_maintenance(|m| m.last_error = Some(msg));
                }
                live.lock().expect("live status").maintaining = false;
            });
        match spawned {
            Ok(j) => Some(j),
            Err(_) => {
                self.update(|l| l.maintaining = false);
                None
            }
        }
    }

    /// Runs one step (event-driven unless `full`); false if the repository must be reopened.
    fn run_step(
        &self,
        ep: &mut Endpoint,
        repo: &Repository,
        full: bool,
        sched: &mut Schedule,
    ) -> bool {
        let step_dirty = if full {
            sched.dirty.clear();
            None
        } else {
            Some(std::mem::take(&mut sched.dirty))
        };
        sched.burst = None;
        if let Ok(cfg) = SetConfig::load(&Home::new(&self.home), &self.set) {
            ep.cfg = cfg; // edits to the set's config take effect
            repo.backend().set_bandwidth(ep.cfg.bandwidth());
        }
        self.update(|l| {
            l.state = WorkerState::Syncing;
            l.pending_paths = 0;
        });
        let started = Instant::now();
        let opts = StepOptions {
            dirty: step_dirty.clone(),
            defer_recent: Some(self.settings.settle),
            ..Default::default()
        };
        match step(ep, repo, &opts) {
            Ok(report) => {
                if full {
                    sched.full = false;
                    sched.next_full = Instant::now() + sched.rescan_every;
                }
                self.after_step(ep, repo, &report, started, sched);
                true
            }
            Err(e) => {
                // Keep the work for the next try; a failing repository is reopened.
                if let Some(d) = step_dirty {
                    sched.dirty.extend(d);
                }
                sched.full |= full;
                let s = &self.settings;
                sched.backoff = (sched.backoff * 2).min(s.backoff_max);
                sched.next_poll = Instant::now() + sched.backoff;
                let msg = e.to_string();
                let _ = ep.state.update_meta(|m| m.last_error = Some(msg.clone()));
                let backoff = sched.backoff;
                self.update(|l| {
                    l.state = WorkerState::Error;
                    l.last_error = Some(msg);
                    l.next_check_ms = backoff.as_millis() as u64;
                });
                false
            }
        }
    }

    /// Books a finished step: what is left to retry, the heads check right after it, the live
    /// status, and the flushes waiting for a quiet state.
    fn after_step(
        &self,
        ep: &Endpoint,
        repo: &Repository,
        report: &StepReport,
        started: Instant,
        sched: &mut Schedule,
    ) {
        let now = Instant::now();
        for d in report.deferred.iter().chain(&report.rescan) {
            sched.dirty.insert(d.clone());
        }
        if !report.deferred.is_empty() || !report.rescan.is_empty() {
            sched.burst = Some((now, now));
        }
        // Failed actions are retried with backoff (the shared change stays new for this
        // endpoint); a clean step resets the backoff.
        let s = &self.settings;
        if report.failures.is_empty() {
            sched.retry_at = None;
            sched.retry_wait = RETRY_FIRST;
        } else {
            sched.retry_at = Some(now + sched.retry_wait);
            sched.retry_wait = (sched.retry_wait * 2).min(s.backoff_max);
        }
        // Heads published while the step ran are not merged yet: check at once.
        let halt = report.halted.clone();
        if halt.is_some() {
            // A halted step committed nothing: what it scanned must be scanned again.
            sched.full = true;
        }
        match head_names(repo, &self.set) {
            Ok(names) => {
                self.heads_listed(ep, &names, sched);
                sched.halted_heads = halt.is_some().then_some(names);
            }
            Err(_) => sched.next_poll = now, // the next round checks (and reports) it
        }
        let changed = report.changed();
        let (pending, retry) = (sched.dirty.len(), sched.retry_at.is_some());
        self.update(|l| {
            l.steps += 1;
            l.last_step = Some(format_rfc3339(now_ns()));
            l.last_step_ms = Some(started.elapsed().as_millis() as u64);
            if changed {
                l.last_change = l.last_step.clone();
            }
            l.halt = halt.clone();
            l.state = if halt.is_some() {
                WorkerState::Halted
            } else {
                WorkerState::Idle
            };
            l.last_error = None;
            l.pending_paths = pending;
            l.retry_pending = retry;
        });
        self.book_flushes(report, sched);
    }

    /// A flush is answered once a step changed nothing, left nothing for later and merged
    /// every head there is.
    fn book_flushes(&self, report: &StepReport, sched: &mut Schedule) {
        if sched.flushes.is_empty() {
            return;
        }
        let changed = report.changed();
        if changed {
            sched.flush_rounds += 1;
        }
        let set = &self.set;
        if let Some(h) = &report.halted {
            sched.answer_flushes(|| Response::err(format!("{set} is halted: {h}")));
        } else if !changed
            && report.deferred.is_empty()
            && report.failures.is_empty()
            && !sched.remote_due
        {
            let rounds = sched.flush_rounds;
            sched.answer_flushes(|| Response::ok(json!({"set": set, "rounds": rounds})));
        } else if sched.flush_rounds >= FLUSH_ROUNDS_MAX {
            sched.answer_flushes(|| Response::err("flush gave up: the folder keeps changing"));
        } else if changed {
            sched.full = true; // another round until nothing moves
        }
        // Deferred files (still being written) come back through `dirty` once they settle,
        // failed actions through the retry; the flush waits for that round.
    }
}

/// The set's rules when some category has `real_time: false` (its changes wait for the next
/// step); `None` when every change is synced at once.
fn later_rules(ep: &Endpoint, root: &Path) -> Option<crate::sync::rules::Rules> {
    use crate::endpoint::config::{RulesFile, build_rules};
    ep.cfg.rules.as_deref()?;
    let ignore = std::fs::read_to_string(root.join(crate::sync::rules::IGNORE_FILE)).ok();
    let file = RulesFile::load(&ep.home).ok()?;
    build_rules(&ep.cfg, &file, ignore.as_deref()).ok()
}
