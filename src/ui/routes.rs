//! The app's URLs: the access check in front of all of them, and one handler per page or action.
//! Handlers gather what a page shows on the blocking pool (repository reads, redb, local files)
//! and hand plain data to [`super::pages`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Form, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;

use super::pages::{self, Compare, Scope};
use super::{App, COOKIE_PREFIX, actions, parse_query, pct_decode, token_matches};
use crate::browse::history::{PathVersion, path_history, set_versions};
use crate::browse::textdiff::{DIFF_BYTES_MAX, as_text, side_by_side};
use crate::browse::{Browser, FileChunks};
use crate::endpoint::Endpoint;
use crate::endpoint::config::SetConfig;
use crate::error::Error;
use crate::home::Home;
use crate::id::SnapshotId;
use crate::repository::now_ns;
use crate::snapshot::{Node, NodeKind, Snapshot, display_path};
use crate::time::format_local;
use crate::units::bytes;

/// Chunks of a download in flight between the reading thread and the connection.
const DOWNLOAD_QUEUE_CHUNKS: usize = 4;

pub(super) fn router(app: Arc<App>, local: SocketAddr) -> Router {
    let guard = Arc::new(Guard {
        app: app.clone(),
        loopback: local.ip().is_loopback(),
        port: local.port(),
    });
    Router::new()
        .route("/", get(dashboard))
        .route("/part/sets", get(sets_part))
        .route("/sets/{name}/browse", get(browse_set))
        .route("/sets/{name}/file", get(file_page))
        .route("/sets/{name}/download", get(download_set))
        .route("/sets/{name}/conflicts", get(conflicts_page))
        .route("/sets/{name}/resolve", post(resolve))
        .route("/sets/{name}/restore", post(restore))
        .route("/sets/{name}/run", post(run_set_command))
        .route("/repo/browse", get(browse_repo))
        .route("/repo/download", get(download_repo))
        .route("/assets/style.css", get(style))
        .route("/assets/app.js", get(script))
        .layer(middleware::from_fn_with_state(guard, check_access))
        .with_state(app)
}

// ---- access ---------------------------------------------------------------------------------------

struct Guard {
    app: Arc<App>,
    loopback: bool,
    port: u16,
}

fn cookie_token(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn plain(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.to_string(),
    )
        .into_response()
}

/// Every request: the right Host (on loopback), then the token from the URL (exchanged for the
/// cookie) or the cookie.
async fn check_access(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if g.loopback {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let allowed = [
            format!("127.0.0.1:{}", g.port),
            format!("localhost:{}", g.port),
            format!("[::1]:{}", g.port),
        ];
        if !allowed.iter().any(|a| a == host) {
            return plain(
                StatusCode::FORBIDDEN,
                "this app answers only to its loopback address: open the URL `prism-sync ui` printed",
            );
        }
    }
    let token = g.app.opts.token.as_bytes();
    let q = parse_query(req.uri().query());
    if let Some(t) = q.get("t") {
        if !token_matches(t, token) {
            return plain(
                StatusCode::UNAUTHORIZED,
                "wrong access token: open the URL `prism-sync ui` printed",
            );
        }
        // Keep the token in a cookie and take it out of the address bar (and of history).
        let rest: Vec<String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("t=") && *p != "t")
            .map(str::to_string)
            .collect();
        let to = if rest.is_empty() {
            req.uri().path().to_string()
        } else {
            format!("{}?{}", req.uri().path(), rest.join("&"))
        };
        let cookie = format!(
            "{COOKIE_PREFIX}{}={}; Path=/; HttpOnly; SameSite=Strict",
            g.port, g.app.opts.token
        );
        let mut r = Redirect::to(&to).into_response();
        r.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).expect("token is hex"),
        );
        return r;
    }
    match cookie_token(req.headers(), &format!("{COOKIE_PREFIX}{}", g.port)) {
        Some(c) if token_matches(c.as_bytes(), token) => {
            let mut r = next.run(req).await;
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut()
                .insert("x-frame-options", HeaderValue::from_static("DENY"));
            r.headers_mut().insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
                ),
            );
            r
        }
        _ => plain(
            StatusCode::UNAUTHORIZED,
            "missing or wrong access token: open the URL `prism-sync ui` printed (it holds the token)",
        ),
    }
}

