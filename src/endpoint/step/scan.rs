//! Phase 1: the folder, scanned under the set's rules into tree and data blobs (indexed before
//! anything refers to them).

use std::collections::BTreeSet;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use super::{Cx, human};
use crate::archiver::{ArchiveOptions, ArchiveResult, Filter, Reuse, ScanFilter, Source, archive};
use crate::endpoint::config::{RulesFile, build_rules};
use crate::endpoint::leftovers;
use crate::error::{Error, Result};
use crate::sync::Force;
use crate::sync::rules::{IGNORE_FILE, Rules};

pub(super) struct Scanned {
    pub result: ArchiveResult,
    pub rules: Arc<Rules>,
    /// Paths whose state here is unknown this step (unreadable, oversized, still being
    /// written): the merge leaves them as they were on both sides.
    pub untracked: BTreeSet<Vec<u8>>,
    /// Temp files of sync or restore the scan came across (never tracked), with their mtime.
    pub temp_files: Vec<(Vec<u8>, i64)>,
}

/// Temp files a scan saw, collected by its filter.
type TempFiles = Arc<Mutex<Vec<(Vec<u8>, i64)>>>;

/// Files over `warn_file_size` a scan read, with their size, collected by its filter.
type LargeFiles = Arc<Mutex<Vec<(Vec<u8>, u64)>>>;

/// Files a scan came across that were modified lately, with (size, mtime, ctime, inode) as it
/// saw them, collected by its filter: looked at again when the scan is done ([`still_moving`]).
type Young = Arc<Mutex<Vec<(Vec<u8>, FileState)>>>;
type FileState = (u64, i64, i64, u64);

/// How recent a file's mtime or ctime must be for the scan to look at it again at its end.
const YOUNG_NS: i64 = 2_000_000_000;

/// How long an empty file must have held still before a daemon's scan takes it (see
/// `ArchiveOptions::defer_empty_recent_ns`); files with content wait for the settle window only.
const EMPTY_SETTLE_NS: i64 = 2_000_000_000;

/// How long after the scan the second look comes.
const SECOND_LOOK: std::time::Duration = std::time::Duration::from_millis(20);

fn file_state(md: &Metadata) -> FileState {
    (
        md.len(),
        md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        md.ino(),
    )
}

/// The recently modified files that changed between the scan's look and a second one a moment
/// after the scan: still being written. One write call of a big file sets the mtime once, when
/// it starts, and the size grows while it copies, so a file can look settled and read whole
/// while its writer is still at it (the randomized test published such a half-written 4 MiB
/// file). They are left for the next step like files that changed while they were read.
fn still_moving(root: &std::path::Path, young: Vec<(Vec<u8>, FileState)>) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    if young.is_empty() {
        return Vec::new();
    }
    std::thread::sleep(SECOND_LOOK);
    young
        .into_iter()
        .filter(|(rel, seen)| {
            let p = root.join(std::ffi::OsStr::from_bytes(rel));
            std::fs::symlink_metadata(&p).map_or(true, |md| file_state(&md) != *seen)
        })
        .map(|(rel, _)| rel)
        .collect()
}

/// A vanished folder halts the step (it is never read as "everything was deleted"), unless
/// `force-sync --direction down` is to recreate it.
pub(super) fn folder_missing(cx: &Cx) -> Result<Option<String>> {
    let root = &cx.ep.cfg.local_path;
    if root.is_dir() {
        return Ok(None);
    }
    if cx.opts.force == Some(Force::Down) && !cx.opts.dry_run {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        return Ok(None);
    }
    Ok(Some(format!(
        "the folder {} is gone (deleted, moved or not mounted): nothing was synced. Bring it back, or recreate it from the shared state with `prism-sync force-sync {} --direction down`",
        root.display(),
        cx.ep.cfg.name
    )))
}

