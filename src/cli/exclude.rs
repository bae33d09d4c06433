//! `backup --exclude/--iexclude/--exclude-file`: restic's exclude options as a scan filter, and
//! `backup --dry-run`'s walk over what a backup would read.
//!
//! A pattern is a glob (`*`, `?`, `[…]`, `**`; `*` never crosses a `/`). Without a `/` it
//! matches an entry's name at any depth (`*.log`); with one, the path below the backed-up folder
//! at any depth (`build/*.o`); with a leading `/`, the absolute path (`/home/me/data/tmp`). An
//! excluded directory is left out with everything below it.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::archiver::{Filter, ScanFilter, Source};
use crate::error::Error;

/// The compiled patterns of one backup.
pub struct Excludes {
    /// Matched against the path below the scanned root (`**/` prepended to relative patterns).
    relative: GlobSet,
    /// Matched against the absolute path.
    absolute: GlobSet,
    /// The directory each top-level entry's relative path starts in (absolute).
    base: PathBuf,
}

fn read_patterns(file: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

impl Excludes {
    /// `None` when no pattern was given.
    pub fn new(a: &super::BackupArgs, source: &Source) -> Result<Option<Excludes>> {
        let mut sensitive = a.excludes.clone();
        for f in &a.exclude_files {
            sensitive.extend(read_patterns(f)?);
        }
        let mut insensitive = a.iexcludes.clone();
        for f in &a.iexclude_files {
            insensitive.extend(read_patterns(f)?);
        }
        if sensitive.is_empty() && insensitive.is_empty() {
            return Ok(None);
        }
        let (mut rel, mut abs) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for (patterns, fold) in [(&sensitive, false), (&insensitive, true)] {
            for p in patterns {
                let p = p.trim_end_matches('/');
                let (set, glob) = match p.strip_prefix('/') {
                    Some(_) => (&mut abs, p.to_string()),
                    None => (&mut rel, format!("**/{p}")),
                };
                let g = GlobBuilder::new(&glob)
                    .literal_separator(true)
                    .case_insensitive(fold)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| {
                        Error::invalid(format!(
                            "exclude pattern {p:?} is not a valid glob ({}): fix or quote it",
                            e.kind()
                        ))
                    })?;
                set.add(g);
            }
        }
        let base = match source {
            Source::Dir(root) => root.clone(),
            // Entries: each relative path starts with the entry's own name.
            Source::Entries(paths) => paths
                .first()
                .and_then(|p| p.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        Ok(Some(Excludes {
            relative: rel.build()?,
            absolute: abs.build()?,
            base,
        }))
    }

    /// Whether the entry at `rel` (below the scanned root, `/`-separated) is left out.
    pub fn excluded(&self, rel: &[u8], abs: &Path) -> bool {
        let rel = Path::new(std::ffi::OsStr::from_bytes(rel));
        self.relative.is_match(rel) || (!self.absolute.is_empty() && self.absolute.is_match(abs))
    }

    /// The scan filter for the archiver; `entries` maps a top-level name to its absolute path
    /// (backups of several entries, whose parents may differ).
    pub fn filter(self, source: &Source) -> ScanFilter {
        let entries: Vec<(Vec<u8>, PathBuf)> = match source {
            Source::Dir(_) => Vec::new(),
            Source::Entries(ps) => ps
                .iter()
                .filter_map(|p| Some((p.file_name()?.as_bytes().to_vec(), p.clone())))
                .collect(),
        };
        let me = Arc::new(self);
        Arc::new(move |rel: &[u8], _md: &std::fs::Metadata| {
            let abs = me.absolute_of(rel, &entries);
            if me.excluded(rel, &abs) {
                Filter::Exclude
            } else {
                Filter::Keep
            }
        })
    }

    fn absolute_of(&self, rel: &[u8], entries: &[(Vec<u8>, PathBuf)]) -> PathBuf {
        let rel_path = Path::new(std::ffi::OsStr::from_bytes(rel));
        if entries.is_empty() {
            return self.base.join(rel_path);
        }
        let first = rel.split(|&b| b == b'/').next().unwrap_or(rel);
        match entries.iter().find(|(n, _)| n == first) {
            Some((_, p)) => match rel_path.strip_prefix(std::ffi::OsStr::from_bytes(first)) {
                Ok(rest) if !rest.as_os_str().is_empty() => p.join(rest),
                _ => p.clone(),
            },
            None => self.base.join(rel_path),
        }
    }
}

/// What a backup would read: counts, and the paths for `-v`.
#[derive(Default)]
pub struct DryRun {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub excluded: u64,
    pub listed: Vec<String>,
}

/// Walks `source` as the backup would (never following symlinks), applying `filter`.
pub fn dry_run(source: &Source, filter: Option<&ScanFilter>, list: bool) -> Result<DryRun> {
    let mut r = DryRun::default();
    let visit = |path: &Path, rel: Vec<u8>, r: &mut DryRun| -> Result<()> {
        walk(path, rel, filter, list, r)
    };
    match source {
        Source::Dir(root) => {
            for e in read_dir_sorted(root)? {
                let name = e.as_os_str().as_bytes().to_vec();
                visit(&root.join(&e), name, &mut r)?;
            }
        }
        Source::Entries(ps) => {
            for p in ps {
                let name = p
                    .file_name()
                    .map(|n| n.as_bytes().to_vec())
                    .unwrap_or_default();
                visit(p, name, &mut r)?;
            }
        }
    }
    Ok(r)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    Ok(names)
}

fn walk(
    path: &Path,
    rel: Vec<u8>,
    filter: Option<&ScanFilter>,
    list: bool,
    r: &mut DryRun,
) -> Result<()> {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if filter.is_some_and(|f| f(&rel, &md) != Filter::Keep) {
        r.excluded += 1;
        return Ok(());
    }
    if list {
        r.listed
            .push(crate::snapshot::display_path(&rel).to_string());
    }
    if md.is_dir() {
        r.dirs += 1;
        for name in read_dir_sorted(path)? {
            let child = crate::snapshot::join(&rel, name.as_bytes());
            walk(&path.join(&name), child, filter, list, r)?;
        }
    } else {
        r.files += 1;
        if md.is_file() {
            r.bytes += md.len();
        }
    }
    Ok(())
}
