//! Retries: a wrapper that repeats operations that failed with [`ErrorKind::Transient`]
//! (connection refused or reset, timeouts, 5xx, throttling, a racing conditional write) with
//! bounded exponential backoff and jitter. The s3 and rest backends are always wrapped in it;
//! their own clients do not retry, so there is exactly one retry policy.
//!
//! Reads, listings and `prepare` are idempotent and simply repeated. Writes need care because a
//! request can succeed on the server while its answer is lost:
//! - `create` repeated after a transient failure may find the object existing — created by the
//!   lost attempt, or by someone else. The wrapper then reads the object: the same bytes mean
//!   the create took effect (objects are content-addressed or carry unique names, so equal bytes
//!   are the same object) and it reports success; other bytes are a real `AlreadyExists`.
//! - `delete` repeated after a transient failure may find the object gone: that is success.
//!
//! Until the first operation succeeds the budget is short: a server that was never reached is
//! more likely a wrong URL than a restart, and the user should hear about it quickly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{BResult, Backend, BackendError, DynBackend, ErrorKind, Kind, ObjectInfo};
use crate::format::config::Capabilities;

/// How long and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay; each later one doubles, up to `delay_max`.
    pub delay_initial: Duration,
    pub delay_max: Duration,
    /// Total time an operation may spend retrying once the backend has answered before.
    pub budget: Duration,
    /// Total retry time before anything ever succeeded (a wrong URL should fail fast).
    pub budget_first_contact: Duration,
}

/// Env var: total retry time in seconds (0 = never retry).
pub const RETRY_SECS_ENV: &str = "PRISM_SYNC_RETRY_SECS";

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            delay_initial: Duration::from_millis(200),
            delay_max: Duration::from_secs(8),
            budget: Duration::from_secs(120),
            budget_first_contact: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The default, with the budget from `PRISM_SYNC_RETRY_SECS` if it is set.
    pub fn from_env() -> Self {
        let mut p = RetryPolicy::default();
        if let Some(secs) = std::env::var(RETRY_SECS_ENV)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            p.budget = Duration::from_secs(secs);
            p.budget_first_contact = p.budget_first_contact.min(p.budget);
        }
        p
    }

    /// Delay before retry number `attempt` (1-based): exponential, "equal jitter" (half fixed,
    /// half random) so that clients restarted together do not retry in lockstep.
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .delay_initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.delay_max);
        let half = exp / 2;
        let r = u64::from_le_bytes(crate::crypto::random_bytes::<8>());
        half + Duration::from_nanos(r % (half.as_nanos() as u64).max(1))
    }
}

pub struct RetryBackend {
    inner: DynBackend,
    policy: RetryPolicy,
    reached: AtomicBool,
    retries: AtomicU64,
}

impl RetryBackend {
    pub fn new(inner: DynBackend, policy: RetryPolicy) -> Self {
        RetryBackend {
            inner,
            policy,
            reached: AtomicBool::new(false),
            retries: AtomicU64::new(0),
        }
    }

    /// Retries made so far (for tests and diagnostics).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Runs `op` until it succeeds, fails for good, or the budget is spent. `op` gets the
    /// attempt number (0 = first) so writes can tell a retry from a first try.
    fn run<T>(&self, mut op: impl FnMut(u32) -> BResult<T>) -> BResult<T> {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            let r = op(attempt);
            match &r {
                Err(e) if e.kind == ErrorKind::Transient => {}
                Err(_) => {
                    // The server answered (with a refusal): it is reachable.
                    self.reached.store(true, Ordering::Relaxed);
                    return r;
                }
                Ok(_) => {
                    self.reached.store(true, Ordering::Relaxed);
                    return r;
                }
            }
            let budget = if self.reached.load(Ordering::Relaxed) {
                self.policy.budget
            } else {
                self.policy.budget_first_contact
            };
            attempt += 1;
            let delay = self.policy.delay(attempt);
            if start.elapsed() + delay > budget {
                return r.map_err(|e| {
                    let secs = start.elapsed().as_secs_f64();
                    let msg = if attempt > 1 {
                        format!(
                            "{} (gave up after {attempt} attempts in {secs:.1} s)",
                            e.message
                        )
                    } else {
                        e.message
                    };
                    BackendError::new(e.kind, e.object, msg)
                });
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(delay);
        }
    }
}

