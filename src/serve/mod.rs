//! `prism-sync serve`: the REST server over a repository directory, so that a laptop reaches an
//! EFS-backed repository through a workspace. The protocol is specified byte-exactly in
//! `format-spec/rest.md`.
//!
//! Owns: HTTP routing, authentication, limits, TLS identity. Must not touch: keys, plaintext,
//! object formats — the server moves opaque bytes and never needs the repository key. Objects
//! are stored through [`FsBackend`] (temp file, fsync, `link`), so create-only is as atomic as on
//! the directory itself.
//!
//! Invariants: every request but none is authenticated (constant-time token comparison); every
//! body is bounded ([`Limits`]) and buffered only within a global memory budget; connections are
//! bounded in number and closed when idle; append-only mode refuses every delete except of
//! sessions and heads (see [`deletable_in_append_only`]).

mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;

use crate::backend::rest::SERVER_HEADER;
use crate::backend::{Backend, ErrorKind, FsBackend, Kind, valid_object_name};

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
    /// Open connections; more wait in the kernel's accept queue.
    pub connections_max: usize,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    pub handshake_timeout: Duration,
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
        }
    }
}

/// Granularity of the memory budget (permits are MiB).
const BUDGET_UNIT_BYTES: u64 = 1 << 20;
/// A `GET /<kind>/` listing is built in memory; this many entries at most.
const LIST_ENTRIES_MAX: usize = 2_000_000;

pub struct ServeOptions {
    /// The repository directory (it may not exist yet: `repo init` through the server creates it).
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub token: String,
    pub tls: Option<TlsIdentity>,
    pub append_only: bool,
    pub limits: Limits,
}

struct State {
    root: PathBuf,
    fs: Arc<FsBackend>,
    token: Vec<u8>,
    append_only: bool,
    limits: Limits,
    budget: Arc<Semaphore>,
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
        }),
    })
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
                let permit = tokio::select! {
                    p = conns.clone().acquire_owned() => p.map_err(|e| e.to_string())?,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = term.recv() => return Ok(()),
                };
                let (tcp, _peer) = tokio::select! {
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
                let _ = tcp.set_nodelay(true);
                let state = self.state.clone();
                let tls = self.tls.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let io = IdleTimeout::new(tcp, state.limits.idle_timeout);
                    match tls {
                        Some(acceptor) => {
                            let hs = state.limits.handshake_timeout;
                            if let Ok(Ok(stream)) =
                                tokio::time::timeout(hs, acceptor.accept(io)).await
                            {
                                serve_connection(state, stream).await;
                            }
                        }
                        None => serve_connection(state, io).await,
                    }
                });
            }
        })
    }
}

async fn serve_connection<S>(state: Arc<State>, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = state.limits.header_timeout;
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let body = body.into();
    let mut r = Response::new(Full::new(body));
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
/// when it finishes) and heads (a sync set's pointer to its current snapshot; a new head
/// replaces the ones it merged). Neither holds data: the snapshots and packs they point to stay,
/// so a hostile client can at worst make a sync set re-merge, never lose a version.
pub fn deletable_in_append_only(kind: Kind) -> bool {
    matches!(kind, Kind::Session | Kind::Head)
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
    if !name.is_empty() && !valid_object_name(name) {
        return Err((StatusCode::BAD_REQUEST, "invalid object name"));
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

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Resp {
    if !authorized(&state, &req) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "missing or wrong access token: send Authorization: Bearer <the token serve printed>",
        );
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"prism-sync\""),
        );
        return r;
    }
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

fn object_path(root: &Path, kind: Kind, name: &str) -> PathBuf {
    root.join(kind.path(name))
}

async fn size_of(state: &State, kind: Kind, name: &str) -> Result<Option<u64>, Resp> {
    let path = object_path(&state.root, kind, name);
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
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
    let size = match size_of(&state, kind, &name).await {
        Ok(Some(s)) => s,
        Ok(None) => return text(StatusCode::NOT_FOUND, "not found"),
        Err(r) => return r,
    };
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
    let fs = state.fs.clone();
    match range {
        None => match blocking(move || fs.read(kind, &name)).await {
            Ok(data) => respond(StatusCode::OK, data),
            Err(e) => backend_error(e),
        },
        Some((first, _)) if first >= size => {
            let mut r = text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "the range starts past the end",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            r
        }
        Some((first, last)) => {
            let last = last.unwrap_or(size - 1).min(size - 1);
            let len = last - first + 1;
            match blocking(move || fs.read_range(kind, &name, first, len)).await {
                Ok(data) => {
                    let mut r = respond(StatusCode::PARTIAL_CONTENT, data);
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{size}")) {
                        r.headers_mut().insert(CONTENT_RANGE, v);
                    }
                    r
                }
                Err(e) => backend_error(e),
            }
        }
    }
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
    let mut body = req.into_body();
    let mut data = Vec::with_capacity(len as usize);
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(_) => return text(StatusCode::BAD_REQUEST, "the request body was cut short"),
        };
        if let Ok(chunk) = frame.into_data() {
            if data.len() as u64 + chunk.len() as u64 > len {
                return text(
                    StatusCode::BAD_REQUEST,
                    "the body is longer than its Content-Length",
                );
            }
            data.extend_from_slice(&chunk);
        }
    }
    if data.len() as u64 != len {
        return text(StatusCode::BAD_REQUEST, "the request body was cut short");
    }
    let fs = state.fs.clone();
    match blocking(move || fs.create(kind, &name, &data)).await {
        Ok(()) => respond(StatusCode::OK, Bytes::new()),
        Err(e) => backend_error(e),
    }
}

async fn list(state: Arc<State>, kind: Kind) -> Resp {
    let fs = state.fs.clone();
    match blocking(move || fs.list(kind)).await {
        Ok(items) if items.len() > LIST_ENTRIES_MAX => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "too many objects to list in one answer",
        ),
        Ok(items) => {
            let v: Vec<serde_json::Value> = items
                .iter()
                .map(|o| serde_json::json!({"name": o.name, "size": o.size}))
                .collect();
            let mut r = respond(StatusCode::OK, serde_json::Value::Array(v).to_string());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => backend_error(e),
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
        assert!(matches!(
            route("/heads/ab-cd"),
            Ok(Some((Kind::Head, "ab-cd")))
        ));
        for bad in [
            "/data",
            "/nope/x",
            "/data/../x",
            "/data/.tmp-1",
            "/keys/a/b",
            "/config/x",
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
