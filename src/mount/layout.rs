//! The virtual directories above the snapshots' own trees, as a pure function of the snapshot
//! list: which names a directory holds and what each one is.
//!
//! Repository view (`prism-sync mount --repo URL MOUNTPOINT`):
//!
//! ```text
//! snapshots/<YYYY-MM-DDTHH:MM:SS>-<short id>/   every snapshot (local time)
//! latest/                                       the newest snapshot
//! hosts/<host>/<time>-<short id>/, hosts/<host>/latest/
//! tags/<tag>/<time>-<short id>/,   tags/<tag>/latest/
//! ```
//!
//! Sync-set view (`prism-sync mount NAME MOUNTPOINT`): the set's published versions (not the
//! local copies saved before a sync, which the repository view shows):
//!
//! ```text
//! versions/<YYYY-MM-DDTHH:MM:SS>/   one per version; a second version in the same second is
//!                                   <time>-<short id>
//! latest/                           the newest version
//! ```

use std::collections::BTreeMap;

use crate::browse::history::is_safety;
use crate::id::SnapshotId;
use crate::snapshot::Snapshot;

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Every snapshot of the repository.
    Repository,
    /// The published versions of one sync set.
    Set(String),
}

/// A directory that exists only in the mount (above the snapshots' trees).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VDir {
    Root,
    Snapshots,
    Hosts,
    Host(String),
    Tags,
    Tag(String),
    Versions,
}

/// An entry of a virtual directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Dir(VDir),
    /// The root of a snapshot (its position in [`Layout::snapshots`]).
    Snapshot(usize),
}

/// The virtual directories for one snapshot list.
#[derive(Debug, Default)]
pub struct Layout {
    /// The snapshots shown, oldest first.
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    dirs: BTreeMap<VDir, BTreeMap<String, Target>>,
}

/// `2026-11-27T14:03:05` in the local time zone.
pub fn time_name(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(ts) => ts
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string(),
        Err(_) => format!("at-{ns}ns"),
    }
}

/// A host or tag as a file name: `/` and NUL become `_`; `.`, `..` and the empty name get a `_`
/// in front.
pub fn file_name(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match clean.as_str() {
        "" | "." | ".." => format!("_{clean}"),
        _ => clean,
    }
}