/// Excluded paths are not read; files over a size limit are skipped with a reason; temp files
/// are noted (for `leftovers`) and never read; files over `warn_file_size` are noted and kept.
fn filter(rules: Arc<Rules>, temps: TempFiles, large: LargeFiles, young: Young) -> ScanFilter {
    let lately = crate::repository::now_ns() - YOUNG_NS;
    Arc::new(move |rel: &[u8], md: &Metadata| {
        let name = rel.rsplit(|&b| b == b'/').next().unwrap_or(rel);
        if !md.is_dir() && leftovers::is_temp_name(name) {
            let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
            temps.lock().expect("temp list").push((rel.to_vec(), mtime));
            return Filter::Exclude;
        }
        if rules.excluded(rel, md.is_dir()) {
            return Filter::Exclude;
        }
        if md.is_file()
            && let Some(limit) = rules.size_limit(rel)
            && md.len() > limit
        {
            return Filter::Skip(format!(
                "{} is over the size limit of {}",
                human(md.len()),
                human(limit)
            ));
        }
        if md.is_file() {
            let state = file_state(md);
            if state.1 > lately || state.2 > lately {
                young
                    .lock()
                    .expect("young list")
                    .push((rel.to_vec(), state));
            }
        }
        if md.is_file() && rules.warn_file_size.is_some_and(|w| md.len() > w) {
            large
                .lock()
                .expect("large list")
                .push((rel.to_vec(), md.len()));
        }
        Filter::Keep
    })
}

pub(super) fn scan(cx: &mut Cx) -> Result<Scanned> {
    let cfg = &cx.ep.cfg;
    let root = &cfg.local_path;
    let ignore = std::fs::read_to_string(root.join(IGNORE_FILE)).ok();
    let rules = Arc::new(build_rules(
        cfg,
        &RulesFile::load(&cx.ep.home)?,
        ignore.as_deref(),
    )?);
    let previous = cx.meta.applied_tree;
    let reuse = match (&cx.opts.dirty, previous) {
        (Some(dirty), Some(tree)) if !dirty.contains(IGNORE_FILE.as_bytes()) => Some(Reuse {
            tree,
            dirty: Arc::new(dirty.clone()),
        }),
        _ => None, // no previous tree, or the rules file changed: scan everything
    };
    let temps = TempFiles::default();
    let large = LargeFiles::default();
    let young = Young::default();
    let opts = ArchiveOptions {
        file_cache: Some(cx.ep.cache_path()),
        normalize: true,
        filter: Some(filter(
            rules.clone(),
            temps.clone(),
            large.clone(),
            young.clone(),
        )),
        progress: cx.opts.progress.clone().unwrap_or_default(),
        reuse,
        defer_recent_ns: cx.opts.defer_recent.map(|d| d.as_nanos() as i64),
        defer_empty_recent_ns: cx
            .opts
            .defer_recent
            .map(|d| (d.as_nanos() as i64).max(EMPTY_SETTLE_NS)),
        defer_changing: true,
        ..Default::default()
    };
    let mut result = archive(cx.repo, &Source::Dir(root.clone()), &opts)?;
    cx.repo.write_index(result.packs.clone(), vec![], vec![])?;
    let young = std::mem::take(&mut *young.lock().expect("young list"));
    for rel in still_moving(root, young) {
        if !result.deferred.contains(&rel) {
            result.deferred.push(rel);
        }
    }
    let untracked: BTreeSet<Vec<u8>> = result
        .errors
        .iter()
        .chain(&result.skipped)
        .map(|e| e.rel.clone())
        .chain(result.deferred.iter().cloned())
        .collect();
    let report = &mut cx.report;
    report.deferred = result.deferred.clone();
    report.scan_errors = result.errors.clone();
    report.skipped = result
        .skipped
        .iter()
        .map(|s| (s.rel.clone(), s.message.clone()))
        .collect();
    report.large = std::mem::take(&mut *large.lock().expect("large list"));
    report.large.sort();
    let s = &result.summary;
    report.local_files = s.files_new + s.files_changed + s.files_unchanged;
    report.local_bytes = s.total_bytes;
    let temp_files = std::mem::take(&mut *temps.lock().expect("temp list"));
    Ok(Scanned {
        result,
        rules,
        untracked,
        temp_files,
    })
}

#[cfg(test)]
mod tests {
    use super::{file_state, still_moving};

    #[test]
    fn a_recent_file_that_changed_after_the_scan_looked_at_it_is_still_moving() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("growing.bin"), vec![1u8; 4096]).unwrap();
        std::fs::write(t.path().join("settled.txt"), b"done\n").unwrap();
        let seen = |name: &str| {
            let md = std::fs::symlink_metadata(t.path().join(name)).unwrap();
            (name.as_bytes().to_vec(), file_state(&md))
        };
        let young = vec![seen("growing.bin"), seen("settled.txt")];
        // The writer goes on after the scan's look (one long write call: the size grows).
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(t.path().join("growing.bin"))
            .unwrap()
            .write_all(&[2u8; 4096])
            .unwrap();
        let moving = still_moving(t.path(), young);
        assert_eq!(moving, vec![b"growing.bin".to_vec()]);
    }
}
