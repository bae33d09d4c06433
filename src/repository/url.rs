//! Opening the backend a repository URL names: a directory (or `file://`), `s3:`, `rest:`,
//! `efs:` (a mounted EFS file system). Lives above `backend` because it answers with the crate's
//! error (a user-facing message naming the fix), which `backend` must not depend on.

use std::sync::Arc;

use crate::backend::{
    Backend, DynBackend, FsBackend, RestBackend, RetryBackend, RetryPolicy, S3Backend,
};
use crate::error::{Error, Result};

/// The backend of a repository URL, remote ones inside the retry wrapper and the process's
/// bandwidth limits.
pub fn open_backend(url: &str) -> Result<DynBackend> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Ok(Arc::new(FsBackend::new(rest)));
    }
    if url.starts_with("s3:") {
        let b = S3Backend::open(url).map_err(Error::invalid)?;
        b.set_bandwidth(crate::backend::limit::process_limits());
        return Ok(Arc::new(RetryBackend::new(
            Arc::new(b),
            RetryPolicy::from_env(),
        )));
    }
    if url.starts_with("rest:") {
        let b = RestBackend::open(url).map_err(Error::invalid)?;
        b.set_bandwidth(crate::backend::limit::process_limits());
        return Ok(Arc::new(RetryBackend::new(
            Arc::new(b),
            RetryPolicy::from_env(),
        )));
    }
    if url.starts_with("efs:") {
        return Ok(Arc::new(FsBackend::new(
            crate::backend::efs::resolve(url).map_err(Error::invalid)?,
        )));
    }
    for scheme in ["sftp:", "http:", "https:"] {
        if url.starts_with(scheme) {
            return Err(Error::invalid(format!(
                "repository URL {url}: the {} backend is not available; use a directory, s3://bucket/prefix or rest:{url}",
                scheme.trim_end_matches(':')
            )));
        }
    }
    if url.is_empty() {
        return Err(Error::invalid("empty repository URL: pass --repo DIR"));
    }
    Ok(Arc::new(FsBackend::new(url)))
}
