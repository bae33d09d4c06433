//! A sync set's snapshot catalog: a local file per set and repository that keeps the set's
//! snapshots decrypted, the ids of the repository's other snapshots (so they are not opened
//! again), and every path's versions (the snapshots at which its node changed). `history`,
//! `snapshots NAME`, `restore NAME --at` and `ls NAME --at` read it instead of opening every
//! snapshot and walking every tree.
//!
//! Kept up to date incrementally. The file records the tag of the snapshot listing it matches:
//! a command whose listing has the same tag (over `serve`, one request that carries no names)
//! reads the file in place — a binary search over its fixed-width rows or its paths, then one
//! snapshot or one path's versions — and decodes nothing else. Otherwise it is decoded whole:
//! snapshots the listing no longer has drop out (their versions move to the next snapshot that
//! is kept, with no tree read); a new snapshot is opened once, and its paths are cataloged by
//! comparing its tree with the snapshot before it (only directories whose ids differ are read).
//! Snapshots are write-once, so an entry keyed by id is never stale.
//!
//! Local state a user, a crash or another program can damage: the file is stored in blocks,
//! each with a MAC keyed by the repository's keys, and verified block by block as it is read (a
//! lookup reads the first block and the few blocks it needs, not the whole file). A file or a
//! block that does not verify or decode is not trusted: the catalog is rebuilt from the
//! repository ([`Catalog::read`]). Format: `format-spec/local-state.md`.

