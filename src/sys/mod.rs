//! Every call into the operating system that is not the same on Linux and the other Unixes,
//! and every `unsafe` block of the crate.
//!
//! Owns: process and user facts (host name, ids, whether a pid lives), signal dispositions,
//! detaching a child from the terminal, allocator tuning, opening a file without an atime
//! update, what file system a path is on, the mount table, unmounting, what limits a watcher,
//! and the kernel's one-call forms of a confined walk (`openat2`) and of a rename that never
//! replaces (`renameat2`). Must not touch: the repository, trees, printing.
//!
//! Two implementations with one interface, chosen at compile time:
//! - `linux`: the Linux kernel's own interfaces (`O_NOATIME`, `statfs` magic numbers,
//!   `/proc/self/mountinfo`, `/proc/sys/fs/inotify`, `openat2`, `renameat2`), and glibc's
//!   `mallopt`.
//! - `posix`: only what POSIX and std offer, used on macOS and the BSDs. It never reads `/proc`,
//!   never uses `O_NOATIME` or `mallopt`, and finds file system types in the output of
//!   `mount(8)`. Building with `--features portable-sys` forces it on Linux, so the
//!   code a Mac runs is built and tested here (`.ci/run` does so).
//!
//! File locks are not here: std's `File::lock`/`try_lock` are portable.
//!
//! Every `unsafe` block says, in a `SAFETY:` comment, why it is sound; the crate root denies
//! `unsafe` everywhere else.
#![allow(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

#[cfg(all(target_os = "linux", not(feature = "portable-sys")))]
mod linux;
#[cfg(all(target_os = "linux", not(feature = "portable-sys")))]
use linux as imp;

#[cfg(any(not(target_os = "linux"), feature = "portable-sys"))]
mod posix;
#[cfg(any(not(target_os = "linux"), feature = "portable-sys"))]
use posix as imp;

/// Which implementation this build uses: `"linux"` or `"portable"`.
pub const LAYER: &str = imp::LAYER;

/// The name of the file-change notification mechanism the watcher uses on this target (what
/// `status` shows while watching).
pub const WATCH_BACKEND: &str = if cfg!(target_os = "macos") {
    "FSEvents"
} else if cfg!(any(target_os = "linux", target_os = "android")) {
    "inotify"
} else {
    "kqueue"
};

/// The kinds of login agent a system offers (see `daemon::agent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginAgent {
    /// A systemd user unit in `~/.config/systemd/user/`, loaded with `systemctl --user`.
    SystemdUser,
    /// A LaunchAgent in `~/Library/LaunchAgents/`, loaded with `launchctl bootstrap gui/UID`.
    LaunchAgent,
}

/// The login agent this target uses.
pub const LOGIN_AGENT: LoginAgent = if cfg!(target_os = "macos") {
    LoginAgent::LaunchAgent
} else {
    LoginAgent::SystemdUser
};

// ---- the same on every Unix ----------------------------------------------------------------

/// This machine's host name (`localhost` if it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a valid, writable buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The real user id of this process.
pub fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The real group id of this process.
pub fn gid() -> u32 {
    rustix::process::getgid().as_raw()
}

/// Does a process with this id exist on this machine? (Ids that cannot be a pid count as
/// alive: the caller only ever becomes more careful.)
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Restores SIGPIPE's default disposition, so `prism-sync … | head` ends quietly like other
/// Unix tools. Call first thing in `main`, before any thread exists.
pub fn default_sigpipe() {
    // SAFETY: sets a signal disposition to its default; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Blocks SIGPIPE in the calling thread: a write to a connection the peer has closed then fails
/// with EPIPE (and is retried or reported) instead of ending the process.
pub fn block_sigpipe_in_this_thread() {
    // SAFETY: sigset_t is plain data that sigemptyset initializes; pthread_sigmask changes only
    // this thread's mask and accepts a null pointer for the old mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Makes the child started by `cmd` the leader of a new session, without a controlling
/// terminal: closing the terminal that started it does not end it.
pub fn detach_from_terminal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only setsid, which is
    // async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Makes big buffers come from mmap and go back to the system when freed, where the allocator
/// can be told (glibc); elsewhere nothing. See `archiver::return_big_buffers`.
pub fn return_big_buffers() {
    imp::return_big_buffers()
}

/// Opens a file for reading without updating its access time where the system allows it (on
/// Linux, for the file's owner or with CAP_FOWNER; elsewhere a plain open).
pub fn open_noatime(path: &Path) -> io::Result<std::fs::File> {
    imp::open_noatime(path)
}

/// Whether any of `paths` is on a network (or FUSE) file system, whose timestamps come from
/// another clock. A path that cannot be checked counts as remote (the careful answer).
pub fn any_on_network_fs<'a>(paths: impl IntoIterator<Item = &'a Path>) -> bool {
    imp::any_on_network_fs(paths)
}

/// One entry of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted: a device, `host:/export`, a FUSE name.
    pub source: String,
    pub mount_point: PathBuf,
    /// `nfs4`, `ext4`, `apfs`, `fuse.prism-sync`, …
    pub fs_type: String,
    /// The options, comma-separated as the system prints them.
    pub options: String,
}

