//! The portable implementation of [`super`]: only POSIX and std, for macOS and the BSDs (and
//! Linux when built with `--features portable-sys`). No `/proc`, no `O_NOATIME`, no `mallopt`.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::fs::OFlags;

use super::Mount;

pub const LAYER: &str = "portable";

pub fn return_big_buffers() {
    // macOS's allocator returns big blocks on its own; there is nothing portable to tune.
}

pub fn open_noatime(path: &Path) -> io::Result<File> {
    // No portable way to skip the atime update; APFS updates it lazily (strictatime off).
    File::open(path)
}

pub fn any_on_network_fs<'a>(paths: impl IntoIterator<Item = &'a Path>) -> bool {
    let Ok(table) = mounts() else {
        return true;
    };
    paths.into_iter().any(|p| {
        let Ok(real) = std::fs::canonicalize(p) else {
            return true;
        };
        super::mount_of(&table, &real).is_none_or(|m| super::is_network_fs_type(&m.fs_type))
    })
}

/// Where `mount(8)` lives (macOS and the BSDs keep it in `/sbin`, not always on PATH).
fn mount_command() -> &'static str {
    ["/sbin/mount", "/bin/mount", "/usr/bin/mount"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mount")
}

pub fn mounts() -> io::Result<Vec<Mount>> {
    let out = Command::new(mount_command())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} failed ({})",
            mount_command(),
            out.status
        )));
    }
    Ok(super::parse_mount_output(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

pub fn unmount(path: &Path) -> io::Result<()> {
    let umount = ["/sbin/umount", "/bin/umount", "/usr/bin/umount"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("umount");
    let st = Command::new(umount)
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if st.success() {
        Ok(())
    } else if rustix::process::geteuid().is_root() {
        Err(io::Error::other(format!(
            "umount {} failed (is something using it?)",
            path.display()
        )))
    } else {
        // Not root: the caller tries the helper that mounted it.
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }
}

pub fn watch_limit_hint() -> Option<String> {
    None
}

pub fn open_dir_beneath(
    _dir: &OwnedFd,
    _path: &[u8],
    _flags: OFlags,
) -> Option<io::Result<OwnedFd>> {
    None
}

pub fn rename_noreplace(
    _src: &OwnedFd,
    _from: &[u8],
    _dest: &OwnedFd,
    _to: &[u8],
) -> Option<io::Result<()>> {
    // macOS has renameatx_np(RENAME_EXCL) and the BSDs nothing common; the caller's check
    // before the rename is the portable form.
    None
}