/// The form token of a state-changing request (beside the cookie, so no other site can forge
/// one).
fn form_token_ok(app: &App, given: &str) -> bool {
    token_matches(given.as_bytes(), app.opts.token.as_bytes())
}

// ---- plumbing -------------------------------------------------------------------------------------

/// An error page: 404 for what does not exist, 400 for bad requests, 500 otherwise.
struct Failure(StatusCode, String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::Missing { .. } | Error::RepoNotFound { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, e.to_string())
    }
}

fn not_found(msg: impl Into<String>) -> Failure {
    Failure(StatusCode::NOT_FOUND, msg.into())
}

type Page = Result<Response, Failure>;

fn html(m: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

/// Runs `f` on the blocking pool and turns a failure into an error page.
async fn blocking<F>(app: Arc<App>, f: F) -> Response
where
    F: FnOnce(&App) -> Page + Send + 'static,
{
    match tokio::task::spawn_blocking(move || f(&app)).await {
        Ok(Ok(r)) => r,
        Ok(Err(Failure(status, msg))) => {
            let title = match status {
                StatusCode::NOT_FOUND => "Not found",
                StatusCode::BAD_REQUEST => "Cannot do that",
                _ => "Something went wrong",
            };
            (status, html(pages::error_page(title, &msg))).into_response()
        }
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the request's task failed (please report this)",
        ),
    }
}

fn open_set(app: &App, name: &str) -> Result<Endpoint, Failure> {
    if !SetConfig::valid_name(name) || !SetConfig::path(&Home::new(&app.opts.home), name).exists() {
        return Err(not_found(format!("there is no sync set {name:?} here")));
    }
    Ok(Endpoint::open(&app.opts.home, name)?)
}

fn query_path(q: &HashMap<String, Vec<u8>>, key: &str) -> Vec<u8> {
    q.get(key)
        .map(|p| crate::snapshot::components(p).join(&b'/'))
        .unwrap_or_default()
}

/// A version named in the query (`key`: an id or prefix) among `versions`.
fn pick(
    versions: &[(SnapshotId, Snapshot)],
    q: &HashMap<String, Vec<u8>>,
    key: &str,
) -> Option<usize> {
    let want = String::from_utf8_lossy(q.get(key)?).to_ascii_lowercase();
    if want.is_empty() {
        return None;
    }
    versions
        .iter()
        .position(|(id, _)| id.to_hex().starts_with(&want))
}

// ---- dashboard ------------------------------------------------------------------------------------

fn set_cards(app: &App) -> Result<Vec<pages::SetCard>, Failure> {
    let names = SetConfig::list(&Home::new(&app.opts.home))?;
    let mut out = Vec::new();
    for name in names {
        let ep = Endpoint::open(&app.opts.home, &name)?;
        out.push(pages::SetCard {
            folder: ep.cfg.local_path.display().to_string(),
            repository: ep.cfg.repo.clone(),
            conflicts: ep.state.conflicts()?.len(),
            name,
        });
    }
    Ok(out)
}

fn sets_markup(app: &App) -> Result<Markup, Failure> {
    let cards = set_cards(app)?;
    let recent: Vec<actions::ActionRun> = app
        .recent
        .lock()
        .expect("recent lock")
        .iter()
        .cloned()
        .collect();
    Ok(pages::sets_fragment(&cards, &recent, now_ns()))
}

async fn dashboard(State(app): State<Arc<App>>) -> Response {
    blocking(app, |app| Ok(html(pages::dashboard(sets_markup(app)?)))).await
}

async fn sets_part(State(app): State<Arc<App>>) -> Response {
    blocking(app, |app| Ok(html(sets_markup(app)?))).await
}

