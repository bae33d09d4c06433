//! A single-threaded blob writer: dedups, compresses, seals into packs of the target size and
//! stores each pack as it fills. Used for tree blobs and small writers (sync steps, repacking);
//! the archiver runs the same steps on several threads.

use std::collections::HashSet;

use super::Repository;
use super::pack_codec::{Compressors, PackWriter, compress};
use crate::error::Result;
use crate::format::index::IndexPack;
use crate::format::pack::{BLOB_HEADER_LEN, BlobKind, TAG_LEN};
use crate::id::BlobId;

/// Tree packs are cut at this size even when data packs are bigger.
pub const TREE_PACK_MAX: usize = 4 << 20;

#[derive(Debug, Clone, Copy, Default)]
pub struct PackerStats {
    pub blobs_added: u64,
    pub bytes_added_raw: u64,
    pub bytes_added_stored: u64,
    pub packs_written: u64,
}

pub struct Packer<'r> {
    repo: &'r Repository,
    data: Option<PackWriter>,
    tree: Option<PackWriter>,
    compressors: Compressors,
    pending: HashSet<(BlobKind, BlobId)>,
    stored: Vec<IndexPack>,
    pub stats: PackerStats,
}

impl<'r> Packer<'r> {
    pub fn new(repo: &'r Repository) -> Self {
        let level = repo.config().zstd_level as i32;
        Packer {
            repo,
            data: None,
            tree: None,
            compressors: Compressors::new(level),
            pending: HashSet::new(),
            stored: Vec::new(),
            stats: PackerStats::default(),
        }
    }

    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// Stores a blob unless the repository (or this packer) already has it; returns its id.
    pub fn add(&mut self, kind: BlobKind, plaintext: &[u8]) -> Result<BlobId> {
        let id = self.repo.keys().blob_id(plaintext);
        self.add_with_id(kind, id, plaintext)?;
        Ok(id)
    }

    /// Like [`Packer::add`] for a blob whose id the caller computed. Returns true if it was new.
    pub fn add_with_id(&mut self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<bool> {
        if self.repo.has_blob(kind, &id) {
            return Ok(false);
        }
        self.add_unchecked(kind, id, plaintext)
    }

    /// Stores a blob even if the repository has it (prune copies blobs out of packs it is about
    /// to delete). Still dedups within this packer.
    pub fn add_unchecked(&mut self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<bool> {
        if !self.pending.insert((kind, id)) {
            return Ok(false);
        }
        let body = compress(self.compressors.for_len(plaintext.len()), plaintext);
        let compressed = body.is_some();
        let body = body.unwrap_or_else(|| plaintext.to_vec());
        let target = match kind {
            BlobKind::Data => self.repo.config().pack_target_bytes as usize,
            // Trees are read together (a whole snapshot's), but a 16 MiB tree pack held in
            // memory while a big folder is scanned is too much: cap them at 4 MiB.
            BlobKind::Tree => (self.repo.config().pack_target_bytes as usize).min(TREE_PACK_MAX),
        };
        let stored_len = body.len() + TAG_LEN + BLOB_HEADER_LEN;
        let slot = match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        };
        let w =
            slot.get_or_insert_with(|| PackWriter::new(self.repo.keys(), kind, target + (1 << 20)));
        w.add(id, plaintext.len(), compressed, body);
        self.stats.blobs_added += 1;
        self.stats.bytes_added_raw += plaintext.len() as u64;
        self.stats.bytes_added_stored += stored_len as u64;
        if w.len() >= target {
            self.flush_kind(kind)?;
        }
        Ok(true)
    }

    fn flush_kind(&mut self, kind: BlobKind) -> Result<()> {
        let slot = match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        };
        if let Some(w) = slot.take().filter(|w| !w.is_empty()) {
            let p = w.finish();
            let ip = self.repo.store_pack(&p)?;
            self.stats.packs_written += 1;
            self.stored.push(ip);
        }
        Ok(())
    }

    /// Stores the partly filled packs; returns every pack this packer stored (for the index).
    pub fn finish(mut self) -> Result<Vec<IndexPack>> {
        self.flush_kind(BlobKind::Data)?;
        self.flush_kind(BlobKind::Tree)?;
        Ok(self.stored)
    }
}
