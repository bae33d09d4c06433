//! The library's error type. Variants exist where a caller branches on them (exit codes, retries,
//! "is this object damaged or missing"); everything else carries a message that names the object
//! or path and, where there is one, the fix.

use std::path::PathBuf;

use crate::backend::BackendError;
use crate::format::DecodeError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No repository at the location (exit code 10).
    #[error(
        "no repository at {location}: create one with `prism-sync repo init --repo {location}`"
    )]
    RepoNotFound { location: String },

    /// No key file of the repository opens with the given password (exit code 12).
    #[error("wrong password: no key of the repository at {location} opens with it")]
    WrongPassword { location: String },

    /// Neither a password nor a local key file is available.
    #[error(
        "no password for the repository at {location}: set PRISM_SYNC_PASSWORD or --password-file \
         (no local key file {keyfile} either)"
    )]
    NoPassword { location: String, keyfile: PathBuf },

    /// A stored object uses a format version this build does not read.
    #[error(
        "{object} uses format version {found}; this prism-sync reads version {supported}: \
         upgrade prism-sync to open it"
    )]
    UnsupportedVersion {
        object: String,
        found: u32,
        supported: u32,
    },

    /// A stored object failed authentication or decoding.
    #[error("{object} is damaged: {detail}")]
    Corrupt { object: String, detail: String },

    /// A stored object that something refers to does not exist.
    #[error("{object} is missing")]
    Missing { object: String },

    /// A local file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(transparent)]
    Backend(#[from] BackendError),

    /// The user asked for something that cannot be done as asked; the message says what to do.
    #[error("{0}")]
    Invalid(String),

    /// The operation was interrupted (another stage failed first).
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(object: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            object: object.into(),
            detail: detail.to_string(),
        }
    }

    pub fn decode(object: impl Into<String>, err: DecodeError) -> Self {
        match err {
            DecodeError::Version { found, supported } => Error::UnsupportedVersion {
                object: object.into(),
                found,
                supported,
            },
            other => Error::Corrupt {
                object: object.into(),
                detail: other.to_string(),
            },
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}
