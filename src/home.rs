//! Every path under `$PRISM_HOME` (`--home`), computed in one place:
//!
//! ```text
//! $PRISM_HOME/
//!   sync-rules.yml                      the Prism plan's rules
//!   sync/                               0700, this user's alone
//!     <NAME>.yml                        a sync set's config
//!     <NAME>.state.redb                 its state (also .cache.redb, .lock, .audit.jsonl,
//!                                       .rest-token)
//!     daemon.yml daemon.pid daemon.lock daemon.log daemon.sock
//!     .<NAME>.<what>                    markers (a notice given once)
//!     agent-<NAME>.log                  the login agent's output
//!     keys/                             local key files (password-less repositories)
//!     cache/                            metadata caches and file caches, per repository
//!     catalog/<repo id>/<set name hex>  a set's snapshot catalog
//!     instances/<SET>/<INSTANCE>.key    keys kept to deliver to workspaces
//!     repos/default/                    the repository `backup` uses without --repo
//!     serve/                            `serve`'s token and TLS key
//! ```
//!
//! Owns: the names and places of these files. Must not touch: their contents, the file system
//! (creating them privately is `fsx::private`'s).

use std::path::{Path, PathBuf};

use crate::id::hex_encode;

/// A `$PRISM_HOME` directory and every path below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// `$PRISM_HOME` itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `sync-rules.yml`: the rules of the Prism plan.
    pub fn rules_file(&self) -> PathBuf {
        self.root.join("sync-rules.yml")
    }

    /// `sync/`: everything of prism-sync's own (0700).
    pub fn sync_dir(&self) -> PathBuf {
        self.root.join("sync")
    }

    /// `sync/<NAME>.yml`: a sync set's configuration.
    pub fn set_config(&self, set: &str) -> PathBuf {
        self.set_file(set, "yml")
    }

    /// `sync/<NAME>.<suffix>`: a file of a sync set (`state.redb`, `cache.redb`, `lock`,
    /// `audit.jsonl`, `rest-token`).
    pub fn set_file(&self, set: &str, suffix: &str) -> PathBuf {
        self.sync_dir().join(format!("{set}.{suffix}"))
    }

    /// `sync/.<NAME>.<what>`: a hidden marker of a sync set (a notice already given).
    pub fn set_marker(&self, set: &str, what: &str) -> PathBuf {
        self.sync_dir().join(format!(".{set}.{what}"))
    }

    /// `sync/<NAME>.state.redb`.
    pub fn set_state(&self, set: &str) -> PathBuf {
        self.set_file(set, "state.redb")
    }

    /// `sync/daemon.<suffix>`: the daemon's files (`yml`: the started sets, `pid`, `lock`,
    /// `log`, `sock`: the control socket).
    pub fn daemon_file(&self, suffix: &str) -> PathBuf {
        self.sync_dir().join(format!("daemon.{suffix}"))
    }

    /// `sync/daemon.sock`: the control socket.
    pub fn daemon_socket(&self) -> PathBuf {
        self.daemon_file("sock")
    }

    /// `sync/agent-<NAME>.log`: where the login agent of a set writes its output.
    pub fn agent_log(&self, set: &str) -> PathBuf {
        self.sync_dir().join(format!("agent-{set}.log"))
    }

    /// `sync/keys`: local key files of password-less repositories.
    pub fn local_keys_dir(&self) -> PathBuf {
        self.sync_dir().join("keys")
    }

    /// `sync/cache`: the metadata caches of every repository, and the archiver's file caches.
    pub fn cache_root(&self) -> PathBuf {
        self.sync_dir().join("cache")
    }

    /// `sync/cache/<repository id>.redb`: the archiver's file cache of one repository.
    pub fn file_cache(&self, repo_id: &[u8; 32]) -> PathBuf {
        self.cache_root()
            .join(format!("{}.redb", hex_encode(repo_id)))
    }

    /// `sync/catalog/<repository id hex>/<set name hex>`: a set's snapshot catalog.
    pub fn catalog(&self, repo_id: &[u8; 32], set: &str) -> PathBuf {
        self.sync_dir()
            .join("catalog")
            .join(hex_encode(repo_id))
            .join(hex_encode(set.as_bytes()))
    }

    /// `sync/instances/<SET>/<INSTANCE>.key`: a workspace's key, kept here to deliver.
    pub fn instance_key(&self, set: &str, instance: &str) -> PathBuf {
        self.sync_dir()
            .join("instances")
            .join(set)
            .join(format!("{instance}.key"))
    }

    /// `sync/repos/default`: the repository `backup` uses without `--repo`.
    pub fn default_repo(&self) -> PathBuf {
        self.sync_dir().join("repos").join("default")
    }

    /// `sync/serve`: `serve`'s kept token and TLS key.
    pub fn serve_dir(&self) -> PathBuf {
        self.sync_dir().join("serve")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_where_the_docs_say() {
        let h = Home::new("/h");
        let id = [0xab; 32];
        assert_eq!(h.set_config("lab"), Path::new("/h/sync/lab.yml"));
        assert_eq!(h.set_state("lab"), Path::new("/h/sync/lab.state.redb"));
        assert_eq!(h.daemon_socket(), Path::new("/h/sync/daemon.sock"));
        assert_eq!(h.rules_file(), Path::new("/h/sync-rules.yml"));
        assert_eq!(
            h.catalog(&id, "lab"),
            Path::new(&format!("/h/sync/catalog/{}/6c6162", "ab".repeat(32)))
        );
        assert_eq!(
            h.file_cache(&id),
            Path::new(&format!("/h/sync/cache/{}.redb", "ab".repeat(32)))
        );
        assert_eq!(
            h.instance_key("lab", "ws1"),
            Path::new("/h/sync/instances/lab/ws1.key")
        );
    }
}
