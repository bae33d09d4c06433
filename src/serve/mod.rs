//! `prism-sync serve`: the REST server over a repository directory, so that a laptop reaches an
//! EFS-backed repository through a workspace. The protocol is specified byte-exactly in
//! `format-spec/rest.md`.
//!
//! Owns: HTTP routing, authentication, limits, TLS identity. Must not touch: keys, plaintext,
//! object formats — the server moves opaque bytes and never needs the repository key. Objects
//! are stored through [`FsBackend`] (temp file, fsync, `link`), so create-only is as atomic as on
//! the directory itself; objects are read through it too, so a symlink inside the served
//! directory is never followed and only regular files are served.
//!
//! Invariants:
//! - every request is authenticated (constant-time token comparison); a `401` closes the
//!   connection, and a connection that has not authenticated within
//!   [`Limits::pre_auth_timeout`] is closed. When every connection slot is taken, the oldest
//!   connection that has not authenticated yet is closed to make room: clients without the token
//!   can never starve clients with it;
//! - object names are the exact forms of the repository layout ([`layout_name`]): nothing else
//!   is stored, read or listed;
//! - every upload body is bounded ([`Limits`]), buffered only within a global memory budget, and
//!   must arrive within [`Limits::body_deadline`] — a client trickling its body cannot hold the
//!   budget; downloads are streamed from the file in [`STREAM_CHUNK_BYTES`] pieces;
//! - connections are bounded in number and closed when idle; append-only mode refuses every
//!   delete except of sessions and heads (see [`deletable_in_append_only`]).

mod tls;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::backend::rest::{SERVER_HEADER, WAIT_HEADER};
use crate::backend::{Backend, ErrorKind, FsBackend, Kind, layout_name};

pub(crate) use tls::write_private;
pub use tls::{TlsIdentity, fingerprint_hex};

/// The protocol version `GET /` reports.
pub const PROTOCOL_VERSION: u32 = 1;

/// Named limits of the server; [`Limits::default`] is what `serve` uses.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest object a client may store: the format's largest pack target (1 GiB) plus one
    /// largest chunk and headers. Larger requests get 413 before any byte is read.
    pub object_bytes_max: u64,
    /// Request bodies buffered at once across all connections; a request waits for room.
    pub buffered_bytes_max: u64,
    /// Open connections; more wait in the kernel's accept queue (or, when the waiting ones are
    /// authenticated and the new one may be too, the oldest unauthenticated one is closed).
    pub connections_max: usize,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a new connection has to make its first authenticated request.
    pub pre_auth_timeout: Duration,
    /// Every upload body gets this long, plus its length at [`Limits::body_bytes_per_sec_min`].
    pub body_grace: Duration,
    /// The slowest upload the server waits for.
    pub body_bytes_per_sec_min: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            object_bytes_max: (1 << 30) + (32 << 20),
            buffered_bytes_max: 2 << 30,
            connections_max: 64,
            idle_timeout: Duration::from_secs(120),
            header_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            pre_auth_timeout: Duration::from_secs(10),
            body_grace: Duration::from_secs(30),
            body_bytes_per_sec_min: 64 << 10,
        }
    }
}

impl Limits {
    /// How long a body of `len` bytes may take to arrive.
    pub fn body_deadline(&self, len: u64) -> Duration {
        self.body_grace
            + Duration::from_secs_f64(len as f64 / self.body_bytes_per_sec_min.max(1) as f64)
    }
}

/// While every slot is taken, the accept loop looks for an unauthenticated connection to close
/// this often.
const EVICT_RETRY: Duration = Duration::from_millis(200);

/// A waiting listing (`GET /heads/?wait=SECS&known=TAG`) looks at the directory this often.
const WAIT_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// … and is held at most this long, whatever the client asks.
const WAIT_SECS_MAX: u64 = 60;

/// Granularity of the memory budget (permits are MiB).
const BUDGET_UNIT_BYTES: u64 = 1 << 20;
/// A download is read from its file and sent in pieces of this size (one budget unit each).
pub const STREAM_CHUNK_BYTES: u64 = BUDGET_UNIT_BYTES;
/// A `GET /<kind>/` listing is built in memory; this many entries at most.
const LIST_ENTRIES_MAX: usize = 2_000_000;