impl Layout {
    /// Builds the layout of `view` over `all` (every readable snapshot, oldest first).
    pub fn build(view: &View, all: &[(SnapshotId, Snapshot)]) -> Layout {
        let mut snapshots: Vec<(SnapshotId, Snapshot)> = match view {
            View::Repository => all.to_vec(),
            View::Set(name) => all
                .iter()
                .filter(|(_, s)| s.sync_set.as_deref() == Some(name.as_str()) && !is_safety(s))
                .cloned()
                .collect(),
        };
        snapshots.sort_by(|a, b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
        let mut l = Layout {
            snapshots,
            dirs: BTreeMap::new(),
        };
        match view {
            View::Repository => l.build_repository(),
            View::Set(_) => l.build_set(),
        }
        l
    }

    fn dir(&mut self, d: VDir) -> &mut BTreeMap<String, Target> {
        self.dirs.entry(d).or_default()
    }

    fn build_repository(&mut self) {
        for d in [VDir::Root, VDir::Snapshots, VDir::Hosts, VDir::Tags] {
            self.dir(d);
        }
        let root = self.dir(VDir::Root);
        root.insert("snapshots".into(), Target::Dir(VDir::Snapshots));
        root.insert("hosts".into(), Target::Dir(VDir::Hosts));
        root.insert("tags".into(), Target::Dir(VDir::Tags));
        let n = self.snapshots.len();
        for i in 0..n {
            let (id, s) = &self.snapshots[i];
            let name = format!("{}-{}", time_name(s.time_ns), id.short());
            let host = file_name(&s.host);
            let tags: Vec<String> = s.tags.iter().map(|t| file_name(t)).collect();
            self.dir(VDir::Snapshots)
                .insert(name.clone(), Target::Snapshot(i));
            self.dir(VDir::Hosts)
                .insert(host.clone(), Target::Dir(VDir::Host(host.clone())));
            // Oldest first, so the last insert of `latest` is the newest.
            let h = self.dir(VDir::Host(host));
            h.insert(name.clone(), Target::Snapshot(i));
            h.insert("latest".into(), Target::Snapshot(i));
            for t in tags {
                self.dir(VDir::Tags)
                    .insert(t.clone(), Target::Dir(VDir::Tag(t.clone())));
                let d = self.dir(VDir::Tag(t));
                d.insert(name.clone(), Target::Snapshot(i));
                d.insert("latest".into(), Target::Snapshot(i));
            }
        }
        if n > 0 {
            self.dir(VDir::Root)
                .insert("latest".into(), Target::Snapshot(n - 1));
        }
    }

    fn build_set(&mut self) {
        self.dir(VDir::Root)
            .insert("versions".into(), Target::Dir(VDir::Versions));
        self.dir(VDir::Versions);
        for i in 0..self.snapshots.len() {
            let (id, s) = &self.snapshots[i];
            let plain = time_name(s.time_ns);
            let name = if self.dirs[&VDir::Versions].contains_key(&plain) {
                format!("{plain}-{}", id.short())
            } else {
                plain
            };
            self.dir(VDir::Versions).insert(name, Target::Snapshot(i));
        }
        if let Some(last) = self.snapshots.len().checked_sub(1) {
            self.dir(VDir::Root)
                .insert("latest".into(), Target::Snapshot(last));
        }
    }

    /// The entries of a virtual directory, by name (`None`: it does not exist now).
    pub fn entries(&self, d: &VDir) -> Option<&BTreeMap<String, Target>> {
        self.dirs.get(d)
    }

    pub fn lookup(&self, d: &VDir, name: &str) -> Option<&Target> {
        self.dirs.get(d)?.get(name)
    }

    /// The newest snapshot time below a virtual directory (its mtime), if any.
    pub fn newest_ns(&self, d: &VDir) -> Option<i64> {
        let entries = self.dirs.get(d)?;
        entries
            .values()
            .filter_map(|t| match t {
                Target::Snapshot(i) => Some(self.snapshots[*i].1.time_ns),
                Target::Dir(sub) if sub != d => self.newest_ns(sub),
                Target::Dir(_) => None,
            })
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browse::history::SAFETY_TAG;
    use crate::id::BlobId;

    fn snap(t: i64, host: &str, tags: &[&str], set: Option<&str>) -> Snapshot {
        Snapshot {
            time_ns: t * 1_000_000_000,
            tree: BlobId([t as u8; 32]),
            host: host.into(),
            user: "u".into(),
            paths: vec![],
            tags: tags.iter().map(|s| s.to_string()).collect(),
            parents: vec![],
            sync_set: set.map(str::to_string),
            endpoint: None,
            summary: Default::default(),
            program_version: String::new(),
            extra: vec![],
        }
    }

    fn id(b: u8) -> SnapshotId {
        SnapshotId([b; 32])
    }

    #[test]
    fn repository_view_lists_snapshots_hosts_tags_and_latest() {
        let all = vec![
            (id(1), snap(1_000, "laptop", &["a/b"], None)),
            (id(2), snap(2_000, "ws", &[], Some("p"))),
            (id(3), snap(3_000, "laptop", &["a/b", "."], None)),
        ];
        let l = Layout::build(&View::Repository, &all);
        let root: Vec<_> = l.entries(&VDir::Root).unwrap().keys().cloned().collect();
        assert_eq!(root, ["hosts", "latest", "snapshots", "tags"]);
        assert_eq!(l.lookup(&VDir::Root, "latest"), Some(&Target::Snapshot(2)));
        let snaps = l.entries(&VDir::Snapshots).unwrap();
        assert_eq!(snaps.len(), 3);
        let first = format!("{}-{}", time_name(1_000_000_000_000), id(1).short());
        assert_eq!(snaps.get(&first), Some(&Target::Snapshot(0)));
        let laptop = l.entries(&VDir::Host("laptop".into())).unwrap();
        assert_eq!(laptop.len(), 3, "two snapshots and latest");
        assert_eq!(laptop.get("latest"), Some(&Target::Snapshot(2)));
        let tags: Vec<_> = l.entries(&VDir::Tags).unwrap().keys().cloned().collect();
        assert_eq!(tags, ["_.", "a_b"], "tags become safe file names");
        assert_eq!(
            l.lookup(&VDir::Tag("a_b".into()), "latest"),
            Some(&Target::Snapshot(2))
        );
        assert_eq!(l.newest_ns(&VDir::Root), Some(3_000_000_000_000));
    }

    #[test]
    fn set_view_shows_published_versions_only_and_keeps_names_of_one_second_apart() {
        let mut two = snap(2_000, "ws", &[], Some("p"));
        two.time_ns += 5; // the same second as the next one
        let all = vec![
            (id(1), snap(1_000, "laptop", &[], Some("p"))),
            (id(9), snap(1_500, "laptop", &[SAFETY_TAG], Some("p"))),
            (id(2), two),
            (id(3), snap(2_000, "laptop", &[], Some("p"))),
            (id(4), snap(2_500, "laptop", &[], Some("other"))),
            (id(5), snap(2_600, "laptop", &[], None)),
        ];
        let l = Layout::build(&View::Set("p".into()), &all);
        assert_eq!(l.snapshots.len(), 3);
        let names: Vec<_> = l
            .entries(&VDir::Versions)
            .unwrap()
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        let t2 = time_name(2_000_000_000_000);
        assert_eq!(
            names,
            vec![
                (time_name(1_000_000_000_000), Target::Snapshot(0)),
                (t2.clone(), Target::Snapshot(1)),
                (format!("{t2}-{}", id(2).short()), Target::Snapshot(2)),
            ],
            "the earlier of two versions in one second keeps the plain name"
        );
        assert_eq!(l.lookup(&VDir::Root, "latest"), Some(&Target::Snapshot(2)));
        assert!(l.entries(&VDir::Hosts).is_none());
    }

    #[test]
    fn an_empty_repository_has_no_latest() {
        let l = Layout::build(&View::Repository, &[]);
        assert!(l.lookup(&VDir::Root, "latest").is_none());
        assert!(l.entries(&VDir::Snapshots).unwrap().is_empty());
        let s = Layout::build(&View::Set("p".into()), &[]);
        assert!(s.lookup(&VDir::Root, "latest").is_none());
        assert!(s.entries(&VDir::Versions).unwrap().is_empty());
    }
}