// ---- browsing -------------------------------------------------------------------------------------

fn browse_view(
    b: &Browser,
    scope: Scope,
    versions: &[(SnapshotId, Snapshot)],
    q: &HashMap<String, Vec<u8>>,
) -> Result<pages::BrowseView, Failure> {
    let path = query_path(q, "path");
    let current = match (pick(versions, q, "v"), q.get("i")) {
        (Some(i), _) => i,
        (None, Some(i)) => String::from_utf8_lossy(i)
            .parse::<usize>()
            .ok()
            .filter(|i| *i < versions.len())
            .ok_or_else(|| not_found("no such version"))?,
        (None, None) if q.contains_key("v") => {
            return Err(not_found(
                "that version is gone (forgotten by the retention policy, or never here)",
            ));
        }
        (None, None) => versions.len().saturating_sub(1),
    };
    let mut entries = Vec::new();
    if let Some((_, s)) = versions.get(current) {
        let node = b.find(&s.tree, &path)?.ok_or_else(|| {
            not_found(format!(
                "{} did not exist at {}",
                display_path(&path),
                format_local(s.time_ns)
            ))
        })?;
        match node.kind {
            NodeKind::Dir { subtree } => entries = b.dir(&subtree)?.as_ref().clone(),
            _ => {
                return Err(Failure(
                    StatusCode::BAD_REQUEST,
                    format!("{} is not a folder", display_path(&path)),
                ));
            }
        }
    }
    let versions = versions
        .iter()
        .map(|(id, s)| pages::VersionItem {
            id: *id,
            time_ns: s.time_ns,
            by: s.endpoint.clone().unwrap_or_else(|| s.host.clone()),
        })
        .collect();
    Ok(pages::BrowseView {
        scope,
        versions,
        current,
        path,
        entries,
        now_ns: now_ns(),
    })
}

async fn browse_set(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    blocking(app, move |app| {
        let ep = open_set(app, &name)?;
        let b = app.browser(&ep.cfg.repo)?;
        let snaps = b.snapshots();
        let versions = set_versions(&snaps.list, &name, false);
        let q = parse_query(q.as_deref());
        let v = browse_view(&b, Scope::Set(name), &versions, &q)?;
        Ok(html(pages::browse(&v)))
    })
    .await
}

async fn browse_repo(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    blocking(app, move |app| {
        let url = app.opts.repo_url.clone();
        let b = app.browser(&url)?;
        let snaps = b.snapshots();
        let q = parse_query(q.as_deref());
        let v = browse_view(&b, Scope::Repository(url), &snaps.list, &q)?;
        Ok(html(pages::browse(&v)))
    })
    .await
}

// ---- a file's history and diffs -----------------------------------------------------------------

/// Reads a whole file of a version for a diff, if it is small enough.
fn small_content(b: &Browser, node: &Node, shown: &str) -> Result<Option<Vec<u8>>, Failure> {
    match &node.kind {
        NodeKind::File { size, .. } if *size <= DIFF_BYTES_MAX => {
            let c = b.chunks(node, shown)?;
            Ok(Some(b.read_at(&c, 0, *size)?))
        }
        NodeKind::Symlink { target } => Ok(Some(target.clone())),
        _ => Ok(None),
    }
}

fn describe(n: &Node) -> String {
    format!(
        "{} of {}, modified {}",
        n.type_name(),
        bytes(n.size()),
        format_local(n.mtime_ns)
    )
}

/// Two contents side by side: a text diff when both are text, else what differs.
fn compare_bytes(a: Option<&[u8]>, b: Option<&[u8]>, what_a: String, what_b: String) -> Compare {
    match (a, b) {
        (Some(x), Some(y)) if x == y => Compare::Same,
        (Some(x), Some(y)) => match (as_text(x), as_text(y)) {
            (Some(x), Some(y)) => Compare::Text(side_by_side(x, y)),
            _ => Compare::Other(format!("Not text, so no line diff: {what_a}; {what_b}.")),
        },
        _ => Compare::Other(format!(
            "Too big or not a file, so no line diff (up to {} are compared): {what_a}; {what_b}.",
            bytes(DIFF_BYTES_MAX)
        )),
    }
}

