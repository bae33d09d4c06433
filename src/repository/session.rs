//! Sessions: a short sealed object each writer (backup, sync step, prune) stores for as long as it
//! may still commit something that refers to existing packs. Nobody waits on a session; prune only
//! defers deleting packs it marked while a session that might have seen them is live
//! (`format-spec/repository.md`, "Prune and concurrent writers").

use std::time::Duration;

use super::{Repository, hostname, now_ns};
use crate::backend::Kind;
use crate::crypto::random_bytes;
use crate::error::{Error, Result};
use crate::format::envelope::ObjectKind;
use crate::format::session::SessionInfo;
use crate::id::hex_encode;

/// A session older than this is stale (its writer crashed): it no longer delays prune.
pub const SESSION_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Stale: older than [`SESSION_STALE_AFTER`], or started on this host by a process that no
/// longer exists (it was killed or crashed). A reused pid only makes us more careful.
pub fn is_stale(s: &SessionInfo, now_ns: i64) -> bool {
    now_ns.saturating_sub(s.started_ns) > SESSION_STALE_AFTER.as_nanos() as i64
        || (s.host == hostname() && !pid_alive(s.pid))
}

/// Does a process with this id exist on this machine? (Unknown ids count as alive.)
pub(crate) fn pid_alive(pid: u32) -> bool {
    crate::sys::pid_alive(pid)
}

/// A live session; ends (its object is deleted) on [`Session::end`] or drop.
pub struct Session<'r> {
    repo: &'r Repository,
    name: String,
    pub info: SessionInfo,
    ended: bool,
}

impl<'r> Session<'r> {
    pub fn begin(repo: &'r Repository, command: &str) -> Result<Self> {
        let info = SessionInfo {
            id: random_bytes(),
            started_ns: now_ns(),
            host: hostname(),
            pid: std::process::id(),
            command: command.to_string(),
            extra: vec![],
        };
        let name = hex_encode(&info.id);
        let bytes = super::seal_object(repo.keys(), ObjectKind::Session, &info.encode(), false);
        repo.backend().create(Kind::Session, &name, &bytes)?;
        Ok(Session {
            repo,
            name,
            info,
            ended: false,
        })
    }

    pub fn end(mut self) -> Result<()> {
        self.ended = true;
        match self.repo.backend().delete(Kind::Session, &self.name) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.repo.backend().delete(Kind::Session, &self.name);
        }
    }
}

/// Every session object in the repository (unreadable ones are reported as errors).
pub fn list_sessions(repo: &Repository) -> Result<(Vec<SessionInfo>, Vec<Error>)> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for o in repo.backend().list(Kind::Session)? {
        let bytes = match repo.backend().read(Kind::Session, &o.name) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let what = format!("session {}", o.name);
        match super::open_object(repo.keys(), ObjectKind::Session, &what, &bytes)
            .and_then(|p| SessionInfo::decode(&p).map_err(|e| Error::decode(&what, e)))
        {
            Ok(s) if hex_encode(&s.id) == o.name => out.push(s),
            Ok(_) => errors.push(Error::corrupt(what, "name does not match its id")),
            Err(e) => errors.push(e),
        }
    }
    Ok((out, errors))
}
