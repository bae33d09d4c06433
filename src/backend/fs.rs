//! A repository in a directory: a local disk, or an EFS/NFS mount.
//!
//! Every object is written once: a temp file in the target directory (same directory, so the
//! final step never crosses directories — 9p and some NFS setups break cross-directory renames),
//! fsync, `link(2)` to the final name (atomic create-if-absent, also on NFSv4), unlink of the temp
//! name, fsync of the directory. Objects are made read-only. Where hard links are not supported,
//! `rename` after an existence check is used (create-only is then not atomic; see
//! `format-spec/media.md`).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{
    BResult, Backend, BackendError, ErrorKind, Kind, ObjectInfo, object_name, valid_object_name,
};
use crate::crypto::random_bytes;
use crate::id::hex_encode;

pub struct FsBackend {
    root: PathBuf,
    /// Recently read packs, kept open: restoring many small files reads many blobs from one
    /// pack, and an open per blob costs a path lookup each (a round trip on NFS/EFS).
    handles: Mutex<VecDeque<(String, Arc<File>)>>,
}

/// Open pack handles kept by [`FsBackend`].
const OPEN_PACKS_MAX: usize = 32;

fn io_err(kind: Kind, name: &str, e: io::Error) -> BackendError {
    let k = match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            ErrorKind::Transient
        }
        _ => ErrorKind::Other,
    };
    BackendError::new(k, object_name(kind, name), e.to_string())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        // Some file systems (CIFS, some FUSE) refuse fsync on directories; the data itself was
        // synced, so carry on like restic does.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP)) => Ok(()),
        r => r,
    }
}

impl FsBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsBackend {
            root: root.into(),
            handles: Mutex::new(VecDeque::new()),
        }
    }

    fn open_read(&self, kind: Kind, name: &str) -> io::Result<Arc<File>> {
        let path = self
            .path(kind, name)
            .map_err(|e| io::Error::other(e.message))?;
        if kind != Kind::Pack {
            return File::open(path).map(Arc::new);
        }
        {
            let mut h = self.handles.lock().expect("lock");
            if let Some(i) = h.iter().position(|(n, _)| n == name) {
                let entry = h.remove(i).expect("present");
                let f = entry.1.clone();
                h.push_front(entry);
                return Ok(f);
            }
        }
        let f = Arc::new(File::open(path)?);
        let mut h = self.handles.lock().expect("lock");
        h.push_front((name.to_string(), f.clone()));
        h.truncate(OPEN_PACKS_MAX);
        Ok(f)
    }

    fn forget_handle(&self, name: &str) {
        self.handles
            .lock()
            .expect("lock")
            .retain(|(n, _)| n != name);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, kind: Kind, name: &str) -> BResult<PathBuf> {
        if kind != Kind::Config && !valid_object_name(name) {
            return Err(BackendError::new(
                ErrorKind::Other,
                object_name(kind, name),
                "invalid object name",
            ));
        }
        Ok(self.root.join(kind.path(name)))
    }

    fn write_temp(dir: &Path, data: &[u8]) -> io::Result<PathBuf> {
        let tmp = dir.join(format!(".tmp-{}", hex_encode(&random_bytes::<8>())));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)?;
        let r = f.write_all(data).and_then(|_| f.sync_all());
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    fn create_inner(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let dir = path.parent().expect("object paths have a parent");
        let tmp = match Self::write_temp(dir, data) {
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && dir.starts_with(&self.root)
                    && self.root.exists() =>
            {
                fs::create_dir_all(dir)?;
                Self::write_temp(dir, data)?
            }
            r => r?,
        };
        let linked = match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::EMLINK)
                ) =>
            {
                if path.exists() {
                    Err(io::Error::from(io::ErrorKind::AlreadyExists))
                } else {
                    fs::rename(&tmp, path)
                }
            }
            Err(e) => Err(e),
        };
        let _ = fs::remove_file(&tmp);
        linked?;
        sync_dir(dir)
    }
}

impl Backend for FsBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn prepare(&self) -> BResult<()> {
        let e = |e: io::Error| BackendError::new(ErrorKind::Other, self.location(), e.to_string());
        // Never scatter repository files among someone's data.
        if let Ok(mut rd) = fs::read_dir(&self.root)
            && rd.next().is_some()
        {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                self.location(),
                "the directory is not empty and holds no repository: choose an empty or new directory",
            ));
        }
        fs::create_dir_all(&self.root).map_err(e)?;
        for kind in Kind::ALL {
            if kind != Kind::Config {
                fs::create_dir_all(self.root.join(kind.dir())).map_err(e)?;
            }
        }
        for i in 0..=255u8 {
            fs::create_dir_all(self.root.join("data").join(hex_encode(&[i]))).map_err(e)?;
        }
        sync_dir(&self.root).map_err(e)
    }

    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
        let path = self.path(kind, name)?;
        self.create_inner(&path, data)
            .map_err(|e| io_err(kind, name, e))
    }

    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
        fs::read(self.path(kind, name)?).map_err(|e| io_err(kind, name, e))
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        let f = self
            .open_read(kind, name)
            .map_err(|e| io_err(kind, name, e))?;
        let mut buf = vec![0u8; length as usize];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                BackendError::new(
                    ErrorKind::Other,
                    object_name(kind, name),
                    format!("shorter than {} bytes", offset + length),
                )
            } else {
                io_err(kind, name, e)
            }
        })?;
        Ok(buf)
    }

    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        if kind == Kind::Config {
            return match fs::metadata(self.root.join("config")) {
                Ok(m) => Ok(vec![ObjectInfo {
                    name: "config".into(),
                    size: m.len(),
                }]),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
                Err(e) => Err(io_err(kind, "config", e)),
            };
        }
        let base = self.root.join(kind.dir());
        let dirs: Vec<PathBuf> = if kind == Kind::Pack {
            match fs::read_dir(&base) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => vec![],
                Err(e) => return Err(io_err(kind, "*", e)),
            }
        } else {
            vec![base]
        };
        let mut out = Vec::new();
        for d in dirs {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(kind, "*", e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| io_err(kind, "*", e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if !valid_object_name(&name) {
                    continue;
                }
                match entry.metadata() {
                    Ok(m) if m.is_file() => out.push(ObjectInfo {
                        name,
                        size: m.len(),
                    }),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(kind, &name, e)),
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        let path = self.path(kind, name)?;
        self.forget_handle(name);
        fs::remove_file(&path).map_err(|e| io_err(kind, name, e))?;
        sync_dir(path.parent().expect("parent")).map_err(|e| io_err(kind, name, e))
    }

    fn remove_stale_temp(&self, max_age: Duration) -> BResult<usize> {
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        for kind in Kind::ALL {
            if kind != Kind::Config {
                dirs.push(self.root.join(kind.dir()));
            }
        }
        for i in 0..=255u8 {
            dirs.push(self.root.join("data").join(hex_encode(&[i])));
        }
        let now = SystemTime::now();
        for d in dirs {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let is_tmp = e
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(".tmp-"));
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > max_age);
                if is_tmp && old && fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}
