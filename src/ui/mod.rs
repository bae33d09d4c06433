//! `prism-sync ui`: a local web app served by the binary — every sync set's state, its
//! conflicts with buttons to settle them, and every version of every file by time, with diffs,
//! downloads and "restore this version".
//!
//! Owns: the HTTP server (axum on the process's tokio runtime), its access token and cookie,
//! the pages ([`pages`]: HTML built in Rust with maud, escaped by default), the embedded assets
//! (one stylesheet, a little JavaScript; no build step), and running actions ([`actions`]).
//! Must not touch: sync decisions and status rules (the dashboard renders
//! [`crate::status::SetStatus`] as it is; actions run the `prism-sync` command line itself, so a
//! button does exactly what the command shown beside it does), printing (the caller prints the
//! URL).
//!
//! Security: it listens on loopback unless told otherwise (the caller refuses other addresses
//! without an explicit flag). Every request must carry the random token — in the URL printed at
//! start (`?t=…`, exchanged for an HttpOnly, SameSite=Strict cookie and a redirect to the same
//! page without it) or in that cookie — compared in constant time; on loopback the `Host` header
//! must name the loopback address too (no DNS rebinding). Requests that change anything are
//! POSTs that carry the token again in a form field, so another site cannot forge them.

pub(crate) mod actions;
pub(crate) mod pages;
mod routes;

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::browse::{BrowseOptions, Browser, Report};
use crate::error::Result;
use crate::repository::{Credentials, Repository};

/// Name of the cookie that holds the token after the first visit, followed by the port (cookies
/// do not tell ports apart, and two apps of two homes may run side by side).
pub const COOKIE_PREFIX: &str = "prism_ui_token_";
/// Actions remembered for the dashboard's "recent actions".
const RECENT_ACTIONS_MAX: usize = 20;

/// How to run the command line for an action: the binary and the global options this `ui` was
/// started with (`--home`, `--password-file`, …).
#[derive(Debug, Clone)]
pub struct CommandLine {
    pub exe: PathBuf,
    pub global: Vec<OsString>,
}

pub struct UiOptions {
    pub home: PathBuf,
    pub listen: SocketAddr,
    pub token: String,
    /// The repository the "Repository" pages show (`--repo`, or the embedded default).
    pub repo_url: String,
    pub creds: Credentials,
    pub command: CommandLine,
    pub report: Report,
}

/// What the handlers share.
pub(crate) struct App {
    pub opts: UiOptions,
    browsers: Mutex<HashMap<String, Arc<Browser>>>,
    pub recent: Mutex<VecDeque<actions::ActionRun>>,
}

impl App {
    /// The browser of a repository, opened on first use and kept.
    pub fn browser(&self, url: &str) -> Result<Arc<Browser>> {
        if let Some(b) = self.browsers.lock().expect("browsers lock").get(url) {
            return Ok(b.clone());
        }
        let repo = Repository::open_url(url, &self.opts.creds)?;
        repo.load_index()?;
        let b = Arc::new(Browser::new(
            repo,
            BrowseOptions::default(),
            self.opts.report.clone(),
        )?);
        self.browsers
            .lock()
            .expect("browsers lock")
            .insert(url.to_string(), b.clone());
        Ok(b)
    }

    pub fn remember(&self, run: actions::ActionRun) {
        let mut r = self.recent.lock().expect("recent lock");
        r.push_front(run);
        r.truncate(RECENT_ACTIONS_MAX);
    }
}

pub struct Server {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    app: Arc<App>,
}

/// Binds the listening socket (port 0: any free port).
pub fn bind(opts: UiOptions) -> std::result::Result<Server, String> {
    let handle = crate::backend::rt::handle()?;
    let listener = handle
        .block_on(tokio::net::TcpListener::bind(opts.listen))
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    Ok(Server {
        listener,
        local_addr,
        app: Arc::new(App {
            opts,
            browsers: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
        }),
    })
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address to open, with the token.
    pub fn url(&self) -> String {
        let host = match self.local_addr.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        };
        format!(
            "http://{host}:{}/?t={}",
            self.local_addr.port(),
            self.app.opts.token
        )
    }

    /// Serves until SIGINT or SIGTERM.
    pub fn run(self) -> std::result::Result<(), String> {
        let handle = crate::backend::rt::handle()?;
        let router = routes::router(self.app.clone(), self.local_addr);
        handle.block_on(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
            let stop = async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            axum::serve(self.listener, router)
                .with_graceful_shutdown(stop)
                .await
                .map_err(|e| format!("the web app stopped: {e}"))
        })
    }
}

/// Constant time in the content (the length of a token is not secret).
pub(crate) fn token_matches(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// Percent-encodes path bytes for a URL query or a form field (unreserved bytes and `/` stay).
pub fn pct_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Decodes `%XX` escapes (and `+` as a space, as forms send it) into bytes; a malformed escape
/// is kept as it is.
pub fn pct_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The query string as name → raw bytes (percent-decoded once).
pub fn parse_query(raw: Option<&str>) -> HashMap<String, Vec<u8>> {
    let mut m = HashMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(
            String::from_utf8_lossy(&pct_decode(k)).into_owned(),
            pct_decode(v),
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_survive_the_round_trip_through_urls() {
        for p in [&b"a/b c.txt"[..], b"caf\xe9/%41+&=?#", b""] {
            assert_eq!(pct_decode(&pct_encode(p)), p);
        }
        let q = parse_query(Some("path=caf%E9%2Fx&v=12ab&t"));
        assert_eq!(q["path"], b"caf\xe9/x");
        assert_eq!(q["v"], b"12ab");
        assert_eq!(q["t"], b"");
        assert_eq!(pct_decode("100%"), b"100%");
        assert_eq!(pct_decode("%zz"), b"%zz");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(b"abcd", b"abcd"));
        assert!(!token_matches(b"abce", b"abcd"));
        assert!(!token_matches(b"abc", b"abcd"));
        assert!(!token_matches(b"", b"abcd"));
    }
}
