//! `foldfs`: a small in-memory FUSE file system that folds names the way a default macOS volume
//! does — case-insensitive and normalization-insensitive, but preserving the spelling an entry
//! was created with. The tests mount it for real (as root, on `/dev/fuse`) and run the real
//! `prism-sync` binary against it, so every lookup the kernel makes on the binary's behalf meets
//! the folding: `open("a")` finds `A`, `stat("e\u{301}")` finds `\u{e9}`.
//!
//! Two names are one entry when NFD → lowercase → NFC of both are equal (the same key
//! `prism_sync::fsx::fold::key` computes with both foldings on). Entries and attributes are
//! never cached by the kernel (TTL 0), so the folding applies to every path walk.
//!
//! Mounting needs root and `/dev/fuse` (CI has both). When the mount cannot be made, [`mount`]
//! panics with the reason: these tests must fail loudly, never skip.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use prism_sync::fsx::fold::{Folding, key};

const TTL: Duration = Duration::ZERO;
const FOLD: Folding = Folding {
    case: true,
    unicode: true,
};

struct Inode {
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    data: Vec<u8>,
    /// Directories: (name as created, inode).
    entries: Vec<(OsString, u64)>,
    parent: u64,
}

struct State {
    nodes: HashMap<u64, Inode>,
    next: u64,
}

pub struct FoldFs {
    state: Mutex<State>,
}

impl State {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let size = match n.kind {
            FileType::Directory => 4096,
            _ => n.data.len() as u64,
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.ctime,
            crtime: n.ctime,
            kind: n.kind,
            perm: n.perm,
            nlink: if n.kind == FileType::Directory { 2 } else { 1 },
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// The entry of `parent` that `name` addresses, with its stored spelling.
    fn find(&self, parent: u64, name: &OsStr) -> Option<(usize, u64)> {
        let k = key(name.as_bytes(), FOLD);
        let dir = self.nodes.get(&parent)?;
        dir.entries
            .iter()
            .position(|(n, _)| key(n.as_bytes(), FOLD) == k)
            .map(|i| (i, dir.entries[i].1))
    }

