//! The audit log: one JSON line per change a step applied to this folder or published to the
//! shared state, in `$PRISM_HOME/sync/<NAME>.audit.jsonl` (append-only; the compliance record
//! the Prism plan asks for). Lines are written and fsynced before the step commits its state, so
//! a crash can repeat a line (the step is redone) but never lose one.
//!
//! Fields: `time` (RFC 3339), `set`, `endpoint`, `direction` (`up`: published from this folder,
//! `down`: written into it), `action` (`created`, `updated`, `deleted`, `moved`, `kept-both`),
//! `path`, `size`, `old_size`, `hash` and `old_hash` (BLAKE3 of the content's blob ids, hex:
//! equal hashes mean equal content; nothing about the content can be learned from them),
//! `snapshot` (the version published, if any). Maintenance adds lines with `action`
//! `retention` (`retention`, `kept`, `forgotten`, `snapshots`: the ids forgotten) and `prune`
//! (`freed_bytes`, `packs_deleted`, `packs_compacted`, `packs_deferred`, `index_files`), without
//! `direction` or `path`.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::snapshot::{Content, Node, NodeKind};

/// Content hash of a node for the log.
pub fn content_hash(n: Option<&Node>) -> Option<String> {
    let n = n?;
    let mut h = blake3::Hasher::new();
    match &n.kind {
        NodeKind::File {
            content: Content::Direct(ids) | Content::Indirect(ids),
            size,
        } => {
            h.update(&size.to_le_bytes());
            for id in ids {
                h.update(&id.0);
            }
        }
        NodeKind::Symlink { target } => {
            h.update(b"symlink\0").update(target);
        }
        NodeKind::Dir { .. } => return None,
    }
    Some(crate::id::hex_encode(&h.finalize().as_bytes()[..16]))
}

#[allow(clippy::too_many_arguments)]
pub fn entry(
    time: &str,
    set: &str,
    endpoint: &str,
    direction: &str,
    action: &str,
    path: &str,
    old: Option<&Node>,
    new: Option<&Node>,
) -> Value {
    json!({
        "time": time,
        "set": set,
        "endpoint": endpoint,
        "direction": direction,
        "action": action,
        "path": path,
        "size": new.map(|n| n.size()),
        "old_size": old.map(|n| n.size()),
        "hash": content_hash(new),
        "old_hash": content_hash(old),
    })
}

/// Appends the lines and fsyncs.
pub fn append(path: &Path, entries: &[Value]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for e in entries {
        text.push_str(&e.to_string());
        text.push('\n');
    }
    let mut f = crate::fsx::private::append(path).map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::io(path, e))
}