/// What the server did, counted since it started (for `serve --log-requests`, tests and the WAN
/// benchmark: requests per operation, connections reused or not).
#[derive(Debug, Default)]
pub struct ServeStats {
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// TLS handshakes completed (one per connection: a client that reuses its connections
    /// keeps this at its pool size).
    pub tls_handshakes: AtomicU64,
    /// Requests answered (authenticated or not).
    pub requests: AtomicU64,
    /// Body bytes received and sent.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// One event of the server's log: a connection opened or a request answered.
#[derive(Debug, Clone)]
pub enum ServeEvent {
    Connection {
        peer: SocketAddr,
        tls: bool,
    },
    Request {
        peer: SocketAddr,
        method: Method,
        path: String,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
        elapsed: Duration,
    },
}

/// Receives every [`ServeEvent`] (the CLI prints them with `--log-requests`).
pub type EventSink = Arc<dyn Fn(&ServeEvent) + Send + Sync>;

pub struct ServeOptions {
    /// The repository directory (it may not exist yet: `repo init` through the server creates it).
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub token: String,
    pub tls: Option<TlsIdentity>,
    pub append_only: bool,
    pub limits: Limits,
    pub events: Option<EventSink>,
}

/// Connections that have not authenticated yet, oldest first, each with the signal that closes
/// it.
#[derive(Default)]
struct Unauthenticated {
    next: AtomicU64,
    queue: Mutex<VecDeque<(u64, Arc<Notify>)>>,
}

impl Unauthenticated {
    fn register(&self) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let n = Arc::new(Notify::new());
        self.queue.lock().expect("lock").push_back((id, n.clone()));
        (id, n)
    }

    fn remove(&self, id: u64) {
        self.queue.lock().expect("lock").retain(|(i, _)| *i != id);
    }

    /// Closes the oldest unauthenticated connection; false if there is none.
    fn evict_oldest(&self) -> bool {
        match self.queue.lock().expect("lock").pop_front() {
            Some((_, n)) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }
}

struct State {
    root: PathBuf,
    fs: Arc<FsBackend>,
    token: Vec<u8>,
    append_only: bool,
    limits: Limits,
    budget: Arc<Semaphore>,
    stats: Arc<ServeStats>,
    events: Option<EventSink>,
    unauthenticated: Unauthenticated,
}

/// A bound server, not yet answering.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    local_addr: SocketAddr,
}

