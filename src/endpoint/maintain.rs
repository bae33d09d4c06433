//! Maintenance: the set's retention applied by itself, then prune with compaction, on a
//! schedule — run by the daemon when a set is idle and by `sync` after its step, when due (see
//! `format-spec/sync.md`, "Retention and maintenance").
//!
//! Plan/execute: [`plan_retention`] decides which of the set's snapshots go (pure, from the
//! snapshots and the protected ids); [`maintain`] takes the repository's maintenance lease,
//! deletes them, prunes, records what it did in the state and the audit log, and gives the
//! lease back. Only snapshots of this set are ever considered: other sets' snapshots and plain
//! backups in a shared repository are never forgotten here.
//!
//! Protected whatever the policy says: the snapshots of the set's current and superseded heads,
//! the versions their conflicts name, this endpoint's base, the newest snapshot each endpoint
//! published (what another endpoint's base most likely is), and `before-sync` safety snapshots
//! younger than the window (the policy's `keep-within`, else [`SAFETY_WINDOW_DEFAULT`]).
//!
//! How often: retention every [`RETENTION_EVERY`], prune every [`PRUNE_EVERY`], counted from the
//! last run (or, the first time, from when this endpoint first looked: a set just set up or
//! upgraded is never maintained in its first step); tests shorten them with
//! `PRISM_SYNC_RETENTION_EVERY_S` and `PRISM_SYNC_PRUNE_EVERY_S`. Never inside a step: the
//! daemon runs it on a thread of its own once the set has been idle for [`IDLE_BEFORE`]
//! (`PRISM_SYNC_MAINTAIN_IDLE_S`), steps going on meanwhile; `sync` starts a detached
//! `prism-sync maintain NAME --if-due` and returns.
//!
//! An append-only repository (`serve --append-only`) refuses the deletes retention and prune
//! need: maintenance is skipped, said once in the record (`status` shows it), and left to
//! whoever runs prune where the repository lives.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::json;

use super::Endpoint;
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::maintenance::prune::{COMPACT_BELOW_BYTES, PruneOptions, PruneReport, prune};
use crate::repository::heads::read_heads;
use crate::repository::lease::{self, LEASE_TTL, Taken};
use crate::repository::{Repository, now_ns};
use crate::snapshot::retention::{self, Policy};
use crate::time::format_rfc3339;

/// How often retention runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often prune (with compaction) runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// `before-sync` snapshots are kept at least this long when the policy has no `keep-within`.
pub const SAFETY_WINDOW_DEFAULT: Duration = Duration::from_secs(30 * 86_400);
/// A busy lease (or a failed run) is asked for again after at most this long.
pub const RETRY_EVERY: Duration = Duration::from_secs(300);
/// The daemon maintains a set only after it has been idle (no step) this long.
pub const IDLE_BEFORE: Duration = Duration::from_secs(60);
/// Why an append-only repository is not maintained from here (`status` shows it).
pub const APPEND_ONLY_SKIPPED: &str =
    "repository is append-only; run prune where the repository lives";

/// When maintenance is due.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    pub retention: Duration,
    pub prune: Duration,
    /// How long the daemon waits after the last step before maintaining.
    pub idle: Duration,
}

impl Intervals {
    /// Defaults, overridden by `PRISM_SYNC_RETENTION_EVERY_S` and `PRISM_SYNC_PRUNE_EVERY_S`.
    pub fn from_env() -> Intervals {
        let secs = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.max(1)))
        };
        Intervals {
            retention: secs("PRISM_SYNC_RETENTION_EVERY_S").unwrap_or(RETENTION_EVERY),
            prune: secs("PRISM_SYNC_PRUNE_EVERY_S").unwrap_or(PRUNE_EVERY),
            idle: secs("PRISM_SYNC_MAINTAIN_IDLE_S").unwrap_or(IDLE_BEFORE),
        }
    }

    fn retry(&self) -> Duration {
        RETRY_EVERY.min(self.retention).min(self.prune)
    }
}

