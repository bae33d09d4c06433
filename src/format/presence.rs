//! Presence objects (`presence/<set key>-<endpoint key>-<heartbeat>`, sealed, kind Presence):
//! a running daemon's word that it keeps one endpoint of a sync set in sync, refreshed every
//! interval, so `status` elsewhere can say whether that endpoint is connected. TLV fields:
//! 1 sync set (UTF-8), 2 endpoint (UTF-8), 3 host (UTF-8), 4 process id (u64, at most 2³²−1),
//! 5 folder (bytes: the endpoint's absolute folder, non-UTF-8 allowed), 6 daemon started (i64
//! ns), 7 heartbeat (i64 ns, not before field 6), 8 interval (u64 ms, ≥ 1: when the next
//! heartbeat is due), 9 program version (UTF-8), 10 stopped (u64 1 when the daemon stopped the
//! endpoint cleanly; absent while it runs). See `format-spec/sync.md`, "Presence".

use super::tlv::{Fields, TlvWriter};
use super::{DecodeError, DecodeResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub set: String,
    pub endpoint: String,
    pub host: String,
    pub pid: u32,
    /// The endpoint's folder, as bytes (a Unix path need not be UTF-8).
    pub folder: Vec<u8>,
    pub started_ns: i64,
    pub heartbeat_ns: i64,
    /// The writer's heartbeat interval: a reader judges freshness by it.
    pub interval_ms: u64,
    pub version: String,
    /// Written once, when the daemon stops the endpoint cleanly.
    pub stopped: bool,
    /// Fields of newer versions, kept so that re-encoding is exact.
    pub extra: Vec<(u16, Vec<u8>)>,
}

impl Presence {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.bytes(1, self.set.as_bytes())
            .bytes(2, self.endpoint.as_bytes())
            .bytes(3, self.host.as_bytes())
            .u64(4, self.pid as u64)
            .bytes(5, &self.folder)
            .i64(6, self.started_ns)
            .i64(7, self.heartbeat_ns)
            .u64(8, self.interval_ms)
            .bytes(9, self.version.as_bytes());
        if self.stopped {
            w.u64(10, 1);
        }
        w.extra(&self.extra);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<Self> {
        const W: &str = "presence";
        let f = Fields::parse(b, W)?;
        let extra = f.unknown(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], W)?;
        let pid = u32::try_from(f.req_u64(4, W)?)
            .map_err(|_| DecodeError::invalid(W, "process id too large"))?;
        let started_ns = f.req_i64(6, W)?;
        let heartbeat_ns = f.req_i64(7, W)?;
        if heartbeat_ns < started_ns {
            return Err(DecodeError::invalid(
                W,
                "heartbeat before the daemon started",
            ));
        }
        let interval_ms = f.req_u64(8, W)?;
        if interval_ms == 0 {
            return Err(DecodeError::invalid(W, "interval is 0"));
        }
        let stopped = match f.opt_u64(10, W)? {
            None => false,
            Some(1) => true,
            Some(_) => return Err(DecodeError::invalid(W, "stopped is encoded as 1 or absent")),
        };
        let set = f.req_str(1, W)?;
        let endpoint = f.req_str(2, W)?;
        if set.is_empty() || endpoint.is_empty() {
            return Err(DecodeError::invalid(W, "empty set or endpoint name"));
        }
        Ok(Presence {
            set,
            endpoint,
            host: f.req_str(3, W)?,
            pid,
            folder: f.req(5, W)?.to_vec(),
            started_ns,
            heartbeat_ns,
            interval_ms,
            version: f.req_str(9, W)?,
            stopped,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence() -> Presence {
        Presence {
            set: "p-sync".into(),
            endpoint: "ws1".into(),
            host: "ws1-host".into(),
            pid: 4321,
            folder: b"/home/me/data".to_vec(),
            started_ns: 10,
            heartbeat_ns: 20,
            interval_ms: 60_000,
            version: "prism-sync 0.1.0".into(),
            stopped: false,
            extra: vec![],
        }
    }

    #[test]
    fn round_trips_and_rejects_bad_fields() {
        for p in [
            presence(),
            Presence {
                stopped: true,
                folder: vec![0xff, b'/', b'x'],
                extra: vec![(11, b"x".to_vec())],
                ..presence()
            },
        ] {
            assert_eq!(Presence::decode(&p.encode()).unwrap(), p);
        }
        for bad in [
            Presence {
                heartbeat_ns: 5,
                ..presence()
            },
            Presence {
                interval_ms: 0,
                ..presence()
            },
            Presence {
                endpoint: String::new(),
                ..presence()
            },
        ] {
            assert!(Presence::decode(&bad.encode()).is_err(), "{bad:?}");
        }
        assert!(Presence::decode(&[]).is_err());
    }
}