use std::cell::{Cell, OnceCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::tree::read_dir;
use super::{Node, NodeKind, Snapshot, join};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::format::DecodeError;
use crate::format::catalog::{
    self as layout, CatalogFile, CatalogSnapshot, CatalogView, Sealed, is_safety,
};
use crate::home::Home;
use crate::id::{BlobId, SnapshotId, hex_encode};
use crate::repository::{Repository, counters, map_parallel};

/// Decoded directories kept while cataloging new snapshots (one step's directories are read
/// again by the next one).
const DIR_CACHE_ENTRIES_MAX: usize = 4096;

/// Where snapshots sort: by time, then id (the order `snapshots` lists them in).
type Key = (i64, SnapshotId);

/// The key of a catalog's block MACs under the repository's keys.
pub fn catalog_key(keys: &Keys) -> [u8; 32] {
    keys.keyed(b"prism-sync local snapshot catalog v1")
}

/// A catalog file's bytes: the body cut into blocks, each with its MAC.
pub fn seal_catalog(keys: &Keys, file: &CatalogFile) -> Vec<u8> {
    layout::seal(&catalog_key(keys), &file.encode())
}

/// The catalog in `bytes` if every block verifies and it decodes (`None`: ignore it).
pub fn open_catalog(keys: &Keys, bytes: &[u8]) -> Option<CatalogFile> {
    let sealed = Sealed::open(bytes.to_vec(), &catalog_key(keys)).ok()?;
    CatalogFile::from_view(&CatalogView::read_from(Box::new(sealed)).ok()?).ok()
}

/// A stored catalog read in place, if its first block verifies and its header is sound
/// (`None`: ignore it); other blocks are verified, and rows, snapshots and path entries
/// checked, as they are read.
pub fn open_catalog_view(keys: &Keys, file: std::fs::File) -> Option<CatalogView> {
    let sealed = Sealed::open(Counted(file), &catalog_key(keys)).ok()?;
    CatalogView::read_from(Box::new(sealed)).ok()
}

/// A catalog file whose reads are counted (`counters::CATALOG_BYTES_READ`).
struct Counted(std::fs::File);

impl layout::ReadAt for Counted {
    fn size(&self) -> std::io::Result<u64> {
        self.0.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()> {
        counters::add(&counters::CATALOG_BYTES_READ, buf.len() as u64);
        layout::ReadAt::read_exact_at(&self.0, buf, at)
    }
}

struct Entry {
    id: SnapshotId,
    snap: Snapshot,
    cataloged: bool,
}

impl Entry {
    fn key(&self) -> Key {
        (self.snap.time_ns, self.id)
    }
}

/// A path's versions: from snapshot `Key` on, it has this node (`None`: absent).
type Versions = Vec<(Key, Option<Node>)>;

/// The catalog decoded whole.
#[derive(Default)]
struct Mem {
    /// The set's snapshots, in (time, id) order.
    snaps: Vec<Entry>,
    /// The repository's other snapshots (other sets, plain backups).
    others: HashSet<SnapshotId>,
    paths: BTreeMap<Vec<u8>, Versions>,
}

/// A snapshot the catalog gives out: its id and the snapshot.
pub type Found = (SnapshotId, Snapshot);

pub struct Catalog {
    file: PathBuf,
    repo_id: [u8; 32],
    set: String,
    /// The tag of the snapshot listing the catalog matches (empty: none).
    listing: String,
    /// The stored file, read in place while nothing changes.
    stored: Option<CatalogView>,
    /// The catalog decoded whole: on the first change, or when everything is asked for.
    mem: OnceCell<Mem>,
    /// The stored file did not decode after all: it is rebuilt from the repository.
    broken: Cell<bool>,
    /// Changed since it was read.
    dirty: bool,
}

/// Snapshot `i` of a stored catalog, counted.
fn stored_snapshot(v: &CatalogView, i: usize) -> std::result::Result<Snapshot, DecodeError> {
    counters::count(&counters::CATALOG_ENTRIES_DECODED);
    v.snapshot(i)
}

fn damaged(file: &Path, e: DecodeError) -> Error {
    Error::invalid(format!(
        "the snapshot catalog {} does not decode ({e}): delete it (it is rebuilt from the repository)",
        file.display()
    ))
}

impl Catalog {
    /// The catalog of `set` in `repo` kept under `home`; an absent, damaged or foreign file
    /// gives an empty catalog (filled from the repository by [`Catalog::refresh`]).
    pub fn open(home: &Path, repo: &Repository, set: &str) -> Catalog {
        let repo_id = repo.repo_id();
        let file = Home::new(home).catalog(&repo_id, set);
        let stored = std::fs::File::open(&file)
            .ok()
            .and_then(|f| open_catalog_view(repo.keys(), f))
            .filter(|v| v.repo_id == repo_id && v.set == set);
        Catalog {
            file,
            repo_id,
            set: set.to_string(),
            listing: stored
                .as_ref()
                .map(|v| v.listing.clone())
                .unwrap_or_default(),
            dirty: stored.is_none(),
            stored,
            mem: OnceCell::new(),
            broken: Cell::new(false),
        }
    }

    /// The catalog decoded whole (from the stored file, once).
    fn mem(&self) -> &Mem {
        self.mem.get_or_init(|| {
            let Some(v) = &self.stored else {
                return Mem::default();
            };
            match decode_whole(v) {
                Ok(m) => m,
                Err(_) => {
                    self.broken.set(true);
                    Mem::default()
                }
            }
        })
    }

    fn mem_mut(&mut self) -> &mut Mem {
        self.mem();
        self.stored = None;
        if self.broken.replace(false) {
            // What the file held is lost: the next use lists the repository in full.
            self.listing.clear();
        }
        self.mem.get_mut().expect("decoded above")
    }

    /// The stored file failed while read: noted, so that [`Catalog::read`] rebuilds it.
    fn fail(&self, e: DecodeError) -> Error {
        self.broken.set(true);
        damaged(&self.file, e)
    }

    /// Runs `f` on the catalog. If the stored file turns out damaged while `f` reads it (a
    /// block whose MAC does not verify, or that does not decode), the file is not trusted: the
    /// catalog is built again from the repository (every snapshot opened, every path
    /// cataloged), saved, and `f` run again.
    pub fn read<T, E: From<Error>>(
        &mut self,
        repo: &Repository,
        f: impl Fn(&Catalog) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let r = f(self);
        if !self.broken.get() {
            return r;
        }
        self.stored = None;
        self.mem = OnceCell::new();
        self.broken.set(false);
        self.listing.clear();
        self.dirty = true;
        self.refresh(repo)?;
        self.catalog_paths(repo)?;
        self.save(repo);
        f(self)
    }

    /// The stored file, while it is all the catalog knows (nothing changed or decoded since).
    fn view(&self) -> Option<&CatalogView> {
        match self.mem.get() {
            Some(_) => None,
            None => self.stored.as_ref(),
        }
    }

    /// Brings the snapshot list up to date with the repository's listing: when the listing's
    /// tag is the one the catalog matches, nothing else is done; otherwise forgotten snapshots
    /// drop out and new ones are opened (several at a time). Returns the errors of snapshots
    /// that could not be read (left out, tried again next time).
    pub fn refresh(&mut self, repo: &Repository) -> Result<Vec<Error>> {
        let known = if self.broken.get() { "" } else { &self.listing };
        let Some((ids, tag)) = repo.snapshot_ids_unless(known)? else {
            return Ok(Vec::new());
        };
        if self.broken.replace(false) {
            self.mem.take();
            self.stored = None;
        }
        let set = self.set.clone();
        let m = self.mem_mut();
        let listed: HashSet<SnapshotId> = ids.iter().copied().collect();
        let gone: HashSet<SnapshotId> = m
            .snaps
            .iter()
            .map(|e| e.id)
            .filter(|id| !listed.contains(id))
            .collect();
        if !gone.is_empty() {
            m.remove(&gone);
        }
        m.others.retain(|id| listed.contains(id));
        let known: HashSet<SnapshotId> = m
            .snaps
            .iter()
            .map(|e| e.id)
            .chain(m.others.iter().copied())
            .collect();
        let new: Vec<SnapshotId> = ids.into_iter().filter(|i| !known.contains(i)).collect();
        let loaded = map_parallel(new, repo.backend().parallelism(), |id| {
            (id, repo.load_snapshot(&id))
        });
        let mut errors = Vec::new();
        let mut added = false;
        for (id, r) in loaded {
            match r {
                Ok(s) if s.sync_set.as_deref() == Some(set.as_str()) => {
                    m.snaps.push(Entry {
                        id,
                        snap: s,
                        cataloged: false,
                    });
                    added = true;
                }
                Ok(_) => {
                    m.others.insert(id);
                }
                Err(Error::Missing { .. }) => {} // forgotten meanwhile
                Err(e) => errors.push(e),
            }
        }
        if added {
            m.snaps.sort_by_key(Entry::key);
        }
        // With snapshots left out, the next command lists again.
        self.listing = if errors.is_empty() {
            tag
        } else {
            String::new()
        };
        self.dirty = true;
        Ok(errors)
    }

    /// Catalogs the paths of snapshots not cataloged yet: each is compared with the snapshot
    /// before it, reading only the directories whose ids differ (the index is loaded then, and
    /// only then).
    pub fn catalog_paths(&mut self, repo: &Repository) -> Result<()> {
        let all = match self.view() {
            Some(v) => v.uncataloged() == 0,
            None => self.mem().snaps.iter().all(|e| e.cataloged),
        };
        if all {
            return Ok(());
        }
        {
            let _t = crate::timing::span("load the index");
            repo.load_index()?;
        }
        self.dirty = true;
        self.mem_mut().catalog_paths(repo)
    }

    /// The set's snapshots, oldest first; without `include_safety`, not the local copies saved
    /// before a sync replaced files.
    pub fn snapshots(&self, include_safety: bool) -> Vec<Found> {
        self.mem()
            .snaps
            .iter()
            .filter(|e| include_safety || !is_safety(&e.snap))
            .map(|e| (e.id, e.snap.clone()))
            .collect()
    }

    /// The newest snapshot taken at or before `time_ns` (`None`: the newest of all), without
    /// `include_safety` not a local copy saved before a sync replaced files. Reads one row per
    /// step of a binary search, and only the snapshot found.
    pub fn at(&self, time_ns: Option<i64>, include_safety: bool) -> Result<Option<Found>> {
        let t = time_ns.unwrap_or(i64::MAX);
        match self.view() {
            Some(v) => {
                let mut i = v.partition(|r| r.time_ns <= t).map_err(|e| self.fail(e))?;
                while i > 0 {
                    i -= 1;
                    let row = v.row(i).map_err(|e| self.fail(e))?;
                    if include_safety || !row.safety() {
                        let s = stored_snapshot(v, i).map_err(|e| self.fail(e))?;
                        return Ok(Some((row.id, s)));
                    }
                }
                Ok(None)
            }
            None => {
                let snaps = &self.mem().snaps;
                let i = snaps.partition_point(|e| e.snap.time_ns <= t);
                Ok(snaps[..i]
                    .iter()
                    .rev()
                    .find(|e| include_safety || !is_safety(&e.snap))
                    .map(|e| (e.id, e.snap.clone())))
            }
        }
    }

    /// The oldest snapshot (without `include_safety`, not a local copy saved before a sync).
    pub fn oldest(&self, include_safety: bool) -> Result<Option<Found>> {
        match self.view() {
            Some(v) => {
                for i in 0..v.len() {
                    let row = v.row(i).map_err(|e| self.fail(e))?;
                    if include_safety || !row.safety() {
                        let s = stored_snapshot(v, i).map_err(|e| self.fail(e))?;
                        return Ok(Some((row.id, s)));
                    }
                }
                Ok(None)
            }
            None => Ok(self
                .mem()
                .snaps
                .iter()
                .find(|e| include_safety || !is_safety(&e.snap))
                .map(|e| (e.id, e.snap.clone()))),
        }
    }

    /// The versions of `path` (components joined by `/`): each snapshot at which its node
    /// changed, with that node (`None`: absent), oldest first. Only cataloged snapshots count
    /// (all of them after [`Catalog::catalog_paths`]). Reads that path's entry and the
    /// snapshots of its versions, nothing else.
    pub fn versions(&self, path: &[u8]) -> Result<Vec<(SnapshotId, Snapshot, Option<Node>)>> {
        if let Some(v) = self.view() {
            counters::count(&counters::CATALOG_ENTRIES_DECODED);
            let Some(vs) = v.versions_of(path).map_err(|e| self.fail(e))? else {
                return Ok(Vec::new());
            };
            if let (Some(first), Some(last)) = (vs.first(), vs.last())
                && vs.len() > 8
            {
                // Many versions: their snapshots lie together; read them in one call.
                v.prefetch_snapshots(first.0 as usize, last.0 as usize)
                    .map_err(|e| self.fail(e))?;
            }
            return vs
                .into_iter()
                .map(|(i, n)| {
                    let s = stored_snapshot(v, i as usize).map_err(|e| self.fail(e))?;
                    let row = v.row(i as usize).map_err(|e| self.fail(e))?;
                    Ok((row.id, s, n))
                })
                .collect();
        }
        let m = self.mem();
        let Some(vs) = m.paths.get(path) else {
            return Ok(Vec::new());
        };
        Ok(vs
            .iter()
            .filter_map(|(k, n)| {
                let i = m.snaps.binary_search_by_key(k, Entry::key).ok()?;
                Some((m.snaps[i].id, m.snaps[i].snap.clone(), n.clone()))
            })
            .collect())
    }

    /// The node of `path` in snapshot `id` as cataloged (for checking the catalog against the
    /// trees).
    pub fn node_at(&self, id: &SnapshotId, path: &[u8]) -> Option<Node> {
        let m = self.mem();
        let e = m.snaps.iter().find(|e| e.id == *id)?;
        state_at(m.paths.get(path)?, e.key())
    }

    /// Every path that has versions.
    pub fn paths(&self) -> impl Iterator<Item = &[u8]> {
        self.mem().paths.keys().map(Vec::as_slice)
    }

    /// Writes the catalog back if it changed (a temp file renamed into place, mode 0600; not
    /// fsynced: a lost or torn file is rebuilt). Failing to write is no error (it is a cache).
    pub fn save(&mut self, repo: &Repository) {
        if !self.dirty {
            return;
        }
        let m = self.mem();
        let index: HashMap<Key, u32> = m
            .snaps
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key(), i as u32))
            .collect();
        let mut others: Vec<SnapshotId> = m.others.iter().copied().collect();
        others.sort();
        let file = CatalogFile {
            nonce: crate::crypto::random_bytes::<16>(),
            repo_id: self.repo_id,
            set: self.set.clone(),
            listing: self.listing.clone(),
            snapshots: m
                .snaps
                .iter()
                .map(|e| CatalogSnapshot {
                    id: e.id,
                    cataloged: e.cataloged,
                    snapshot: e.snap.clone(),
                })
                .collect(),
            others,
            paths: m
                .paths
                .iter()
                .map(|(p, vs)| {
                    let vs = vs.iter().map(|(k, n)| (index[k], n.clone())).collect();
                    (p.clone(), vs)
                })
                .collect(),
        };
        let bytes = seal_catalog(repo.keys(), &file);
        if write_replacing(&self.file, &bytes).is_ok() {
            self.dirty = false;
        }
    }
}