/// The mount table of this machine (as this process sees it).
pub fn mounts() -> io::Result<Vec<Mount>> {
    imp::mounts()
}

/// Asks the kernel to unmount `path`. `PermissionDenied` when this user may not (a FUSE mount
/// made through a setuid helper is unmounted by that helper).
pub fn unmount(path: &Path) -> io::Result<()> {
    imp::unmount(path)
}

/// A hint for the message shown when the watcher runs out of watches (Linux names the sysctl
/// and its value); `None` where the system has no such limit to raise.
pub fn watch_limit_hint() -> Option<String> {
    imp::watch_limit_hint()
}

/// Opens the directory `path` (several components) below `dir` in one call that refuses
/// symlinks and `..` on the way, where the kernel offers that (`openat2` on Linux 5.6+).
/// `None`: not offered here (or not now); walk one component at a time instead.
pub fn open_dir_beneath(
    dir: &std::os::fd::OwnedFd,
    path: &[u8],
    flags: rustix::fs::OFlags,
) -> Option<io::Result<std::os::fd::OwnedFd>> {
    imp::open_dir_beneath(dir, path, flags)
}

/// Renames `from` in `src` to `to` in `dest` unless `to` exists, atomically, where the kernel
/// offers that (`renameat2(RENAME_NOREPLACE)` on Linux). `None`: not offered; the caller checks
/// first and renames.
pub fn rename_noreplace(
    src: &std::os::fd::OwnedFd,
    from: &[u8],
    dest: &std::os::fd::OwnedFd,
    to: &[u8],
) -> Option<io::Result<()>> {
    imp::rename_noreplace(src, from, dest, to)
}

// ---- mount table formats (pure; both are parsed in every build so both stay tested) --------

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses Linux's `/proc/self/mountinfo` (the options are the super block's options).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 2 {
            continue;
        }
        out.push(Mount {
            source: unescape_octal(post[1]),
            mount_point: PathBuf::from(unescape_octal(pre[4])),
            fs_type: post[0].to_string(),
            options: post.get(2).copied().unwrap_or("").to_string(),
        });
    }
    out
}

/// Parses the output of `mount(8)` with no arguments, in either of its two forms:
/// util-linux's `SOURCE on DIR type TYPE (OPTIONS)` and the BSD/macOS
/// `SOURCE on DIR (TYPE, OPTION, …)`.
pub fn parse_mount_output(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((source, rest)) = line.split_once(" on ") else {
            continue;
        };
        let Some(open) = rest.rfind(" (") else {
            continue;
        };
        let inside = rest[open + 2..].trim_end().trim_end_matches(')');
        let head = &rest[..open];
        let (dir, fs_type, options) = match head.rsplit_once(" type ") {
            Some((dir, ty)) => (dir, ty.to_string(), inside.to_string()),
            None => {
                let (ty, opts) = inside.split_once(", ").unwrap_or((inside, ""));
                (head, ty.to_string(), opts.replace(", ", ","))
            }
        };
        out.push(Mount {
            source: source.to_string(),
            mount_point: PathBuf::from(dir),
            fs_type,
            options,
        });
    }
    out
}

/// The mount that holds `path` (an absolute, symlink-free path): the deepest mount point above
/// it.
pub fn mount_of<'m>(mounts: &'m [Mount], path: &Path) -> Option<&'m Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
}

