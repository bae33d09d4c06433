//! Presence: each running daemon says, per sync set it runs, that it is there — one small sealed
//! object per endpoint, replaced every [`INTERVAL_DEFAULT`] — so `status` at another endpoint
//! can show it connected or not (see `format-spec/sync.md`, "Presence").
//!
//! Cost over a remote repository: one create (PUT) and one delete of the previous object per
//! interval per set the daemon runs, plus one listing when the daemon starts (to remove
//! leftovers of a crash). Readers (`status`) list `presence/` once and read the newest object
//! of each endpoint. Nothing here is in the sync step's path.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Repository;
use super::heads::set_key;
use crate::backend::{DynBackend, ErrorKind, Kind, object_name};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::format::envelope::ObjectKind;
use crate::format::presence::Presence;
use crate::id::hex_encode;

/// How often a daemon refreshes its presence.
pub const INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// Environment variable overriding [`INTERVAL_DEFAULT`] (milliseconds; tests shorten it).
pub const INTERVAL_ENV: &str = "PRISM_SYNC_PRESENCE_MS";
/// The shortest interval accepted from the environment.
const INTERVAL_MIN: Duration = Duration::from_millis(100);
/// A presence is fresh for this many of its writer's intervals: one missed heartbeat (a slow
/// request, a busy machine) does not make an endpoint look gone.
pub const FRESH_INTERVALS: f64 = 2.5;
/// Listings taken at most when the newest object of an endpoint vanishes between list and read
/// (its writer replaced it meanwhile).
const RELIST_MAX: usize = 3;
/// Names tried when a heartbeat's name is taken already.
const NAME_TRIES_MAX: u32 = 16;

/// The heartbeat interval: [`INTERVAL_ENV`] if set, else [`INTERVAL_DEFAULT`].
pub fn interval() -> Duration {
    std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(INTERVAL_DEFAULT, |ms| {
            Duration::from_millis(ms).max(INTERVAL_MIN)
        })
}

/// The name part that stands for an endpoint of a set: keyed, so storage shows no names.
fn endpoint_key(keys: &Keys, set: &str, endpoint: &str) -> String {
    let mut input = b"sync endpoint presence key\0".to_vec();
    input.extend_from_slice(set.as_bytes());
    input.push(0);
    input.extend_from_slice(endpoint.as_bytes());
    hex_encode(&keys.keyed(&input)[..8])
}

/// `<set key>-<endpoint key>-`: every presence object of one endpoint starts so.
fn prefix(repo: &Repository, set: &str, endpoint: &str) -> String {
    format!(
        "{}-{}-",
        set_key(repo, set),
        endpoint_key(repo.keys(), set, endpoint)
    )
}

/// What a reader makes of a presence object at time `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The last heartbeat is younger than [`FRESH_INTERVALS`] of its interval.
    Connected,
    /// The daemon stopped the endpoint cleanly.
    Stopped,
    /// No heartbeat for too long (the daemon or its machine is gone, or cut off), or its
    /// process is gone from this very machine.
    Silent,
}

pub fn liveness(p: &Presence, now: i64) -> Liveness {
    if p.stopped {
        return Liveness::Stopped;
    }
    let fresh_ns = (p.interval_ms as f64 * 1e6 * FRESH_INTERVALS) as i64;
    let gone_here = p.host == super::hostname()
        && p.pid != std::process::id()
        && !super::session::pid_alive(p.pid);
    if gone_here || now.saturating_sub(p.heartbeat_ns) > fresh_ns {
        Liveness::Silent
    } else {
        Liveness::Connected
    }
}

/// Writes one endpoint's presence: each heartbeat creates a new object (named by its time, so
/// the newest sorts last) and then deletes the one before.
pub struct Writer {
    backend: DynBackend,
    keys: Keys,
    prefix: String,
    /// Objects of this endpoint to delete after the next create (the previous heartbeat, and
    /// at the start leftovers of a daemon that crashed).
    stale: Vec<String>,
    pub record: Presence,
}

impl Writer {
    /// A writer for `record`'s endpoint (no request yet).
    pub fn new(repo: &Repository, record: Presence) -> Writer {
        Writer {
            prefix: prefix(repo, &record.set, &record.endpoint),
            backend: repo.backend().clone(),
            keys: repo.keys().clone(),
            stale: Vec::new(),
            record,
        }
    }

