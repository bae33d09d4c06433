//! An endpoint's state for one sync set, in redb (`$PRISM_HOME/sync/<NAME>.state.redb`, opened
//! in multi-process mode so `status` reads while a daemon writes). Everything a step decides is
//! committed in one transaction after the step's effects are durable, so a crash before it just
//! makes the next step redo the work (see `format-spec/sync.md`).
//!
//! Tables (values are JSON):
//! - `meta`: `state` → [`Meta`], `maintenance` → [`Maintenance`];
//! - `conflicts`: path bytes → [`ConflictState`];
//! - `activity`: sequence number (u64) → [`Activity`] (the last [`ACTIVITY_KEPT`]);
//! - `skipped`: path bytes → [`SkippedFile`] (replaced by every step).

use std::path::{Path, PathBuf};

use redb::{
    ConcurrencyMode, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::sync::Policy;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const CONFLICTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("conflicts");
const ACTIVITY: TableDefinition<u64, &[u8]> = TableDefinition::new("activity");
const SKIPPED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("skipped");

/// Large files (`warn_file_size`) a step records for `status`.
pub const LARGE_KEPT: usize = 50;

/// Activity entries kept.
pub const ACTIVITY_KEPT: u64 = 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// Tree of the shared state this endpoint last agreed on (kept as hex, like every id here).
    pub base_tree: Option<BlobId>,
    /// The snapshot that state came from (parents of the next publish).
    pub base_snapshot: Option<SnapshotId>,
    /// Tree of what the folder held after the last step.
    pub applied_tree: Option<BlobId>,
    pub last_step_ns: Option<i64>,
    /// Set when the last step changed something.
    pub last_change_ns: Option<i64>,
    /// Why the set is halted (a guard tripped); cleared by a step that passes them.
    pub halt: Option<String>,
    pub local_files: u64,
    pub local_bytes: u64,
    pub remote_files: u64,
    pub remote_bytes: u64,
    /// Head names seen at the last step (the cheap change check compares them).
    pub heads: Vec<String>,
    /// Last error of a step (unreachable repository, …).
    pub last_error: Option<String>,
    /// Endpoints seen in heads, with the time of their last publish (ns).
    #[serde(default)]
    pub endpoints_seen: Vec<(String, i64)>,
    /// Paused with `prism-sync pause`: the daemon applies nothing until resumed.
    #[serde(default)]
    pub paused: bool,
    /// Paths where the folder and the shared state knowingly differ after the last step (the
    /// first [`UNSYNCED_KEPT`]): an action that failed, a file left for later, a file that
    /// could not be read.
    #[serde(default)]
    pub unsynced: Vec<Unsynced>,
    /// How many such paths there are in all.
    #[serde(default)]
    pub unsynced_total: u64,
    /// The deletion guard's rolling window: the shared state when it began, kept across
    /// restarts. `None`: the next step begins one.
    #[serde(default)]
    pub deletion_window: Option<DeletionWindow>,
    /// The set's conflicts as of the last step (every endpoint's), for `status` and `conflicts`
    /// when the repository cannot be reached.
    #[serde(default)]
    pub shared_conflicts: Vec<SharedConflictView>,
    /// The trees `local_files`/`local_bytes` and `remote_files`/`remote_bytes` count (files
    /// and symlinks; bytes of files): the next step carries them forward by the difference.
    /// Absent: counted afresh.
    #[serde(default)]
    pub local_counted_tree: Option<BlobId>,
    #[serde(default)]
    pub shared_counted_tree: Option<BlobId>,
    /// Paths where the folder keeps its own version, different from the shared one, because of
    /// a one-way mode (the first [`UNSYNCED_KEPT`]), and how many in all.
    #[serde(default)]
    pub kept_here: Vec<Vec<u8>>,
    #[serde(default)]
    pub kept_here_total: u64,
    /// Files in the folder over the set's `warn_file_size` as of the last step (the first
    /// [`LARGE_KEPT`], largest first), with their size: synced anyway, named by `status`.
    #[serde(default)]
    pub large_files: Vec<(String, u64)>,
    /// Where each endpoint seen in a head syncs: (endpoint, host, folder), from the snapshot
    /// of its last head this endpoint read; for `status`.
    #[serde(default)]
    pub endpoint_places: Vec<(String, String, String)>,
}

