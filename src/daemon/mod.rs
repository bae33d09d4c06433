//! The daemon: keeps sync sets in sync continuously.
//!
//! Owns: watching folders, debouncing, scheduling steps, polling heads, pause/resume/flush, the
//! control socket, the daemon's own files (`daemon.sock`, `daemon.lock`, `daemon.pid`,
//! `daemon.yml`, `daemon.log` under `$PRISM_HOME/sync/`). Must not touch: merge decisions (the
//! step makes them), repository formats.
//!
//! One daemon per `$PRISM_HOME` serves every started set, one worker thread per set. A worker
//! wakes for:
//! - **local changes**: inotify events (recursive) are hints; their paths are marked dirty and a
//!   step runs once they settle ([`Settings::settle`] after the last event, at most
//!   [`Settings::settle_cap`] after the first). The step rescans only dirty paths and their
//!   ancestors (a new directory is listed whole) and takes every other directory from the last
//!   folder tree; files still being written (modified within the settle window, or while being
//!   read) are left for the next round. If inotify cannot
//!   watch the tree (watch limit), the worker rescans everything every
//!   [`Settings::degraded_rescan`] and says so in `status`;
//! - **remote changes**: a head check (one list call) every [`Settings::poll_interval`]; while
//!   the repository is unreachable the interval backs off exponentially up to
//!   [`Settings::backoff_max`], and recovers on the first success;
//! - **the safety net**: a full rescan every [`Settings::full_rescan`];
//! - **requests**: pause, resume, flush, stop.
//!
//! Beside each worker, a heartbeat thread refreshes the endpoint's presence object in the
//! repository (every minute; see `presence`), so `status` at other endpoints shows it connected.
//!
//! Everything a step decides is committed by the step itself (see `endpoint`), so killing the
//! daemon at any moment loses nothing: the next start scans everything once and carries on.

pub mod agent;
pub(crate) mod control;
mod presence;
mod watch;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::endpoint::Endpoint;
use crate::endpoint::config::{SetConfig, write_atomic};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::repository::Credentials;
use control::{Op, Response};
pub use worker::{LiveStatus, WorkerState};

/// Timing of the daemon. Defaults suit a laptop; tests and benchmarks shorten them through
/// environment variables (see [`Settings::from_env`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub poll_interval: Duration,
    pub settle: Duration,
    pub settle_cap: Duration,
    pub full_rescan: Duration,
    pub degraded_rescan: Duration,
    pub backoff_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll_interval: Duration::from_secs(1),
            settle: Duration::from_millis(200),
            settle_cap: Duration::from_secs(2),
            full_rescan: Duration::from_secs(600),
            degraded_rescan: Duration::from_secs(10),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl Settings {
    /// Defaults, overridden by `PRISM_SYNC_POLL_MS`, `PRISM_SYNC_SETTLE_MS`,
    /// `PRISM_SYNC_SETTLE_CAP_MS`, `PRISM_SYNC_FULL_RESCAN_S`, `PRISM_SYNC_DEGRADED_RESCAN_S`,
    /// `PRISM_SYNC_BACKOFF_MAX_S`.
    pub fn from_env() -> Settings {
        let mut s = Settings::default();
        let ms = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(v) = ms("PRISM_SYNC_POLL_MS") {
            s.poll_interval = Duration::from_millis(v.max(10));
        }
        if let Some(v) = ms("PRISM_SYNC_SETTLE_MS") {
            s.settle = Duration::from_millis(v);
        }
        if let Some(v) = ms("PRISM_SYNC_SETTLE_CAP_MS") {
            s.settle_cap = Duration::from_millis(v);
        }
        if let Some(v) = ms("PRISM_SYNC_FULL_RESCAN_S") {
            s.full_rescan = Duration::from_secs(v.max(1));
        }
        if let Some(v) = ms("PRISM_SYNC_DEGRADED_RESCAN_S") {
            s.degraded_rescan = Duration::from_secs(v.max(1));
        }
        if let Some(v) = ms("PRISM_SYNC_BACKOFF_MAX_S") {
            s.backoff_max = Duration::from_secs(v.max(1));
        }
        s
    }
}

/// How long `pause` waits for a step in progress to finish before answering anyway (the set
/// is paused either way; the answer says whether the worker has stopped yet).
const PAUSE_WAIT: Duration = Duration::from_secs(20);

fn started_path(home: &Path) -> PathBuf {
    Home::new(home).daemon_file("yml")
}

/// The sets the daemon keeps running (persisted so a restart resumes them).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Started {
    #[serde(default)]
    sets: BTreeSet<String>,
}

