//! What a folder holds, as the oracle sees it: items (file contents by hash, symlink targets),
//! whole-folder digests, the conflict-copy naming, and random picks of existing paths.
//!
//! Nothing here follows a symlink: entries are read with `symlink_metadata`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::rng::Rng;

/// Content at a path: a file by the BLAKE3 of its bytes (first 16 bytes, hex), or a symlink by
/// its target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    File(String),
    Link(String),
}

impl Item {
    pub fn file(data: &[u8]) -> Item {
        Item::File(blake3::hash(data).to_hex()[..32].to_string())
    }

    pub fn link(target: &Path) -> Item {
        Item::Link(target.to_string_lossy().into_owned())
    }

    pub fn short(&self) -> String {
        match self {
            Item::File(h) => format!("file {}", &h[..12]),
            Item::Link(t) => format!("symlink -> {t}"),
        }
    }
}

/// One entry of a folder digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File {
        item: Item,
        size: u64,
        /// Permission bits (`mode & 0o7777`).
        perm: u32,
        mtime_ns: i64,
    },
    Link(Item),
}

impl Entry {
    pub fn item(&self) -> Option<&Item> {
        match self {
            Entry::Dir => None,
            Entry::File { item, .. } | Entry::Link(item) => Some(item),
        }
    }

    /// Type and content only (no mode, no mtime).
    pub fn same_content(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Dir, Entry::Dir) => true,
            (Entry::File { item: a, .. }, Entry::File { item: b, .. }) => a == b,
            (Entry::Link(a), Entry::Link(b)) => a == b,
            _ => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Entry::Dir => "dir".into(),
            Entry::File {
                item,
                size,
                perm,
                mtime_ns,
            } => format!(
                "{} ({size} B, mode {perm:o}, mtime {mtime_ns})",
                item.short()
            ),
            Entry::Link(i) => i.short(),
        }
    }
}

/// Relative path (`/`-separated) → entry, for everything below a folder.
pub type Digest = BTreeMap<String, Entry>;

/// Is this the name of a temp file of a writer (sync apply, restore)?
pub fn is_temp(name: &str) -> bool {
    name.contains(".prism-tmp-")
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    };
    names.sort();
    names
}

/// Reads one entry; `None` if it vanished meanwhile (a daemon moved it).
pub fn entry(root: &Path, rel: &str) -> Option<Entry> {
    let p = root.join(rel);
    let md = std::fs::symlink_metadata(&p).ok()?;
    let ft = md.file_type();
    if ft.is_symlink() {
        Some(Entry::Link(Item::link(&std::fs::read_link(&p).ok()?)))
    } else if ft.is_dir() {
        Some(Entry::Dir)
    } else {
        let data = std::fs::read(&p).ok()?;
        Some(Entry::File {
            item: Item::file(&data),
            size: data.len() as u64,
            perm: md.mode() & 0o7777,
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        })
    }
}

/// Everything below `root` (temp files included: the checks look for them).
pub fn digest(root: &Path) -> Digest {
    let mut out = Digest::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for name in sorted_names(&root.join(&rel)) {
            let child = join(&rel, &name);
            if let Some(e) = entry(root, &child) {
                if e == Entry::Dir {
                    stack.push(child.clone());
                }
                out.insert(child, e);
            }
        }
    }
    out
}

/// The files and symlinks at or below `rel`, with their content: what an operation that
/// replaces or removes `rel` destroys. A daemon's temp files (a download in flight) are not the
/// user's data and are left out.
pub fn observe(root: &Path, rel: &str) -> Vec<(String, Item)> {
    let mut out = Vec::new();
    let mut stack = vec![rel.to_string()];
    while let Some(r) = stack.pop() {
        match entry(root, &r) {
            Some(Entry::Dir) => {
                for name in sorted_names(&root.join(&r)) {
                    if !is_temp(&name) {
                        stack.push(join(&r, &name));
                    }
                }
            }
            Some(e) => out.push((r, e.item().expect("a file or symlink").clone())),
            None => {}
        }
    }
    out.sort();
    out
}

