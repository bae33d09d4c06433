//! What `status` reports about a sync set at this endpoint, as a typed value (`Serialize`) that
//! the CLI renders as text or JSON. Works whether or not the daemon runs: it reads the set's
//! state, lists the set's heads and its endpoints' presence (one list call each, one read per
//! head and per endpoint) and asks the daemon, if one answers, what it is doing.
//!
//! Owns: the in-sync rule (`format-spec/sync.md`, "In sync"). Must not touch: printing, merge
//! decisions.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::daemon::LiveStatus;
use crate::daemon::control::{Op, request};
use crate::endpoint::Endpoint;
use crate::endpoint::state::{SharedConflictView, Unsynced};
use crate::error::Result;
use crate::format::presence::Presence;
use crate::repository::heads::read_heads;
use crate::repository::presence::{Liveness, liveness, read_all as read_presence};
use crate::repository::{Credentials, Repository, now_ns};
use crate::snapshot::display_path;
use crate::sync::Role;
use crate::sync::shared_conflicts;
use crate::time::{format_ago, format_rfc3339};

/// How long `status` waits for the daemon's answer.
const DAEMON_ANSWER: Duration = Duration::from_secs(10);

/// The daemon's answer to `status`: its pid and what each of its workers is doing.
#[derive(Debug, Clone, Deserialize)]
pub struct DaemonAnswer {
    pub pid: u32,
    pub sets: Vec<LiveStatus>,
}