/// Whether `set` is among the sets the daemon of `home` keeps running (or resumes when it
/// restarts): `start` added it and no `stop` removed it since.
pub fn is_started(home: &Path, set: &str) -> Result<bool> {
    Ok(load_started(home)?.contains(set))
}

fn load_started(home: &Path) -> Result<BTreeSet<String>> {
    let p = started_path(home);
    match std::fs::read_to_string(&p) {
        Ok(t) => Ok(serde_saphyr::from_str::<Started>(&t)
            .map_err(|e| Error::invalid(format!("{}: {e}", p.display())))?
            .sets),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(Error::io(&p, e)),
    }
}

fn save_started(home: &Path, sets: &BTreeSet<String>) -> Result<()> {
    let text = serde_saphyr::to_string(&Started { sets: sets.clone() })
        .map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(
        &started_path(home),
        format!("# sets the prism-sync daemon keeps in sync\n{text}").as_bytes(),
    )
}

/// True if a daemon runs and keeps `set` in sync (it then maintains the set itself).
pub fn keeps_set(home: &Path, set: &str) -> bool {
    load_started(home).is_ok_and(|s| s.contains(set)) && running_pid(home).is_some()
}

/// The pid of the daemon serving `home`, if one runs.
pub fn running_pid(home: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(Home::new(home).daemon_file("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    match control::request(home, Op::Ping, Duration::from_secs(5)) {
        Ok(Some(r)) if r.ok => Some(pid),
        _ => None,
    }
}

struct Daemon {
    home: PathBuf,
    settings: Settings,
    creds: Credentials,
    workers: BTreeMap<String, worker::Handle>,
}

impl Daemon {
    fn start_set(&mut self, set: &str) -> Result<()> {
        if self.workers.contains_key(set) {
            return Ok(());
        }
        SetConfig::load(&Home::new(&self.home), set)?;
        let h = worker::spawn(&self.home, set, self.settings.clone(), self.creds.clone())?;
        self.workers.insert(set.to_string(), h);
        Ok(())
    }

    fn handle(&mut self, op: Op) -> (Response, bool) {
        let r = match op {
            Op::Ping => Ok(json!({"pid": std::process::id()})),
            Op::Start { set } => self.start_set(&set).and_then(|_| {
                let mut s = load_started(&self.home)?;
                s.insert(set.clone());
                save_started(&self.home, &s)?;
                Ok(json!({"started": set}))
            }),
            Op::Stop { set } => match self.workers.remove(&set) {
                Some(h) => {
                    h.stop();
                    let mut s = load_started(&self.home).unwrap_or_default();
                    s.remove(&set);
                    let _ = save_started(&self.home, &s);
                    Ok(json!({"stopped": set, "remaining": self.workers.len()}))
                }
                None => Err(Error::invalid(format!("the daemon does not run {set:?}"))),
            },
            Op::Pause { set } | Op::Resume { set } if !self.workers.contains_key(&set) => Err(
                Error::invalid(format!("the daemon does not run {set:?}: start it first")),
            ),
            Op::Pause { .. } => unreachable!("pause is served by serve_control"),
            Op::Resume { set } => Endpoint::open(&self.home, &set)
                .and_then(|ep| ep.state.update_meta(|m| m.paused = false))
                .map(|()| {
                    self.workers[&set].send(worker::Msg::Resume);
                    json!({"resumed": set})
                }),
            Op::Status { set } => {
                let sets: Vec<_> = self
                    .workers
                    .iter()
                    .filter(|(n, _)| set.as_ref().is_none_or(|s| s == *n))
                    .map(|(_, h)| h.live())
                    .collect();
                Ok(json!({"pid": std::process::id(), "sets": sets}))
            }
            Op::Flush { .. } => unreachable!("flush is served on its connection's thread"),
            Op::Shutdown => {
                for (_, h) in std::mem::take(&mut self.workers) {
                    h.stop();
                }
                Ok(json!({"shutdown": true}))
            }
        };
        let exit = self.workers.is_empty();
        match r {
            Ok(v) => (Response::ok(v), exit),
            Err(e) => (Response::err(e.to_string()), exit),
        }
    }
}

fn lock_daemon(home: &Path) -> Result<std::fs::File> {
    let path = Home::new(home).daemon_file("lock");
    let f = crate::fsx::private::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // Released when the process ends (the file stays open in the daemon).
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid =
                std::fs::read_to_string(Home::new(home).daemon_file("pid")).unwrap_or_default();
            return Err(Error::invalid(format!(
                "a prism-sync daemon already runs for {} (pid {}): use it (prism-sync start NAME), or stop it first",
                home.display(),
                pid.trim()
            )));
        }
    }
    Ok(f)
}