/// Binds the listening socket (so the caller can print the real port before serving).
pub fn bind(opts: ServeOptions) -> Result<Server, String> {
    if opts.token.len() < 16 {
        return Err("the access token is shorter than 16 characters: use a long random one".into());
    }
    let handle = crate::backend::rt::handle()?;
    let listener = handle
        .block_on(async { tokio::net::TcpListener::bind(opts.listen).await })
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let tls = match &opts.tls {
        Some(id) => Some(id.acceptor()?),
        None => None,
    };
    let fs = Arc::new(FsBackend::new(&opts.root));
    // Leftovers of writes interrupted by a crash of an earlier server.
    if opts.root.exists() {
        let _ = fs.remove_stale_temp(Duration::from_secs(3600));
    }
    let units = (opts.limits.buffered_bytes_max / BUDGET_UNIT_BYTES).max(1) as usize;
    Ok(Server {
        listener,
        tls,
        local_addr,
        state: Arc::new(State {
            root: opts.root,
            fs,
            token: opts.token.into_bytes(),
            append_only: opts.append_only,
            limits: opts.limits,
            budget: Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))),
            stats: Arc::new(ServeStats::default()),
            events: opts.events,
            unauthenticated: Unauthenticated::default(),
        }),
    })
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters (live while it runs).
    pub fn stats(&self) -> Arc<ServeStats> {
        self.state.stats.clone()
    }

    /// Answers requests until SIGINT or SIGTERM. In-flight writes need no draining: each is a
    /// temp file linked into place, so an interrupted one leaves nothing under a real name.
    pub fn run(self) -> Result<(), String> {
        let handle = crate::backend::rt::handle()?;
        handle.block_on(async move {
            let conns = Arc::new(Semaphore::new(self.state.limits.connections_max.max(1)));
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
            loop {
                // Wait for a free slot; while all are taken, a new client that may hold the token
                // is worth more than the oldest one that has not shown it yet.
                let permit = match conns.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        let waiting = tokio::select! {
                            a = self.listener.accept() => a.ok(),
                            _ = tokio::signal::ctrl_c() => return Ok(()),
                            _ = term.recv() => return Ok(()),
                        };
                        // Close the oldest unauthenticated connection; if there is none yet (all
                        // slots hold token holders), look again now and then while waiting.
                        let p = loop {
                            self.state.unauthenticated.evict_oldest();
                            tokio::select! {
                                p = conns.clone().acquire_owned() => break p.map_err(|e| e.to_string())?,
                                _ = tokio::time::sleep(EVICT_RETRY) => {}
                                _ = tokio::signal::ctrl_c() => return Ok(()),
                                _ = term.recv() => return Ok(()),
                            }
                        };
                        if let Some((tcp, peer)) = waiting {
                            self.spawn_connection(tcp, peer, p);
                        }
                        continue;
                    }
                };
                let (tcp, peer) = tokio::select! {
                    a = self.listener.accept() => match a {
                        Ok(a) => a,
                        Err(_) => {
                            // Out of file descriptors or similar: back off, keep serving.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = term.recv() => return Ok(()),
                };
                self.spawn_connection(tcp, peer, permit);
            }
        })
    }

    fn spawn_connection(
        &self,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let _ = tcp.set_nodelay(true);
        let state = self.state.clone();
        let tls = self.tls.clone();
        state.stats.connections.fetch_add(1, Ordering::Relaxed);
        // Registered before the task runs: the accept loop may need to evict it at once.
        let (id, kick) = state.unauthenticated.register();
        tokio::spawn(async move {
            let _permit = permit;
            let authed = Arc::new(AtomicBool::new(false));
            let io = IdleTimeout::new(tcp, state.limits.idle_timeout);
            let conn = async {
                match tls {
                    Some(acceptor) => {
                        let hs = state.limits.handshake_timeout;
                        if let Ok(Ok(stream)) = tokio::time::timeout(hs, acceptor.accept(io)).await
                        {
                            state.stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
                            state.event(&ServeEvent::Connection { peer, tls: true });
                            serve_connection(state.clone(), stream, peer, id, authed.clone()).await;
                        }
                    }
                    None => {
                        state.event(&ServeEvent::Connection { peer, tls: false });
                        serve_connection(state.clone(), io, peer, id, authed.clone()).await
                    }
                }
            };
            tokio::pin!(conn);
            let before_auth = async {
                tokio::select! {
                    _ = tokio::time::sleep(state.limits.pre_auth_timeout) => {}
                    _ = kick.notified() => {}
                }
            };
            tokio::select! {
                _ = &mut conn => {}
                _ = before_auth => {
                    // Out of time (or evicted) before showing the token: dropped, unless the
                    // token came just now.
                    if authed.load(Ordering::SeqCst) {
                        conn.await;
                    }
                }
            }
            state.unauthenticated.remove(id);
        });
    }
}

impl State {
    fn event(&self, e: &ServeEvent) {
        if let Some(sink) = &self.events {
            sink(e);
        }
    }
}

