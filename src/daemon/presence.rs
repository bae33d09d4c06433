//! The heartbeat of one running set: a thread of its own that refreshes the endpoint's
//! presence object every interval (see [`crate::repository::presence`]), so a long step does
//! not make the endpoint look gone, and marks it stopped when the worker stops cleanly. A
//! failed write is tried again at the next interval; it never disturbs the worker.

use std::os::unix::ffi::OsStrExt;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender, bounded};

use crate::endpoint::Endpoint;
use crate::format::presence::Presence;
use crate::repository::presence::{Writer, interval};
use crate::repository::{Repository, hostname, now_ns};

pub struct Beacon {
    stop: Sender<()>,
    join: Option<JoinHandle<()>>,
}

impl Beacon {
    /// Starts heartbeats for `ep` in `repo`, the first one at once.
    pub fn start(repo: &Repository, ep: &Endpoint, started_ns: i64) -> Option<Beacon> {
        let every = interval();
        let record = Presence {
            set: ep.cfg.name.clone(),
            endpoint: ep.cfg.endpoint.clone(),
            host: hostname(),
            pid: std::process::id(),
            folder: ep.cfg.local_path.as_os_str().as_bytes().to_vec(),
            started_ns,
            heartbeat_ns: started_ns,
            interval_ms: every.as_millis().max(1) as u64,
            version: concat!("prism-sync ", env!("CARGO_PKG_VERSION")).into(),
            stopped: false,
            extra: vec![],
        };
        let mut writer = Writer::new(repo, record);
        let (stop, stopped) = bounded::<()>(1);
        let join = std::thread::Builder::new()
            .name(format!("presence {}", ep.cfg.name))
            .spawn(move || {
                writer.find_leftovers();
                loop {
                    let _ = writer.beat(now_ns(), false);
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
                let _ = writer.beat(now_ns(), true);
            })
            .ok()?;
        Some(Beacon {
            stop,
            join: Some(join),
        })
    }
}

impl Drop for Beacon {
    /// Marks the endpoint stopped (one last write) and waits for the thread, at most
    /// [`STOP_WAIT`]: an unreachable repository does not hold up the daemon's exit.
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(j) = self.join.take() {
            let deadline = std::time::Instant::now() + STOP_WAIT;
            while !j.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if j.is_finished() {
                let _ = j.join();
            }
        }
    }
}

/// How long stopping a set waits for its last presence write.
const STOP_WAIT: Duration = Duration::from_secs(10);