/// Whether a file system type (as the mount table names it) is a network or FUSE one.
pub fn is_network_fs_type(fs_type: &str) -> bool {
    let t = fs_type.to_ascii_lowercase();
    t.starts_with("nfs")
        || t.starts_with("fuse")
        || t.starts_with("smb")
        || matches!(
            t.as_str(),
            "cifs" | "afpfs" | "webdav" | "macfuse" | "osxfuse" | "9p" | "ceph" | "sshfs"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 0:50 / /mnt/my\\040efs rw,relatime shared:9 - nfs4 fs-1.efs.eu-west-1.amazonaws.com:/ rw,vers=4.1,port=20049
41 22 0:51 / /home/me/mnt rw,nosuid - fuse.prism-sync prism-sync rw,user_id=0
";

    /// `.ci/run`'s portable pass sets `PRISM_EXPECT_SYS_LAYER=portable`: this fails if that pass
    /// was not really built with `--features portable-sys` (or the default build was).
    #[test]
    fn the_layer_is_the_one_this_build_was_asked_for() {
        let default = if cfg!(target_os = "linux") {
            "linux"
        } else {
            "portable"
        };
        let expected = std::env::var("PRISM_EXPECT_SYS_LAYER").unwrap_or_else(|_| default.into());
        assert_eq!(
            LAYER, expected,
            "this build uses the {LAYER} system layer, {expected} was expected \
             (a --features portable-sys build is tested with PRISM_EXPECT_SYS_LAYER=portable)"
        );
    }

    #[test]
    fn mountinfo_is_parsed_with_escapes_and_super_options() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/my efs"));
        assert_eq!(m[1].fs_type, "nfs4");
        assert_eq!(m[1].source, "fs-1.efs.eu-west-1.amazonaws.com:/");
        assert_eq!(m[1].options, "rw,vers=4.1,port=20049");
        assert_eq!(m[2].fs_type, "fuse.prism-sync");
    }

    #[test]
    fn mount_output_is_parsed_in_the_util_linux_and_the_macos_forms() {
        let linux = "/dev/vda1 on / type ext4 (rw,relatime)\n\
                     fs-1.efs.eu-west-1.amazonaws.com:/ on /mnt/efs type nfs4 (rw,vers=4.1,port=20049)\n";
        let m = parse_mount_output(linux);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/efs"));
        assert_eq!(m[1].fs_type, "nfs4");
        assert_eq!(m[1].options, "rw,vers=4.1,port=20049");

        let mac = "/dev/disk3s1s1 on / (apfs, sealed, local, read-only, journaled)\n\
                   //me@nas/share on /Volumes/My Share (smbfs, nodev, nosuid, mounted by me)\n\
                   map auto_home on /System/Volumes/Data/home (autofs, automounted, nobrowse)\n";
        let m = parse_mount_output(mac);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].fs_type, "apfs");
        assert_eq!(m[0].options, "sealed,local,read-only,journaled");
        assert_eq!(m[1].mount_point, PathBuf::from("/Volumes/My Share"));
        assert_eq!(m[1].fs_type, "smbfs");
        assert!(is_network_fs_type(&m[1].fs_type));
        assert!(!is_network_fs_type(&m[0].fs_type));
    }

    #[test]
    fn the_deepest_mount_point_holds_a_path() {
        let m = parse_mountinfo(MOUNTINFO);
        let at = |p: &str| mount_of(&m, Path::new(p)).map(|m| m.fs_type.as_str());
        assert_eq!(at("/home/me/mnt/a/b"), Some("fuse.prism-sync"));
        assert_eq!(at("/home/me/mntx"), Some("ext4"));
        assert_eq!(at("/mnt/my efs"), Some("nfs4"));
    }

    #[test]
    fn this_process_is_alive_and_an_unused_pid_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!pid_alive(pid));
    }

    #[test]
    fn the_mount_table_holds_the_root() {
        let m = mounts().expect("mount table");
        assert!(
            m.iter().any(|m| m.mount_point == Path::new("/")),
            "no / in {m:?}"
        );
    }

    #[test]
    fn a_temp_dir_is_local_and_a_missing_path_counts_as_remote() {
        let d = std::env::temp_dir();
        assert!(!any_on_network_fs([d.as_path()]));
        assert!(any_on_network_fs([Path::new("/no/such/place/at/all")]));
    }
}