async fn serve_connection<S>(
    state: Arc<State>,
    io: S,
    peer: SocketAddr,
    id: u64,
    authed: Arc<AtomicBool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = state.limits.header_timeout;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (state, authed) = (state.clone(), authed.clone());
        async move {
            let started = Instant::now();
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let bytes_in = req
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let resp = if !authorized(&state, &req) {
                unauthorized()
            } else {
                if !authed.swap(true, Ordering::SeqCst) {
                    state.unauthenticated.remove(id);
                }
                handle(state.clone(), req).await
            };
            let bytes_out = resp.body().size_hint().exact().unwrap_or(0);
            let s = &state.stats;
            s.requests.fetch_add(1, Ordering::Relaxed);
            s.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
            s.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
            state.event(&ServeEvent::Request {
                peer,
                method,
                path,
                status: resp.status().as_u16(),
                bytes_in,
                bytes_out,
                elapsed: started.elapsed(),
            });
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A response body: bytes in memory, or an object streamed from its file.
pub enum ServeBody {
    Bytes(Option<Bytes>),
    File(FileBody),
}

/// A piece being read on the blocking pool: the file comes back with the bytes.
type PendingRead = tokio::task::JoinHandle<std::io::Result<(std::fs::File, Vec<u8>)>>;

/// An object (or a range of it) read from its file in [`STREAM_CHUNK_BYTES`] pieces on the
/// blocking pool, holding one unit of the memory budget.
pub struct FileBody {
    file: Option<std::fs::File>,
    offset: u64,
    remaining: u64,
    pending: Option<PendingRead>,
    _permit: OwnedSemaphorePermit,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        loop {
            if let Some(h) = self.pending.as_mut() {
                let r = match Pin::new(h).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                self.pending = None;
                let (f, buf) = match r {
                    Ok(Ok(x)) => x,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Err(e) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
                };
                if buf.is_empty() {
                    return Poll::Ready(Some(Err(std::io::Error::from(
                        std::io::ErrorKind::UnexpectedEof,
                    ))));
                }
                self.file = Some(f);
                self.offset += buf.len() as u64;
                self.remaining -= buf.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))));
            }
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            let Some(f) = self.file.take() else {
                return Poll::Ready(None);
            };
            let (off, n) = (self.offset, self.remaining.min(STREAM_CHUNK_BYTES) as usize);
            self.pending = Some(tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; n];
                let got = f.read_at(&mut buf, off)?;
                buf.truncate(got);
                Ok((f, buf))
            }));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Body for ServeBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ServeBody::Bytes(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ServeBody::File(f) => Pin::new(f).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ServeBody::Bytes(b) => b.as_ref().is_none_or(Bytes::is_empty),
            ServeBody::File(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ServeBody::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ServeBody::File(f) => f.size_hint(),
        }
    }
}

type Resp = Response<ServeBody>;

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let body = body.into();
    let mut r = Response::new(ServeBody::Bytes(Some(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(SERVER_HEADER, HeaderValue::from_static("1"));
    if status.is_client_error() || status.is_server_error() {
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    r
}

fn text(status: StatusCode, msg: &str) -> Resp {
    respond(status, format!("{msg}\n"))
}

/// Deletes append-only mode still allows: sessions (a writer's "I am running" marker, removed
/// when it finishes), heads (a sync set's pointer to its current snapshot; a new head
/// replaces the ones it merged) and presence objects (a daemon's heartbeat, replaced by the
/// next one). None holds data: the snapshots and packs they point to stay,
/// so a hostile client can at worst make a sync set re-merge, never lose a version.
pub fn deletable_in_append_only(kind: Kind) -> bool {
    matches!(kind, Kind::Session | Kind::Head | Kind::Presence)
}

/// The route of a request path: `None` for `/`, `Some((kind, name))` for objects, name empty for
/// a listing.
fn route(path: &str) -> Result<Option<(Kind, &str)>, (StatusCode, &'static str)> {
    if path == "/" {
        return Ok(None);
    }
    if path == "/config" {
        return Ok(Some((Kind::Config, "")));
    }
    let no_route = (StatusCode::NOT_FOUND, "no such route");
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (dir, name) = rest.split_once('/').ok_or(no_route)?;
    let kind = Kind::ALL
        .into_iter()
        .find(|k| *k != Kind::Config && k.dir() == dir)
        .ok_or(no_route)?;
    if !name.is_empty() && !layout_name(kind, name) {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid object name: not the form the repository layout gives this kind",
        ));
    }
    Ok(Some((kind, name)))
}

fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let Some(given) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    // Constant time in the token's content (the length is not secret: it is always 64 hex
    // digits when serve generates it).
    given.len() == state.token.len()
        && given
            .iter()
            .zip(&state.token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The answer to a request without the right token; the connection is closed after it.
fn unauthorized() -> Resp {
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        "missing or wrong access token: send Authorization: Bearer <the token in serve's token file>",
    );
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"prism-sync\""),
    );
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Answers an authenticated request.
async fn handle(state: Arc<State>, req: Request<Incoming>) -> Resp {
    let route = match route(req.uri().path()) {
        Ok(r) => r,
        Err((status, msg)) => return text(status, msg),
    };
    let method = req.method().clone();
    match (route, method) {
        (None, Method::GET) => respond(
            StatusCode::OK,
            serde_json::json!({
                "service": "prism-sync",
                "protocol": PROTOCOL_VERSION,
                "append_only": state.append_only,
                "object_bytes_max": state.limits.object_bytes_max,
            })
            .to_string(),
        ),
        (None, Method::POST) if req.uri().query() == Some("create=true") => prepare(state).await,
        (None, _) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
        (Some((kind @ (Kind::Head | Kind::Snapshot), "")), Method::GET)
            if wait_query(req.uri().query()).is_some() =>
        {
            let (secs, known) = wait_query(req.uri().query()).expect("checked");
            // Snapshots: compared at once, never held (`wait=0`).
            let secs = if kind == Kind::Snapshot { 0 } else { secs };
            wait_list(state, kind, secs, known).await
        }
        (Some((kind, "")), Method::GET) if kind != Kind::Config => list(state, kind).await,
        (Some((kind, name)), Method::HEAD) if kind == Kind::Config || !name.is_empty() => {
            match size_of(&state, kind, name).await {
                Ok(Some(size)) => {
                    let mut r = respond(StatusCode::OK, Bytes::new());
                    r.headers_mut().insert(CONTENT_LENGTH, size.into());
                    r
                }
                Ok(None) => text(StatusCode::NOT_FOUND, "not found"),
                Err(r) => r,
            }
        }
        (Some((kind, name)), Method::GET) => read(state, kind, name.to_string(), &req).await,
        (Some((kind, name)), Method::POST) if kind == Kind::Config || !name.is_empty() => {
            create(state, kind, name.to_string(), req).await
        }
        (Some((kind, name)), Method::DELETE) if kind != Kind::Config && !name.is_empty() => {
            if state.append_only && !deletable_in_append_only(kind) {
                return text(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "the server is append-only: deleting {}s is refused (run forget/prune on the server's machine)",
                        kind.noun()
                    ),
                );
            }
            let name = name.to_string();
            let fs = state.fs.clone();
            match blocking(move || fs.delete(kind, &name)).await {
                Ok(()) => respond(StatusCode::OK, Bytes::new()),
                Err(e) => backend_error(e),
            }
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::backend::BackendError> + Send + 'static,
) -> Result<T, crate::backend::BackendError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(crate::backend::BackendError::new(
            ErrorKind::Other,
            "server",
            format!("internal error: {e}"),
        )),
    }
}

