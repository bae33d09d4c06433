//! The maintenance lease: at most one endpoint forgets, prunes and compacts a repository at a
//! time (see `format-spec/repository.md`, "Maintenance lease").
//!
//! Leases are sealed objects `leases/<generation>` (16 hex digits). Taking one lists the
//! namespace (one call), reads the newest generation `g` and — when it is released, or expired
//! by more than [`CLOCK_SKEW_MAX`] by the taker's clock — creates generation `g + 1` with
//! create-only semantics. Of several endpoints racing for `g + 1`, exactly one creates it; the
//! others see it exists and back off. Older generations are then deleted (best effort: the
//! newest generation alone decides). A holder renews by creating the next generation itself
//! and stops as soon as a renewal fails; it never starts a destructive phase with less than
//! [`LEASE_MARGIN`] left by its own clock.
//!
//! A crashed holder's lease is free at once on its own machine (its process id is gone, as for
//! sessions); elsewhere it simply expires: [`LEASE_TTL`] after it was taken, plus the skew
//! bound, any endpoint may take the next generation. Clocks of endpoints that maintain one
//! repository must agree within [`CLOCK_SKEW_MAX`] (NTP does far better).

use std::time::Duration;

use super::session::pid_alive;
use super::{Repository, hostname, now_ns};
use crate::backend::{ErrorKind, Kind, object_name};
use crate::error::{Error, Result};
use crate::format::envelope::ObjectKind;
use crate::format::lease::{Lease, lease_name, parse_lease_name};

/// How long a lease lasts after it is taken or renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(30 * 60);
/// How far apart the clocks of two maintainers may be: a lease is taken over only this long
/// after it expired by the taker's clock.
pub const CLOCK_SKEW_MAX: Duration = Duration::from_secs(5 * 60);
/// A holder renews before a destructive phase when less than this is left.
pub const LEASE_MARGIN: Duration = Duration::from_secs(15 * 60);
/// Listings taken at most when the newest lease vanishes between the list and its read.
const RELIST_MAX: usize = 8;

/// A lease this process holds.
#[derive(Debug, Clone)]
pub struct HeldLease {
    pub lease: Lease,
}

/// The outcome of trying to take the lease.
#[derive(Debug)]
pub enum Taken {
    Held(HeldLease),
    /// Another endpoint holds it (until `expires_ns` by its clock).
    Busy(Lease),
}

fn ns(d: Duration) -> i64 {
    d.as_nanos() as i64
}

/// The newest lease: its generation and content (`None`: no lease was ever taken).
pub fn newest(repo: &Repository) -> Result<Option<Lease>> {
    for _ in 0..RELIST_MAX {
        let names = repo.backend().list(Kind::Lease)?;
        let Some(g) = names.iter().filter_map(|o| parse_lease_name(&o.name)).max() else {
            return Ok(None);
        };
        let name = lease_name(g);
        let bytes = match repo.backend().read(Kind::Lease, &name) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue, // a newer one replaced it meanwhile
            Err(e) => return Err(e.into()),
        };
        let what = object_name(Kind::Lease, &name);
        let plain = super::open_object(repo.keys(), ObjectKind::Lease, &what, &bytes)?;
        let lease = Lease::decode(&plain).map_err(|e| Error::decode(&what, e))?;
        if lease.generation != g {
            return Err(Error::corrupt(
                what,
                "it names another generation than its name says: delete it so maintenance can go on",
            ));
        }
        return Ok(Some(lease));
    }
    Err(Error::invalid(
        "the maintenance lease kept changing while it was read: try again",
    ))
}

/// Is `l` free for a taker whose clock says `now`? Released, expired beyond the skew bound,
/// or held by a process of this machine that is gone.
pub fn is_free(l: &Lease, now: i64) -> bool {
    l.released
        || now > l.expires_ns.saturating_add(ns(CLOCK_SKEW_MAX))
        || (l.host == hostname() && l.pid != std::process::id() && !pid_alive(l.pid))
}