    /// Lists `presence/` once for this endpoint's leftovers (a daemon that crashed), deleted
    /// after the next heartbeat.
    pub fn find_leftovers(&mut self) {
        if let Ok(l) = self.backend.list(Kind::Presence) {
            self.stale.extend(
                l.into_iter()
                    .map(|o| o.name)
                    .filter(|n| n.starts_with(&self.prefix)),
            );
        }
    }

    /// Stores a heartbeat at `now` (with `stopped` as given), then deletes the objects before.
    pub fn beat(&mut self, now: i64, stopped: bool) -> Result<()> {
        self.record.heartbeat_ns = now.max(self.record.started_ns);
        self.record.stopped = stopped;
        let bytes = super::seal_object(
            &self.keys,
            ObjectKind::Presence,
            &self.record.encode(),
            false,
        );
        let mut t = self.record.heartbeat_ns.max(0) as u64;
        let mut tries = 0;
        let name = loop {
            let name = format!("{}{t:016x}", self.prefix);
            match self.backend.create(Kind::Presence, &name, &bytes) {
                Ok(()) => break name,
                // The name of an earlier heartbeat (a clock set back): the next one.
                Err(e) if e.kind == ErrorKind::AlreadyExists && tries < NAME_TRIES_MAX => {
                    tries += 1;
                    t += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        for old in std::mem::take(&mut self.stale) {
            match self.backend.delete(Kind::Presence, &old) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(_) => self.stale.push(old), // tried again after the next heartbeat
            }
        }
        self.stale.push(name);
        Ok(())
    }
}

/// The newest presence of every endpoint of `set` (one listing, one read per endpoint). An
/// object that cannot be read or opened is skipped: presence only informs `status`.
pub fn read_all(repo: &Repository, set: &str) -> Result<Vec<Presence>> {
    let set_prefix = format!("{}-", set_key(repo, set));
    'list: for _ in 0..RELIST_MAX {
        let mut newest: BTreeMap<String, String> = BTreeMap::new();
        for o in repo.backend().list(Kind::Presence)? {
            let Some(rest) = o.name.strip_prefix(&set_prefix) else {
                continue;
            };
            let Some((ep, _)) = rest.split_once('-') else {
                continue;
            };
            let e = newest.entry(ep.to_string()).or_default();
            if o.name > *e {
                *e = o.name.clone();
            }
        }
        let mut out = Vec::new();
        for (ep, name) in newest {
            let bytes = match repo.backend().read(Kind::Presence, &name) {
                Ok(b) => b,
                Err(e) if e.is_not_found() => continue 'list, // replaced meanwhile
                Err(e) => return Err(e.into()),
            };
            let what = object_name(Kind::Presence, &name);
            let Ok(plain) = super::open_object(repo.keys(), ObjectKind::Presence, &what, &bytes)
            else {
                continue;
            };
            let Ok(p) = Presence::decode(&plain) else {
                continue;
            };
            // An object under another endpoint's or set's name says nothing about it.
            if p.set == set && endpoint_key(repo.keys(), set, &p.endpoint) == ep {
                out.push(p);
            }
        }
        return Ok(out);
    }
    Err(Error::invalid(
        "the presence objects kept changing while they were read: try again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(host: &str, heartbeat_ns: i64, stopped: bool) -> Presence {
        Presence {
            set: "p".into(),
            endpoint: "ws1".into(),
            host: host.into(),
            pid: 1,
            folder: b"/data".to_vec(),
            started_ns: 0,
            heartbeat_ns,
            interval_ms: 60_000,
            version: "prism-sync 0.1.0".into(),
            stopped,
            extra: vec![],
        }
    }

    #[test]
    fn fresh_for_two_and_a_half_intervals_then_silent_and_stopped_at_once() {
        const S: i64 = 1_000_000_000;
        let elsewhere = "a-host-that-is-not-this-one.invalid";
        let at = 1_000 * S;
        let p = presence(elsewhere, at, false);
        assert_eq!(liveness(&p, at + 149 * S), Liveness::Connected);
        assert_eq!(liveness(&p, at + 151 * S), Liveness::Silent);
        // A writer whose clock runs ahead: fresh.
        assert_eq!(liveness(&p, at - 30 * S), Liveness::Connected);
        assert_eq!(
            liveness(&presence(elsewhere, at, true), at),
            Liveness::Stopped
        );
        // On this machine, a process that is gone is not connected, however fresh.
        let mut here = presence(&crate::repository::hostname(), at, false);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        here.pid = child.id(); // reaped: gone

        assert_eq!(liveness(&here, at), Liveness::Silent);
    }
}