fn backend_error(e: crate::backend::BackendError) -> Resp {
    match e.kind {
        ErrorKind::NotFound => text(StatusCode::NOT_FOUND, "not found"),
        ErrorKind::AlreadyExists => text(StatusCode::CONFLICT, "already exists"),
        ErrorKind::Transient => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        ErrorKind::Other => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Size of a regular-file object (never through a symlink); `None` if there is none.
async fn size_of(state: &State, kind: Kind, name: &str) -> Result<Option<u64>, Resp> {
    let (fs, name) = (state.fs.clone(), name.to_string());
    blocking(move || fs.size(kind, &name))
        .await
        .map_err(backend_error)
}

/// A parsed `Range: bytes=first-last` or `bytes=first-` header (one range only).
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let first = a.trim().parse::<u64>().ok()?;
    let last = match b.trim() {
        "" => None,
        s => Some(s.parse::<u64>().ok()?),
    };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    Some((first, last))
}

async fn read(state: Arc<State>, kind: Kind, name: String, req: &Request<Incoming>) -> Resp {
    let range = match req.headers().get(RANGE) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(parse_range) {
            Some(r) => Some(r),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "unsupported Range: send one range, bytes=FIRST-LAST or bytes=FIRST-",
                );
            }
        },
    };
    // The object is opened once (a regular file, never through a symlink) and its size taken
    // from that handle, so what is measured is what is sent.
    let fs = state.fs.clone();
    let opened = blocking(move || {
        let f = fs.open(kind, &name)?;
        let size = f
            .metadata()
            .map_err(|e| {
                crate::backend::BackendError::new(ErrorKind::Other, "object", e.to_string())
            })?
            .len();
        Ok((f, size))
    })
    .await;
    let (file, size) = match opened {
        Ok(x) => x,
        Err(e) => return backend_error(e),
    };
    let (status, first, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some((first, _)) if first >= size => {
            let mut r = text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "the range starts past the end",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            return r;
        }
        Some((first, last)) => {
            let last = last.unwrap_or(size - 1).min(size - 1);
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
    };
    let permit = match state.budget.clone().acquire_owned().await {
        Ok(p) => p,
        Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    };
    let mut r = Response::new(ServeBody::File(FileBody {
        file: Some(file),
        offset: first,
        remaining: len,
        pending: None,
        _permit: permit,
    }));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(SERVER_HEADER, HeaderValue::from_static("1"));
    r.headers_mut().insert(CONTENT_LENGTH, len.into());
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{}/{size}", first + len - 1))
    {
        r.headers_mut().insert(CONTENT_RANGE, v);
    }
    r
}