/// Creates the lease's generation (create-only); false if it exists already.
fn create(repo: &Repository, lease: &Lease) -> Result<bool> {
    let plain = lease.encode();
    let bytes = super::seal_object(repo.keys(), ObjectKind::Lease, &plain, false);
    match repo
        .backend()
        .create(Kind::Lease, &lease_name(lease.generation), &bytes)
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes generations below `keep` (best effort: only the newest one counts).
fn delete_older(repo: &Repository, keep: u64) {
    if let Ok(names) = repo.backend().list(Kind::Lease) {
        for o in names {
            if parse_lease_name(&o.name).is_some_and(|g| g < keep) {
                let _ = repo.backend().delete(Kind::Lease, &o.name);
            }
        }
    }
}

/// Tries to take the maintenance lease for `endpoint` (a label for `status`, e.g.
/// `project1-sync/local`), for `ttl`.
pub fn take(repo: &Repository, endpoint: &str, ttl: Duration) -> Result<Taken> {
    take_at(repo, endpoint, ttl, now_ns())
}

/// [`take`] by a clock that says `now` (tests model skewed clocks with it).
pub fn take_at(repo: &Repository, endpoint: &str, ttl: Duration, now: i64) -> Result<Taken> {
    let current = newest(repo)?;
    if let Some(l) = &current
        && !is_free(l, now)
    {
        return Ok(Taken::Busy(l.clone()));
    }
    let lease = Lease {
        generation: current.as_ref().map_or(1, |l| l.generation + 1),
        holder: crate::crypto::random_bytes(),
        host: hostname(),
        pid: std::process::id(),
        endpoint: endpoint.to_string(),
        taken_ns: now,
        expires_ns: now + ns(ttl).max(1),
        released: false,
        extra: vec![],
    };
    if !create(repo, &lease)? {
        // Someone else took this generation first.
        return Ok(match newest(repo)? {
            Some(l) => Taken::Busy(l),
            None => Taken::Busy(lease),
        });
    }
    delete_older(repo, lease.generation);
    Ok(Taken::Held(HeldLease { lease }))
}

impl HeldLease {
    /// Time left by this process's clock.
    pub fn left(&self) -> Duration {
        let left = self.lease.expires_ns - now_ns();
        Duration::from_nanos(left.max(0) as u64)
    }

    /// Makes sure at least [`LEASE_MARGIN`] is left before a destructive phase, renewing if
    /// needed; an error when the lease was lost (the caller stops maintaining).
    pub fn ensure(&mut self, repo: &Repository) -> Result<()> {
        if self.left() >= LEASE_MARGIN {
            return Ok(());
        }
        self.renew(repo, LEASE_TTL)
    }

    /// Renews: creates the next generation under the same holder.
    pub fn renew(&mut self, repo: &Repository, ttl: Duration) -> Result<()> {
        let lost = || {
            Error::invalid(
                "the maintenance lease was lost (another endpoint took it): maintenance stops and retries later",
            )
        };
        if self.left().is_zero() {
            return Err(lost());
        }
        let now = now_ns();
        let next = Lease {
            generation: self.lease.generation + 1,
            taken_ns: now,
            expires_ns: now + ns(ttl).max(1),
            ..self.lease.clone()
        };
        if !create(repo, &next)? {
            return Err(lost());
        }
        self.lease = next;
        delete_older(repo, self.lease.generation);
        Ok(())
    }

    /// Gives the lease back: a released generation lets the next taker in at once.
    pub fn release(self, repo: &Repository) -> Result<()> {
        let now = now_ns();
        let next = Lease {
            generation: self.lease.generation + 1,
            taken_ns: now,
            expires_ns: now + 1,
            released: true,
            ..self.lease.clone()
        };
        if create(repo, &next)? {
            delete_older(repo, next.generation);
        }
        Ok(())
    }
}
