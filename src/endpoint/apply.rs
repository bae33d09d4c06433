//! Executes a sync plan in the local folder.
//!
//! Before touching a path, it is compared with what the scan saw (type, size, mtime, mode, link
//! target): if it changed since, the action is refused (the next step sees the change and treats
//! it as a conflict). Files are written to a temp file beside the target, fsynced and renamed over
//! it; every touched directory is fsynced before the caller records the step as done.
//!
//! setuid, setgid and sticky bits are never applied ([`PERMISSION_BITS`]): a tree published
//! before they were dropped from sync scans, or a forged one, must not make a program here run
//! with its owner's rights.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::restorer::{WriteOptions, write_file, write_symlink};
use crate::snapshot::tree::file_blobs;
use crate::snapshot::{Content, Node, NodeKind};
use crate::sync::merge::Action;

/// Why an action was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The path changed since the scan; nothing was done to it.
    Changed(String),
    /// The file system refused (permissions, space, a name it cannot hold, …).
    Io(String),
    /// A directory still holds files that do not sync; it was kept.
    NotEmpty,
    /// On a case-insensitive file system, another entry differs from this name only by case.
    CaseCollision(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Changed(s) => write!(f, "changed since the scan, left alone: {s}"),
            Failure::Io(s) => f.write_str(s),
            Failure::NotEmpty => f.write_str("kept: it holds files that do not sync"),
            Failure::CaseCollision(other) => {
                write!(
                    f,
                    "not written: {other} differs only in case and this file system cannot hold both"
                )
            }
        }
    }
}

/// The mode bits a sync applies: read, write and execute for owner, group and others; never
/// setuid (0o4000), setgid (0o2000) or sticky (0o1000).
pub const PERMISSION_BITS: u32 = 0o777;

/// `node` with only the mode bits a sync may apply.
fn without_special_bits(node: &Node) -> Node {
    let mut n = node.clone();
    n.mode &= PERMISSION_BITS;
    n
}

pub fn local_path(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(rel))
}

fn mtime_ns(md: &fs::Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

/// Does the path still hold what the scan saw?
fn still(path: &Path, expect: Option<&Node>) -> std::result::Result<(), Failure> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => Some(md),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Failure::Io(e.to_string())),
    };
    let ok = match (expect, &md) {
        (None, None) => true,
        (None, Some(_)) => return Err(Failure::Changed("it exists now".into())),
        (Some(_), None) => return Err(Failure::Changed("it is gone".into())),
        (Some(n), Some(md)) => match &n.kind {
            NodeKind::File { size, .. } => {
                md.is_file()
                    && md.len() == *size
                    && mtime_ns(md) == n.mtime_ns
                    && (md.mode() & PERMISSION_BITS) == (n.mode & PERMISSION_BITS)
            }
            NodeKind::Symlink { target } => {
                md.file_type().is_symlink()
                    && fs::read_link(path)
                        .is_ok_and(|t| t.as_os_str().as_bytes() == target.as_slice())
            }
            NodeKind::Dir { .. } => md.is_dir(),
        },
    };
    if ok {
        Ok(())
    } else {
        Err(Failure::Changed("modified".into()))
    }
}

fn set_meta(path: &Path, node: &Node) -> std::io::Result<()> {
    if !matches!(node.kind, NodeKind::Symlink { .. }) {
        fs::set_permissions(path, fs::Permissions::from_mode(node.mode))?;
    }
    if let NodeKind::File { .. } = node.kind {
        let t =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(node.mtime_ns.max(0) as u64);
        fs::File::options()
            .write(true)
            .open(path)?
            .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))?;
    }
    Ok(())
}

fn same_content(a: &Node, b: &Node) -> bool {
    match (&a.kind, &b.kind) {
        (
            NodeKind::File {
                size: s,
                content: c,
            },
            NodeKind::File {
                size: t,
                content: d,
            },
        ) => s == t && c == d,
        _ => false,
    }
}

fn io(e: Error) -> Failure {
    Failure::Io(e.to_string())
}

/// On a case-insensitive file system, would creating `path` land on another entry's name?
fn case_collision(path: &Path) -> Option<String> {
    let (dir, name) = (path.parent()?, path.file_name()?);
    let lower = name.to_string_lossy().to_lowercase();
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name())
        .find(|n| n != name && n.to_string_lossy().to_lowercase() == lower)
        .map(|n| n.to_string_lossy().into_owned())
}