async fn create(state: Arc<State>, kind: Kind, name: String, req: Request<Incoming>) -> Resp {
    let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return text(
            StatusCode::LENGTH_REQUIRED,
            "send the object with a Content-Length",
        );
    };
    if len > state.limits.object_bytes_max {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "{len} bytes is more than the {} this server stores in one object",
                state.limits.object_bytes_max
            ),
        );
    }
    let units = len.div_ceil(BUDGET_UNIT_BYTES).max(1) as u32;
    let _permit = match state.budget.clone().acquire_many_owned(units).await {
        Ok(p) => p,
        Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    };
    // The body must arrive by its deadline: a client trickling it holds the budget no longer.
    let deadline = state.limits.body_deadline(len);
    let receive = async {
        let mut body = req.into_body();
        let mut data = Vec::with_capacity(len as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| "the request body was cut short")?;
            if let Ok(chunk) = frame.into_data() {
                if data.len() as u64 + chunk.len() as u64 > len {
                    return Err("the body is longer than its Content-Length");
                }
                data.extend_from_slice(&chunk);
            }
        }
        if data.len() as u64 != len {
            return Err("the request body was cut short");
        }
        Ok(data)
    };
    let data = match tokio::time::timeout(deadline, receive).await {
        Ok(Ok(d)) => d,
        Ok(Err(msg)) => return text(StatusCode::BAD_REQUEST, msg),
        Err(_) => {
            let mut r = text(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the body did not arrive within {} s (the server waits for {} KiB/s at least)",
                    deadline.as_secs(),
                    state.limits.body_bytes_per_sec_min >> 10
                ),
            );
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    let fs = state.fs.clone();
    match blocking(move || fs.create(kind, &name, &data)).await {
        Ok(()) => respond(StatusCode::OK, Bytes::new()),
        Err(e) => backend_error(e),
    }
}

async fn list(state: Arc<State>, kind: Kind) -> Resp {
    let fs = state.fs.clone();
    match blocking(move || fs.list(kind)).await {
        Ok(items) => listing(&items),
        Err(e) => backend_error(e),
    }
}

fn listing(items: &[crate::backend::ObjectInfo]) -> Resp {
    if items.len() > LIST_ENTRIES_MAX {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "too many objects to list in one answer",
        );
    }
    let v: Vec<serde_json::Value> = items
        .iter()
        .map(|o| serde_json::json!({"name": o.name, "size": o.size}))
        .collect();
    let mut r = respond(StatusCode::OK, serde_json::Value::Array(v).to_string());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `wait=SECS&known=TAG` (in any order; TAG hex, possibly empty): how long to hold a listing and
/// the client's listing tag.
fn wait_query(query: Option<&str>) -> Option<(u64, String)> {
    let (mut secs, mut known) = (None, None);
    for pair in query?.split('&') {
        match pair.split_once('=')? {
            ("wait", v) => secs = Some(v.parse::<u64>().ok()?),
            ("known", v) if v.len() <= 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                known = Some(v.to_ascii_lowercase())
            }
            _ => return None,
        }
    }
    Some((secs?.min(WAIT_SECS_MAX), known.unwrap_or_default()))
}

/// A listing that waits: answered as soon as the names differ from the client's `known` tag
/// (at once if they already do), else `304 Not Modified` after `secs`. One request per change
/// instead of one per poll; the directory is looked at every [`WAIT_CHECK_INTERVAL`].
async fn wait_list(state: Arc<State>, kind: Kind, secs: u64, known: String) -> Resp {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        // The names' tag first (a directory left alone: one `fstat`); the listing only when it
        // differs.
        let fs = state.fs.clone();
        let tag = match blocking(move || fs.names_tag(kind)).await {
            Ok(tag) => tag,
            Err(e) => return backend_error(e),
        };
        let mut r = if tag != known {
            let fs = state.fs.clone();
            match blocking(move || fs.list(kind)).await {
                Ok(items) => listing(&items),
                Err(e) => return backend_error(e),
            }
        } else if tokio::time::Instant::now() + WAIT_CHECK_INTERVAL >= deadline {
            respond(StatusCode::NOT_MODIFIED, Bytes::new())
        } else {
            tokio::time::sleep(WAIT_CHECK_INTERVAL).await;
            continue;
        };
        r.headers_mut()
            .insert(WAIT_HEADER, HeaderValue::from_static("1"));
        return r;
    }
}

