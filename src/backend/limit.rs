//! Bandwidth limits (`--limit-upload` / `--limit-download` in KiB/s, or `limit_upload` /
//! `limit_download` in a sync set's config): how many bytes per second a network backend may
//! send and receive, over all its connections together.
//!
//! A [`Limiter`] keeps one timeline per direction: every transfer reserves the next free slot
//! of `bytes / rate` seconds on it, and waits until its slot has ended before it goes on. Bodies
//! are paced in pieces of [`PIECE_BYTES`] as they stream (the rest backend's requests and
//! answers, the s3 backend's answers — the sender then meets TCP's flow control, so the link
//! itself sees the limit), so N bytes take at least N / limit seconds however many requests
//! run at once. An s3 upload is paced as a whole (the SDK signs the body before sending): the
//! average over each object is honoured, within it the link sees full speed.
//!
//! A limit applies to the network backends (s3, rest); a directory (a local disk, an EFS mount)
//! is not limited.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// Bodies are paced in pieces of this size: small enough for a smooth rate at a few hundred
/// KiB/s, big enough that the pacing costs nothing at full speed.
pub const PIECE_BYTES: usize = 64 << 10;
/// The smallest limit accepted (below this a 16 MiB pack takes over an hour).
pub const LIMIT_KIB_MIN: u64 = 4;

/// One direction's rate limit, shared by every transfer of a backend.
#[derive(Debug)]
pub struct Limiter {
    bytes_per_sec: f64,
    /// When the link is free again on this direction's timeline.
    next_free: Mutex<Option<Instant>>,
}

impl Limiter {
    pub fn new(kib_per_sec: u64) -> Limiter {
        Limiter {
            bytes_per_sec: (kib_per_sec.max(LIMIT_KIB_MIN) * 1024) as f64,
            next_free: Mutex::new(None),
        }
    }

    /// The limit in KiB/s.
    pub fn kib_per_sec(&self) -> u64 {
        (self.bytes_per_sec / 1024.0) as u64
    }

    /// Reserves `n` bytes of the link; returns when its slot ends.
    fn reserve(&self, n: usize) -> Instant {
        let mut next = self.next_free.lock().expect("limiter");
        let now = Instant::now();
        // An idle link earns no credit: a slot starts now at the earliest.
        let start = next.map_or(now, |t| t.max(now));
        let end = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
        *next = Some(end);
        end
    }

    /// Waits until `n` more bytes may have passed.
    pub async fn pace(&self, n: usize) {
        let end = self.reserve(n);
        tokio::time::sleep_until(end).await;
    }

    /// [`Limiter::pace`] for a blocking caller.
    pub fn pace_blocking(&self, n: usize) {
        let end = self.reserve(n);
        let now = Instant::now();
        if end > now {
            std::thread::sleep(end - now);
        }
    }
}

/// The limits of a backend, per direction; `None` = unlimited.
#[derive(Debug, Clone, Default)]
pub struct Bandwidth {
    pub upload: Option<Arc<Limiter>>,
    pub download: Option<Arc<Limiter>>,
}

impl Bandwidth {
    /// Limits in KiB/s; 0 or `None` = unlimited.
    pub fn new(upload_kib: Option<u64>, download_kib: Option<u64>) -> Bandwidth {
        let make = |k: Option<u64>| k.filter(|k| *k > 0).map(|k| Arc::new(Limiter::new(k)));
        Bandwidth {
            upload: make(upload_kib),
            download: make(download_kib),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.upload.is_none() && self.download.is_none()
    }
}

static PROCESS: OnceLock<(Option<u64>, Option<u64>)> = OnceLock::new();

/// Sets the limits every network backend of this process starts with (the CLI's
/// `--limit-upload` / `--limit-download`, KiB/s).
pub fn set_process_limits(upload_kib: Option<u64>, download_kib: Option<u64>) {
    let _ = PROCESS.set((upload_kib, download_kib));
}

/// The limits set with [`set_process_limits`] (fresh limiters: each backend has its own).
pub fn process_limits() -> Bandwidth {
    with_defaults(None, None)
}

/// Per direction, the process's limit (the command line's) if it has one, else `upload_kib` /
/// `download_kib` (a sync set's config).
pub fn with_defaults(upload_kib: Option<u64>, download_kib: Option<u64>) -> Bandwidth {
    let (u, d) = PROCESS.get().copied().unwrap_or((None, None));
    Bandwidth::new(u.or(upload_kib), d.or(download_kib))
}

/// A request body sent in pieces of [`PIECE_BYTES`], each after its slot on the upload
/// timeline (or all at once without a limit).
pub struct PacedBody {
    data: Bytes,
    limiter: Option<Arc<Limiter>>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl PacedBody {
    pub fn new(data: Bytes, limiter: Option<Arc<Limiter>>) -> PacedBody {
        PacedBody {
            data,
            limiter,
            wait: None,
        }
    }
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let Some(limiter) = self.limiter.clone() else {
            let all = std::mem::take(&mut self.data);
            return Poll::Ready(Some(Ok(Frame::data(all))));
        };
        let n = self.data.len().min(PIECE_BYTES);
        if self.wait.is_none() {
            let end = limiter.reserve(n);
            self.wait = Some(Box::pin(tokio::time::sleep_until(end)));
        }
        if let Some(w) = self.wait.as_mut()
            && w.as_mut().poll(cx).is_pending()
        {
            return Poll::Pending;
        }
        self.wait = None;
        let piece = self.data.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_spreads_transfers_over_time() {
        let l = Limiter::new(256); // 256 KiB/s
        let t = std::time::Instant::now();
        for _ in 0..8 {
            l.pace_blocking(32 << 10); // 8 x 32 KiB = 1 s at the limit
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(950), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}