/// What this endpoint's maintenance of the set's repository did last (`meta` key
/// `maintenance`; kept apart from the step's record so the two never overwrite each other).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Maintenance {
    /// When retention last ran here, and what it did.
    pub retention_ns: Option<i64>,
    pub retention_kept: u64,
    pub retention_forgotten: u64,
    /// When prune (with compaction) last ran here, and what it freed.
    pub prune_ns: Option<i64>,
    pub prune_freed_bytes: u64,
    pub prune_packs_deleted: u64,
    pub prune_packs_compacted: u64,
    pub prune_index_files: u64,
    /// The last attempt (taken lease or not), so a busy lease is not asked for every poll.
    pub attempt_ns: Option<i64>,
    /// Another endpoint held the lease at the last attempt (`endpoint@host`).
    pub lease_busy: Option<String>,
    pub last_error: Option<String>,
    /// When this endpoint first looked at maintenance (set up, or upgraded to a version that
    /// maintains): the first retention and prune are due an interval after it, never in the
    /// first step.
    pub since_ns: Option<i64>,
    /// Why maintenance is not done from here at all (an append-only repository), said once.
    pub skipped: Option<String>,
}

/// A conflict somewhere in the set (carried in the head), as this endpoint keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SharedConflictView {
    pub path: String,
    /// The endpoint it is parked at, or whose version was not adopted.
    pub endpoint: String,
    /// `parked`, or `not_adopted` (found when concurrent heads were combined; that endpoint's
    /// next step meets it).
    pub state: String,
    pub since_ns: i64,
}

impl SharedConflictView {
    /// The view of a live entry; `None` for a resolution (never listed).
    pub fn of(c: &crate::format::head::SharedConflict) -> Option<SharedConflictView> {
        use crate::format::head::ConflictState;
        Some(SharedConflictView {
            path: crate::snapshot::display_path(&c.path),
            endpoint: c.endpoint.clone(),
            state: match c.state {
                ConflictState::Parked => "parked",
                ConflictState::Unadopted => "not_adopted",
                ConflictState::Resolved => return None,
            }
            .into(),
            since_ns: c.time_ns,
        })
    }
}

/// Where the deletion guard's window began: what it counts as lost are the files of this tree
/// that are gone from the shared state or the folder since (files made and removed within the
/// window never count; a move is not a loss).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeletionWindow {
    pub start_ns: i64,
    /// The shared state (this endpoint's base) when the window began.
    pub tree: BlobId,
    /// Files in the folder or the shared state (the larger) then.
    pub files: u64,
}

/// Unsynced paths kept in the state (the count covers all of them).
pub const UNSYNCED_KEPT: usize = 100;