/// `POST /?create=true`: lays out an empty repository directory. Repeating it (a client whose
/// first answer was lost) is fine as long as nothing but the empty layout is there.
async fn prepare(state: Arc<State>) -> Resp {
    let fs = state.fs.clone();
    let root = state.root.clone();
    let r = blocking(move || {
        if root.join("config").exists() {
            return Err(crate::backend::BackendError::new(
                ErrorKind::AlreadyExists,
                "the repository",
                "already exists",
            ));
        }
        match fs.prepare() {
            Err(e) if e.kind == ErrorKind::AlreadyExists && bare_layout(&root) => Ok(()),
            r => r,
        }
    })
    .await;
    match r {
        Ok(()) => respond(StatusCode::OK, Bytes::new()),
        Err(e) if e.kind == ErrorKind::AlreadyExists => text(StatusCode::CONFLICT, &e.message),
        Err(e) => backend_error(e),
    }
}

/// True if `root` holds nothing but the directories `prepare` makes (and temp files).
fn bare_layout(root: &Path) -> bool {
    fn only_dirs_and_temp(dir: &Path, allowed_dir: &dyn Fn(&str) -> bool) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return false;
        };
        rd.flatten().all(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            crate::backend::fs_is_temp_name(&name) || (is_dir && allowed_dir(&name))
        })
    }
    let kinds: Vec<&str> = Kind::ALL
        .iter()
        .filter(|k| **k != Kind::Config)
        .map(|k| k.dir())
        .collect();
    only_dirs_and_temp(root, &|n| kinds.contains(&n))
        && kinds.iter().all(|k| {
            let d = root.join(k);
            !d.exists()
                || only_dirs_and_temp(&d, &|n| {
                    *k == "data" && n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit())
                })
        })
        && std::fs::read_dir(root.join("data")).is_ok_and(|rd| {
            rd.flatten()
                .all(|e| only_dirs_and_temp(&e.path(), &|_| false))
        })
}

/// Closes a connection on which nothing moved for `timeout` (a stalled or idle client).
struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn progress(&mut self) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.sleep.as_mut().reset(deadline);
    }

    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.progress();
                Poll::Ready(v)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.check(cx, r)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_strictly() {
        assert_eq!(parse_range("bytes=0-9"), Some((0, Some(9))));
        assert_eq!(parse_range("bytes=5-"), Some((5, None)));
        for bad in [
            "bytes=9-0",
            "bytes=-5",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=a-b",
            "",
        ] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn routes_map_to_kinds() {
        assert!(matches!(route("/"), Ok(None)));
        assert!(matches!(route("/config"), Ok(Some((Kind::Config, "")))));
        assert!(matches!(route("/data/"), Ok(Some((Kind::Pack, "")))));
        let head = format!("/heads/{}-{}", "0a".repeat(8), "cd".repeat(32));
        assert!(matches!(route(&head), Ok(Some((Kind::Head, _)))));
        let key = format!("/keys/{}", "ef".repeat(32));
        assert!(matches!(route(&key), Ok(Some((Kind::Key, _)))));
        for bad in [
            "/data",
            "/nope/x",
            "/data/../x",
            "/data/.tmp-1",
            "/keys/a/b",
            "/config/x",
            "/keys/ZZ_not_hex",
            "/heads/ab-cd",
            &format!("/keys/{}", "EF".repeat(32)),
            &format!("/data/{}", "ab".repeat(33)),
            &format!("/snapshots/{}", "ab".repeat(31)),
            &format!("/heads/{}", "ab".repeat(32)),
        ] {
            assert!(route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bare_layout_is_recognised() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        let fs = FsBackend::new(&root);
        fs.prepare().unwrap();
        assert!(bare_layout(&root));
        std::fs::write(root.join("data/ab/.tmp-x"), b"").unwrap();
        assert!(bare_layout(&root));
        std::fs::write(root.join("keys/k"), b"").unwrap();
        assert!(!bare_layout(&root));
    }
}