fn default_pair(history: &[PathVersion]) -> (Option<SnapshotId>, Option<SnapshotId>) {
    let present: Vec<&PathVersion> = history.iter().filter(|h| h.node.is_some()).collect();
    match present.as_slice() {
        [] => (None, None),
        [one] => (None, Some(one.id)),
        [.., a, b] => (Some(a.id), Some(b.id)),
    }
}

async fn file_page(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    blocking(app, move |app| {
        let ep = open_set(app, &name)?;
        let b = app.browser(&ep.cfg.repo)?;
        let q = parse_query(q.as_deref());
        let path = query_path(&q, "path");
        if path.is_empty() {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                "name a file: ?path=…".into(),
            ));
        }
        let snaps = b.snapshots();
        let all = set_versions(&snaps.list, &name, true);
        let history = path_history(&b, &all, &path)?;
        let in_history = |k: &str| -> Option<SnapshotId> {
            let want = String::from_utf8_lossy(q.get(k)?).to_ascii_lowercase();
            history
                .iter()
                .find(|h| h.node.is_some() && !want.is_empty() && h.id.to_hex().starts_with(&want))
                .map(|h| h.id)
        };
        let (mut a, mut b_id) = default_pair(&history);
        if let Some(x) = in_history("a") {
            a = Some(x);
        }
        if let Some(y) = in_history("b") {
            b_id = Some(y);
            if !q.contains_key("a") {
                // Compare with the change before it.
                let pos = history.iter().position(|h| h.id == y).unwrap_or(0);
                a = history[..pos]
                    .iter()
                    .rev()
                    .find(|h| h.node.is_some())
                    .map(|h| h.id);
            }
        }
        let shown = display_path(&path);
        let node_of = |id: SnapshotId| {
            history
                .iter()
                .find(|h| h.id == id)
                .and_then(|h| h.node.clone())
        };
        let compare = match (a.and_then(node_of), b_id.and_then(node_of)) {
            (Some(na), Some(nb)) => {
                let ca = small_content(&b, &na, &shown)?;
                let cb = small_content(&b, &nb, &shown)?;
                Some(compare_bytes(
                    ca.as_deref(),
                    cb.as_deref(),
                    format!("A is a {}", describe(&na)),
                    format!("B is a {}", describe(&nb)),
                ))
            }
            _ => None,
        };
        let v = pages::FileView {
            set: name,
            repo_url: ep.cfg.repo.clone(),
            path,
            history,
            a,
            b: b_id,
            compare,
            token: app.opts.token.clone(),
            now_ns: now_ns(),
        };
        Ok(html(pages::file(&v)))
    })
    .await
}

// ---- downloads ------------------------------------------------------------------------------------

/// The bytes of a download, fed by a thread reading chunk after chunk.
struct ChunkStream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for ChunkStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

fn attachment(name: &[u8]) -> String {
    let ascii: String = String::from_utf8_lossy(name)
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        super::pct_encode(name).replace('/', "%2F")
    )
}

