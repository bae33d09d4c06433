//! Fault injection: a wrapper that fails every write (create or delete) from the Nth on, as a
//! crash at that instant would leave things: the failed write and everything after it never
//! happened. Tests run an operation for every N and check the repository afterwards.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{BResult, Backend, BackendError, DynBackend, ErrorKind, Kind, ObjectInfo, object_name};

pub struct FaultBackend {
    inner: DynBackend,
    writes: AtomicU64,
    /// 1-based number of the first write that fails; 0 = never.
    fail_from: AtomicU64,
}

impl FaultBackend {
    pub fn new(inner: DynBackend) -> Self {
        FaultBackend {
            inner,
            writes: AtomicU64::new(0),
            fail_from: AtomicU64::new(0),
        }
    }

    /// Fails the `n`th write from now on (and every later one); 0 disarms.
    pub fn fail_from(&self, n: u64) {
        self.writes.store(0, Ordering::SeqCst);
        self.fail_from.store(n, Ordering::SeqCst);
    }

    /// Writes attempted since the last `fail_from`.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    fn gate(&self, kind: Kind, name: &str) -> BResult<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let from = self.fail_from.load(Ordering::SeqCst);
        if from != 0 && n >= from {
            return Err(BackendError::new(
                ErrorKind::Other,
                object_name(kind, name),
                format!("injected fault at write {n}"),
            ));
        }
        Ok(())
    }
}

impl Backend for FaultBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn prepare(&self) -> BResult<()> {
        self.inner.prepare()
    }
    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
        self.gate(kind, name)?;
        self.inner.create(kind, name, data)
    }
    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        self.inner.read_range(kind, name, offset, length)
    }
    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        self.inner.list(kind)
    }
    fn list_unless(&self, kind: Kind, known: &str) -> BResult<Option<super::Listing>> {
        self.inner.list_unless(kind, known)
    }
    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        self.gate(kind, name)?;
        self.inner.delete(kind, name)
    }
    fn probe_capabilities(&self) -> BResult<crate::format::config::Capabilities> {
        self.inner.probe_capabilities()
    }
    fn use_capabilities(&self, caps: crate::format::config::Capabilities) {
        self.inner.use_capabilities(caps)
    }
    fn append_only(&self) -> BResult<bool> {
        self.inner.append_only()
    }
    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }
    fn set_bandwidth(&self, limits: super::limit::Bandwidth) {
        self.inner.set_bandwidth(limits)
    }
}
