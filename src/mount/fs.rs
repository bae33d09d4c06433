//! The FUSE file system: inodes, attributes, directory streams and on-demand reads.
//!
//! Inodes are handed out on lookup and counted as the kernel counts them; `forget` drops them,
//! so walking a huge tree costs memory only for what the kernel still holds. An inode number is
//! never reused while mounted, so two different files never share one (`diff -r` and `cp -a`
//! compare inode numbers). A `readdir` entry the kernel has not looked up carries a stand-in
//! inode number with the top bit set, which no looked-up inode ever has.
//!
//! Snapshot trees never change, so their entries and attributes are cached by the kernel for
//! [`TREE_TTL`] and file pages are kept between opens; the virtual directories above them
//! (`snapshots/`, `latest/`, …) for [`VIRTUAL_TTL`], after which new snapshots show. `latest`
//! gets a new inode whenever it names another snapshot, so nothing the kernel cached about the
//! old one is mixed into the new one.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, Request,
};

use super::layout::{Layout, Target, VDir, View};
use crate::browse::{Browser, FileChunks, Report};
use crate::error::Result;
use crate::id::{BlobId, SnapshotId};
use crate::snapshot::{Node, NodeKind, display_path};

/// How long the kernel may trust what it learned about the virtual directories.
pub const VIRTUAL_TTL: Duration = Duration::from_secs(1);
/// How long the kernel may trust entries and attributes inside snapshot trees (immutable).
pub const TREE_TTL: Duration = Duration::from_secs(3600);
/// `st_blksize`: a hint to readers; bigger reads mean fewer round trips through the kernel.
const BLOCK_SIZE_BYTES: u32 = 128 << 10;
const ROOT_INO: u64 = 1;
/// A read starting at most this far after the previous one's end counts as reading in order.
const READ_AHEAD_WINDOW_BYTES: u64 = 1 << 20;
/// Stand-in inode numbers of entries not looked up yet have this bit set.
const STAND_IN_BIT: u64 = 1 << 63;

/// Same key → same inode while the kernel holds it: the parent, the name, and for snapshot
/// roots the snapshot (so `latest` naming another snapshot is another inode).
type Key = (u64, Vec<u8>, Option<SnapshotId>);

#[derive(Clone)]
enum Kind {
    Virtual(VDir),
    SnapRoot {
        tree: BlobId,
        time_ns: i64,
    },
    /// An entry of a snapshot's tree, and the time of that snapshot.
    Node {
        node: Arc<Node>,
        snap_ns: i64,
    },
}

struct Inode {
    kind: Kind,
    parent: u64,
    name: Vec<u8>,
    key: Option<Key>,
    lookups: u64,
}

struct Table {
    inodes: HashMap<u64, Inode>,
    by_key: HashMap<Key, u64>,
    next: u64,
}

