//! `prism-sync mount`: every snapshot of a repository, or every version of a sync set, as a
//! read-only folder (FUSE, through `fuser`; no libfuse needed — root mounts directly, other
//! users through `fusermount3`).
//!
//! Owns: the mount's layout ([`layout`]: `snapshots/<time>-<id>/`, `latest/`, `hosts/`, `tags/`,
//! or a set's `versions/<time>/` and `latest/`), its inodes and the kernel protocol ([`fs`]),
//! and mounting and unmounting. Must not touch: local folders (it writes nothing anywhere),
//! repository formats (it reads through [`crate::browse::Browser`]), printing (messages go to a
//! [`Report`] callback).
//!
//! Invariants:
//! - Nothing is restored up front: a file's chunks are read when the kernel reads them, each
//!   verified as every blob read is, and kept in the browser's bounded caches
//!   ([`crate::browse::BrowseOptions`]: 64 MiB of chunks, 200 000 directory entries by default).
//! - Sizes, mtimes, modes and symlink targets are exactly the snapshot's. A sync set's trees
//!   carry no owners, so its view shows the mounting user as owner; the repository view shows
//!   the stored owner.
//! - The mount is read-only (`ro,nosuid,nodev`): every write is refused by the kernel.
//! - New snapshots show without remounting: the snapshot list is read again at most every
//!   [`crate::browse::BrowseOptions::refresh`] when a virtual directory is visited, and the
//!   index with it when snapshots were added.
//! - A damaged or missing object fails only the file or directory that needs it (EIO), with a
//!   message naming it.

mod fs;
pub mod layout;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, MountOption};

use crate::browse::Browser;
pub use crate::browse::Report;
use crate::error::{Error, Result};
pub use layout::View;

/// Threads answering the kernel: reads of different files (and read-ahead of one) overlap.
pub const KERNEL_THREADS: usize = 4;

/// A live mount. Dropping it unmounts (if nothing uses it).
pub struct Mounted {
    session: fuser::BackgroundSession,
    mountpoint: PathBuf,
}

/// Mounts `view` of `repo` on `mountpoint` (an existing directory) and serves it from
/// background threads until [`Mounted::unmount`] or an outside `umount`.
pub fn mount(
    browser: Arc<Browser>,
    view: View,
    mountpoint: &Path,
    report: Report,
) -> Result<Mounted> {
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::invalid(format!(
                "{} is not a directory: give an empty directory to mount on",
                mountpoint.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::invalid(format!(
                "{} does not exist: create it first (mkdir -p {})",
                mountpoint.display(),
                mountpoint.display()
            )));
        }
        Err(e) => return Err(Error::io(mountpoint, e)),
    }
    let fs = fs::PrismFs::new(browser, view, report);
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("prism-sync".into()),
        MountOption::Subtype("prism-sync".into()),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
    ];
    cfg.n_threads = Some(KERNEL_THREADS);
    let session = fuser::spawn_mount(fs, mountpoint, &cfg).map_err(|e| {
        Error::invalid(format!(
            "cannot mount on {}: {e} (FUSE needs /dev/fuse and, unless you are root, fusermount3 from the fuse3 package)",
            mountpoint.display()
        ))
    })?;
    Ok(Mounted {
        session,
        mountpoint: std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf()),
    })
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// True once the kernel ended the mount (an outside `umount`, or ours).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Asks the kernel to unmount. A busy mount (a shell inside it, an open file) stays
    /// mounted and the error says so; the caller may try again later.
    pub fn unmount(&self) -> std::io::Result<()> {
        match crate::sys::unmount(&self.mountpoint) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // Not root: the setuid helper that mounted it unmounts it.
                let st = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg(&self.mountpoint)
                    .stderr(std::process::Stdio::null())
                    .status()?;
                if st.success() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!(
                        "fusermount3 -u {} failed (is something using it?)",
                        self.mountpoint.display()
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until the mount has ended and its threads have stopped.
    pub fn join(self) -> Result<()> {
        let mp = self.mountpoint.clone();
        self.session.join().map_err(|e| Error::io(mp, e))
    }
}