/// A stored catalog decoded whole.
fn decode_whole(v: &CatalogView) -> std::result::Result<Mem, DecodeError> {
    v.check_all()?;
    let mut snaps = Vec::with_capacity(v.len());
    for i in 0..v.len() {
        let row = v.row(i)?;
        snaps.push(Entry {
            id: row.id,
            snap: stored_snapshot(v, i)?,
            cataloged: row.cataloged(),
        });
    }
    let others = (0..v.others_len())
        .map(|i| v.other(i))
        .collect::<std::result::Result<_, _>>()?;
    let mut paths = BTreeMap::new();
    for j in 0..v.paths_len() {
        counters::count(&counters::CATALOG_ENTRIES_DECODED);
        let (p, vs) = v.path_entry(j)?;
        let vs = vs
            .into_iter()
            .map(|(i, n)| (snaps[i as usize].key(), n))
            .collect();
        paths.insert(p, vs);
    }
    Ok(Mem {
        snaps,
        others,
        paths,
    })
}

impl Mem {
    /// Drops snapshots; each path's version at a dropped snapshot moves to the next snapshot
    /// that stays (unless that one has its own), so every kept snapshot keeps its nodes.
    fn remove(&mut self, gone: &HashSet<SnapshotId>) {
        let mut moved: HashMap<Key, Option<Key>> = HashMap::new();
        let mut next_kept = None;
        for e in self.snaps.iter().rev() {
            if !e.cataloged {
                continue;
            }
            if gone.contains(&e.id) {
                moved.insert(e.key(), next_kept);
            } else {
                next_kept = Some(e.key());
            }
        }
        if !moved.is_empty() {
            for vs in self.paths.values_mut() {
                let mut out: Versions = Vec::with_capacity(vs.len());
                for (k, n) in vs.drain(..) {
                    let Some(target) = moved.get(&k).copied().unwrap_or(Some(k)) else {
                        continue; // no snapshot after it stays
                    };
                    match out.last_mut() {
                        // A later version of the same kept snapshot wins.
                        Some(last) if last.0 == target => last.1 = n,
                        _ => out.push((target, n)),
                    }
                }
                let mut state: Option<Node> = None;
                out.retain(|(_, n)| {
                    let keep = *n != state;
                    state = n.clone();
                    keep
                });
                *vs = out;
            }
            self.paths.retain(|_, vs| !vs.is_empty());
        }
        self.snaps.retain(|e| !gone.contains(&e.id));
    }