impl Table {
    /// The inode for `key`, made with `kind` if the kernel holds none; counts one lookup.
    fn enter(&mut self, key: Key, kind: Kind) -> u64 {
        if let Some(&ino) = self.by_key.get(&key) {
            self.inodes.get_mut(&ino).expect("keyed inode").lookups += 1;
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.inodes.insert(
            ino,
            Inode {
                kind,
                parent: key.0,
                name: key.1.clone(),
                key: Some(key.clone()),
                lookups: 1,
            },
        );
        self.by_key.insert(key, ino);
        ino
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let gone = match self.inodes.get_mut(&ino) {
            Some(i) => {
                i.lookups = i.lookups.saturating_sub(n);
                i.lookups == 0
            }
            None => false,
        };
        if gone
            && let Some(i) = self.inodes.remove(&ino)
            && let Some(k) = i.key
        {
            self.by_key.remove(&k);
        }
    }

    /// The path of an inode inside the mount, for messages.
    fn path(&self, mut ino: u64) -> String {
        let mut parts = Vec::new();
        while ino != ROOT_INO {
            let Some(i) = self.inodes.get(&ino) else {
                parts.push(b"?".to_vec());
                break;
            };
            parts.push(i.name.clone());
            ino = i.parent;
        }
        parts.reverse();
        display_path(&parts.join(&b'/'))
    }
}

/// An open file: its chunks, its path for messages, and where a reader going through it in
/// order reads next (reads there fetch the following chunks ahead).
struct OpenFile {
    chunks: FileChunks,
    shown: String,
    next: AtomicU64,
}

/// An open directory: its entries as they were at `opendir` (offsets stay valid however the
/// virtual directories change meanwhile).
enum OpenDir {
    Virtual(Vec<(Vec<u8>, FileType, Option<Key>)>),
    Tree(Arc<Vec<Node>>),
}

pub(super) struct PrismFs {
    browser: Arc<Browser>,
    view: View,
    report: Report,
    /// Owner shown for virtual directories, snapshot roots and (sync sets) every entry.
    owner: (u32, u32),
    started: SystemTime,
    /// The layout, and the generation of the snapshot list it was built from.
    layout: RwLock<(u64, Arc<Layout>)>,
    table: Mutex<Table>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs_open: Mutex<HashMap<u64, Arc<(u64, OpenDir)>>>,
    next_fh: AtomicU64,
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_nanos(ns.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    }
}

fn file_type(n: &Node) -> FileType {
    match n.kind {
        NodeKind::File { .. } => FileType::RegularFile,
        NodeKind::Dir { .. } => FileType::Directory,
        NodeKind::Symlink { .. } => FileType::Symlink,
    }
}

fn stand_in_ino(parent: u64, name: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (parent, name).hash(&mut h);
    h.finish() | STAND_IN_BIT
}

impl PrismFs {
    pub(super) fn new(browser: Arc<Browser>, view: View, report: Report) -> PrismFs {
        let owner = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let mut root = HashMap::new();
        root.insert(
            ROOT_INO,
            Inode {
                kind: Kind::Virtual(VDir::Root),
                parent: ROOT_INO,
                name: Vec::new(),
                key: None,
                lookups: 1,
            },
        );
        PrismFs {
            browser,
            view,
            report,
            owner,
            started: SystemTime::now(),
            layout: RwLock::new((0, Arc::new(Layout::default()))),
            table: Mutex::new(Table {
                inodes: root,
                by_key: HashMap::new(),
                next: ROOT_INO + 1,
            }),
            files: Mutex::new(HashMap::new()),
            dirs_open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    /// The layout of the current snapshot list (rebuilt when the list changed).
    fn layout(&self) -> Arc<Layout> {
        let snaps = self.browser.snapshots();
        {
            let l = self.layout.read().expect("layout lock");
            if l.0 == snaps.generation {
                return l.1.clone();
            }
        }
        let built = Arc::new(Layout::build(&self.view, &snaps.list));
        *self.layout.write().expect("layout lock") = (snaps.generation, built.clone());
        built
    }

    fn kind(&self, ino: u64) -> Option<Kind> {
        self.table
            .lock()
            .expect("table lock")
            .inodes
            .get(&ino)
            .map(|i| i.kind.clone())
    }

    fn tree(&self, id: &BlobId) -> Result<Arc<Vec<Node>>> {
        self.browser.dir(id)
    }

    fn fail(&self, ino: u64, what: &str, e: impl std::fmt::Display) -> Errno {
        let path = self.table.lock().expect("table lock").path(ino);
        (self.report)(&format!("{what} {path}: {e}"));
        Errno::EIO
    }

    fn attr(&self, ino: u64, kind: &Kind, layout: &Layout) -> FileAttr {
        let (owner_uid, owner_gid) = self.owner;
        let (ftype, perm, size, mtime, uid, gid) = match kind {
            Kind::Virtual(d) => {
                let t = layout.newest_ns(d).map(time).unwrap_or(self.started);
                (FileType::Directory, 0o555, 0, t, owner_uid, owner_gid)
            }
            Kind::SnapRoot { time_ns, .. } => (
                FileType::Directory,
                0o755,
                0,
                time(*time_ns),
                owner_uid,
                owner_gid,
            ),
            Kind::Node { node: n, snap_ns } => {
                let (uid, gid) = match self.view {
                    View::Repository => (n.uid, n.gid),
                    View::Set(_) => (owner_uid, owner_gid),
                };
                // Sync trees record no directory mtimes (they change with every entry): a
                // version's directories show the version's time.
                let mtime_ns = match (&self.view, &n.kind) {
                    (View::Set(_), NodeKind::Dir { .. }) if n.mtime_ns == 0 => *snap_ns,
                    _ => n.mtime_ns,
                };
                let perm = match n.kind {
                    NodeKind::Symlink { .. } => 0o777,
                    _ => (n.mode & 0o7777) as u16,
                };
                (file_type(n), perm, n.size(), time(mtime_ns), uid, gid)
            }
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: ftype,
            perm,
            // Directories say 1 (like btrfs): "unknown", so no tool counts subdirectories by it.
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            blksize: BLOCK_SIZE_BYTES,
            flags: 0,
        }
    }

    /// What `name` in directory `parent` is: its key and kind.
    fn child(
        &self,
        parent: u64,
        pkind: &Kind,
        name: &[u8],
        layout: &Layout,
    ) -> std::result::Result<(Key, Kind), Errno> {
        match pkind {
            Kind::Virtual(d) => {
                let name_s = std::str::from_utf8(name).map_err(|_| Errno::ENOENT)?;
                match layout.lookup(d, name_s) {
                    Some(Target::Dir(sub)) => {
                        Ok(((parent, name.to_vec(), None), Kind::Virtual(sub.clone())))
                    }
                    Some(Target::Snapshot(i)) => {
                        let (id, s) = &layout.snapshots[*i];
                        Ok((
                            (parent, name.to_vec(), Some(*id)),
                            Kind::SnapRoot {
                                tree: s.tree,
                                time_ns: s.time_ns,
                            },
                        ))
                    }
                    None => Err(Errno::ENOENT),
                }
            }
            Kind::SnapRoot { tree, time_ns } => self.tree_child(parent, tree, name, *time_ns),
            Kind::Node { node, snap_ns } => match &node.kind {
                NodeKind::Dir { subtree } => self.tree_child(parent, subtree, name, *snap_ns),
                _ => Err(Errno::ENOTDIR),
            },
        }
    }

    fn tree_child(
        &self,
        parent: u64,
        tree: &BlobId,
        name: &[u8],
        snap_ns: i64,
    ) -> std::result::Result<(Key, Kind), Errno> {
        let nodes = self
            .tree(tree)
            .map_err(|e| self.fail(parent, "cannot read directory", e))?;
        match nodes.binary_search_by(|n| n.name.as_slice().cmp(name)) {
            Ok(i) => Ok((
                (parent, name.to_vec(), None),
                Kind::Node {
                    node: Arc::new(nodes[i].clone()),
                    snap_ns,
                },
            )),
            Err(_) => Err(Errno::ENOENT),
        }
    }

    fn ttl(kind: &Kind) -> Duration {
        match kind {
            Kind::Virtual(_) => VIRTUAL_TTL,
            _ => TREE_TTL,
        }
    }

    fn open_file(&self, ino: u64, n: &Node) -> Result<OpenFile> {
        let shown = self.table.lock().expect("table lock").path(ino);
        let chunks = self.browser.chunks(n, &shown)?;
        Ok(OpenFile {
            chunks,
            shown,
            next: AtomicU64::new(0),
        })
    }
}

impl Filesystem for PrismFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(pkind) = self.kind(parent.0) else {
            return reply.error(Errno::ENOENT);
        };
        let layout = self.layout();
        match self.child(parent.0, &pkind, name.as_bytes(), &layout) {
            Ok((key, kind)) => {
                let ino = self
                    .table
                    .lock()
                    .expect("table lock")
                    .enter(key, kind.clone());
                let ttl = Self::ttl(&pkind).min(Self::ttl(&kind));
                reply.entry(&ttl, &self.attr(ino, &kind, &layout), Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.table
            .lock()
            .expect("table lock")
            .forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(kind) = self.kind(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let layout = self.layout();
        reply.attr(&Self::ttl(&kind), &self.attr(ino.0, &kind, &layout));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.kind(ino.0) {
            Some(Kind::Node { node: n, .. }) => match &n.kind {
                NodeKind::Symlink { target } => reply.data(target),
                _ => reply.error(Errno::EINVAL),
            },
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != fuser::OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let node = match self.kind(ino.0) {
            Some(Kind::Node { node, .. }) if matches!(node.kind, NodeKind::File { .. }) => node,
            Some(_) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        match self.open_file(ino.0, &node) {
            Ok(f) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.files
                    .lock()
                    .expect("files lock")
                    .insert(fh, Arc::new(f));
                // Contents never change under one inode: the kernel may keep its pages.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(self.fail(ino.0, "cannot open", e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let f = self.files.lock().expect("files lock").get(&fh.0).cloned();
        let Some(f) = f else {
            return reply.error(Errno::EBADF);
        };
        // In order (the kernel's read-ahead may run a window ahead of the last read): fetch the
        // next chunks while this one is read.
        let expected = f.next.swap(offset + size as u64, Ordering::Relaxed);
        if offset >= expected && offset - expected <= READ_AHEAD_WINDOW_BYTES {
            self.browser.read_ahead(&f.chunks, offset);
        }
        match self.browser.read_at(&f.chunks, offset, size as u64) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                let _ = ino;
                (self.report)(&format!("cannot read {}: {e}", f.shown));
                reply.error(Errno::EIO)
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.lock().expect("files lock").remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let (kind, parent) = {
            let t = self.table.lock().expect("table lock");
            match t.inodes.get(&ino.0) {
                Some(i) => (i.kind.clone(), i.parent),
                None => return reply.error(Errno::ENOENT),
            }
        };
        let listing = match &kind {
            Kind::Virtual(d) => {
                let layout = self.layout();
                let entries = layout
                    .entries(d)
                    .map(|m| {
                        m.iter()
                            .map(|(name, t)| {
                                let key = match t {
                                    Target::Dir(_) => (ino.0, name.as_bytes().to_vec(), None),
                                    Target::Snapshot(i) => (
                                        ino.0,
                                        name.as_bytes().to_vec(),
                                        Some(layout.snapshots[*i].0),
                                    ),
                                };
                                (name.as_bytes().to_vec(), FileType::Directory, Some(key))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                OpenDir::Virtual(entries)
            }
            Kind::SnapRoot { tree, .. } => match self.tree(tree) {
                Ok(n) => OpenDir::Tree(n),
                Err(e) => return reply.error(self.fail(ino.0, "cannot read directory", e)),
            },
            Kind::Node { node, .. } => match &node.kind {
                NodeKind::Dir { subtree } => match self.tree(subtree) {
                    Ok(n) => OpenDir::Tree(n),
                    Err(e) => return reply.error(self.fail(ino.0, "cannot read directory", e)),
                },
                _ => return reply.error(Errno::ENOTDIR),
            },
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs_open
            .lock()
            .expect("dirs lock")
            .insert(fh, Arc::new((parent, listing)));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let d = self
            .dirs_open
            .lock()
            .expect("dirs lock")
            .get(&fh.0)
            .cloned();
        let Some(d) = d else {
            return reply.error(Errno::EBADF);
        };
        let (parent, listing) = &*d;
        let t = self.table.lock().expect("table lock");
        let ino_of = |name: &[u8], key: Option<Key>| -> u64 {
            let key = key.unwrap_or_else(|| (ino.0, name.to_vec(), None));
            t.by_key
                .get(&key)
                .copied()
                .unwrap_or_else(|| stand_in_ino(ino.0, name))
        };
        let count = match listing {
            OpenDir::Virtual(v) => v.len(),
            OpenDir::Tree(v) => v.len(),
        } as u64;
        // Offsets: 0 → ".", 1 → "..", 2 + i → entry i; an entry's offset is that of the next.
        let mut off = offset;
        while off < count + 2 {
            let full = match off {
                0 => reply.add(ino, 1, FileType::Directory, "."),
                1 => reply.add(INodeNo(*parent), 2, FileType::Directory, ".."),
                _ => {
                    let i = (off - 2) as usize;
                    match listing {
                        OpenDir::Virtual(v) => {
                            let (name, ft, key) = &v[i];
                            reply.add(
                                INodeNo(ino_of(name, key.clone())),
                                off + 1,
                                *ft,
                                OsStr::from_bytes(name),
                            )
                        }
                        OpenDir::Tree(v) => {
                            let n = &v[i];
                            reply.add(
                                INodeNo(ino_of(&n.name, None)),
                                off + 1,
                                file_type(n),
                                OsStr::from_bytes(&n.name),
                            )
                        }
                    }
                }
            };
            if full {
                break;
            }
            off += 1;
        }
        drop(t);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs_open.lock().expect("dirs lock").remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, BLOCK_SIZE_BYTES, 1024, BLOCK_SIZE_BYTES);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS)
        } else {
            reply.ok()
        }
    }
}
