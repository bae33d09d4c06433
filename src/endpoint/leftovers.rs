//! Leftovers of interrupted writes in a synced folder: the temp files of sync apply and restore
//! (`.<name>.prism-tmp-<pid>-<hex>`, see [`crate::fsx::temp_name`]) that a killed process left
//! behind. Scans never publish them (every scan excludes `*.prism-tmp-*`); a step removes the
//! stale ones it comes across, so they neither pile up nor keep alive a directory the other
//! side removed.
//!
//! Stale: its writer (the pid in its name) is no longer alive, or — for names without a pid
//! (older versions) — it was not modified for [`STALE_TEMP_AGE`]. A temp file of a live writer
//! is left alone: a restore into the folder, or another process's step, may be writing it.
//! Removal goes through [`crate::fsx`] (no symlink followed) and removes files and symlinks
//! only.

use std::path::Path;
use std::time::Duration;

use crate::fsx::{Dir, EntryKind};
use crate::repository::session::pid_alive;

/// A temp file without a writer's pid is stale once it was not modified for this long.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(15 * 60);

const MARK: &[u8] = b".prism-tmp-";

/// Is this file name one of our temp files?
pub fn is_temp_name(name: &[u8]) -> bool {
    name.windows(MARK.len()).any(|w| w == MARK)
}

/// The writer's pid in a temp file name, if it has one (`…prism-tmp-<pid>-<hex>`).
pub fn writer_pid(name: &[u8]) -> Option<u32> {
    let at = name.windows(MARK.len()).rposition(|w| w == MARK)? + MARK.len();
    let rest = &name[at..];
    let dash = rest.iter().position(|&b| b == b'-')?;
    std::str::from_utf8(&rest[..dash]).ok()?.parse().ok()
}

/// Who, if anyone, may still be writing a temp file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// Nobody: remove it.
    Gone,
    /// A live process with this id.
    Alive(u32),
    /// Unknown (no pid in the name) and modified recently.
    Recent,
}

/// Judges a temp file by its name and modification time.
pub fn writer(name: &[u8], mtime_ns: i64, now_ns: i64) -> Writer {
    match writer_pid(name) {
        Some(pid) if pid == std::process::id() || pid_alive(pid) => Writer::Alive(pid),
        Some(_) => Writer::Gone,
        None if now_ns - mtime_ns > STALE_TEMP_AGE.as_nanos() as i64 => Writer::Gone,
        None => Writer::Recent,
    }
}

/// What cleaning found.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Stale temp files removed (paths relative to the folder).
    pub removed: Vec<Vec<u8>>,
    /// Temp files left because their writer may still be at work, with why.
    pub kept: Vec<(Vec<u8>, String)>,
}

fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    }
}

/// Removes the stale ones among temp files a scan came across (`found`: path relative to
/// `root` and mtime). A path that is gone or is no longer a file or symlink is skipped.
pub fn clean(root: &Path, found: &[(Vec<u8>, i64)], now_ns: i64) -> Cleaned {
    let mut out = Cleaned::default();
    let Ok(top) = Dir::open_root(root) else {
        return out;
    };
    for (rel, mtime_ns) in found {
        let (parent, name) = split(rel);
        match writer(name, *mtime_ns, now_ns) {
            Writer::Alive(pid) => {
                out.kept
                    .push((rel.clone(), format!("being written by process {pid}")));
                continue;
            }
            Writer::Recent => {
                out.kept.push((rel.clone(), "written to recently".into()));
                continue;
            }
            Writer::Gone => {}
        }
        let dir = if parent.is_empty() {
            top.try_clone().ok()
        } else {
            top.open_path(parent).ok()
        };
        let Some(dir) = dir else { continue };
        let is_file = dir
            .entry(name)
            .ok()
            .flatten()
            .is_some_and(|e| matches!(e.kind, EntryKind::File | EntryKind::Symlink));
        if is_file && dir.remove_file(name).is_ok() {
            out.removed.push(rel.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_the_writers_pid() {
        let t = crate::fsx::temp_name(b"data.bin");
        assert!(is_temp_name(&t));
        assert_eq!(writer_pid(&t), Some(std::process::id()));
        assert_eq!(
            writer_pid(b".a.prism-tmp-0a1b2c3d4e5f"),
            None,
            "older names"
        );
        assert_eq!(writer_pid(b".a.prism-tmp-123-0a1b2c3d4e5f"), Some(123));
        assert!(!is_temp_name(b"notes.txt"));
    }

    #[test]
    fn a_temp_file_is_stale_when_its_writer_is_gone_or_it_is_old() {
        let now = 1_000 * 1_000_000_000;
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let name = format!(".x.prism-tmp-{dead}-0a1b2c3d4e5f");
        assert_eq!(writer(name.as_bytes(), now, now), Writer::Gone);
        let me = crate::fsx::temp_name(b"x");
        assert_eq!(writer(&me, now, now), Writer::Alive(std::process::id()));
        let old = b".x.prism-tmp-0a1b2c3d4e5f";
        assert_eq!(writer(old, now, now), Writer::Recent);
        let long_ago = now - 2 * STALE_TEMP_AGE.as_nanos() as i64;
        assert_eq!(writer(old, long_ago, now), Writer::Gone);
    }
}