/// Serves one control connection: reads its request (with a deadline), answers it. True when
/// the daemon should exit (its last set was stopped).
fn serve_control(daemon: &Mutex<Daemon>, stream: std::os::unix::net::UnixStream) -> bool {
    let req = match control::read_request(&stream) {
        Ok(r) => r,
        Err(msg) => {
            control::write_response(&stream, &Response::err(msg));
            return false;
        }
    };
    if let Op::Pause { set } = &req.op {
        // Recorded at once (so `status` says so), answered once the worker has stopped, after
        // a step in progress: no step starts after `pause` returns.
        let (ack_tx, ack) = crossbeam_channel::bounded(1);
        let sent = {
            let d = daemon.lock().expect("daemon lock");
            match d.workers.get(set) {
                None => Err(format!("the daemon does not run {set:?}: start it first")),
                Some(h) => Endpoint::open(&d.home, set)
                    .and_then(|ep| ep.state.update_meta(|m| m.paused = true))
                    .map(|()| h.send(worker::Msg::Pause(Some(ack_tx))))
                    .map_err(|e| e.to_string()),
            }
        };
        let r = match sent {
            Err(e) => Response::err(e),
            Ok(()) => {
                let stopped = ack.recv_timeout(PAUSE_WAIT).is_ok();
                Response::ok(json!({"paused": set, "stopped": stopped}))
            }
        };
        control::write_response(&stream, &r);
        return false;
    }
    if let Op::Flush { set, timeout_s } = &req.op {
        // Flush blocks its client, not the daemon.
        let h = daemon
            .lock()
            .expect("daemon lock")
            .workers
            .get(set)
            .map(|h| h.sender());
        let timeout = Duration::from_secs((*timeout_s).clamp(1, 24 * 3600));
        let r = match h {
            None => Response::err(format!("the daemon does not run {set:?}: start it first")),
            Some(tx) => worker::flush(&tx, timeout),
        };
        control::write_response(&stream, &r);
        return false;
    }
    let (resp, exit) = daemon.lock().expect("daemon lock").handle(req.op);
    control::write_response(&stream, &resp);
    exit
}

/// Runs the daemon in this process until its last set is stopped. `first` is started (and
/// remembered) before serving requests.
pub fn run(home: &Path, first: Option<&str>, settings: Settings, creds: Credentials) -> Result<()> {
    let dir = Home::new(home).sync_dir();
    // 0700: the socket is bound inside a directory nobody else can enter, so there is no
    // moment in which another user could connect to it, whatever the umask.
    crate::fsx::private::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let _lock = lock_daemon(home)?;
    let pid_path = Home::new(home).daemon_file("pid");
    write_atomic(&pid_path, format!("{}\n", std::process::id()).as_bytes())?;
    let sock = Home::new(home).daemon_socket();
    let _ = std::fs::remove_file(&sock); // a stale socket of a dead daemon: we hold the lock
    let listener = UnixListener::bind(&sock).map_err(|e| Error::io(&sock, e))?;
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));

    let mut started = load_started(home)?;
    if let Some(f) = first {
        SetConfig::load(&Home::new(home), f)?;
        started.insert(f.to_string());
        save_started(home, &started)?;
    }
    let daemon = Arc::new(Mutex::new(Daemon {
        home: home.to_path_buf(),
        settings,
        creds,
        workers: BTreeMap::new(),
    }));
    for set in &started {
        if let Err(e) = daemon.lock().expect("daemon lock").start_set(set) {
            eprintln!("⚠️  not starting {set}: {e}");
        }
    }
    if daemon.lock().expect("daemon lock").workers.is_empty() {
        let _ = std::fs::remove_file(&sock);
        return Err(Error::invalid("no sync set to run: prism-sync start NAME"));
    }
    eprintln!(
        "✅ prism-sync daemon {} serving {}",
        std::process::id(),
        started.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    // Each connection is served on its own thread (at most CONTROL_CONNECTIONS_MAX at once), and
    // reading a request has a deadline: a client that connects and says nothing holds up no one.
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= control::CONNECTIONS_MAX {
            active.fetch_sub(1, Ordering::SeqCst);
            control::write_response(
                &stream,
                &Response::err("the daemon is busy with other requests: try again"),
            );
            continue;
        }
        let (daemon, active, stopping, sock) = (
            daemon.clone(),
            active.clone(),
            stopping.clone(),
            sock.clone(),
        );
        std::thread::spawn(move || {
            if serve_control(&daemon, stream) {
                stopping.store(true, Ordering::SeqCst);
                // Wake the accept loop so it sees the flag.
                let _ = std::os::unix::net::UnixStream::connect(&sock);
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&pid_path);
    eprintln!("✅ prism-sync daemon {} stopped", std::process::id());
    Ok(())
}