fn download(
    b: Arc<Browser>,
    versions: &[(SnapshotId, Snapshot)],
    q: &HashMap<String, Vec<u8>>,
) -> Page {
    let i = pick(versions, q, "v").ok_or_else(|| not_found("no such version"))?;
    let (_, s) = &versions[i];
    let path = query_path(q, "path");
    let shown = display_path(&path);
    let node = b
        .find(&s.tree, &path)?
        .ok_or_else(|| not_found(format!("{shown} is not in that version")))?;
    if !matches!(node.kind, NodeKind::File { .. }) {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("{shown} is not a file"),
        ));
    }
    let chunks: FileChunks = b.chunks(&node, &shown)?;
    let size = chunks.size();
    let (tx, rx) = tokio::sync::mpsc::channel(DOWNLOAD_QUEUE_CHUNKS);
    std::thread::spawn(move || {
        for (i, id) in chunks.blobs.iter().enumerate() {
            b.read_ahead(&chunks, if i == 0 { 0 } else { chunks.ends[i - 1] });
            let item = b
                .blob(id)
                .map(|d| Bytes::copy_from_slice(&d))
                .map_err(|e| std::io::Error::other(format!("chunk {i} of {shown}: {e}")));
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    let mut r = Body::from_stream(ChunkStream(rx)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&attachment(&node.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn download_set(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    blocking(app, move |app| {
        let ep = open_set(app, &name)?;
        let b = app.browser(&ep.cfg.repo)?;
        let snaps = b.snapshots();
        let all = set_versions(&snaps.list, &name, true);
        download(b, &all, &parse_query(q.as_deref()))
    })
    .await
}

async fn download_repo(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    blocking(app, move |app| {
        let b = app.browser(&app.opts.repo_url)?;
        let snaps = b.snapshots();
        download(b.clone(), &snaps.list, &parse_query(q.as_deref()))
    })
    .await
}

// ---- conflicts ------------------------------------------------------------------------------------

fn local_content(root: &std::path::Path, rel: &[u8]) -> Option<Vec<u8>> {
    let p = crate::endpoint::apply::local_path(root, rel);
    let md = std::fs::symlink_metadata(&p).ok()?;
    if md.file_type().is_symlink() {
        return std::fs::read_link(&p)
            .ok()
            .map(|t| t.into_os_string().into_vec());
    }
    if !md.is_file() || md.len() > DIFF_BYTES_MAX {
        return None;
    }
    std::fs::read(&p).ok()
}

fn side_summary(s: &Option<crate::endpoint::state::NodeSummary>) -> String {
    match s {
        None => "deleted".into(),
        Some(s) => format!(
            "{} of {}, modified {}",
            s.kind,
            bytes(s.size),
            format_local(s.mtime_ns)
        ),
    }
}

/// The shared version of `path`: in the newest current head of the set.
fn shared_content(b: &Browser, set: &str, path: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
    let heads = crate::repository::heads::list_heads(b.repo(), set)?;
    let Some((_, head)) = heads.last() else {
        return Ok(None);
    };
    let snap = b.repo().load_snapshot(&head.snapshot)?;
    match b.find(&snap.tree, path)? {
        Some(n) => small_content(b, &n, &display_path(path)),
        None => Ok(None),
    }
}

async fn conflicts_page(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    blocking(app, move |app| {
        let ep = open_set(app, &name)?;
        let b = app.browser(&ep.cfg.repo)?;
        let mut items = Vec::new();
        for (path, c) in ep.state.conflicts()? {
            let local = local_content(&ep.cfg.local_path, &path);
            let shared = shared_content(&b, &name, &path)?;
            let compare = compare_bytes(
                local.as_deref(),
                shared.as_deref(),
                format!("here: {}", side_summary(&c.local)),
                format!("shared: {}", side_summary(&c.remote)),
            );
            items.push(pages::ConflictItem {
                kind: c.kind.clone(),
                since_ns: c.detected_ns,
                local: pages::SideInfo {
                    summary: side_summary(&c.local),
                },
                remote: pages::SideInfo {
                    summary: side_summary(&c.remote),
                },
                compare,
                pending: c.resolution.map(|r| r.name().to_string()),
                path,
            });
        }
        let v = pages::ConflictsView {
            set: name,
            endpoint: ep.cfg.endpoint.clone(),
            items,
            token: app.opts.token.clone(),
            now_ns: now_ns(),
        };
        Ok(html(pages::conflicts(&v)))
    })
    .await
}

// ---- actions --------------------------------------------------------------------------------------

/// A form that changes something: it carries the app's token beside the cookie.
trait ActionForm: Send + 'static {
    fn token(&self) -> &str;
}

#[derive(Deserialize)]
struct ResolveForm {
    token: String,
    path: String,
    keep: String,
}

#[derive(Deserialize)]
struct RestoreForm {
    token: String,
    v: String,
    path: String,
    to: String,
}

#[derive(Deserialize)]
struct RunForm {
    token: String,
    what: String,
}

impl ActionForm for ResolveForm {
    fn token(&self) -> &str {
        &self.token
    }
}

impl ActionForm for RestoreForm {
    fn token(&self) -> &str {
        &self.token
    }
}

impl ActionForm for RunForm {
    fn token(&self) -> &str {
        &self.token
    }
}

fn forbidden() -> Failure {
    Failure(
        StatusCode::FORBIDDEN,
        "this form came without the app's token: reload the page and try again".into(),
    )
}

/// What every action on a set checks first, on the blocking pool: the form's token, then that
/// the set exists here; `then` turns the form into the action's result page.
async fn set_action<F: ActionForm>(
    app: Arc<App>,
    name: String,
    form: F,
    then: impl FnOnce(&App, &str, F) -> Page + Send + 'static,
) -> Response {
    blocking(app, move |app| {
        if !form_token_ok(app, form.token()) {
            return Err(forbidden());
        }
        open_set(app, &name)?;
        then(app, &name, form)
    })
    .await
}

/// The value of a form field that must be one of `allowed`, or a 400 that names them.
fn choice<T: Copy>(given: &str, allowed: &[(&str, T)], names: &str) -> Result<T, Failure> {
    allowed
        .iter()
        .find(|(k, _)| *k == given)
        .map(|(_, v)| *v)
        .ok_or_else(|| Failure(StatusCode::BAD_REQUEST, names.to_string()))
}

/// Runs an action, remembers it, and shows its result.
fn act(app: &App, args: Vec<OsString>, back: String, back_label: &str) -> Page {
    let run = actions::run(&app.opts.command, args);
    app.remember(run.clone());
    let status = if run.ok() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, html(pages::action_result(&run, &back, back_label))).into_response())
}

async fn resolve(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Form(f): Form<ResolveForm>,
) -> Response {
    set_action(app, name, f, |app, name, f| {
        let keep = choice(
            &f.keep,
            &[("local", "local"), ("remote", "remote"), ("both", "both")],
            "keep local, remote or both",
        )?;
        let path = pct_decode(&f.path);
        let args = pages::args(&[
            b"resolve",
            name.as_bytes(),
            &path,
            b"--keep",
            keep.as_bytes(),
        ]);
        act(
            app,
            args,
            format!("/sets/{name}/conflicts"),
            "Back to the conflicts",
        )
    })
    .await
}

async fn restore(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Form(f): Form<RestoreForm>,
) -> Response {
    set_action(app, name, f, |app, name, f| {
        let to = choice(
            &f.to,
            &[("in_place", "--in-place"), ("beside", "--beside")],
            "restore in_place or beside",
        )?;
        if SnapshotId::from_hex(&f.v).is_none() {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                "name a version by its id".into(),
            ));
        }
        let path = pct_decode(&f.path);
        let short = &f.v[..8];
        let args = pages::args(&[
            b"restore",
            name.as_bytes(),
            b"--version",
            short.as_bytes(),
            b"--path",
            &path,
            to.as_bytes(),
        ]);
        let back = format!("/sets/{name}/file?path={}", super::pct_encode(&path));
        act(app, args, back, "Back to the file's history")
    })
    .await
}

async fn run_set_command(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Form(f): Form<RunForm>,
) -> Response {
    set_action(app, name, f, |app, name, f| {
        let what = choice(
            &f.what,
            &[("sync", "sync"), ("pause", "pause"), ("resume", "resume")],
            "sync, pause or resume",
        )?;
        act(
            app,
            pages::args(&[what.as_bytes(), name.as_bytes()]),
            "/".into(),
            "Back to the sync sets",
        )
    })
    .await
}

// ---- assets ---------------------------------------------------------------------------------------

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLE,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::SCRIPT,
    )
        .into_response()
}