fn run(
    repo: &Repository,
    root: &Path,
    a: &Action,
    fold_case: bool,
    touched: &mut BTreeSet<PathBuf>,
) -> std::result::Result<(), Failure> {
    let parent = |p: &Path| {
        p.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.to_path_buf())
    };
    let creates = match a {
        Action::Mkdir { path, .. }
        | Action::Write {
            path, expect: None, ..
        } => Some(path),
        Action::Rename { to, .. } => Some(to),
        _ => None,
    };
    if fold_case
        && let Some(p) = creates
        && let Some(other) = case_collision(&local_path(root, p))
    {
        return Err(Failure::CaseCollision(other));
    }
    match a {
        Action::Mkdir { path, node } => {
            let node = &without_special_bits(node);
            let p = local_path(root, path);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => return Ok(()),
                Ok(_) => return Err(Failure::Changed("something else is there".into())),
                Err(_) => {}
            }
            fs::create_dir(&p).map_err(|e| Failure::Io(e.to_string()))?;
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(node.mode | 0o700));
            touched.insert(parent(&p));
        }
        Action::Write { path, node, expect } => {
            let node = &without_special_bits(node);
            let p = local_path(root, path);
            still(&p, expect.as_ref())?;
            match &node.kind {
                NodeKind::File { content, .. } => {
                    if let Some(old) = expect.as_ref().filter(|old| same_content(old, node)) {
                        // Only mode or mtime changed: no need to fetch anything.
                        let _ = old;
                        set_meta(&p, node).map_err(|e| Failure::Io(e.to_string()))?;
                    } else {
                        let blobs = match content {
                            Content::Direct(ids) => ids.clone(),
                            c => file_blobs(repo, c).map_err(io)?,
                        };
                        write_file(
                            repo,
                            node,
                            &blobs,
                            &p,
                            WriteOptions {
                                durable: true,
                                owner: false,
                            },
                            None,
                        )
                        .map_err(io)?;
                    }
                }
                NodeKind::Symlink { .. } => {
                    // Create beside it, then rename over: never a moment without the path.
                    let tmp = p.with_file_name(format!(".{}.prism-tmp-link", std::process::id()));
                    let _ = fs::remove_file(&tmp);
                    write_symlink(node, &tmp).map_err(io)?;
                    fs::rename(&tmp, &p).map_err(|e| Failure::Io(e.to_string()))?;
                }
                NodeKind::Dir { .. } => {
                    return Err(Failure::Io("internal: write of a directory".into()));
                }
            }
            touched.insert(parent(&p));
        }
        Action::Rename {
            from,
            to,
            expect,
            node,
        } => {
            let (f, t) = (local_path(root, from), local_path(root, to));
            still(&f, Some(expect))?;
            still(&t, None)?;
            fs::rename(&f, &t).map_err(|e| Failure::Io(e.to_string()))?;
            if let Some(n) = node {
                set_meta(&t, &without_special_bits(n)).map_err(|e| Failure::Io(e.to_string()))?;
            }
            touched.insert(parent(&f));
            touched.insert(parent(&t));
        }
        Action::Delete { path, expect } => {
            let p = local_path(root, path);
            still(&p, Some(expect))?;
            fs::remove_file(&p).map_err(|e| Failure::Io(e.to_string()))?;
            touched.insert(parent(&p));
        }
        Action::Rmdir { path } => {
            let p = local_path(root, path);
            match fs::remove_dir(&p) {
                Ok(()) => {
                    touched.insert(parent(&p));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                    return Err(Failure::NotEmpty);
                }
                Err(e) => return Err(Failure::Io(e.to_string())),
            }
        }
    }
    Ok(())
}

/// Runs the actions in order; returns one result per action run. `stop_after` (tests) stops
/// after that many actions as if the process had been killed: no fsync of directories, and the
/// caller must not record anything. `fold_case`: the folder's file system ignores case.
pub fn apply(
    repo: &Repository,
    root: &Path,
    actions: &[Action],
    stop_after: Option<usize>,
    fold_case: bool,
) -> Result<Vec<std::result::Result<(), Failure>>> {
    let mut touched = BTreeSet::new();
    let mut results = Vec::with_capacity(actions.len());
    for (i, a) in actions.iter().enumerate() {
        if stop_after == Some(i) {
            return Err(Error::Interrupted);
        }
        results.push(run(repo, root, a, fold_case, &mut touched));
    }
    for d in touched {
        if let Ok(f) = fs::File::open(&d) {
            f.sync_all().map_err(|e| Error::io(&d, e))?;
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::repository::{Credentials, InitOptions};

    fn node(name: &str, kind: NodeKind, mode: u32) -> Node {
        Node {
            name: name.into(),
            kind,
            mode,
            mtime_ns: 1_700_000_000_000_000_000,
            uid: 0,
            gid: 0,
        }
    }

    /// A tree published before sync scans dropped the special bits (or a forged one) must not
    /// create a setuid program or a setgid/sticky directory here.
    #[test]
    fn special_mode_bits_in_a_shared_tree_are_not_applied() {
        let tmp = tempfile::tempdir().unwrap();
        let creds = Credentials {
            password: None,
            local_keys_dir: tmp.path().join("keys"),
        };
        let repo = Repository::init(
            std::sync::Arc::new(MemoryBackend::new()),
            &creds,
            &InitOptions::default(),
        )
        .unwrap();
        let root = tmp.path().join("folder");
        fs::create_dir(&root).unwrap();
        let empty = NodeKind::File {
            size: 0,
            content: Content::Direct(vec![]),
        };
        let dir = NodeKind::Dir {
            subtree: crate::id::BlobId::default(),
        };
        let actions = vec![
            Action::Mkdir {
                path: b"d".to_vec(),
                node: node("d", dir, 0o3775),
            },
            Action::Write {
                path: b"d/tool".to_vec(),
                node: node("tool", empty, 0o6755),
                expect: None,
            },
        ];
        let results = apply(&repo, &root, &actions, None, false).unwrap();
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("d/tool"), 0o755);
        assert_eq!(mode("d") & 0o7000, 0);
    }
}
