//! This user's own files: everything under `$PRISM_HOME` (set configs, state, caches, local
//! keys, the daemon's socket, the server's token and TLS key) is created with directories 0700
//! and files 0600, whatever the umask, so another local user can read none of it.
//!
//! `$PRISM_HOME/sync` is ours alone: an existing one that lets others in is tightened. The home
//! directory itself is only created private, never changed (`--home` may name a directory the
//! user shares on purpose).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of directories under `$PRISM_HOME`.
pub const DIR_MODE: u32 = 0o700;
/// Mode of files under `$PRISM_HOME`.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and missing parents with mode 0700. An existing `dir` owned by this user that
/// lets group or others in is tightened to 0700.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let md = std::fs::metadata(dir)?;
    if md.mode() & 0o077 != 0 && md.uid() == rustix::process::geteuid().as_raw() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Options that create a file with mode 0600 (the umask can only take bits away).
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Opens (creating if needed) a file for appending, mode 0600.
pub fn append(path: &Path) -> io::Result<File> {
    options().create(true).append(true).open(path)
}

/// Creates the file if it does not exist (mode 0600), without touching its content: for files
/// a library opens by path afterwards (redb databases).
pub fn touch(path: &Path) -> io::Result<()> {
    options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map(drop)
}

/// Writes `data` to `path` atomically (temp file in the same directory, fsync, rename), mode
/// 0600; the directory is created private.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("private files have a parent");
    create_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let r = (|| {
        let mut f = options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_and_dirs_let_nobody_else_in_whatever_the_umask() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_dir(&d).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700, "tightened");
        write_atomic(&d.join("f"), b"x").unwrap();
        assert_eq!(mode(&d.join("f")), 0o600);
        touch(&d.join("g")).unwrap();
        assert_eq!(mode(&d.join("g")), 0o600);
        append(&d.join("h")).unwrap();
        assert_eq!(mode(&d.join("h")), 0o600);
    }
}
