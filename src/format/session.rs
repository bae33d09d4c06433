//! Session objects (`sessions/<id>`, sealed, kind Session): a writer that may still commit
//! references to existing packs. TLV fields: 1 session id (32 random bytes; the object name is
//! its hex), 2 started (i64 ns since the Unix epoch), 3 host (UTF-8), 4 process id (u32),
//! 5 command (UTF-8, e.g. `backup`). See `format-spec/repository.md`, "Sessions"; vector:
//! `format-spec/vectors/session-plaintext.hex`.

use super::DecodeResult;
use super::tlv::{Fields, TlvWriter, fixed};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: [u8; 32],
    pub started_ns: i64,
    pub host: String,
    pub pid: u32,
    pub command: String,
    /// Fields of newer versions, kept so that re-encoding is exact.
    pub extra: Vec<(u16, Vec<u8>)>,
}

impl SessionInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.bytes(1, &self.id)
            .i64(2, self.started_ns)
            .bytes(3, self.host.as_bytes())
            .u32(4, self.pid)
            .bytes(5, self.command.as_bytes())
            .extra(&self.extra);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<Self> {
        const W: &str = "session";
        let f = Fields::parse(b, W)?;
        Ok(SessionInfo {
            id: fixed(f.req(1, W)?, W)?,
            started_ns: f.req_i64(2, W)?,
            host: f.req_str(3, W)?,
            pid: f.req_u32(4, W)?,
            command: f.req_str(5, W)?,
            extra: f.unknown(&[1, 2, 3, 4, 5], W)?,
        })
    }
}
