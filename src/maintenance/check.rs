//! `check`: structure (keys, indexes, packs, snapshots, trees, blob references) and, with
//! `--read-data`, the bytes of every (or a subset of) pack. Problems are collected, each naming
//! the object (and for snapshots the path), not thrown at the first one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::Kind;
use crate::error::{Error, Result};
use crate::format::keyfile::KeyFile;
use crate::format::pack::BlobKind;
use crate::id::{BlobId, KeyId, PackId};
use crate::repository::index::Index;
use crate::repository::pack_codec::{open_blob, read_table};
use crate::repository::session::{is_stale, list_sessions};
use crate::repository::{Repository, now_ns};
use crate::snapshot::tree::{Reachable, walk};
use crate::snapshot::{Content, NodeKind, display_path};

#[derive(Debug, Clone, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// Packs whose id's first byte modulo `total` equals `part - 1` (restic's `n/t`).
    Part {
        part: u32,
        total: u32,
    },
    /// A random share of the packs.
    Percent(f64),
}

#[derive(Debug, Default)]
pub struct CheckReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub snapshots: usize,
    pub packs: usize,
    pub blobs: usize,
    pub packs_read: usize,
}

pub fn parse_subset(s: &str) -> Result<ReadData> {
    let bad = || {
        Error::invalid(format!(
            "--read-data-subset {s:?}: write n/t (e.g. 1/5) or a percentage (e.g. 10%)"
        ))
    };
    if let Some(p) = s.strip_suffix('%') {
        let v: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(bad());
        }
        return Ok(ReadData::Percent(v));
    }
    let (n, t) = s.split_once('/').ok_or_else(bad)?;
    let (part, total): (u32, u32) = (
        n.trim().parse().map_err(|_| bad())?,
        t.trim().parse().map_err(|_| bad())?,
    );
    if total == 0 || part == 0 || part > total {
        return Err(bad());
    }
    Ok(ReadData::Part { part, total })
}

/// Live counters of `--read-data` for a progress display: packs and bytes read, and how many
/// were selected (set before the first read); and how fast to read.
#[derive(Debug, Default)]
pub struct ReadProgress {
    /// Read packs at most this fast (bytes per second); `None`: as fast as they come.
    pub read_bytes_per_s: Option<u64>,
    pub packs_done: AtomicU64,
    pub packs_total: AtomicU64,
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
}

pub fn check(repo: &Repository, read_data: &ReadData) -> Result<CheckReport> {
    check_with_progress(repo, read_data, &ReadProgress::default())
}

/// [`check`], counting the packs `read_data` reads into `progress`.
pub fn check_with_progress(
    repo: &Repository,
    read_data: &ReadData,
    progress: &ReadProgress,
) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let backend = repo.backend();

    for o in backend.list(Kind::Key)? {
        let ok = backend
            .read(Kind::Key, &o.name)
            .ok()
            .filter(|b| KeyId::of_bytes(b).to_hex() == o.name)
            .is_some_and(|b| KeyFile::decode(&b).is_ok());
        if !ok {
            r.errors
                .push(format!("key {} is damaged or unreadable", o.name));
        }
    }

    let (files, index_errors) = repo.index_files_lenient()?;
    r.errors.extend(index_errors.iter().map(|e| e.to_string()));
    let index = Index::from_files(files.clone());
    r.blobs = index.blob_count();

    // Packs: listed ones exist with the size the index says; unlisted ones are reported.
    let stored: HashMap<String, u64> = backend
        .list(Kind::Pack)?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    let mut indexed: HashSet<String> = HashSet::new();
    for p in index.packs() {
        let name = p.id.to_hex();
        indexed.insert(name.clone());
        match stored.get(&name) {
            None if p.marked => r.warnings.push(format!(
                "pack {} was marked for deletion and is gone",
                p.id.short()
            )),
            None => r.errors.push(format!(
                "pack {} is missing (the index lists it)",
                p.id.short()
            )),
            Some(&size) if size != p.length as u64 => r.errors.push(format!(
                "pack {} is {size} bytes, the index says {}: it is truncated or damaged",
                p.id.short(),
                p.length
            )),
            Some(_) => {}
        }
    }
    r.packs = stored.len();
    let orphans: Vec<&String> = stored.keys().filter(|n| !indexed.contains(*n)).collect();
    if !orphans.is_empty() {
        r.warnings.push(format!(
            "{} pack(s) are in no index (written by a backup that was interrupted or is still running); prune removes them when no backup is running",
            orphans.len()
        ));
    }

    // Snapshots and everything they reach.
    let (snaps, snap_errors) = repo.snapshots_lenient()?;
    r.errors.extend(snap_errors.iter().map(|e| e.to_string()));
    r.snapshots = snaps.len();
    repo.set_index(index);
    let index = repo.index();
    let mut reach = Reachable::new();
    for (id, s) in &snaps {
        let mut errs = Vec::new();
        reach.add_tree(repo, &s.tree, &mut |path, e| errs.push((path, e)));
        for (path, e) in errs {
            let at = if path.is_empty() {
                "the root".to_string()
            } else {
                display_path(&path)
            };
            r.errors.push(format!("snapshot {}: {at}: {e}", id.short()));
        }
    }
    let gone: HashSet<PackId> = index
        .packs()
        .iter()
        .filter(|p| !stored.contains_key(&p.id.to_hex()))
        .map(|p| p.id)
        .collect();
    let missing: HashSet<BlobId> = reach
        .data
        .iter()
        .filter(|id| {
            index
                .locations(BlobKind::Data, id)
                .all(|l| gone.contains(&l.pack.id))
        })
        .copied()
        .collect();
    if !missing.is_empty() {
        // Name the files that lose data.
        for (sid, s) in &snaps {
            let _ = walk(repo, &s.tree, &mut |path, node| {
                if let NodeKind::File {
                    content: Content::Direct(ids),
                    ..
                } = &node.kind
                    && let Some(b) = ids.iter().find(|i| missing.contains(i))
                {
                    r.errors.push(format!(
                        "snapshot {}: {}: data blob {} is missing or in a missing pack",
                        sid.short(),
                        display_path(path),
                        b.short()
                    ));
                }
                Ok(true)
            });
        }
        if !r.errors.iter().any(|e| e.contains("data blob")) {
            r.errors.push(format!(
                "{} data blob(s) referenced by snapshots are missing",
                missing.len()
            ));
        }
    }

    let (sessions, session_errors) = list_sessions(repo)?;
    r.errors
        .extend(session_errors.iter().map(|e| e.to_string()));
    let now = now_ns();
    for s in sessions.iter().filter(|s| is_stale(s, now)) {
        r.warnings.push(format!(
            "stale session from {} ({}, pid {}) started {}: its writer is gone; prune ignores it",
            s.host,
            s.command,
            s.pid,
            crate::time::format_local(s.started_ns)
        ));
    }

    if *read_data != ReadData::None {
        read_packs(repo, &index, read_data, &stored, progress, &mut r);
    }
    Ok(r)
}

