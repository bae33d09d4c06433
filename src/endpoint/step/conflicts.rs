//! Phase 5½: the conflicts after the folder was changed — those parked here (kept in the
//! state), and the set's conflict list the next head carries (`format-spec/sync.md`,
//! "Conflicts everywhere"). An endpoint rewrites only the entries that name it (and resolves
//! versions not adopted that it met as conflicts of its own); the others' are carried.

use std::collections::{BTreeSet, HashMap};

use super::Cx;
use super::execute::Done;
use super::plan::Plan;
use super::remote::Remote;
use crate::endpoint::state::{Activity, ConflictState, NodeSummary, SharedConflictView};
use crate::endpoint::trees::node_at;
use crate::error::Result;
use crate::format::head::{ConflictState as SharedState, SharedConflict};
use crate::snapshot::{Node, display_path};
use crate::sync::merge::Outcome;
use crate::sync::shared_conflicts::{self, RESOLVED_KEPT_NS};

/// Conflicts as the step leaves them.
pub(super) struct Settled {
    /// Parked here: to store (new or still parked).
    pub set: Vec<(Vec<u8>, ConflictState)>,
    /// No longer parked here.
    pub remove: Vec<Vec<u8>>,
    /// The set's conflicts for the next head, in canonical order.
    pub shared: Vec<SharedConflict>,
}

impl Settled {
    /// The set's conflicts as the state keeps them (for `status` and `conflicts` offline).
    pub fn shared_view(&self) -> Vec<SharedConflictView> {
        self.shared
            .iter()
            .filter_map(SharedConflictView::of)
            .collect()
    }
}

fn summary_of(n: Option<&Node>) -> Option<NodeSummary> {
    n.map(|n| NodeSummary {
        kind: n.type_name().into(),
        size: n.size(),
        mtime_ns: n.mtime_ns,
    })
}

pub(super) fn settle(cx: &mut Cx, remote: &Remote, plan: &Plan, done: &Done) -> Result<Settled> {
    let known: HashMap<&Vec<u8>, &ConflictState> =
        plan.stored.iter().map(|(p, c)| (p, c)).collect();
    let mut set = Vec::new();
    for c in &cx.report.conflicts {
        let action = match &c.outcome {
            Outcome::Parked => {
                let state = ConflictState {
                    kind: c.kind.name().into(),
                    local: summary_of(c.local.as_ref()),
                    remote: summary_of(c.remote.as_ref()),
                    detected_ns: known.get(&c.path).map(|k| k.detected_ns).unwrap_or(cx.now),
                    resolution: None,
                };
                set.push((c.path.clone(), state));
                continue;
            }
            Outcome::KeptLocal => "conflict-kept-local",
            Outcome::KeptRemote => "conflict-kept-remote",
            Outcome::KeptBoth { .. } => "conflict-kept-both",
            Outcome::ChangeKept => "change-beat-delete",
        };
        let size = c.local.as_ref().or(c.remote.as_ref()).map(|n| n.size());
        cx.activity.push(Activity {
            time_ns: cx.now,
            action: action.into(),
            path: display_path(&c.path),
            size: size.unwrap_or(0),
            direction: "none".into(),
        });
    }
    // Parked conflicts stay until the merge reports them resolved (an unchanged parked path is
    // skipped by the merge without being mentioned).
    let parked_now: BTreeSet<&Vec<u8>> = set.iter().map(|(p, _)| p).collect();
    let mut remove: Vec<Vec<u8>> = cx
        .report
        .resolved
        .iter()
        .filter(|p| !parked_now.contains(p))
        .cloned()
        .collect();
    // A parked path that exists neither here nor in the shared state any more (a parent was
    // resolved or replaced as a whole) has nothing left to decide.
    for (p, _) in &plan.stored {
        if !parked_now.contains(p)
            && node_at(&cx.trees, Some(done.applied_tree), p)?.is_none()
            && node_at(&cx.trees, Some(done.merged_tree), p)?.is_none()
        {
            remove.push(p.clone());
        }
    }
    let shared = shared(cx, remote, plan, &set, &remove);
    Ok(Settled {
        set,
        remove,
        shared,
    })
}

/// The set's conflicts after this step (`format-spec/sync.md`, "Conflicts everywhere"). This
/// endpoint is the authority on the entries naming it: those parked here now are `Parked`; a
/// parked entry naming it that is no longer parked here, and every version not adopted naming
/// it, become `Resolved` (it has met them: as a conflict of its own, or its base no longer
/// holds that version). A version not adopted that this step met as its own conflict is
/// resolved whoever it names. Other entries are carried unchanged; resolutions older than
/// [`RESOLVED_KEPT_NS`] are dropped. Entries are never just left out — a head still carrying
/// one would bring it back when the heads are combined (B11).
fn shared(
    cx: &Cx,
    remote: &Remote,
    plan: &Plan,
    set: &[(Vec<u8>, ConflictState)],
    remove: &[Vec<u8>],
) -> Vec<SharedConflict> {
    let me = &cx.ep.cfg.endpoint;
    let consumed: BTreeSet<(&[u8], &str)> = plan
        .consumed
        .iter()
        .map(|(p, e)| (p.as_slice(), e.as_str()))
        .collect();
    // Parked here: what stays of the stored ones, and the new ones.
    let removed: BTreeSet<&Vec<u8>> = remove.iter().collect();
    let mut mine: Vec<(&Vec<u8>, i64)> = plan
        .stored
        .iter()
        .filter(|(p, _)| !removed.contains(p))
        .map(|(p, c)| (p, c.detected_ns))
        .collect();
    mine.extend(set.iter().map(|(p, c)| (p, c.detected_ns)));
    mine.sort();
    mine.dedup_by(|a, b| a.0 == b.0);
    let parked_here: BTreeSet<&Vec<u8>> = mine.iter().map(|(p, _)| *p).collect();
    let resolved = |c: &SharedConflict| SharedConflict {
        state: SharedState::Resolved,
        time_ns: cx.now,
        ancestor: None,
        ..c.clone()
    };
    let mut out: Vec<SharedConflict> = Vec::new();
    for c in &remote.conflicts {
        let mine = c.endpoint == *me;
        match c.state {
            SharedState::Unadopted
                if mine || consumed.contains(&(c.path.as_slice(), c.endpoint.as_str())) =>
            {
                out.push(resolved(c))
            }
            SharedState::Parked if mine => {
                if !parked_here.contains(&c.path) {
                    out.push(resolved(c));
                }
            }
            SharedState::Resolved if cx.now.saturating_sub(c.time_ns) > RESOLVED_KEPT_NS => {}
            // A resolution of a conflict parked here again: the parked entry replaces it.
            SharedState::Resolved if mine && c.class() == 0 && parked_here.contains(&c.path) => {}
            _ => out.push(c.clone()),
        }
    }
    out.extend(mine.into_iter().map(|(p, since)| SharedConflict {
        path: p.clone(),
        endpoint: me.clone(),
        state: SharedState::Parked,
        time_ns: since,
        version: None,
        ancestor: None,
        extra: vec![],
    }));
    shared_conflicts::combine(out)
}