/// Strips every `.conflict-<YYYYMMDD-HHMMSS>-<endpoint>` insertion from each component: the path
/// a conflict copy stands for.
pub fn normalize(path: &str) -> String {
    path.split('/')
        .map(strip_conflict)
        .collect::<Vec<_>>()
        .join("/")
}

fn strip_conflict(name: &str) -> String {
    const MARK: &str = ".conflict-";
    let mut out = name.to_string();
    let mut from = 0;
    while let Some(i) = out[from..].find(MARK).map(|i| i + from) {
        let rest = &out.as_bytes()[i + MARK.len()..];
        let digits = |r: std::ops::Range<usize>| {
            r.clone()
                .all(|k| rest.get(k).is_some_and(u8::is_ascii_digit))
        };
        let stamp = digits(0..8)
            && rest.get(8) == Some(&b'-')
            && digits(9..15)
            && rest.get(15) == Some(&b'-');
        let ep_len = rest
            .iter()
            .skip(16)
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            .count();
        if stamp && ep_len > 0 {
            let end = i + MARK.len() + 16 + ep_len;
            out.replace_range(i..end, "");
            from = i;
        } else {
            from = i + MARK.len();
        }
    }
    out
}

/// Is `path` the same as `want`, or a conflict copy of it (at any level)?
pub fn stands_for(path: &str, want: &str) -> bool {
    path == want || normalize(path) == want
}

/// Is `anc` a strict ancestor directory of `path`?
pub fn is_ancestor(anc: &str, path: &str) -> bool {
    anc.is_empty()
        || (path.len() > anc.len() && path.starts_with(anc) && path.as_bytes()[anc.len()] == b'/')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    File,
    Dir,
    Link,
}

/// A random existing entry of the wanted type, found by a random walk down from the root
/// (never into symlinks, never a temp file, never a top-level name in `protect`).
pub fn pick(rng: &mut Rng, root: &Path, want: Want, protect: &[&str]) -> Option<String> {
    for _attempt in 0..8 {
        let mut rel = String::new();
        for _depth in 0..8 {
            let names: Vec<String> = sorted_names(&root.join(&rel))
                .into_iter()
                .filter(|n| !(is_temp(n) || (rel.is_empty() && protect.contains(&n.as_str()))))
                .collect();
            if names.is_empty() {
                break;
            }
            let child = join(&rel, rng.pick(&names).as_str());
            let Ok(md) = std::fs::symlink_metadata(root.join(&child)) else {
                break;
            };
            let ft = md.file_type();
            if ft.is_dir() {
                if want == Want::Dir && rng.chance(0.45) {
                    return Some(child);
                }
                rel = child;
                continue;
            }
            let found = match want {
                Want::File => ft.is_file(),
                Want::Link => ft.is_symlink(),
                Want::Dir => false,
            };
            if found {
                return Some(child);
            }
            break;
        }
        if want == Want::Dir && !rel.is_empty() {
            return Some(rel);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_normalize_to_the_original() {
        assert_eq!(normalize("a/x.conflict-20261201-101010-ws1.txt"), "a/x.txt");
        assert_eq!(normalize("d.conflict-20261201-101010-local/x"), "d/x");
        assert_eq!(
            normalize("x.conflict-20261201-101010-ws1.conflict-20261201-101011-ws2.txt"),
            "x.txt"
        );
        assert_eq!(
            normalize(".bashrc.conflict-20261201-101010-ws_2"),
            ".bashrc"
        );
        assert_eq!(normalize("a.conflict-nope.txt"), "a.conflict-nope.txt");
        assert!(is_ancestor("a", "a/b") && !is_ancestor("a", "ab/c") && !is_ancestor("a", "a"));
    }
}