    /// Catalogs the paths of snapshots not cataloged yet: each is compared with the snapshot
    /// before it, reading only the directories whose ids differ. Needs the index loaded.
    fn catalog_paths(&mut self, repo: &Repository) -> Result<()> {
        // The next snapshot cataloged before this call, for each position: the one whose
        // versions must keep their nodes when a snapshot is slotted in before it.
        let mut next_cataloged = vec![None; self.snaps.len()];
        let mut next = None;
        for (i, e) in self.snaps.iter().enumerate().rev() {
            next_cataloged[i] = next;
            if e.cataloged {
                next = Some(e.key());
            }
        }
        let mut dirs = DirCache::default();
        for (i, next) in next_cataloged.into_iter().enumerate() {
            if self.snaps[i].cataloged {
                continue;
            }
            let before = i.checked_sub(1).map(|j| self.snaps[j].snap.tree);
            let mut changes = Vec::new();
            diff(
                repo,
                &mut dirs,
                before,
                Some(self.snaps[i].snap.tree),
                &[],
                &mut changes,
            )?;
            let at = self.snaps[i].key();
            for (path, node) in changes {
                self.slot_in(path, at, next, node);
            }
            self.snaps[i].cataloged = true;
        }
        Ok(())
    }

    /// Records that `path` has `node` from snapshot `at` on, where `next` (if any) is the next
    /// cataloged snapshot, whose node stays what it was.
    fn slot_in(&mut self, path: Vec<u8>, at: Key, next: Option<Key>, node: Option<Node>) {
        let vs = self.paths.entry(path.clone()).or_default();
        let at_next = next.map(|q| state_at(vs, q));
        let i = vs.partition_point(|(k, _)| *k < at);
        vs.insert(i, (at, node));
        if let (Some(q), Some(n)) = (next, at_next)
            && vs.get(i + 1).map(|v| v.0) != Some(q)
        {
            vs.insert(i + 1, (q, n));
        }
        drop_repeat(vs, i + 1);
        drop_repeat(vs, i);
        if vs.is_empty() {
            self.paths.remove(&path);
        }
    }
}