impl Backend for RetryBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn prepare(&self) -> BResult<()> {
        self.run(|_| self.inner.prepare())
    }

    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
        let mut uncertain = false;
        self.run(|_| match self.inner.create(kind, name, data) {
            Err(e) if e.kind == ErrorKind::AlreadyExists && uncertain => {
                // An earlier attempt may have stored it and lost the answer: same bytes, same
                // object.
                match self.inner.read(kind, name) {
                    Ok(stored) if stored == data => Ok(()),
                    Ok(_) => Err(e),
                    Err(re) if re.kind == ErrorKind::Transient => Err(re),
                    Err(_) => Err(e),
                }
            }
            Err(e) => {
                if e.kind == ErrorKind::Transient {
                    uncertain = true;
                }
                Err(e)
            }
            ok => ok,
        })
    }

    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
        self.run(|_| self.inner.read(kind, name))
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        self.run(|_| self.inner.read_range(kind, name, offset, length))
    }

    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        self.run(|_| self.inner.list(kind))
    }

    fn list_unless(&self, kind: Kind, known: &str) -> BResult<Option<super::Listing>> {
        self.run(|_| self.inner.list_unless(kind, known))
    }

    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        let mut uncertain = false;
        self.run(|_| match self.inner.delete(kind, name) {
            Err(e) if e.kind == ErrorKind::NotFound && uncertain => Ok(()),
            Err(e) => {
                if e.kind == ErrorKind::Transient {
                    uncertain = true;
                }
                Err(e)
            }
            ok => ok,
        })
    }

    fn remove_stale_temp(&self, max_age: Duration) -> BResult<usize> {
        self.run(|_| self.inner.remove_stale_temp(max_age))
    }

    fn probe_capabilities(&self) -> BResult<Capabilities> {
        self.run(|_| self.inner.probe_capabilities())
    }

    fn use_capabilities(&self, caps: Capabilities) {
        self.inner.use_capabilities(caps)
    }

    fn append_only(&self) -> BResult<bool> {
        self.run(|_| self.inner.append_only())
    }

    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }

    fn set_bandwidth(&self, limits: super::limit::Bandwidth) {
        self.inner.set_bandwidth(limits)
    }

    /// Not retried: the caller of a long wait backs off and asks again.
    fn watch_list(
        &self,
        kind: Kind,
        known: &str,
        timeout: Duration,
    ) -> Option<BResult<Option<super::Listing>>> {
        self.inner.watch_list(kind, known, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use std::sync::Arc;
    use std::sync::Mutex;

    /// Fails the next `n` operations transiently; `lose` makes a failing create still store.
    struct Flaky {
        inner: MemoryBackend,
        fail_next: Mutex<u32>,
        lose_answer: bool,
    }

    impl Flaky {
        fn gate(&self) -> BResult<()> {
            let mut n = self.fail_next.lock().unwrap();
            if *n > 0 {
                *n -= 1;
                return Err(BackendError::new(
                    ErrorKind::Transient,
                    "x",
                    "connection reset",
                ));
            }
            Ok(())
        }
    }

    impl Backend for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }
        fn prepare(&self) -> BResult<()> {
            Ok(())
        }
        fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
            if self.lose_answer && *self.fail_next.lock().unwrap() > 0 {
                let _ = self.inner.create(kind, name, data);
            }
            self.gate()?;
            self.inner.create(kind, name, data)
        }
        fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
            self.gate()?;
            self.inner.read(kind, name)
        }
        fn read_range(&self, kind: Kind, name: &str, o: u64, l: u64) -> BResult<Vec<u8>> {
            self.gate()?;
            self.inner.read_range(kind, name, o, l)
        }
        fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
            self.gate()?;
            self.inner.list(kind)
        }
        fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
            if self.lose_answer && *self.fail_next.lock().unwrap() > 0 {
                let _ = self.inner.delete(kind, name);
            }
            self.gate()?;
            self.inner.delete(kind, name)
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            delay_initial: Duration::from_millis(1),
            delay_max: Duration::from_millis(4),
            budget: Duration::from_secs(5),
            budget_first_contact: Duration::from_secs(5),
        }
    }

    fn flaky(fail: u32, lose: bool) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: MemoryBackend::new(),
            fail_next: Mutex::new(fail),
            lose_answer: lose,
        })
    }

    #[test]
    fn transient_failures_are_retried() {
        let f = flaky(3, false);
        let r = RetryBackend::new(f.clone(), fast());
        r.create(Kind::Index, "ab", b"x").unwrap();
        assert_eq!(r.retries(), 3);
        *f.fail_next.lock().unwrap() = 2;
        assert_eq!(r.read(Kind::Index, "ab").unwrap(), b"x");
    }

    #[test]
    fn a_create_whose_answer_was_lost_is_not_a_false_already_exists() {
        let f = flaky(1, true);
        let r = RetryBackend::new(f.clone(), fast());
        r.create(Kind::Head, "h1", b"mine").unwrap();
        // Someone else's object under the name is still a conflict.
        f.inner.create(Kind::Head, "h2", b"theirs").unwrap();
        *f.fail_next.lock().unwrap() = 1;
        let e = r.create(Kind::Head, "h2", b"mine").unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        // Without a lost answer, an existing name is AlreadyExists at once.
        let e = r.create(Kind::Head, "h1", b"mine").unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_delete_whose_answer_was_lost_succeeds() {
        let f = flaky(0, true);
        let r = RetryBackend::new(f.clone(), fast());
        r.create(Kind::Head, "h1", b"x").unwrap();
        *f.fail_next.lock().unwrap() = 1;
        r.delete(Kind::Head, "h1").unwrap();
        assert!(r.delete(Kind::Head, "h1").unwrap_err().is_not_found());
    }

    #[test]
    fn the_budget_bounds_the_time_spent() {
        let f = flaky(u32::MAX, false);
        let mut p = fast();
        p.budget = Duration::from_millis(50);
        p.budget_first_contact = Duration::from_millis(50);
        let r = RetryBackend::new(f, p);
        let t = Instant::now();
        let e = r.list(Kind::Pack).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient);
        assert!(e.message.contains("gave up after"), "{}", e.message);
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