/// Asks the daemon of `home`, if one runs and answers.
pub fn ask_daemon(home: &Path) -> Option<DaemonAnswer> {
    match request(home, Op::Status { set: None }, DAEMON_ANSWER) {
        Ok(Some(r)) if r.ok => serde_json::from_value(r.result).ok(),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointSeen {
    pub name: String,
    pub last_seen: String,
    pub ago: String,
}

/// A conflict in the set, parked here or elsewhere.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub path: String,
    /// Here: `modified_both`, …; elsewhere: `parked`, or `not_adopted` (found when concurrent
    /// heads were combined; that endpoint's next step meets it).
    pub kind: String,
    /// The endpoint it is parked at (this one for those parked here).
    pub endpoint: String,
    pub here: bool,
    pub since: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActivityLine {
    pub time: String,
    pub ago: String,
    pub action: String,
    pub path: String,
    pub size: u64,
    pub direction: String,
}

/// One instance of the set (an endpoint: this machine, a workspace that joined, or one that was
/// added with `add-instance` and has not joined yet), as the instance list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    pub name: String,
    /// This machine.
    pub here: bool,
    /// Whether it is connected: here, a daemon runs the set; elsewhere, its daemon's
    /// heartbeat (presence) is recent; a workspace added but never joined is not. `None`:
    /// another endpoint whose daemon never ran the set — see `last_seen`.
    pub connected: Option<bool>,
    /// One phrase: `connected`, `not connected: no daemon runs the set`, `connected (heartbeat
    /// 20 seconds ago)`, `not connected: its daemon stopped 5 minutes
    /// ago`, `last seen 2 minutes ago`, `never joined (added 3 hours ago)`.
    pub state: String,
    /// Its host name: from its daemon's presence, else from the last version it published.
    pub host: Option<String>,
    /// Where its folder is: here, the set's folder; elsewhere, the folder its daemon's
    /// presence names, else that of the last version it published, or the one `add-instance`
    /// was given.
    pub folder: Option<String>,
    /// Its daemon's last heartbeat (elsewhere; `None`: no daemon of it ran the set).
    pub heartbeat: Option<String>,
    pub heartbeat_ago: Option<String>,
    /// When its daemon started running the set, and its program version.
    pub daemon_started: Option<String>,
    pub version: Option<String>,
    /// When it last published a version of the set.
    pub last_seen: Option<String>,
    pub last_seen_ago: Option<String>,
    /// When `add-instance` recorded it.
    pub added: Option<String>,
}

/// A file over the set's `warn_file_size`: synced anyway, named so a stray dump gets noticed.
#[derive(Debug, Clone, Serialize)]
pub struct LargeFile {
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonView {
    pub running: bool,
    pub pid: Option<u32>,
    /// What the daemon does for this set (`None`: it runs, but not this set).
    pub live: Option<LiveStatus>,
}

/// Everything `status NAME` says.
#[derive(Debug, Clone, Serialize)]
pub struct SetStatus {
    pub name: String,
    /// The first line, as people read it: `In sync — last update: 2 seconds ago`, or
    /// `Not in sync — <the first reason>`.
    pub headline: String,
    /// One line: `in sync`, or the first reason it is not.
    pub state: String,
    /// This endpoint has merged the single current head, its folder matches it, nothing is
    /// parked, failed or waiting (see `reasons` when false).
    pub in_sync: bool,
    /// Every reason it is not in sync (empty when it is).
    pub reasons: Vec<String>,
    pub folder: String,
    pub repository: String,
    pub repository_error: Option<String>,
    pub endpoint: String,
    pub role: Role,
    pub mode: &'static str,
    pub conflict_policy: &'static str,
    pub local: Counts,
    pub shared: Counts,
    /// Heads the set has now (`None`: the repository could not be listed).
    pub heads: Option<usize>,
    pub last_step: Option<String>,
    pub last_step_ago: Option<String>,
    pub last_update: Option<String>,
    pub last_update_ago: Option<String>,
    pub halt: Option<String>,
    pub endpoints: Vec<EndpointSeen>,
    /// Every instance: this one, those that published, those added but never joined.
    pub instances: Vec<InstanceView>,
    pub conflicts: Vec<Conflict>,
    /// Paths the last step knowingly left out of sync, with the reason.
    pub unsynced: Vec<Unsynced>,
    pub unsynced_total: u64,
    /// Paths where this folder keeps its own version, different from the shared one, because
    /// of a one-way mode (a receiving side's edit, a change a sending side does not apply).
    pub kept_here: Vec<String>,
    pub kept_here_total: u64,
    pub skipped: Vec<Skipped>,
    /// Files over `warn_file_size` as of the last step (largest first), and the limit.
    pub large_files: Vec<LargeFile>,
    pub warn_file_size: Option<u64>,
    pub activity: Vec<ActivityLine>,
    pub paused: bool,
    pub daemon: DaemonView,
    /// The set's retention and when it, and prune, last ran from this endpoint.
    pub maintenance: MaintenanceView,
}

/// Retention and prune as `status` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceView {
    pub retention: String,
    pub retention_last: Option<String>,
    pub retention_last_ago: Option<String>,
    pub retention_kept: u64,
    pub retention_forgotten: u64,
    pub prune_last: Option<String>,
    pub prune_last_ago: Option<String>,
    pub prune_freed_bytes: u64,
    pub prune_packs_compacted: u64,
    /// Another endpoint held the maintenance lease at the last attempt.
    pub lease_busy: Option<String>,
    pub last_error: Option<String>,
    /// Why maintenance is not done from here (an append-only repository).
    pub skipped: Option<String>,
    /// Retention or prune runs now (in the daemon, beside the steps).
    pub running: bool,
}

/// What the repository says now about the set.
struct HeadsNow {
    /// Every head name listed (current and superseded), sorted.
    names: Vec<String>,
    /// The conflicts the current heads carry.
    conflicts: Vec<SharedConflictView>,
    /// Of each current head: its endpoint, and the host and folder of its snapshot.
    publishers: Vec<(String, String, String)>,
    /// The newest presence of each endpoint whose daemon ran the set (empty when presence
    /// could not be read: `status` then falls back to publish times).
    presence: Vec<Presence>,
}

/// The set's heads as they are now (one list call, one read per head) and its endpoints'
/// presence (one list call, one read per endpoint), or why they could not be read.
fn heads_now(ep: &Endpoint, creds: &Credentials) -> std::result::Result<HeadsNow, String> {
    let repo = Repository::open_url(&ep.cfg.repo, creds).map_err(|e| e.to_string())?;
    let listing = read_heads(&repo, &ep.cfg.name).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = listing.current.iter().map(|(n, _)| n.clone()).collect();
    names.extend(listing.superseded);
    names.sort();
    // Several heads: their lists combined as the next step will combine them.
    let combined = shared_conflicts::combine(
        listing
            .current
            .iter()
            .flat_map(|(_, h)| h.conflicts.iter().cloned()),
    );
    let mut conflicts: Vec<SharedConflictView> = Vec::new();
    for v in combined.iter().filter_map(SharedConflictView::of) {
        if !conflicts
            .iter()
            .any(|o| o.path == v.path && o.endpoint == v.endpoint && o.state == v.state)
        {
            conflicts.push(v);
        }
    }
    let publishers = listing
        .current
        .iter()
        .filter_map(|(_, h)| {
            let snap = repo.load_snapshot(&h.snapshot).ok()?;
            let folder = snap
                .paths
                .first()
                .map(|p| display_path(p))
                .unwrap_or_default();
            Some((h.endpoint.clone(), snap.host, folder))
        })
        .collect();
    let presence = read_presence(&repo, &ep.cfg.name).unwrap_or_default();
    Ok(HeadsNow {
        names,
        conflicts,
        publishers,
        presence,
    })
}

/// Every conflict of the set as seen from this endpoint: those parked here (from its state),
/// then those parked elsewhere — from the current heads when the repository answers, else as
/// of the last step.
pub fn set_conflicts(ep: &Endpoint, creds: &Credentials) -> Result<Vec<Conflict>> {
    let heads = heads_now(ep, creds);
    all_conflicts(ep, &heads)
}

fn all_conflicts(
    ep: &Endpoint,
    heads: &std::result::Result<HeadsNow, String>,
) -> Result<Vec<Conflict>> {
    let me = &ep.cfg.endpoint;
    let mut out: Vec<Conflict> = ep
        .state
        .conflicts()?
        .into_iter()
        .map(|(p, c)| Conflict {
            path: display_path(&p),
            kind: c.kind,
            endpoint: me.clone(),
            here: true,
            since: format_rfc3339(c.detected_ns),
        })
        .collect();
    let shared = match heads {
        Ok(h) => h.conflicts.clone(),
        Err(_) => ep.state.meta()?.shared_conflicts,
    };
    out.extend(
        shared
            .into_iter()
            .filter(|c| c.endpoint != *me)
            .map(|c| Conflict {
                path: c.path,
                kind: c.state,
                endpoint: c.endpoint,
                here: false,
                since: format_rfc3339(c.since_ns),
            }),
    );
    Ok(out)
}

/// The status of set `name` at this endpoint.
pub fn set_status(
    home: &Path,
    name: &str,
    creds: &Credentials,
    daemon: Option<&DaemonAnswer>,
) -> Result<SetStatus> {
    let ep = Endpoint::open(home, name)?;
    let meta = ep.state.meta()?;
    let maint = ep.state.maintenance()?;
    let now = now_ns();
    let heads = heads_now(&ep, creds);
    let conflicts = all_conflicts(&ep, &heads)?;
    let names = heads
        .as_ref()
        .map(|h| h.names.clone())
        .map_err(|e| e.clone());
    let live = daemon.and_then(|d| d.sets.iter().find(|l| l.set == name).cloned());
    let reasons = not_in_sync(&meta, &conflicts, &names, live.as_ref());
    let maintaining = live.as_ref().is_some_and(|l| l.maintaining);
    let ago = |t: Option<i64>| t.map(|t| format_ago(t, now));
    let headline = match (&reasons.first(), meta.last_change_ns.or(meta.last_step_ns)) {
        (None, Some(t)) => format!("In sync — last update: {}", format_ago(t, now)),
        (None, None) => "In sync".to_string(),
        (Some(why), _) => format!("Not in sync — {why}"),
    };
    let instances = instances(&ep, &meta, heads.as_ref().ok(), daemon, live.is_some(), now);
    Ok(SetStatus {
        name: name.to_string(),
        headline,
        instances,
        state: reasons.first().cloned().unwrap_or_else(|| "in sync".into()),
        in_sync: reasons.is_empty(),
        reasons,
        folder: ep.cfg.local_path.display().to_string(),
        repository: ep.cfg.repo.clone(),
        repository_error: names.as_ref().err().cloned(),
        endpoint: ep.cfg.endpoint.clone(),
        role: ep.cfg.role,
        mode: ep.cfg.sync_mode.name(),
        conflict_policy: ep.cfg.conflict_policy.name(),
        local: Counts {
            files: meta.local_files,
            bytes: meta.local_bytes,
        },
        shared: Counts {
            files: meta.remote_files,
            bytes: meta.remote_bytes,
        },
        heads: names.as_ref().ok().map(Vec::len),
        last_step: meta.last_step_ns.map(format_rfc3339),
        last_step_ago: ago(meta.last_step_ns),
        last_update: meta.last_change_ns.map(format_rfc3339),
        last_update_ago: ago(meta.last_change_ns),
        halt: meta.halt.clone(),
        endpoints: meta
            .endpoints_seen
            .iter()
            .map(|(e, t)| EndpointSeen {
                name: e.clone(),
                last_seen: format_rfc3339(*t),
                ago: format_ago(*t, now),
            })
            .collect(),
        conflicts,
        unsynced: meta.unsynced.clone(),
        unsynced_total: meta.unsynced_total,
        kept_here: meta.kept_here.iter().map(|p| display_path(p)).collect(),
        kept_here_total: meta.kept_here_total,
        skipped: ep
            .state
            .skipped()?
            .into_iter()
            .map(|(p, s)| Skipped {
                path: display_path(&p),
                reason: s.reason,
            })
            .collect(),
        large_files: meta
            .large_files
            .iter()
            .map(|(p, n)| LargeFile {
                path: p.clone(),
                size: *n,
            })
            .collect(),
        warn_file_size: crate::endpoint::config::RulesFile::load(home)
            .ok()
            .and_then(|f| f.default_rules.size_limits.warn_file_size)
            .and_then(|w| crate::sync::rules::parse_size(&w).ok()),
        activity: ep
            .state
            .activity(10)?
            .into_iter()
            .map(|a| ActivityLine {
                time: format_rfc3339(a.time_ns),
                ago: format_ago(a.time_ns, now),
                action: a.action,
                path: a.path,
                size: a.size,
                direction: a.direction,
            })
            .collect(),
        paused: meta.paused,
        daemon: DaemonView {
            running: daemon.is_some(),
            pid: daemon.map(|d| d.pid),
            live,
        },
        maintenance: MaintenanceView {
            retention: ep.cfg.retention.clone(),
            retention_last: maint.retention_ns.map(format_rfc3339),
            retention_last_ago: ago(maint.retention_ns),
            retention_kept: maint.retention_kept,
            retention_forgotten: maint.retention_forgotten,
            prune_last: maint.prune_ns.map(format_rfc3339),
            prune_last_ago: ago(maint.prune_ns),
            prune_freed_bytes: maint.prune_freed_bytes,
            prune_packs_compacted: maint.prune_packs_compacted,
            lease_busy: maint.lease_busy.clone(),
            last_error: maint.last_error.clone(),
            skipped: maint.skipped.clone(),
            running: maintaining,
        },
    })
}

/// Every instance of the set as seen from here: this endpoint first, then the others that
/// published or whose daemon ran the set (by name), then those `add-instance` recorded that
/// never did either.
fn instances(
    ep: &Endpoint,
    meta: &crate::endpoint::state::Meta,
    heads: Option<&HeadsNow>,
    daemon: Option<&DaemonAnswer>,
    daemon_runs_set: bool,
    now: i64,
) -> Vec<InstanceView> {
    let me = &ep.cfg.endpoint;
    let seen = |name: &str| {
        meta.endpoints_seen
            .iter()
            .find(|(e, _)| e == name)
            .map(|(_, t)| *t)
    };
    let published = |name: &str| {
        heads
            .and_then(|h| h.publishers.iter().find(|(e, _, _)| e == name).cloned())
            .or_else(|| {
                meta.endpoint_places
                    .iter()
                    .find(|(e, _, _)| e == name)
                    .cloned()
            })
    };
    let presence = |name: &str| heads.and_then(|h| h.presence.iter().find(|p| p.endpoint == name));
    let added = |name: &str| ep.cfg.instances.iter().find(|i| i.name == name);
    let mut out = Vec::new();
    let here_seen = seen(me);
    out.push(InstanceView {
        name: me.clone(),
        here: true,
        connected: Some(daemon_runs_set),
        state: match (daemon, daemon_runs_set) {
            (Some(d), true) => format!("connected (daemon pid {})", d.pid),
            (Some(_), false) => "not connected: the daemon runs, but not this set".into(),
            (None, _) => "not connected: no daemon runs (syncs only with `sync`)".into(),
        },
        host: Some(crate::repository::hostname()),
        folder: Some(ep.cfg.local_path.display().to_string()),
        last_seen: here_seen.map(format_rfc3339),
        last_seen_ago: here_seen.map(|t| format_ago(t, now)),
        added: None,
        heartbeat: None,
        heartbeat_ago: None,
        daemon_started: None,
        version: None,
    });
    let mut others: Vec<&String> = meta
        .endpoints_seen
        .iter()
        .map(|(e, _)| e)
        .chain(
            heads
                .iter()
                .flat_map(|h| h.presence.iter().map(|p| &p.endpoint)),
        )
        .filter(|e| *e != me)
        .collect();
    others.sort();
    others.dedup();
    for name in others {
        let t = seen(name);
        let p = published(name);
        let live = presence(name);
        let folder = live
            .map(|l| display_path(l.folder.as_slice()))
            .or_else(|| p.as_ref().map(|(_, _, f)| f.clone()))
            .or_else(|| added(name).and_then(|i| i.folder.clone()));
        let last_seen = match t {
            Some(t) => format!("last seen {}", format_ago(t, now)),
            None => "not seen yet".into(),
        };
        let (connected, state) = match live {
            None => (None, last_seen),
            Some(l) => match liveness(l, now) {
                Liveness::Connected => (
                    Some(true),
                    format!("connected (heartbeat {})", format_ago(l.heartbeat_ns, now)),
                ),
                Liveness::Stopped => (
                    Some(false),
                    format!(
                        "not connected: its daemon stopped {}; {last_seen}",
                        format_ago(l.heartbeat_ns, now)
                    ),
                ),
                Liveness::Silent => (
                    Some(false),
                    format!(
                        "not connected: no heartbeat from its daemon since {}; {last_seen}",
                        format_ago(l.heartbeat_ns, now)
                    ),
                ),
            },
        };
        out.push(InstanceView {
            name: name.clone(),
            here: false,
            connected,
            state,
            host: live.map(|l| l.host.clone()).or(p.map(|(_, h, _)| h)),
            folder,
            last_seen: t.map(format_rfc3339),
            last_seen_ago: t.map(|t| format_ago(t, now)),
            added: added(name).map(|i| i.added.clone()),
            heartbeat: live.map(|l| format_rfc3339(l.heartbeat_ns)),
            heartbeat_ago: live.map(|l| format_ago(l.heartbeat_ns, now)),
            daemon_started: live.map(|l| format_rfc3339(l.started_ns)),
            version: live.map(|l| l.version.clone()),
        });
    }
    for i in &ep.cfg.instances {
        if out.iter().any(|o| o.name == i.name) {
            continue;
        }
        let since = jiff::Timestamp::from_str(&i.added)
            .map(|t| format!(" (added {})", format_ago(t.as_nanosecond() as i64, now)))
            .unwrap_or_default();
        out.push(InstanceView {
            name: i.name.clone(),
            here: false,
            connected: Some(false),
            state: format!("never joined{since}"),
            host: None,
            folder: i.folder.clone(),
            last_seen: None,
            last_seen_ago: None,
            added: Some(i.added.clone()),
            heartbeat: None,
            heartbeat_ago: None,
            daemon_started: None,
            version: None,
        });
    }
    out
}

/// The in-sync rule: every reason this endpoint is not in sync with the set, most important
/// first. In sync means: a step ran and nothing halted or paused it; the repository answers;
/// the set has exactly one head and it is the one this endpoint's last step merged (or
/// published); no conflict is parked, here or at another endpoint; the last step left nothing
/// out (failed actions, files still being written or unreadable); no path differs because a
/// one-way mode keeps this folder's version; and the daemon, if it runs the set, has no local change
/// waiting, no head to merge, nothing to retry and no step running.
fn not_in_sync(
    meta: &crate::endpoint::state::Meta,
    conflicts: &[Conflict],
    heads: &std::result::Result<Vec<String>, String>,
    live: Option<&LiveStatus>,
) -> Vec<String> {
    use crate::daemon::WorkerState;
    let mut why = Vec::new();
    if let Some(h) = &meta.halt {
        why.push(format!("halted: {h}"));
    }
    if meta.last_step_ns.is_none() {
        why.push("not synced yet".into());
    }
    if meta.paused {
        why.push("paused".into());
    }
    match heads {
        Err(_) => why.push("repository unreachable".into()),
        Ok(names) if names.is_empty() && meta.last_step_ns.is_some() => {
            why.push("the shared state has no head: the next step halts and says why".into())
        }
        Ok(names) if names.len() > 1 => why.push(format!(
            "{} versions of the shared state exist (endpoints published at the same time): the next step merges them",
            names.len()
        )),
        Ok(names) if *names != meta.heads && meta.last_step_ns.is_some() => {
            why.push("behind: the shared state changed since the last step".into())
        }
        Ok(_) => {}
    }
    let here = conflicts.iter().filter(|c| c.here).count();
    if here > 0 {
        why.push(format!("{here} conflict(s) parked here"));
    }
    let mut elsewhere: Vec<&str> = conflicts
        .iter()
        .filter(|c| !c.here)
        .map(|c| c.endpoint.as_str())
        .collect();
    if !elsewhere.is_empty() {
        let n = elsewhere.len();
        elsewhere.sort();
        elsewhere.dedup();
        why.push(format!(
            "{n} conflict(s) parked at {}",
            elsewhere.join(", ")
        ));
    }
    if meta.unsynced_total > 0 {
        why.push(format!(
            "{} path(s) not in sync after the last step",
            meta.unsynced_total
        ));
    }
    if meta.kept_here_total > 0 {
        why.push(format!(
            "{} path(s) here differ from the shared state: the set's one-way mode keeps this folder's version",
            meta.kept_here_total
        ));
    }
    if let Some(l) = live {
        match l.state {
            WorkerState::Syncing => why.push("a step is running".into()),
            WorkerState::Error => why.push(format!(
                "the last step failed: {}",
                l.last_error.as_deref().unwrap_or("unknown error")
            )),
            _ => {}
        }
        if l.pending_paths > 0 {
            why.push(format!("{} local change(s) waiting", l.pending_paths));
        }
        if l.remote_pending {
            why.push("a new version of the shared state is waiting".into());
        }
    }
    why
}