/// Which snapshots of the set retention forgets.
#[derive(Debug, Default, Clone)]
pub struct RetentionPlan {
    /// Snapshots of the set considered.
    pub considered: usize,
    pub kept: usize,
    /// Kept only because they are protected (the policy alone would forget them).
    pub protected: usize,
    pub forget: Vec<SnapshotId>,
}

fn ns(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

/// Decides which of `snaps` (any sets, any backups) go under `policy` for `set`.
pub fn plan_retention(
    snaps: &[(SnapshotId, Snapshot)],
    set: &str,
    policy: &Policy,
    protect: &HashSet<SnapshotId>,
    tz: &jiff::tz::TimeZone,
) -> RetentionPlan {
    let mine: Vec<(SnapshotId, Snapshot)> = snaps
        .iter()
        .filter(|(_, s)| s.sync_set.as_deref() == Some(set))
        .cloned()
        .collect();
    let mut plan = RetentionPlan {
        considered: mine.len(),
        ..RetentionPlan::default()
    };
    let Some(newest) = mine.iter().map(|(_, s)| s.time_ns).max() else {
        return plan;
    };
    let window = policy.within_ns.unwrap_or(ns(SAFETY_WINDOW_DEFAULT));
    // The newest snapshot each endpoint published: another endpoint's base, most likely.
    let mut per_endpoint: BTreeMap<&str, (i64, SnapshotId)> = BTreeMap::new();
    for (id, s) in &mine {
        if let Some(e) = s.endpoint.as_deref() {
            let slot = per_endpoint.entry(e).or_insert((s.time_ns, *id));
            if (s.time_ns, *id) > *slot {
                *slot = (s.time_ns, *id);
            }
        }
    }
    let newest_of: HashSet<SnapshotId> = per_endpoint.values().map(|(_, id)| *id).collect();
    let by_id: BTreeMap<SnapshotId, &Snapshot> = mine.iter().map(|(i, s)| (*i, s)).collect();
    for ds in retention::apply(&mine, policy, tz).values() {
        for d in ds {
            let s = by_id[&d.id];
            let safety = s.tags.iter().any(|t| t == "before-sync")
                && newest.saturating_sub(s.time_ns) <= window;
            if d.keep {
                plan.kept += 1;
            } else if protect.contains(&d.id) || newest_of.contains(&d.id) || safety {
                plan.kept += 1;
                plan.protected += 1;
            } else {
                plan.forget.push(d.id);
            }
        }
    }
    plan.forget.sort();
    plan
}

/// The snapshots the set's heads name (current and superseded, and their conflicts' versions).
fn head_snapshots(repo: &Repository, set: &str) -> Result<HashSet<SnapshotId>> {
    let listing = read_heads(repo, set)?;
    let mut out = HashSet::new();
    for (_, h) in &listing.current {
        out.insert(h.snapshot);
        for c in &h.conflicts {
            out.extend(c.version);
            out.extend(c.ancestor);
        }
    }
    for name in &listing.superseded {
        if let Some(id) = name
            .split_once('-')
            .and_then(|(_, hex)| SnapshotId::from_hex(hex))
        {
            out.insert(id);
        }
    }
    Ok(out)
}

/// What one maintenance run did.
#[derive(Debug, Default)]
pub struct MaintainReport {
    pub retention: Option<RetentionPlan>,
    pub prune: Option<PruneReport>,
    /// The lease was held elsewhere: nothing was done.
    pub busy: Option<String>,
    /// Maintenance cannot run through this repository (said the first time only).
    pub skipped: Option<String>,
}

/// What is due now (retention, prune), by this endpoint's record. The first call for an
/// endpoint records when it first looked; nothing is due until an interval after that.
pub fn due(ep: &Endpoint, iv: &Intervals, now: i64) -> Result<(bool, bool)> {
    let m = ep.state.maintenance()?;
    let Some(since) = m.since_ns.or(m.retention_ns).or(m.prune_ns) else {
        ep.state.update_maintenance(|m| m.since_ns = Some(now))?;
        return Ok((false, false));
    };
    if m.attempt_ns.is_some_and(|a| now - a < ns(iv.retry())) {
        return Ok((false, false));
    }
    let older = |t: Option<i64>, every: Duration| now - t.unwrap_or(since) >= ns(every);
    Ok((
        older(m.retention_ns, iv.retention),
        older(m.prune_ns, iv.prune),
    ))
}

/// Runs whatever is due (or everything, with `force`): retention, then prune with compaction,
/// under the maintenance lease. `None` when nothing was due.
pub fn maintain(
    ep: &Endpoint,
    repo: &Repository,
    iv: &Intervals,
    force: bool,
) -> Result<Option<MaintainReport>> {
    let now = now_ns();
    let (retention_due, prune_due) = if force {
        (true, true)
    } else {
        due(ep, iv, now)?
    };
    if !retention_due && !prune_due {
        return Ok(None);
    }
    let policy = ep.cfg.retention_policy()?;
    ep.state.update_maintenance(|m| m.attempt_ns = Some(now))?;
    // Through an append-only server every delete is refused: skip, and say so once (and
    // whenever asked for explicitly).
    match repo.backend().append_only() {
        Ok(true) => {
            let first = ep.state.maintenance()?.skipped.is_none();
            ep.state.update_maintenance(|m| {
                m.skipped = Some(APPEND_ONLY_SKIPPED.to_string());
                m.last_error = None;
            })?;
            return Ok((first || force).then(|| MaintainReport {
                skipped: Some(APPEND_ONLY_SKIPPED.to_string()),
                ..MaintainReport::default()
            }));
        }
        Ok(false) => {
            if ep.state.maintenance()?.skipped.is_some() {
                ep.state.update_maintenance(|m| m.skipped = None)?;
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = ep.state.update_maintenance(|m| m.last_error = Some(msg));
            return Err(e.into());
        }
    }
    let label = format!("{}/{}", ep.cfg.name, ep.cfg.endpoint);
    let mut held = match lease::take(repo, &label, LEASE_TTL) {
        Ok(Taken::Held(h)) => h,
        Ok(Taken::Busy(l)) => {
            let who = format!("{}@{}", l.endpoint, l.host);
            ep.state
                .update_maintenance(|m| m.lease_busy = Some(who.clone()))?;
            return Ok(Some(MaintainReport {
                busy: Some(who),
                ..MaintainReport::default()
            }));
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = ep.state.update_maintenance(|m| m.last_error = Some(msg));
            return Err(e);
        }
    };
    let result = run(ep, repo, &policy, &mut held, retention_due, prune_due);
    let released = held.release(repo);
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let msg = e.to_string();
            let _ = ep.state.update_maintenance(|m| m.last_error = Some(msg));
            return Err(e);
        }
    };
    released?;
    Ok(Some(report))
}