/// A path the last step could not bring in sync, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Unsynced {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeSummary {
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub mtime_ns: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConflictState {
    pub kind: String,
    pub local: Option<NodeSummary>,
    pub remote: Option<NodeSummary>,
    pub detected_ns: i64,
    /// Set by `resolve`; the next step applies it.
    pub resolution: Option<Policy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Activity {
    pub time_ns: i64,
    /// `uploaded`, `downloaded`, `deleted`, `moved`, `conflict`, `kept-both`, …
    pub action: String,
    pub path: String,
    pub size: u64,
    /// `up` (to the shared state), `down` (into this folder), or `none`.
    pub direction: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkippedFile {
    pub reason: String,
}

/// Cheap to clone: the clones share one open database (the daemon's maintenance thread uses one
/// beside the worker's).
#[derive(Clone)]
pub struct State {
    db: std::sync::Arc<Database>,
    path: PathBuf,
}

/// What one step changes, written in one transaction.
#[derive(Default)]
pub struct Commit {
    pub meta: Meta,
    pub conflicts_set: Vec<(Vec<u8>, ConflictState)>,
    pub conflicts_remove: Vec<Vec<u8>>,
    pub activity: Vec<Activity>,
    /// `Some` replaces the skipped list.
    pub skipped: Option<Vec<(Vec<u8>, SkippedFile)>>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("sync state {}: {e}", path.display()))
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("state values serialize")
}

impl State {
    pub fn open(path: &Path) -> Result<State> {
        if let Some(d) = path.parent() {
            crate::fsx::private::create_dir(d).map_err(|e| Error::io(d, e))?;
        }
        crate::fsx::private::touch(path).map_err(|e| Error::io(path, e))?;
        let db = redb::Builder::new()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| err(path, e))?;
        Ok(State {
            db: std::sync::Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    pub fn meta(&self) -> Result<Meta> {
        let txn = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let t = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Meta::default()),
            Err(e) => return Err(err(&self.path, e)),
        };
        match t.get("state").map_err(|e| err(&self.path, e))? {
            Some(v) => serde_json::from_slice(v.value()).map_err(|e| err(&self.path, e)),
            None => Ok(Meta::default()),
        }
    }

    pub fn conflicts(&self) -> Result<Vec<(Vec<u8>, ConflictState)>> {
        self.path_rows(CONFLICTS)
    }

    pub fn skipped(&self) -> Result<Vec<(Vec<u8>, SkippedFile)>> {
        self.path_rows(SKIPPED)
    }

    /// Every row of a table keyed by path, its JSON value decoded; none if the table was
    /// never written.
    fn path_rows<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        let txn = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let t = match txn.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(err(&self.path, e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err(&self.path, e))? {
            let (k, v) = row.map_err(|e| err(&self.path, e))?;
            out.push((
                k.value().to_vec(),
                serde_json::from_slice(v.value()).map_err(|e| err(&self.path, e))?,
            ));
        }
        Ok(out)
    }

    /// The newest `n` activity entries, newest last.
    pub fn activity(&self, n: u64) -> Result<Vec<Activity>> {
        let txn = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let t = match txn.open_table(ACTIVITY) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(err(&self.path, e)),
        };
        let mut out = Vec::new();
        for row in t
            .iter()
            .map_err(|e| err(&self.path, e))?
            .rev()
            .take(n as usize)
        {
            let (_, v) = row.map_err(|e| err(&self.path, e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| err(&self.path, e))?);
        }
        out.reverse();
        Ok(out)
    }

    /// Records the user's choice for a parked path; false if the path is not parked.
    pub fn set_resolution(&self, path: &[u8], policy: Policy) -> Result<bool> {
        let txn = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        let found = {
            let mut t = txn.open_table(CONFLICTS).map_err(|e| err(&self.path, e))?;
            let current: Option<ConflictState> = t
                .get(path)
                .map_err(|e| err(&self.path, e))?
                .map(|v| serde_json::from_slice(v.value()))
                .transpose()
                .map_err(|e| err(&self.path, e))?;
            match current {
                Some(mut c) => {
                    c.resolution = Some(policy);
                    t.insert(path, json(&c).as_slice())
                        .map_err(|e| err(&self.path, e))?;
                    true
                }
                None => false,
            }
        };
        txn.commit().map_err(|e| err(&self.path, e))?;
        Ok(found)
    }

    pub fn maintenance(&self) -> Result<Maintenance> {
        let txn = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let t = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Maintenance::default()),
            Err(e) => return Err(err(&self.path, e)),
        };
        match t.get("maintenance").map_err(|e| err(&self.path, e))? {
            Some(v) => serde_json::from_slice(v.value()).map_err(|e| err(&self.path, e)),
            None => Ok(Maintenance::default()),
        }
    }

    /// Updates the maintenance record in one write transaction.
    pub fn update_maintenance(&self, f: impl FnOnce(&mut Maintenance)) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        {
            let mut t = txn.open_table(META).map_err(|e| err(&self.path, e))?;
            let mut m: Maintenance = match t.get("maintenance").map_err(|e| err(&self.path, e))? {
                Some(v) => serde_json::from_slice(v.value()).map_err(|e| err(&self.path, e))?,
                None => Maintenance::default(),
            };
            f(&mut m);
            t.insert("maintenance", json(&m).as_slice())
                .map_err(|e| err(&self.path, e))?;
        }
        txn.commit().map_err(|e| err(&self.path, e))
    }

    /// Updates the meta record alone (halts, errors).
    pub fn update_meta(&self, f: impl FnOnce(&mut Meta)) -> Result<()> {
        // Read and written in one write transaction: two updaters never lose each other's
        // change (a `pause` and a halt, say).
        let txn = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        {
            let mut t = txn.open_table(META).map_err(|e| err(&self.path, e))?;
            let mut m: Meta = match t.get("state").map_err(|e| err(&self.path, e))? {
                Some(v) => serde_json::from_slice(v.value()).map_err(|e| err(&self.path, e))?,
                None => Meta::default(),
            };
            f(&mut m);
            t.insert("state", json(&m).as_slice())
                .map_err(|e| err(&self.path, e))?;
        }
        txn.commit().map_err(|e| err(&self.path, e))
    }

    /// Writes a step's results in one transaction. `paused` is the user's, not the step's: the
    /// value stored now is kept (a `pause` during the step is not undone).
    pub fn commit(&self, mut c: Commit) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(&self.path, e))?;
            let stored: Option<Meta> = meta
                .get("state")
                .map_err(|e| err(&self.path, e))?
                .and_then(|v| serde_json::from_slice(v.value()).ok());
            c.meta.paused = stored.is_some_and(|m| m.paused);
            meta.insert("state", json(&c.meta).as_slice())
                .map_err(|e| err(&self.path, e))?;
            let mut conflicts = txn.open_table(CONFLICTS).map_err(|e| err(&self.path, e))?;
            for p in &c.conflicts_remove {
                conflicts
                    .remove(p.as_slice())
                    .map_err(|e| err(&self.path, e))?;
            }
            for (p, v) in &c.conflicts_set {
                conflicts
                    .insert(p.as_slice(), json(v).as_slice())
                    .map_err(|e| err(&self.path, e))?;
            }
            let mut act = txn.open_table(ACTIVITY).map_err(|e| err(&self.path, e))?;
            let mut next = act
                .last()
                .map_err(|e| err(&self.path, e))?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(0);
            for a in &c.activity {
                act.insert(next, json(a).as_slice())
                    .map_err(|e| err(&self.path, e))?;
                next += 1;
            }
            let len = act.len().map_err(|e| err(&self.path, e))?;
            if len > ACTIVITY_KEPT {
                let cut = next.saturating_sub(ACTIVITY_KEPT);
                act.retain(|k, _| k >= cut)
                    .map_err(|e| err(&self.path, e))?;
            }
            if let Some(sk) = &c.skipped {
                let mut t = txn.open_table(SKIPPED).map_err(|e| err(&self.path, e))?;
                t.retain(|_, _| false).map_err(|e| err(&self.path, e))?;
                for (p, v) in sk {
                    t.insert(p.as_slice(), json(v).as_slice())
                        .map_err(|e| err(&self.path, e))?;
                }
            }
        }
        txn.commit().map_err(|e| err(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `meta` value as versions that kept ids as hex strings wrote it (every field, in
    /// declaration order): it reads into typed ids and writes back byte for byte.
    #[test]
    fn a_state_written_with_hex_string_ids_reads_and_rewrites_identically() {
        let (t, s, a, l, r, w) = (
            "11".repeat(32),
            "22".repeat(32),
            "33".repeat(32),
            "44".repeat(32),
            "55".repeat(32),
            "66".repeat(32),
        );
        let old = format!(
            concat!(
                r#"{{"base_tree":"{t}","base_snapshot":"{s}","applied_tree":"{a}","#,
                r#""last_step_ns":5,"last_change_ns":null,"halt":null,"local_files":2,"#,
                r#""local_bytes":3,"remote_files":4,"remote_bytes":5,"heads":["h1"],"#,
                r#""last_error":null,"endpoints_seen":[["e",7]],"paused":false,"unsynced":[],"#,
                r#""unsynced_total":0,"deletion_window":{{"start_ns":9,"tree":"{w}","files":10}},"#,
                r#""shared_conflicts":[],"local_counted_tree":"{l}","shared_counted_tree":"{r}","#,
                r#""kept_here":[],"kept_here_total":0,"large_files":[],"endpoint_places":[]}}"#
            ),
            t = t,
            s = s,
            a = a,
            l = l,
            r = r,
            w = w,
        );
        let meta: Meta = serde_json::from_str(&old).unwrap();
        assert_eq!(meta.base_tree, BlobId::from_hex(&t));
        assert_eq!(meta.base_snapshot, SnapshotId::from_hex(&s));
        assert_eq!(meta.applied_tree, BlobId::from_hex(&a));
        assert_eq!(meta.local_counted_tree, BlobId::from_hex(&l));
        assert_eq!(meta.shared_counted_tree, BlobId::from_hex(&r));
        assert_eq!(
            meta.deletion_window.as_ref().map(|d| d.tree),
            BlobId::from_hex(&w)
        );
        assert_eq!(serde_json::to_string(&meta).unwrap(), old);

        // A state of an endpoint that never synced: no ids at all.
        let fresh: Meta = serde_json::from_str(r#"{"base_tree":null,"heads":[],"local_files":0,"local_bytes":0,"remote_files":0,"remote_bytes":0,"last_step_ns":null,"last_change_ns":null,"halt":null,"last_error":null,"base_snapshot":null,"applied_tree":null}"#).unwrap();
        assert_eq!(fresh, Meta::default());
        // An id that is not one is refused, naming the kind.
        let bad = old.replace(&t, "not-hex");
        let e = serde_json::from_str::<Meta>(&bad).unwrap_err().to_string();
        assert!(e.contains("not a BlobId"), "{e}");
    }
}
