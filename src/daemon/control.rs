//! The control protocol between the CLI and the daemon: a Unix stream socket at
//! `$PRISM_HOME/sync/daemon.sock` (mode 0600, bound inside the 0700 `sync` directory, so no other
//! user can reach it at any moment). One request per connection: the client writes one
//! line of JSON, the daemon answers with one line of JSON and closes. Every message carries the
//! protocol version `v`; a daemon answers a version it does not speak with an error naming both
//! versions. A client must send its request within [`REQUEST_READ_TIMEOUT`]; each connection is
//! served on its own thread, at most [`CONNECTIONS_MAX`] at once. See `format-spec/control.md`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::home::Home;

pub const PROTOCOL_VERSION: u32 = 1;
/// A request line longer than this is refused (no request needs more).
pub const REQUEST_LEN_MAX: usize = 64 << 10;
/// A client has this long to send its request line (and to take its answer).
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more get a "busy" answer at once.
pub const CONNECTIONS_MAX: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Ping,
    Start {
        set: String,
    },
    Stop {
        set: String,
    },
    Pause {
        set: String,
    },
    Resume {
        set: String,
    },
    Status {
        set: Option<String>,
    },
    /// Blocks until the set's local changes are published and the shared state's are applied.
    Flush {
        set: String,
        timeout_s: u64,
    },
    Shutdown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub result: Value,
}

impl Response {
    pub fn ok(result: Value) -> Self {
        Response {
            v: PROTOCOL_VERSION,
            ok: true,
            error: None,
            result,
        }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Response {
            v: PROTOCOL_VERSION,
            ok: false,
            error: Some(msg.into()),
            result: Value::Null,
        }
    }
}

/// Sends a request; `Ok(None)` if no daemon listens for this home.
pub fn request(home: &Path, op: Op, timeout: Duration) -> Result<Option<Response>> {
    let path = Home::new(home).daemon_socket();
    let mut s = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    s.set_read_timeout(Some(timeout))
        .map_err(|e| Error::io(&path, e))?;
    let mut line = serde_json::to_string(&Request {
        v: PROTOCOL_VERSION,
        op,
    })
    .expect("requests serialize");
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| Error::io(&path, e))?;
    let mut reader = BufReader::new(s);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::invalid(format!(
            "the daemon did not answer within {} s",
            timeout.as_secs()
        )),
        _ => Error::io(&path, e),
    })?;
    if answer.is_empty() {
        return Err(Error::invalid(
            "the daemon closed the connection without answering (it may be stopping)",
        ));
    }
    let r: Response = serde_json::from_str(answer.trim_end()).map_err(|e| {
        Error::invalid(format!(
            "the daemon sent a malformed answer ({e}): upgrade or restart it"
        ))
    })?;
    if r.v != PROTOCOL_VERSION {
        return Err(Error::invalid(format!(
            "the daemon speaks control protocol version {}, this prism-sync version {PROTOCOL_VERSION}: restart it (prism-sync stop, then start)",
            r.v
        )));
    }
    Ok(Some(r))
}

/// Reads one request from a connection (bounded), or explains why it cannot be served.
pub fn read_request(stream: &UnixStream) -> std::result::Result<Request, String> {
    stream
        .set_read_timeout(Some(REQUEST_READ_TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(REQUEST_READ_TIMEOUT)))
        .map_err(|e| format!("setting up the connection: {e}"))?;
    let mut reader = BufReader::new(stream.take_limited());
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
            "no request within {} s: send one line of JSON right after connecting",
            REQUEST_READ_TIMEOUT.as_secs()
        ),
        _ => format!("reading the request: {e}"),
    })?;
    if !line.ends_with('\n') {
        return Err(format!(
            "request longer than {REQUEST_LEN_MAX} bytes or not terminated by a newline"
        ));
    }
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("request is not JSON: {e}"))?;
    match v.get("v").and_then(Value::as_u64) {
        Some(n) if n == PROTOCOL_VERSION as u64 => {}
        Some(n) => {
            return Err(format!(
                "protocol version {n} is not supported; this daemon speaks {PROTOCOL_VERSION}"
            ));
        }
        None => return Err("request without a protocol version (field v)".into()),
    }
    serde_json::from_value(v).map_err(|e| format!("unknown or malformed request: {e}"))
}

trait TakeLimited {
    fn take_limited(&self) -> std::io::Take<&UnixStream>;
}

impl TakeLimited for UnixStream {
    fn take_limited(&self) -> std::io::Take<&UnixStream> {
        std::io::Read::take(self, REQUEST_LEN_MAX as u64)
    }
}

pub fn write_response(mut stream: &UnixStream, r: &Response) {
    let mut line = serde_json::to_string(r).expect("responses serialize");
    line.push('\n');
    let _ = stream.write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let r = Request {
            v: 1,
            op: Op::Flush {
                set: "p".into(),
                timeout_s: 30,
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"v":1,"op":"flush","set":"p","timeout_s":30}"#);
        let back: Request = serde_json::from_str(&s).unwrap();
        assert_eq!(back.op, r.op);
    }
}