fn run(
    ep: &Endpoint,
    repo: &Repository,
    policy: &Policy,
    held: &mut lease::HeldLease,
    retention_due: bool,
    prune_due: bool,
) -> Result<MaintainReport> {
    let set = &ep.cfg.name;
    let mut report = MaintainReport::default();
    let time = || format_rfc3339(now_ns());
    if retention_due {
        held.ensure(repo)?;
        let (snaps, _unreadable) = repo.snapshots_lenient()?; // unreadable ones stay
        let mut protect = head_snapshots(repo, set)?;
        let meta = ep.state.meta()?;
        protect.extend(meta.base_snapshot);
        let plan = plan_retention(&snaps, set, policy, &protect, &jiff::tz::TimeZone::system());
        // A head published since we looked is new (kept by the policy); check the heads once
        // more right before deleting all the same.
        held.ensure(repo)?;
        let again = head_snapshots(repo, set)?;
        let mut forgotten = Vec::new();
        for id in plan.forget.iter().filter(|id| !again.contains(id)) {
            match repo
                .backend()
                .delete(crate::backend::Kind::Snapshot, &id.to_hex())
            {
                Ok(()) => forgotten.push(*id),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        super::audit::append(
            &ep.audit_path(),
            &[json!({
                "time": time(),
                "set": set,
                "endpoint": ep.cfg.endpoint,
                "action": "retention",
                "retention": ep.cfg.retention,
                "kept": plan.kept,
                "forgotten": forgotten.len(),
                "snapshots": forgotten.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            })],
        )?;
        let (kept, n) = (plan.kept as u64, forgotten.len() as u64);
        ep.state.update_maintenance(|m| {
            m.retention_ns = Some(now_ns());
            m.retention_kept = kept;
            m.retention_forgotten = n;
            m.lease_busy = None;
            m.last_error = None;
        })?;
        report.retention = Some(RetentionPlan {
            forget: forgotten,
            ..plan
        });
    }
    if prune_due {
        held.ensure(repo)?;
        let r = prune(
            repo,
            &PruneOptions {
                compact_below_bytes: COMPACT_BELOW_BYTES,
                ..PruneOptions::default()
            },
        )?;
        super::audit::append(
            &ep.audit_path(),
            &[json!({
                "time": time(),
                "set": set,
                "endpoint": ep.cfg.endpoint,
                "action": "prune",
                "freed_bytes": r.bytes_deleted,
                "packs_deleted": r.packs_deleted,
                "packs_compacted": r.packs_compacted,
                "packs_deferred": r.packs_deferred,
                "index_files": r.index_files,
            })],
        )?;
        let r2 = r.clone();
        ep.state.update_maintenance(|m| {
            m.prune_ns = Some(now_ns());
            m.prune_freed_bytes = r2.bytes_deleted;
            m.prune_packs_deleted = r2.packs_deleted as u64;
            m.prune_packs_compacted = r2.packs_compacted as u64;
            m.prune_index_files = r2.index_files as u64;
            m.lease_busy = None;
            m.last_error = None;
        })?;
        report.prune = Some(r);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::Summary;
    use crate::id::BlobId;

    const S: i64 = 1_000_000_000;

    fn snap(t: i64, set: Option<&str>, endpoint: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time_ns: 1_700_000_000 * S + t * S,
            tree: BlobId::default(),
            host: "h".into(),
            user: "u".into(),
            paths: vec![b"/p".to_vec()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            parents: vec![],
            sync_set: set.map(String::from),
            endpoint: Some(endpoint.into()),
            summary: Summary::default(),
            program_version: "t".into(),
            extra: vec![],
        }
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId([n; 32])
    }

    #[test]
    fn forgets_only_this_sets_unprotected_snapshots_outside_the_window() {
        let snaps = vec![
            (id(1), snap(0, Some("p"), "a", &[])),  // old: forgotten
            (id(2), snap(10, Some("p"), "b", &[])), // b's newest: protected
            (id(3), snap(20, Some("p"), "a", &["before-sync"])), // old safety: forgotten
            (id(4), snap(30, Some("p"), "a", &[])), // a head: protected
            (id(5), snap(95, Some("p"), "a", &["before-sync"])), // young safety: kept
            (id(6), snap(100, Some("p"), "a", &[])), // newest: kept
            (id(7), snap(0, Some("q"), "a", &[])),  // another set: never
            (id(8), snap(0, None, "a", &[])),       // a plain backup: never
        ];
        let policy = Policy::parse("60s").unwrap();
        let protect: HashSet<SnapshotId> = [id(4)].into();
        let plan = plan_retention(&snaps, "p", &policy, &protect, &jiff::tz::TimeZone::UTC);
        assert_eq!(plan.considered, 6);
        assert_eq!(plan.forget, vec![id(1), id(3)]);
        assert_eq!((plan.kept, plan.protected), (4, 2));
    }
}
