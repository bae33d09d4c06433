//! The async runtime behind the network backends (s3, rest) and the EFS control plane.
//!
//! [`Backend`](super::Backend) is synchronous; the AWS SDK and hyper are async. One tokio
//! runtime per process (created on first use, never dropped) runs their futures; a caller blocks
//! on a channel until its future is done. That works from any thread — also from inside another
//! runtime, where `Runtime::block_on` would panic — and many backends share a few threads.

use std::future::Future;
use std::sync::OnceLock;

use super::{BackendError, ErrorKind};

/// Worker threads of the shared runtime: the work is waiting on sockets, not computing.
const WORKER_THREADS: usize = 4;

fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("prism-net")
            .on_thread_start(block_sigpipe)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the network runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Blocks SIGPIPE in the calling thread. `main` restores its default (so `prism-sync … | head`
/// ends quietly), which would also end the process when a network thread writes to a connection
/// the server has just closed; blocked, that write fails with EPIPE and is retried or reported.
fn block_sigpipe() {
    crate::sys::block_sigpipe_in_this_thread();
}

/// Runs `fut` on the shared runtime and waits for its result.
pub fn block_on<F, T>(object: &str, fut: F) -> Result<T, BackendError>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime().map_err(|m| BackendError::new(ErrorKind::Other, object, m))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| {
        BackendError::new(
            ErrorKind::Other,
            object,
            "internal error: a network task ended without an answer (please report this)",
        )
    })
}

/// A handle to spawn server tasks on the shared runtime (used by `serve`).
pub fn handle() -> Result<tokio::runtime::Handle, String> {
    runtime().map(|r| r.handle().clone())
}
