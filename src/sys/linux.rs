//! The Linux implementation of [`super`]: the kernel's own interfaces.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, RenameFlags, ResolveFlags};

use super::Mount;

pub const LAYER: &str = "linux";

pub fn return_big_buffers() {
    #[cfg(target_env = "gnu")]
    // SAFETY: a malloc tuning call with a valid parameter; glibc's mallopt takes its own locks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

pub fn open_noatime(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        // Not the owner and no CAP_FOWNER: the kernel refuses the flag, not the read.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        r => r,
    }
}

pub fn any_on_network_fs<'a>(paths: impl IntoIterator<Item = &'a Path>) -> bool {
    const NFS: i64 = 0x6969;
    const SMB2: i64 = 0xfe53_4d42;
    const CIFS: i64 = 0xff53_4d42;
    const FUSE: i64 = 0x6573_5546;
    // `f_type`'s width differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    paths.into_iter().any(|p| match rustix::fs::statfs(p) {
        Ok(st) => matches!(st.f_type as i64, NFS | SMB2 | CIFS | FUSE),
        Err(_) => true,
    })
}

pub fn mounts() -> io::Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(super::parse_mountinfo(&text))
}

pub fn unmount(path: &Path) -> io::Result<()> {
    match rustix::mount::unmount(path, rustix::mount::UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::PERM) => Err(io::Error::from(io::ErrorKind::PermissionDenied)),
        Err(e) => Err(e.into()),
    }
}

pub fn watch_limit_hint() -> Option<String> {
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches").ok()?;
    Some(format!(
        "fs.inotify.max_user_watches = {}; raise it with sysctl",
        limit.trim()
    ))
}

/// Set once `openat2` turned out to be missing (kernel < 5.6) or filtered (seccomp): later
/// walks go straight to one component at a time.
static NO_OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn open_dir_beneath(dir: &OwnedFd, path: &[u8], flags: OFlags) -> Option<io::Result<OwnedFd>> {
    use std::sync::atomic::Ordering;
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    match rustix::fs::openat2(
        dir,
        os(path),
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Some(Ok(fd)),
        Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {
            NO_OPENAT2.store(true, Ordering::Relaxed);
            None
        }
        Err(e) => Some(Err(e.into())),
    }
}

pub fn rename_noreplace(
    src: &OwnedFd,
    from: &[u8],
    dest: &OwnedFd,
    to: &[u8],
) -> Option<io::Result<()>> {
    match rustix::fs::renameat_with(src, os(from), dest, os(to), RenameFlags::NOREPLACE) {
        Ok(()) => Some(Ok(())),
        // A file system without the flag (some FUSE and network ones), or an old kernel.
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => None,
        Err(e) => Some(Err(e.into())),
    }
}

fn os(b: &[u8]) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b)
}
