//! A sync set at this endpoint: its config, its redb state, and the sync step.
//!
//! Owns: `$PRISM_HOME/sync/<NAME>.yml`, `<NAME>.state.redb`, `<NAME>.cache.redb`,
//! `<NAME>.lock`, `<NAME>.audit.jsonl`, `<NAME>.rest-token` (the token of a `rest:` repository,
//! 0600, so commands and the daemon need no environment), and carrying out a step (scan → heads → merge → guards → apply → publish →
//! commit) and the set's maintenance (retention, prune; `maintain`). Must not touch: merge decisions (the `sync` module makes them), printing.

pub mod apply;
pub mod audit;
pub mod config;
pub(crate) mod leftovers;
pub mod maintain;
pub(crate) mod restore;
pub(crate) mod state;
mod step;
pub(crate) mod trees;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use config::SetConfig;
pub use state::State;
pub use step::{StepOptions, StepReport, combine_heads, heads_changed, step};

use crate::error::{Error, Result};
use crate::home::Home;

pub struct Endpoint {
    pub home: PathBuf,
    pub cfg: SetConfig,
    pub state: State,
}

impl Endpoint {
    /// The paths under this endpoint's `$PRISM_HOME`.
    pub fn paths(&self) -> Home {
        Home::new(&self.home)
    }

    fn file(&self, suffix: &str) -> PathBuf {
        self.paths().set_file(&self.cfg.name, suffix)
    }

    pub fn cache_path(&self) -> PathBuf {
        self.file("cache.redb")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.file("lock")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.file("audit.jsonl")
    }

    /// Where the token of the set's `rest:` repository is kept.
    pub fn rest_token_path(home: &Path, name: &str) -> PathBuf {
        Home::new(home).set_file(name, "rest-token")
    }

    /// Keeps the token of the set's `rest:` repository with the set (0600).
    pub fn store_rest_token(home: &Path, name: &str, token: &str) -> Result<()> {
        let path = Self::rest_token_path(home, name);
        config::write_atomic(&path, format!("{}\n", token.trim()).as_bytes())
    }

    /// Opens an existing set (and makes its stored `rest:` token known to this process).
    pub fn open(home: &Path, name: &str) -> Result<Endpoint> {
        let cfg = SetConfig::load(&Home::new(home), name)?;
        if cfg.repo.starts_with("rest:") {
            let path = Self::rest_token_path(home, name);
            match std::fs::read_to_string(&path) {
                Ok(t) if !t.trim().is_empty() => {
                    crate::backend::rest::remember_token(&cfg.repo, &t)
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        let state = State::open(&Home::new(home).set_state(name))?;
        Ok(Endpoint {
            home: home.to_path_buf(),
            cfg,
            state,
        })
    }

    /// Creates a set at this endpoint (refuses if one of that name exists).
    pub fn create(home: &Path, cfg: SetConfig) -> Result<Endpoint> {
        let dir = Home::new(home);
        if !SetConfig::valid_name(&cfg.name) {
            return Err(Error::invalid(format!(
                "{:?} is not a usable set name: use letters, digits, '-', '_' and '.' (up to 64)",
                cfg.name
            )));
        }
        if SetConfig::path(&dir, &cfg.name).exists() {
            return Err(Error::invalid(format!(
                "a sync set named {:?} already exists here: pick another --name, or use it",
                cfg.name
            )));
        }
        cfg.save(&dir)?;
        let state = State::open(&dir.set_state(&cfg.name))?;
        Ok(Endpoint {
            home: home.to_path_buf(),
            cfg,
            state,
        })
    }
}

/// One step at a time per set on this machine (the daemon and a `sync` command may race).
pub struct StepLock(#[allow(dead_code)] File);

impl StepLock {
    pub fn acquire(path: &Path) -> Result<StepLock> {
        let f = crate::fsx::private::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // Released when the file is closed.
        f.lock().map_err(|e| Error::io(path, e))?;
        Ok(StepLock(f))
    }
}