    fn add(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        perm: u16,
        data: Vec<u8>,
    ) -> Result<u64, Errno> {
        match self.nodes.get(&parent) {
            Some(p) if p.kind == FileType::Directory => {}
            Some(_) => return Err(Errno::ENOTDIR),
            None => return Err(Errno::ENOENT),
        }
        if self.find(parent, name).is_some() {
            return Err(Errno::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let now = SystemTime::now();
        self.nodes.insert(
            ino,
            Inode {
                kind,
                perm,
                uid: req.uid(),
                gid: req.gid(),
                atime: now,
                mtime: now,
                ctime: now,
                data,
                entries: Vec::new(),
                parent,
            },
        );
        let p = self.nodes.get_mut(&parent).expect("checked");
        p.entries.push((name.to_os_string(), ino));
        p.mtime = now;
        Ok(ino)
    }

    fn remove_entry(&mut self, parent: u64, index: usize) -> u64 {
        let p = self.nodes.get_mut(&parent).expect("parent");
        let (_, ino) = p.entries.remove(index);
        p.mtime = SystemTime::now();
        ino
    }
}

impl FoldFs {
    pub fn new() -> FoldFs {
        let now = SystemTime::now();
        let root = Inode {
            kind: FileType::Directory,
            perm: 0o755,
            uid: 0,
            gid: 0,
            atime: now,
            mtime: now,
            ctime: now,
            data: vec![],
            entries: vec![],
            parent: 1,
        };
        FoldFs {
            state: Mutex::new(State {
                nodes: HashMap::from([(1, root)]),
                next: 2,
            }),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("foldfs lock")
    }

    fn reply_entry(&self, st: &State, ino: u64, reply: ReplyEntry) {
        match st.attr(ino) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FoldFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let st = self.st();
        match st.find(parent.0, name) {
            Some((_, ino)) => self.reply_entry(&st, ino, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.st().attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.st();
        let Some(n) = st.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            n.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = uid {
            n.uid = u;
        }
        if let Some(g) = gid {
            n.gid = g;
        }
        if let Some(s) = size {
            n.data.resize(s as usize, 0);
            n.mtime = SystemTime::now();
        }
        if let Some(t) = atime {
            n.atime = time(t);
        }
        if let Some(t) = mtime {
            n.mtime = time(t);
        }
        n.ctime = SystemTime::now();
        let a = st.attr(ino.0).expect("present");
        reply.attr(&TTL, &a);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.st().nodes.get(&ino.0) {
            Some(n) if n.kind == FileType::Symlink => reply.data(&n.data),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.st();
        let perm = (mode & !umask & 0o7777) as u16;
        match st.add(req, parent.0, name, FileType::Directory, perm, vec![]) {
            Ok(ino) => self.reply_entry(&st, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let Some((i, ino)) = st.find(parent.0, name) else {
            return reply.error(Errno::ENOENT);
        };
        if st.nodes[&ino].kind == FileType::Directory {
            return reply.error(Errno::EISDIR);
        }
        st.remove_entry(parent.0, i);
        st.nodes.remove(&ino);
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let Some((i, ino)) = st.find(parent.0, name) else {
            return reply.error(Errno::ENOENT);
        };
        let n = &st.nodes[&ino];
        if n.kind != FileType::Directory {
            return reply.error(Errno::ENOTDIR);
        }
        if !n.entries.is_empty() {
            return reply.error(Errno::ENOTEMPTY);
        }
        st.remove_entry(parent.0, i);
        st.nodes.remove(&ino);
        reply.ok();
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut st = self.st();
        let data = target.as_os_str().as_bytes().to_vec();
        match st.add(req, parent.0, link_name, FileType::Symlink, 0o777, data) {
            Ok(ino) => self.reply_entry(&st, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        let Some((si, src)) = st.find(parent.0, name) else {
            return reply.error(Errno::ENOENT);
        };
        if !st.nodes.contains_key(&newparent.0) {
            return reply.error(Errno::ENOENT);
        }
        if let Some((di, dst)) = st.find(newparent.0, newname) {
            if dst == src {
                // The same entry under another spelling: a case-only rename.
                let p = st.nodes.get_mut(&parent.0).expect("parent");
                p.entries[si].0 = newname.to_os_string();
                return reply.ok();
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            let (sk, dk) = (st.nodes[&src].kind, st.nodes[&dst].kind);
            match (sk == FileType::Directory, dk == FileType::Directory) {
                (true, true) if !st.nodes[&dst].entries.is_empty() => {
                    return reply.error(Errno::ENOTEMPTY);
                }
                (true, false) => return reply.error(Errno::ENOTDIR),
                (false, true) => return reply.error(Errno::EISDIR),
                _ => {}
            }
            st.remove_entry(newparent.0, di);
            st.nodes.remove(&dst);
        } else if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return reply.error(Errno::ENOENT);
        }
        // Indexes may have moved if both entries were in the same directory.
        let (si, _) = st.find(parent.0, name).expect("still there");
        st.remove_entry(parent.0, si);
        let now = SystemTime::now();
        let np = st.nodes.get_mut(&newparent.0).expect("checked");
        np.entries.push((newname.to_os_string(), src));
        np.mtime = now;
        let n = st.nodes.get_mut(&src).expect("src");
        n.parent = newparent.0;
        n.ctime = now;
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.st().nodes.get(&ino.0) {
            Some(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.st();
        let Some(n) = st.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let start = (offset as usize).min(n.data.len());
        let end = (start + size as usize).min(n.data.len());
        reply.data(&n.data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.st();
        let Some(n) = st.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let end = offset as usize + data.len();
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[offset as usize..end].copy_from_slice(data);
        n.mtime = SystemTime::now();
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.st();
        let Some(n) = st.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if n.kind != FileType::Directory {
            return reply.error(Errno::ENOTDIR);
        }
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (n.parent, FileType::Directory, "..".into()),
        ];
        for (name, child) in &n.entries {
            all.push((*child, st.nodes[child].kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.st();
        let perm = (mode & !umask & 0o7777) as u16;
        match st.add(req, parent.0, name, FileType::RegularFile, perm, vec![]) {
            Ok(ino) => {
                let a = st.attr(ino).expect("just made");
                reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted foldfs; unmounted when dropped.
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    pub path: std::path::PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

/// Mounts a fresh foldfs on `path` (created if needed). Panics — the test fails — when the
/// mount cannot be made: these tests need root and `/dev/fuse`, which CI provides.
pub fn mount(path: &Path) -> Mount {
    std::fs::create_dir_all(path).expect("mount point");
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("foldfs".into()),
        MountOption::Subtype("foldfs".into()),
    ];
    cfg.n_threads = Some(2);
    let session = fuser::spawn_mount(FoldFs::new(), path, &cfg).unwrap_or_else(|e| {
        panic!(
            "cannot mount the case-folding test file system on {} ({e}): these tests need root and /dev/fuse (`.ci/run` runs them as root; install fuse3 and load the fuse module)",
            path.display()
        )
    });
    // The mount is live once the root answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| m.contains(&*path.to_string_lossy()) && m.contains("foldfs"))
            .unwrap_or(false);
        if mounted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "foldfs did not appear at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Mount {
        session: Some(session),
        path: path.to_path_buf(),
    }
}
