//! The repository as the oracle reads it, through the library: the set's heads, every
//! published version of every path (file contents hashed from their blobs), and a head's tree as
//! a folder digest. Read-only; safe while daemons run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use prism_sync::endpoint::audit::content_hash;
use prism_sync::format::head::Head;
use prism_sync::id::{BlobId, SnapshotId};
use prism_sync::repository::heads::list_heads;
use prism_sync::repository::{Credentials, Repository};
use prism_sync::snapshot::tree::read_dir;
use prism_sync::snapshot::{Node, NodeKind};

use super::fsview::{Digest, Entry, Item};

/// Every (path, content) a set of snapshots holds, with one snapshot that holds it.
#[derive(Default)]
pub struct Versions {
    pub pairs: HashMap<(String, Item), SnapshotId>,
    pub snapshots: usize,
}

pub struct RepoView {
    repo: Repository,
    /// Audit-log content hash (size and blob ids) → the content it stands for.
    items: HashMap<String, Item>,
}

impl RepoView {
    pub fn open(repo_dir: &Path, keys_dir: &Path) -> RepoView {
        let creds = Credentials {
            password: None,
            local_keys_dir: keys_dir.to_path_buf(),
        };
        let repo = Repository::open_url(repo_dir.to_str().unwrap(), &creds)
            .unwrap_or_else(|e| panic!("open the repository {}: {e}", repo_dir.display()));
        RepoView {
            repo,
            items: HashMap::new(),
        }
    }

    pub fn refresh(&self) {
        self.repo.load_index().expect("load the index");
    }

    /// The set's current heads (superseded ones left out), as every endpoint reads them.
    pub fn heads(&self, set: &str) -> Result<Vec<(String, Head)>, String> {
        list_heads(&self.repo, set).map_err(|e| e.to_string())
    }

    /// The content an audit-log hash stands for, if a walked snapshot held it.
    pub fn item_for_audit_hash(&self, h: &str) -> Option<&Item> {
        self.items.get(h)
    }

    fn item(&mut self, node: &Node) -> Item {
        match &node.kind {
            NodeKind::Symlink { target } => {
                let item = Item::Link(String::from_utf8_lossy(target).into_owned());
                let key = content_hash(Some(node)).expect("a symlink has a content hash");
                self.items.entry(key).or_insert_with(|| item.clone());
                item
            }
            NodeKind::File { .. } => {
                let key = content_hash(Some(node)).expect("a file has a content hash");
                if let Some(i) = self.items.get(&key) {
                    return i.clone();
                }
                let mut h = Hasher(blake3::Hasher::new());
                prism_sync::restorer::dump(&self.repo, node, &mut h).unwrap_or_else(|e| {
                    panic!("read {}: {e}", String::from_utf8_lossy(&node.name))
                });
                let item = Item::File(h.0.finalize().to_hex()[..32].to_string());
                self.items.insert(key, item.clone());
                item
            }
            NodeKind::Dir { .. } => unreachable!("directories have no item"),
        }
    }

    /// A snapshot's tree as a folder digest.
    pub fn snapshot_digest(&mut self, id: &SnapshotId) -> Result<Digest, String> {
        let snap = self.repo.load_snapshot(id).map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        let mut stack = vec![(String::new(), snap.tree)];
        while let Some((prefix, tree)) = stack.pop() {
            for n in read_dir(&self.repo, &tree).map_err(|e| e.to_string())? {
                let path = join(&prefix, &n.name);
                let e = match &n.kind {
                    NodeKind::Dir { subtree } => {
                        stack.push((path.clone(), *subtree));
                        Entry::Dir
                    }
                    NodeKind::Symlink { .. } => Entry::Link(self.item(&n)),
                    NodeKind::File { size, .. } => Entry::File {
                        item: self.item(&n),
                        size: *size,
                        perm: n.mode & 0o7777,
                        mtime_ns: n.mtime_ns,
                    },
                };
                out.insert(path, e);
            }
        }
        Ok(out)
    }

    /// Every (path, content) in the set's snapshots: the published versions and, separately,
    /// the `before-sync` safety snapshots. Subtrees shared between snapshots are walked once.
    pub fn versions(&mut self, set: &str) -> (Versions, Versions) {
        self.refresh();
        let (snaps, errors) = self.repo.snapshots_lenient().expect("list snapshots");
        assert!(errors.is_empty(), "unreadable snapshots: {errors:?}");
        let (mut published, mut safety) = (Versions::default(), Versions::default());
        let mut seen: HashSet<(bool, String, BlobId)> = HashSet::new();
        for (id, s) in snaps {
            if s.sync_set.as_deref() != Some(set) {
                continue;
            }
            let is_safety = s.tags.iter().any(|t| t == "before-sync");
            let out = if is_safety {
                &mut safety
            } else {
                &mut published
            };
            out.snapshots += 1;
            let mut stack = vec![(String::new(), s.tree)];
            while let Some((prefix, tree)) = stack.pop() {
                if !seen.insert((is_safety, prefix.clone(), tree)) {
                    continue; // a subtree shared with a walked snapshot: its pairs are recorded
                }
                for n in read_dir(&self.repo, &tree).expect("read a tree") {
                    let path = join(&prefix, &n.name);
                    match &n.kind {
                        NodeKind::Dir { subtree } => stack.push((path, *subtree)),
                        _ => {
                            let item = self.item(&n);
                            out.pairs.entry((path, item)).or_insert(id);
                        }
                    }
                }
            }
        }
        (published, safety)
    }
}

fn join(prefix: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if prefix.is_empty() {
        name.into_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

struct Hasher(blake3::Hasher);

impl std::io::Write for Hasher {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