fn selected(id: &PackId, how: &ReadData) -> bool {
    match how {
        ReadData::None => false,
        ReadData::All => true,
        ReadData::Part { part, total } => (id.0[0] as u32) % total == part - 1,
        ReadData::Percent(p) => {
            let x = u16::from_le_bytes(crate::crypto::random_bytes::<2>()) as f64 / 65536.0 * 100.0;
            x < *p
        }
    }
}

fn read_packs(
    repo: &Repository,
    index: &Index,
    how: &ReadData,
    stored: &HashMap<String, u64>,
    progress: &ReadProgress,
    r: &mut CheckReport,
) {
    let keys = repo.keys();
    // Chosen first (a percentage draws at random), so that the total is known before reading.
    let chosen: Vec<_> = index
        .packs()
        .iter()
        .filter(|p| stored.contains_key(&p.id.to_hex()) && selected(&p.id, how))
        .collect();
    progress
        .packs_total
        .store(chosen.len() as u64, Ordering::Relaxed);
    progress.bytes_total.store(
        chosen.iter().map(|p| stored[&p.id.to_hex()]).sum(),
        Ordering::Relaxed,
    );
    let started = std::time::Instant::now();
    let mut read = 0u64;
    for p in chosen {
        let name = p.id.to_hex();
        if let Some(per_s) = progress.read_bytes_per_s.filter(|&b| b > 0) {
            read += stored[&name];
            let due = started + std::time::Duration::from_secs_f64(read as f64 / per_s as f64);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
        r.packs_read += 1;
        progress.packs_done.fetch_add(1, Ordering::Relaxed);
        progress
            .bytes_done
            .fetch_add(stored[&name], Ordering::Relaxed);
        let bytes = match repo.backend().read(Kind::Pack, &name) {
            Ok(b) => b,
            Err(e) => {
                r.errors.push(format!("pack {}: {e}", p.id.short()));
                continue;
            }
        };
        if PackId::of_bytes(&bytes) != p.id {
            r.errors.push(format!(
                "pack {} is damaged: its bytes do not match its name (hash mismatch)",
                p.id.short()
            ));
        }
        match read_table(keys, &bytes) {
            Ok((salt, entries)) => {
                let cipher = keys.pack_cipher(&salt);
                for e in entries {
                    let sealed = bytes
                        .get(e.offset as usize..(e.offset + e.length) as usize)
                        .unwrap_or(&[]);
                    if let Err(err) = open_blob(keys, &cipher, &e, sealed) {
                        r.errors.push(format!(
                            "pack {}: {} blob {}: {err}",
                            p.id.short(),
                            e.kind.name(),
                            e.id.short()
                        ));
                    }
                }
            }
            Err(e) => r
                .errors
                .push(format!("pack {}: table unreadable: {e}", p.id.short())),
        }
    }
}
