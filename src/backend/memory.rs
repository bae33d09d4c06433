//! An in-memory backend for tests and for the fault-injection wrapper.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{
    BResult, Backend, BackendError, ErrorKind, Kind, ObjectInfo, object_name, valid_object_name,
};

#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<(Kind, String), Vec<u8>>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces an object's bytes (tests use it to corrupt objects).
    pub fn overwrite(&self, kind: Kind, name: &str, data: Vec<u8>) {
        self.objects
            .lock()
            .expect("lock")
            .insert((kind, name.to_string()), data);
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }

    fn prepare(&self) -> BResult<()> {
        Ok(())
    }

    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
        if kind != Kind::Config && !valid_object_name(name) {
            return Err(BackendError::new(
                ErrorKind::Other,
                object_name(kind, name),
                "invalid object name",
            ));
        }
        let mut m = self.objects.lock().expect("lock");
        let key = (kind, name.to_string());
        if m.contains_key(&key) {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                object_name(kind, name),
                "already exists",
            ));
        }
        m.insert(key, data.to_vec());
        Ok(())
    }

    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
        let m = self.objects.lock().expect("lock");
        m.get(&(kind, name.to_string()))
            .cloned()
            .ok_or_else(|| BackendError::not_found(object_name(kind, name)))
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        let m = self.objects.lock().expect("lock");
        let o = m
            .get(&(kind, name.to_string()))
            .ok_or_else(|| BackendError::not_found(object_name(kind, name)))?;
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= o.len() as u64)
            .ok_or_else(|| {
                BackendError::new(
                    ErrorKind::Other,
                    object_name(kind, name),
                    format!("shorter than {} bytes", offset + length),
                )
            })?;
        Ok(o[offset as usize..end as usize].to_vec())
    }

    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        let m = self.objects.lock().expect("lock");
        Ok(m.iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, n), v)| ObjectInfo {
                name: n.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        let mut m = self.objects.lock().expect("lock");
        m.remove(&(kind, name.to_string()))
            .map(|_| ())
            .ok_or_else(|| BackendError::not_found(object_name(kind, name)))
    }
}
