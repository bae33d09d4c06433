//! The sync decision: a pure function of trees → merged tree, local plan, conflicts.
//!
//! Owns: the merge ([`merge`]), path rules ([`rules`]), modes and conflict policies. Must not
//! touch: timers, watching, redb, the local filesystem, backends — trees come in through the
//! [`merge::TreeSource`] trait and the plan goes out as data.
//!
//! An endpoint keeps two trees between steps: **base** (the shared state it last agreed on, a
//! snapshot) and **applied** (what its folder looked like after its last step). A step compares
//! applied → local scan (local changes) and base → head (remote changes). The two usually
//! coincide; they differ exactly where something is parked (an unresolved conflict), held back
//! by a one-way mode, or skipped by a rule — which is what lets those cases never look like
//! edits or deletions.

pub mod merge;
#[cfg(test)]
mod merge_tests;
pub(crate) mod rules;
pub(crate) mod shared_conflicts;

use serde::{Deserialize, Serialize};

/// Which side of a sync set this endpoint is: modes are defined relative to the laptop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The laptop (created by `init`).
    Local,
    /// A workspace (added by `join`).
    Instance,
}

/// Direction of a set or category, relative to the laptop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Mode {
    #[default]
    #[serde(rename = "bidirectional")]
    Bidirectional,
    /// Laptop → workspaces. Workspaces never publish; their own edits are never clobbered, their
    /// deletions are refilled.
    #[serde(rename = "upload-only", alias = "upload_only")]
    UploadOnly,
    /// Workspaces → laptop (mirror image of upload-only).
    #[serde(rename = "download-only", alias = "download_only")]
    DownloadOnly,
}

impl Mode {
    /// May this endpoint's changes reach the shared state?
    pub fn publishes(self, role: Role) -> bool {
        match self {
            Mode::Bidirectional => true,
            Mode::UploadOnly => role == Role::Local,
            Mode::DownloadOnly => role == Role::Instance,
        }
    }

    /// May shared changes be written into this endpoint's folder?
    pub fn applies(self, role: Role) -> bool {
        match self {
            Mode::Bidirectional => true,
            Mode::UploadOnly => role == Role::Instance,
            Mode::DownloadOnly => role == Role::Local,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Bidirectional => "bidirectional",
            Mode::UploadOnly => "upload-only",
            Mode::DownloadOnly => "download-only",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s.replace('_', "-").as_str() {
            "bidirectional" => Some(Mode::Bidirectional),
            "upload-only" => Some(Mode::UploadOnly),
            "download-only" => Some(Mode::DownloadOnly),
            _ => None,
        }
    }
}

/// What happens when both sides changed a path differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Park the path: both sides keep their version until `resolve`; the rest keeps syncing.
    #[default]
    #[serde(alias = "user-prompt")]
    UserPrompt,
    #[serde(alias = "keep-local")]
    KeepLocal,
    #[serde(alias = "keep-remote")]
    KeepRemote,
    /// The other version is kept beside the original as `<stem>.conflict-<time>-<endpoint><.ext>`.
    #[serde(alias = "keep-both")]
    KeepBoth,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::UserPrompt => "user_prompt",
            Policy::KeepLocal => "keep_local",
            Policy::KeepRemote => "keep_remote",
            Policy::KeepBoth => "keep_both",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        match s.replace('-', "_").as_str() {
            "user_prompt" => Some(Policy::UserPrompt),
            "keep_local" | "local" => Some(Policy::KeepLocal),
            "keep_remote" | "remote" => Some(Policy::KeepRemote),
            "keep_both" | "both" => Some(Policy::KeepBoth),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// Both sides changed (or created) the path differently.
    ModifiedBoth,
    /// Deleted here, changed there: the change wins, the file comes back.
    DeletedLocal,
    /// Changed here, deleted there: the change wins and is published again.
    DeletedRemote,
}

impl ConflictKind {
    pub fn name(self) -> &'static str {
        match self {
            ConflictKind::ModifiedBoth => "modified_both",
            ConflictKind::DeletedLocal => "deleted_local",
            ConflictKind::DeletedRemote => "deleted_remote",
        }
    }
}

/// `force-sync` direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force {
    /// Make the shared state equal to this folder.
    Up,
    /// Make this folder equal to the shared state.
    Down,
}

/// The name of a kept conflict copy: `<stem>.conflict-<YYYYMMDD-HHMMSS>-<endpoint><.ext>`, so the
/// extension still opens in the right program. Dotfiles and names without an extension keep
/// their whole name as the stem.
pub fn conflict_name(name: &[u8], time_ns: i64, endpoint: &str) -> Vec<u8> {
    let ts =
        jiff::Timestamp::from_nanosecond(time_ns as i128).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let stamp = ts
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y%m%d-%H%M%S")
        .to_string();
    let endpoint: String = endpoint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dot = name.iter().rposition(|&b| b == b'.').filter(|&i| i > 0);
    let (stem, ext) = match dot {
        Some(i) => name.split_at(i),
        None => (name, &b""[..]),
    };
    let mut out = stem.to_vec();
    out.extend_from_slice(format!(".conflict-{stamp}-{endpoint}").as_bytes());
    out.extend_from_slice(ext);
    out.truncate(crate::format::tree::NAME_LEN_MAX);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_keep_the_extension() {
        let t = 1_764_245_025_000_000_000; // 2025-11-27 12:03:45 UTC
        assert_eq!(
            conflict_name(b"analysis.ipynb", t, "ws-1"),
            b"analysis.conflict-20251127-120345-ws-1.ipynb"
        );
        assert_eq!(
            conflict_name(b"Makefile", t, "local"),
            b"Makefile.conflict-20251127-120345-local"
        );
        assert_eq!(
            conflict_name(b".bashrc", t, "local"),
            b".bashrc.conflict-20251127-120345-local"
        );
        assert_eq!(
            conflict_name(b"a.tar.gz", t, "my host"),
            b"a.tar.conflict-20251127-120345-my_host.gz"
        );
    }

    #[test]
    fn modes_are_relative_to_the_laptop() {
        assert!(Mode::UploadOnly.publishes(Role::Local) && !Mode::UploadOnly.applies(Role::Local));
        assert!(
            !Mode::UploadOnly.publishes(Role::Instance) && Mode::UploadOnly.applies(Role::Instance)
        );
        assert!(
            Mode::DownloadOnly.publishes(Role::Instance) && Mode::DownloadOnly.applies(Role::Local)
        );
        assert_eq!(Mode::parse("upload_only"), Some(Mode::UploadOnly));
    }
}
