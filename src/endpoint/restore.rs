//! Bringing one earlier version of a file back into the live folder ("restore this version"):
//! over the file there, or beside it.
//!
//! The write is an ordinary apply action ([`super::apply`]): through directory handles, temp
//! file, fsync, rename, and the usual re-check right before — in place, the file there must
//! still be exactly what the last sync step left (so nothing that is not kept in a version is
//! overwritten: a newer local edit makes it refuse, and `sync` first keeps that edit as a
//! version); beside it, the new name must not exist. The step lock is held meanwhile, so no sync
//! step runs at the same time. The next step publishes the result like any local edit.

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::snapshot::tree::find;
use crate::snapshot::{NodeKind, Snapshot, display_path};
use crate::sync::merge::Action;

use super::apply::{Failure, apply};
use super::{Endpoint, StepLock};

/// Where the version goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Over the file at its path (which must be unchanged since the last step).
    InPlace,
    /// Beside it, as `<stem>.restored-<YYYYMMDD-HHMMSS><.ext>` (the version's time, UTC).
    Beside,
}

/// The name of a restored copy beside the original: `<stem>.restored-<YYYYMMDD-HHMMSS><.ext>`
/// (the version's time in UTC), so the extension still opens in the right program.
pub fn restored_name(name: &[u8], time_ns: i64) -> Vec<u8> {
    let stamp = jiff::Timestamp::from_nanosecond(time_ns as i128)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y%m%d-%H%M%S")
        .to_string();
    let dot = name.iter().rposition(|&b| b == b'.').filter(|&i| i > 0);
    let (stem, ext) = match dot {
        Some(i) => name.split_at(i),
        None => (name, &b""[..]),
    };
    let mut out = stem.to_vec();
    out.extend_from_slice(format!(".restored-{stamp}").as_bytes());
    out.extend_from_slice(ext);
    out.truncate(crate::format::tree::NAME_LEN_MAX);
    out
}

/// Writes the file or symlink at `path` of `version` into the folder of `ep`; returns the
/// path written (relative to the folder).
pub fn restore_version(
    ep: &Endpoint,
    repo: &Repository,
    version: &Snapshot,
    path: &[u8],
    placement: Placement,
) -> Result<Vec<u8>> {
    let shown = display_path(path);
    let node = find(repo, &version.tree, path)?.ok_or_else(|| {
        Error::invalid(format!(
            "{shown} is not in that version: see `prism-sync history {} {shown}`",
            ep.cfg.name
        ))
    })?;
    if matches!(node.kind, NodeKind::Dir { .. }) || path.is_empty() {
        return Err(Error::invalid(format!(
            "{shown} is a folder: restore it into a new folder with `prism-sync restore {} --at TIME --path {shown}`",
            ep.cfg.name
        )));
    }
    let _lock = StepLock::acquire(&ep.lock_path())?;
    let meta = ep.state.meta()?;
    let (target, expect) = match placement {
        Placement::InPlace => {
            let Some(applied) = meta.applied_tree else {
                return Err(Error::invalid(format!(
                    "{} has not synced yet: run `prism-sync sync {}` first",
                    ep.cfg.name, ep.cfg.name
                )));
            };
            (path.to_vec(), find(repo, &applied, path)?)
        }
        Placement::Beside => {
            let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&b""[..], path),
            };
            let new = restored_name(name, version.time_ns);
            (crate::snapshot::join(parent, &new), None)
        }
    };
    let mut node = node;
    node.name = target
        .rsplit(|&b| b == b'/')
        .next()
        .unwrap_or_default()
        .to_vec();
    let action = Action::Write {
        path: target.clone(),
        node,
        expect,
    };
    let results = apply(
        repo,
        &ep.cfg.local_path,
        std::slice::from_ref(&action),
        None,
        ep.cfg.folding(),
    )?;
    match results.into_iter().next() {
        Some(Ok(())) => Ok(target),
        Some(Err(Failure::Changed(why))) => Err(Error::invalid(match placement {
            Placement::InPlace => format!(
                "{shown} changed since the last sync ({why}), so it was left alone: run `prism-sync sync {}` to keep the current content as a version, then restore again",
                ep.cfg.name
            ),
            Placement::Beside => format!(
                "{} already exists ({why}): move it away, or restore into the folder",
                display_path(&target)
            ),
        })),
        Some(Err(f)) => Err(Error::invalid(format!(
            "{} was not written: {f}",
            display_path(&target)
        ))),
        None => Err(Error::Interrupted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_copies_keep_the_extension() {
        let t = 1_764_245_025_000_000_000; // 2025-11-27 12:03:45 UTC
        assert_eq!(
            restored_name(b"notes.md", t),
            b"notes.restored-20251127-120345.md"
        );
        assert_eq!(
            restored_name(b"Makefile", t),
            b"Makefile.restored-20251127-120345"
        );
        assert_eq!(
            restored_name(b".bashrc", t),
            b".bashrc.restored-20251127-120345"
        );
    }
}
