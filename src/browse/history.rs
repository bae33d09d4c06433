//! A sync set's versions, and one path's history through them.

use serde::Serialize;

use super::Browser;
use crate::error::Result;
use crate::id::SnapshotId;
use crate::snapshot::{Node, Snapshot};
use crate::sync::merge::same_content;

/// Tag of the local copies a sync step saves before it replaces local files.
pub const SAFETY_TAG: &str = "before-sync";

pub fn is_safety(s: &Snapshot) -> bool {
    s.tags.iter().any(|t| t == SAFETY_TAG)
}

/// The snapshots of sync set `set` among `all` (oldest first): its published versions, and with
/// `include_safety` also the local copies saved before a sync replaced files.
pub fn set_versions(
    all: &[(SnapshotId, Snapshot)],
    set: &str,
    include_safety: bool,
) -> Vec<(SnapshotId, Snapshot)> {
    all.iter()
        .filter(|(_, s)| s.sync_set.as_deref() == Some(set) && (include_safety || !is_safety(s)))
        .cloned()
        .collect()
}

/// What happened to a path in a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Created,
    Modified,
    Deleted,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::Created => "created",
            Event::Modified => "modified",
            Event::Deleted => "deleted",
        }
    }
}

/// A version in which a path changed.
#[derive(Debug, Clone)]
pub struct PathVersion {
    pub id: SnapshotId,
    pub time_ns: i64,
    pub endpoint: Option<String>,
    pub event: Event,
    /// The path's node in that version (`None`: deleted).
    pub node: Option<Node>,
    /// A local copy saved before a sync replaced it (not a published version).
    pub safety: bool,
}

/// The versions (among `versions`, oldest first) in which `path` was created, changed or
/// deleted; versions where it stayed the same are left out.
pub fn path_history(
    b: &Browser,
    versions: &[(SnapshotId, Snapshot)],
    path: &[u8],
) -> Result<Vec<PathVersion>> {
    let mut last: Option<Option<Node>> = None;
    let mut rows = Vec::new();
    for (id, s) in versions {
        let node = b.find(&s.tree, path)?;
        let event = match (&last, &node) {
            (None | Some(None), None) => None,
            (None | Some(None), Some(_)) => Some(Event::Created),
            (Some(Some(_)), None) => Some(Event::Deleted),
            (Some(Some(a)), Some(n)) => {
                (!same_content(Some(a), Some(n))).then_some(Event::Modified)
            }
        };
        if let Some(event) = event {
            rows.push(PathVersion {
                id: *id,
                time_ns: s.time_ns,
                endpoint: s.endpoint.clone(),
                event,
                node: node.clone(),
                safety: is_safety(s),
            });
        }
        last = Some(node);
    }
    Ok(rows)
}
