//! Choosing snapshots: by id, unique id prefix, `latest`, or the state at a time.

use super::Snapshot;
use crate::error::{Error, Result};
use crate::id::SnapshotId;

/// Resolves `latest`, a full id or a unique prefix among `snaps` (sorted oldest first).
pub fn resolve<'a>(
    snaps: &'a [(SnapshotId, Snapshot)],
    spec: &str,
) -> Result<&'a (SnapshotId, Snapshot)> {
    if spec == "latest" {
        return snaps.last().ok_or_else(|| {
            Error::invalid("the repository has no snapshots yet: run `prism-sync backup` first")
        });
    }
    let want = spec.to_ascii_lowercase();
    if !crate::id::is_hex_prefix(&want) {
        return Err(Error::invalid(format!(
            "{spec:?} is not a snapshot id: give an id or id prefix from `prism-sync snapshots`, or `latest`"
        )));
    }
    let matches: Vec<_> = snaps
        .iter()
        .filter(|(id, _)| id.to_hex().starts_with(&want))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::invalid(format!(
            "no snapshot {spec}: see `prism-sync snapshots` for the ids"
        ))),
        many => Err(Error::invalid(format!(
            "snapshot prefix {spec} is ambiguous ({} snapshots match): give more digits",
            many.len()
        ))),
    }
}

/// The newest snapshot taken at or before `time_ns`.
pub fn at<'a>(
    snaps: &'a [(SnapshotId, Snapshot)],
    time_ns: i64,
    shown: &str,
) -> Result<&'a (SnapshotId, Snapshot)> {
    snaps
        .iter()
        .rev()
        .find(|(_, s)| s.time_ns <= time_ns)
        .ok_or_else(|| match snaps.first() {
            Some((_, first)) => Error::invalid(format!(
                "no snapshot at or before {shown}: the oldest is from {}",
                crate::time::format_local(first.time_ns)
            )),
            None => Error::invalid("the repository has no snapshots yet"),
        })
}