/// Replaces `path` by `bytes` at once (a temp file renamed into place; the directory is made
/// private). Two processes saving at the same time each write their own temp file; the last
/// rename wins, and either file is whole.
fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a catalog path has a parent");
    crate::fsx::private::create_dir(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}",
        hex_encode(&crate::crypto::random_bytes::<8>())
    ));
    let r = crate::fsx::private::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// The node a path has at snapshot `k` according to its versions.
fn state_at(vs: &Versions, k: Key) -> Option<Node> {
    let i = vs.partition_point(|(at, _)| *at <= k);
    i.checked_sub(1).and_then(|j| vs[j].1.clone())
}

/// Removes version `i` if it repeats the node before it (absent before the first).
fn drop_repeat(vs: &mut Versions, i: usize) {
    if i >= vs.len() {
        return;
    }
    let same = match i.checked_sub(1) {
        Some(j) => vs[j].1 == vs[i].1,
        None => vs[i].1.is_none(),
    };
    if same {
        vs.remove(i);
    }
}

#[derive(Default)]
struct DirCache(HashMap<BlobId, Arc<Vec<Node>>>);

impl DirCache {
    fn get(&mut self, repo: &Repository, id: &BlobId) -> Result<Arc<Vec<Node>>> {
        if let Some(d) = self.0.get(id) {
            return Ok(d.clone());
        }
        if self.0.len() >= DIR_CACHE_ENTRIES_MAX {
            self.0.clear();
        }
        let d = Arc::new(read_dir(repo, id)?);
        self.0.insert(*id, d.clone());
        Ok(d)
    }
}

/// Every path below `prefix` whose node differs between directory trees `a` and `b` (`None`:
/// no such directory), with its node in `b`. Subtrees with equal ids are not read.
fn diff(
    repo: &Repository,
    dirs: &mut DirCache,
    a: Option<BlobId>,
    b: Option<BlobId>,
    prefix: &[u8],
    out: &mut Vec<(Vec<u8>, Option<Node>)>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let empty = Arc::new(Vec::new());
    let ea = match &a {
        Some(t) => dirs.get(repo, t)?,
        None => empty.clone(),
    };
    let eb = match &b {
        Some(t) => dirs.get(repo, t)?,
        None => empty,
    };
    let (mut i, mut j) = (0, 0);
    while i < ea.len() || j < eb.len() {
        let (na, nb) = match (ea.get(i), eb.get(j)) {
            (Some(x), Some(y)) if x.name == y.name => (Some(x), Some(y)),
            (Some(x), Some(y)) if x.name < y.name => (Some(x), None),
            (Some(_), Some(y)) => (None, Some(y)),
            (Some(x), None) => (Some(x), None),
            (None, Some(y)) => (None, Some(y)),
            (None, None) => unreachable!("the loop condition"),
        };
        i += usize::from(na.is_some());
        j += usize::from(nb.is_some());
        let name = na.or(nb).map(|n| n.name.as_slice()).expect("one side");
        let path = join(prefix, name);
        if na != nb {
            out.push((path.clone(), nb.cloned()));
        }
        let sub = |n: Option<&Node>| match n.map(|n| &n.kind) {
            Some(NodeKind::Dir { subtree }) => Some(*subtree),
            _ => None,
        };
        let (sa, sb) = (sub(na), sub(nb));
        if sa != sb {
            diff(repo, dirs, sa, sb, &path, out)?;
        }
    }
    Ok(())
}
