//! The client of `prism-sync serve`: `rest:http://host:port/` or `rest:https://host:port/`.
//!
//! The protocol is specified in `format-spec/rest.md`. Authentication is a bearer token: from
//! `--rest-token-file`, else the token stored with the sync set that uses this server (a 0600
//! file beside the set's config, registered with [`remember_token`]), else env
//! `PRISM_SYNC_REST_TOKEN`. A token is never taken from the command line (`ps` would show it)
//! nor put in a URL. Over https the server's certificate is pinned
//! by its SHA-256 fingerprint, given in the URL (`rest:https://host:port/#sha256=<hex>`) or in
//! env `PRISM_SYNC_REST_FINGERPRINT`; without a pin the system's trusted roots apply (a server
//! behind a reverse proxy with a real certificate).
//!
//! Nothing the server sends is trusted further than its shape: bodies are bounded (a ranged read
//! must return exactly the bytes asked for, a listing at most [`LIST_BYTES_MAX`]), names in
//! listings must be valid object names, and every malformed answer is an error, never a panic.
//! The client does not retry; [`super::retry::RetryBackend`] does.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, RANGE};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::limit::{Bandwidth, PacedBody};
use super::{
    BResult, Backend, BackendError, ErrorKind, Kind, Listing, ObjectInfo, listing_tag, object_name,
    rt, valid_object_name,
};
use crate::id::{hex_decode, hex_encode};

/// Env var holding the bearer token.
pub const TOKEN_ENV: &str = "PRISM_SYNC_REST_TOKEN";
/// Env var holding the pinned certificate fingerprint (hex SHA-256 of the DER certificate).
pub const FINGERPRINT_ENV: &str = "PRISM_SYNC_REST_FINGERPRINT";
/// Response header every `prism-sync serve` answer carries (tells "no such object" from "this
/// is not a prism-sync server").
pub const SERVER_HEADER: &str = "prism-sync-rest";

/// Response header of an answer to a waiting listing (`GET /heads/?wait=…`): a server whose
/// answer lacks it does not wait (the client then polls).
pub const WAIT_HEADER: &str = "prism-sync-wait";
/// The longest a client asks the server to hold a waiting listing (well below the response
/// timeout).
pub const WAIT_SECS_MAX: u64 = 30;

/// The largest listing we accept (≈ 2 million packs).
pub const LIST_BYTES_MAX: u64 = 256 << 20;
/// The server's description (`GET /`) is a small JSON object.
const INFO_BYTES_MAX: u64 = 64 << 10;

/// The largest object we read whole (the format's largest pack plus slack).
pub const READ_BYTES_MAX: u64 = (1 << 30) + (64 << 20);
/// Error messages from the server are cut to this length.
const SERVER_MESSAGE_CHARS_MAX: usize = 300;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to the response headers, plus [`UPLOAD_BYTES_PER_SEC_MIN`] for the request body.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const UPLOAD_BYTES_PER_SEC_MIN: u64 = 512 << 10;
/// Longest pause between two pieces of a response body.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle pooled connections are closed before the server would close them (it idles out at
/// 120 s; see `serve`).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

static TOKEN_OVERRIDE: OnceLock<String> = OnceLock::new();

/// Tokens of particular servers (by the URL's base), as stored with the sync sets using them.
static KNOWN_TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Sets the token for every rest backend of this process (the CLI's `--rest-token-file`).
pub fn set_token(token: &str) {
    let _ = TOKEN_OVERRIDE.set(token.to_string());
}

/// Remembers the token of the server `url` names (a sync set's stored token), for every
/// backend of this process that opens that server.
pub fn remember_token(url: &str, token: &str) {
    let Ok(u) = RestUrl::parse(url) else { return };
    let mut known = KNOWN_TOKENS.lock().expect("lock");
    known.retain(|(b, _)| *b != u.base);
    known.push((u.base, token.trim().to_string()));
}

/// The token for the server at `base`: `--rest-token-file`, else a remembered one, else env
/// `PRISM_SYNC_REST_TOKEN`.
fn token_for(base: &str) -> Option<String> {
    let known = || {
        KNOWN_TOKENS
            .lock()
            .expect("lock")
            .iter()
            .find(|(b, _)| b == base)
            .map(|(_, t)| t.clone())
    };
    TOKEN_OVERRIDE
        .get()
        .cloned()
        .or_else(known)
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The token a client of `url` would send: `--rest-token-file`, else a remembered one, else
/// env `PRISM_SYNC_REST_TOKEN`.
pub fn token(url: &str) -> Option<String> {
    RestUrl::parse(url).ok().and_then(|u| token_for(&u.base))
}

/// The URL to record for a server: with the pin from env `PRISM_SYNC_REST_FINGERPRINT` made
/// part of it, so later commands and the daemon need no environment.
pub fn canonical_url(url: &str) -> Result<String, String> {
    Ok(RestUrl::parse(url)?.display())
}

/// A parsed `rest:` URL (without the `rest:` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestUrl {
    /// `http://host:port/base/` — always ends with `/`.
    pub base: String,
    pub https: bool,
    /// SHA-256 of the server's DER certificate.
    pub pin: Option<[u8; 32]>,
}

/// Parses a fingerprint: 64 hex digits, colons allowed (`ab:cd:…` as tools print them).
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let clean: String = s.trim().chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex_decode(&clean.to_ascii_lowercase(), &mut out).then_some(out)
}

impl RestUrl {
    pub fn parse(url: &str) -> Result<RestUrl, String> {
        let u = url.strip_prefix("rest:").unwrap_or(url);
        let (u, fragment) = match u.split_once('#') {
            Some((a, f)) => (a, Some(f)),
            None => (u, None),
        };
        let https = if u.starts_with("https://") {
            true
        } else if u.starts_with("http://") {
            false
        } else {
            return Err(format!(
                "{url}: write rest:http://host:port/ or rest:https://host:port/#sha256=<fingerprint>"
            ));
        };
        let uri: http::Uri = u
            .parse()
            .map_err(|e| format!("{url} is not a valid URL ({e}): write rest:http://host:port/"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{url} names no host: write rest:http://host:port/"));
        }
        if uri.query().is_some() {
            return Err(format!("{url}: a rest URL takes no query (?…)"));
        }
        let mut pin = match fragment {
            None | Some("") => None,
            Some(f) => {
                let hex = f.strip_prefix("sha256=").ok_or_else(|| {
                    format!("{url}: the part after # must be sha256=<certificate fingerprint>")
                })?;
                Some(parse_fingerprint(hex).ok_or_else(|| {
                    format!("{url}: the fingerprint must be 64 hex digits (as `prism-sync serve` prints it)")
                })?)
            }
        };
        if pin.is_none()
            && https
            && let Ok(f) = std::env::var(FINGERPRINT_ENV)
            && !f.trim().is_empty()
        {
            pin = Some(parse_fingerprint(&f).ok_or_else(|| {
                format!("{FINGERPRINT_ENV} must be 64 hex digits (as `prism-sync serve` prints it)")
            })?);
        }
        if pin.is_some() && !https {
            return Err(format!(
                "{url}: a certificate fingerprint needs https: write rest:https://…"
            ));
        }
        let mut base = u.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(RestUrl { base, https, pin })
    }

    /// The URL as the user writes it (with the pin, without any token).
    pub fn display(&self) -> String {
        match &self.pin {
            Some(p) => format!("rest:{}#sha256={}", self.base, hex_encode(p)),
            None => format!("rest:{}", self.base),
        }
    }
}

/// Accepts exactly the certificate whose SHA-256 is pinned (self-signed certificates of
/// `serve`); names and expiry do not matter, the pin is the identity.
#[derive(Debug)]
struct PinnedCert {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if got.as_ref() == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has fingerprint sha256={}, not the pinned {}",
                hex_encode(got.as_ref()),
                hex_encode(&self.sha256)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, PacedBody>;

pub struct RestBackend {
    url: RestUrl,
    client: HttpsClient,
    token: Option<String>,
    bandwidth: RwLock<Bandwidth>,
}

fn tls_config(pin: Option<[u8; 32]>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    Ok(match pin {
        Some(sha256) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert { sha256, provider }))
            .with_no_client_auth(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    })
}

/// A failed exchange, classified.
struct RestErr {
    kind: ErrorKind,
    message: String,
}

impl RestErr {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RestErr {
            kind,
            message: message.into(),
        }
    }
}

/// Finds a TLS error in an error's source chain (pin mismatch, unknown issuer, not TLS at all).
/// `io::Error::source()` skips the error it wraps, so wrapped errors are looked into.
fn tls_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    fn direct(err: &(dyn std::error::Error + 'static)) -> Option<String> {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            return direct(inner);
        }
        None
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = direct(err) {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// True if the server answered something that is not HTTP (a TLS server spoken to in plain
/// HTTP, or another protocol on that port): retrying cannot help.
fn not_http(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_parse()
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// A short, printable version of what a server said.
fn server_message(body: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SERVER_MESSAGE_CHARS_MAX)
        .collect();
    s.trim().to_string()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl RestBackend {
    /// A client of the server a `rest:` URL names, with its token (see [`token`]); no request
    /// is made yet.
    pub fn open(url: &str) -> Result<RestBackend, String> {
        Self::with_token(url, token(url))
    }

    /// [`RestBackend::open`] with an explicit token.
    pub fn with_token(url: &str, token: Option<String>) -> Result<RestBackend, String> {
        let url = RestUrl::parse(url)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let tls = tls_config(url.pin)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(RestBackend {
            url,
            client,
            token,
            bandwidth: RwLock::new(Bandwidth::default()),
        })
    }

    fn path(&self, kind: Kind, name: &str) -> BResult<String> {
        if kind == Kind::Config {
            return Ok("config".into());
        }
        if !valid_object_name(name) {
            return Err(BackendError::new(
                ErrorKind::Other,
                object_name(kind, name),
                "invalid object name",
            ));
        }
        Ok(format!("{}/{}", kind.dir(), name))
    }

    /// One request; reads at most `limit` body bytes.
    fn exchange(
        &self,
        what: &str,
        method: Method,
        path: &str,
        range: Option<(u64, u64)>,
        body: Option<Bytes>,
        limit: u64,
    ) -> BResult<Answer> {
        let uri = format!("{}{}", self.url.base, path);
        let mut req = Request::builder().method(method.clone()).uri(&uri);
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some((offset, length)) = range {
            req = req.header(RANGE, format!("bytes={}-{}", offset, offset + length - 1));
        }
        let body_len = body.as_ref().map_or(0, |b| b.len() as u64);
        if body.is_some() {
            req = req.header(CONTENT_LENGTH, body_len);
        }
        let bw = self.bandwidth.read().expect("bandwidth").clone();
        let req = req
            .body(PacedBody::new(body.unwrap_or_default(), bw.upload.clone()))
            .map_err(|e| BackendError::new(ErrorKind::Other, what, format!("bad request: {e}")))?;
        let client = self.client.clone();
        // The body may take long at a low upload limit: allow for it.
        let upload_rate = bw
            .upload
            .as_ref()
            .map_or(UPLOAD_BYTES_PER_SEC_MIN, |l| {
                (l.kib_per_sec() * 1024).min(UPLOAD_BYTES_PER_SEC_MIN)
            })
            .max(1);
        let timeout = RESPONSE_TIMEOUT + Duration::from_secs(body_len / upload_rate);
        let download = bw.download;
        let head = method == Method::HEAD;
        let location = self.url.display();
        let r = rt::block_on(what, async move {
            let resp = match tokio::time::timeout(timeout, client.request(req)).await {
                Err(_) => {
                    return Err(RestErr::new(
                        ErrorKind::Transient,
                        format!("{location}: no answer within {} s", timeout.as_secs()),
                    ));
                }
                Ok(Err(e)) => {
                    if let Some(t) = tls_error(&e) {
                        return Err(RestErr::new(
                            ErrorKind::Other,
                            format!(
                                "{location}: TLS failed: {t} (pin the certificate `prism-sync serve` printed: rest:https://host:port/#sha256=<fingerprint>)"
                            ),
                        ));
                    }
                    if not_http(&e) {
                        return Err(RestErr::new(
                            ErrorKind::Other,
                            format!(
                                "{location}: the server does not answer plain HTTP ({}): if `prism-sync serve` runs with --tls, use the rest:https://…#sha256=… URL it printed",
                                chain(&e)
                            ),
                        ));
                    }
                    return Err(RestErr::new(
                        ErrorKind::Transient,
                        format!(
                            "{location}: {} (is `prism-sync serve` running there?)",
                            chain(&e)
                        ),
                    ));
                }
                Ok(Ok(r)) => r,
            };
            let (parts, mut incoming) = resp.into_parts();
            let announced = parts
                .headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            // Error answers only need their first words.
            let limit = if parts.status.is_success() {
                limit
            } else {
                4096
            };
            if parts.status.is_success() && announced.is_some_and(|n| n > limit) && !head {
                return Err(RestErr::new(
                    ErrorKind::Other,
                    format!(
                        "{location}: the server announced {} bytes, more than the {limit} expected",
                        announced.unwrap_or(0)
                    ),
                ));
            }
            let mut body = Vec::with_capacity(announced.unwrap_or(0).min(limit) as usize);
            if !head {
                loop {
                    let frame =
                        match tokio::time::timeout(BODY_IDLE_TIMEOUT, incoming.frame()).await {
                            Err(_) => {
                                return Err(RestErr::new(
                                    ErrorKind::Transient,
                                    format!(
                                        "{location}: the answer stalled for {} s",
                                        BODY_IDLE_TIMEOUT.as_secs()
                                    ),
                                ));
                            }
                            Ok(None) => break,
                            Ok(Some(Err(e))) => {
                                return Err(RestErr::new(
                                    ErrorKind::Transient,
                                    format!("{location}: reading the answer failed: {}", chain(&e)),
                                ));
                            }
                            Ok(Some(Ok(f))) => f,
                        };
                    if let Ok(data) = frame.into_data() {
                        if let Some(l) = &download {
                            l.pace(data.len()).await;
                        }
                        if body.len() as u64 + data.len() as u64 > limit {
                            if !parts.status.is_success() {
                                break;
                            }
                            return Err(RestErr::new(
                                ErrorKind::Other,
                                format!(
                                    "{location}: the answer is longer than the {limit} bytes expected"
                                ),
                            ));
                        }
                        body.extend_from_slice(&data);
                    }
                }
            }
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })?;
        r.map_err(|e| BackendError::new(e.kind, what, e.message))
    }

    /// Maps a non-success answer to an error.
    fn fail(&self, what: &str, a: &Answer) -> BackendError {
        let ours = a.headers.contains_key(SERVER_HEADER);
        let said = server_message(&a.body);
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        };
        let loc = self.url.display();
        let (kind, msg) = match a.status.as_u16() {
            404 if ours => (ErrorKind::NotFound, "not found".to_string()),
            404 => (
                ErrorKind::Other,
                format!(
                    "{loc} answered 404 without the prism-sync header: is this the URL `prism-sync serve` printed?"
                ),
            ),
            409 => (ErrorKind::AlreadyExists, "already exists".to_string()),
            401 => (
                ErrorKind::Other,
                format!(
                    "{loc} refused the token{said}: pass --rest-token-file with the server's token file (or set {TOKEN_ENV})"
                ),
            ),
            403 => (ErrorKind::Other, format!("{loc} refused{said}")),
            413 => (
                ErrorKind::Other,
                format!("{loc}: too large for the server{said}"),
            ),
            429 | 502 | 503 | 504 => (
                ErrorKind::Transient,
                format!(
                    "{loc} is busy or restarting (HTTP {}){said}",
                    a.status.as_u16()
                ),
            ),
            s => (ErrorKind::Other, format!("{loc} answered HTTP {s}{said}")),
        };
        BackendError::new(kind, what, msg)
    }

    /// The entries of a listing answer (names checked, sorted, unique).
    fn parse_listing(what: &str, body: &[u8]) -> BResult<Vec<ObjectInfo>> {
        let entries: Vec<ListEntry> = serde_json::from_slice(body).map_err(|e| {
            BackendError::new(
                ErrorKind::Other,
                what,
                format!("the server sent a malformed listing: {e}"),
            )
        })?;
        let mut out: Vec<ObjectInfo> = entries
            .into_iter()
            .filter(|e| valid_object_name(&e.name))
            .map(|e| ObjectInfo {
                name: e.name,
                size: e.size,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    fn content_length(a: &Answer) -> Option<u64> {
        a.headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }
}

#[derive(serde::Deserialize)]
struct ListEntry {
    name: String,
    size: u64,
}

impl Backend for RestBackend {
    fn location(&self) -> String {
        self.url.display()
    }

    fn prepare(&self) -> BResult<()> {
        let what = self.location();
        let a = self.exchange(
            &what,
            Method::POST,
            "?create=true",
            None,
            Some(Bytes::new()),
            0,
        )?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(self.fail(&what, &a))
        }
    }

    /// The server's description (`GET /`, see `format-spec/rest.md`) says whether it is
    /// append-only.
    fn append_only(&self) -> BResult<bool> {
        let what = self.location();
        let a = self.exchange(&what, Method::GET, "", None, None, INFO_BYTES_MAX)?;
        if !a.status.is_success() {
            return Err(self.fail(&what, &a));
        }
        let v: serde_json::Value = serde_json::from_slice(&a.body).map_err(|e| {
            BackendError::new(
                ErrorKind::Other,
                what.clone(),
                format!("the server's description is not JSON: {e}"),
            )
        })?;
        Ok(v["append_only"].as_bool().unwrap_or(false))
    }

    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
        let path = self.path(kind, name)?;
        let what = object_name(kind, name);
        let a = self.exchange(
            &what,
            Method::POST,
            &path,
            None,
            Some(Bytes::copy_from_slice(data)),
            0,
        )?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(self.fail(&what, &a))
        }
    }

    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
        let path = self.path(kind, name)?;
        let what = object_name(kind, name);
        let a = self.exchange(&what, Method::GET, &path, None, None, READ_BYTES_MAX)?;
        if a.status != StatusCode::OK {
            return Err(self.fail(&what, &a));
        }
        if Self::content_length(&a).is_some_and(|n| n != a.body.len() as u64) {
            return Err(BackendError::new(
                ErrorKind::Transient,
                what,
                "the answer was cut short",
            ));
        }
        Ok(a.body)
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        let path = self.path(kind, name)?;
        let what = object_name(kind, name);
        let short = |what: String| {
            BackendError::new(
                ErrorKind::Other,
                what,
                format!("shorter than {} bytes", offset.saturating_add(length)),
            )
        };
        if offset.checked_add(length).is_none() {
            return Err(short(what));
        }
        if length == 0 {
            let a = self.exchange(&what, Method::HEAD, &path, None, None, 0)?;
            if a.status != StatusCode::OK {
                return Err(self.fail(&what, &a));
            }
            return match Self::content_length(&a) {
                Some(size) if size >= offset => Ok(Vec::new()),
                Some(_) => Err(short(what)),
                None => Err(BackendError::new(
                    ErrorKind::Other,
                    what,
                    "the server's answer has no Content-Length",
                )),
            };
        }
        let a = self.exchange(
            &what,
            Method::GET,
            &path,
            Some((offset, length)),
            None,
            length,
        )?;
        match a.status {
            StatusCode::PARTIAL_CONTENT if a.body.len() as u64 == length => Ok(a.body),
            StatusCode::PARTIAL_CONTENT => Err(short(what)),
            StatusCode::RANGE_NOT_SATISFIABLE => Err(short(what)),
            StatusCode::OK => Err(BackendError::new(
                ErrorKind::Other,
                what,
                "the server ignored the byte range (is this `prism-sync serve`?)",
            )),
            _ => Err(self.fail(&what, &a)),
        }
    }

    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        let what = format!("the {} list", kind.noun());
        if kind == Kind::Config {
            let a = self.exchange(&what, Method::HEAD, "config", None, None, 0)?;
            return match a.status {
                StatusCode::OK => Ok(vec![ObjectInfo {
                    name: "config".into(),
                    size: Self::content_length(&a).unwrap_or(0),
                }]),
                _ => match self.fail(&what, &a) {
                    e if e.is_not_found() => Ok(vec![]),
                    e => Err(e),
                },
            };
        }
        let a = self.exchange(
            &what,
            Method::GET,
            &format!("{}/", kind.dir()),
            None,
            None,
            LIST_BYTES_MAX,
        )?;
        if a.status != StatusCode::OK {
            return Err(self.fail(&what, &a));
        }
        Self::parse_listing(&what, &a.body)
    }

    /// `GET /snapshots/?wait=0&known=TAG`: the server compares the tags and answers `304 Not
    /// Modified` (no names) when they match; a server that does not compare (no wait header)
    /// answers the plain listing, compared here.
    fn list_unless(&self, kind: Kind, known: &str) -> BResult<Option<Listing>> {
        if !matches!(kind, Kind::Snapshot | Kind::Head)
            || known.is_empty()
            || !known.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let names: Vec<String> = self.list(kind)?.into_iter().map(|o| o.name).collect();
            let tag = listing_tag(&names);
            return Ok((tag != known).then_some(Listing { names, tag }));
        }
        let what = format!("the {} list", kind.noun());
        let path = format!("{}/?wait=0&known={known}", kind.dir());
        let a = self.exchange(&what, Method::GET, &path, None, None, LIST_BYTES_MAX)?;
        match a.status {
            StatusCode::NOT_MODIFIED if a.headers.contains_key(WAIT_HEADER) => Ok(None),
            StatusCode::OK => {
                let names: Vec<String> = Self::parse_listing(&what, &a.body)?
                    .into_iter()
                    .map(|e| e.name)
                    .collect();
                let tag = listing_tag(&names);
                Ok((tag != known).then_some(Listing { names, tag }))
            }
            _ => Err(self.fail(&what, &a)),
        }
    }

    /// `GET /heads/?wait=SECS&known=TAG`: the server answers when the heads differ from `known`,
    /// or with `304 Not Modified` after SECS (see `format-spec/rest.md`).
    fn watch_list(
        &self,
        kind: Kind,
        known: &str,
        timeout: Duration,
    ) -> Option<BResult<Option<Listing>>> {
        if kind != Kind::Head || !known.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let secs = timeout.as_secs().clamp(1, WAIT_SECS_MAX);
        let what = format!("the {} list", kind.noun());
        let path = format!("{}/?wait={secs}&known={known}", kind.dir());
        let a = match self.exchange(&what, Method::GET, &path, None, None, LIST_BYTES_MAX) {
            Ok(a) => a,
            Err(e) => return Some(Err(e)),
        };
        if !a.headers.contains_key(WAIT_HEADER) {
            // A server that does not wait answered a plain listing (or an error): poll instead.
            return None;
        }
        Some(match a.status {
            StatusCode::NOT_MODIFIED => Ok(None),
            StatusCode::OK => Self::parse_listing(&what, &a.body).map(|entries| {
                let names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
                let tag = listing_tag(&names);
                Some(Listing { names, tag })
            }),
            _ => Err(self.fail(&what, &a)),
        })
    }

    fn parallelism(&self) -> usize {
        super::connections()
    }

    fn set_bandwidth(&self, limits: Bandwidth) {
        *self.bandwidth.write().expect("bandwidth") = limits;
    }

    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        let path = self.path(kind, name)?;
        let what = object_name(kind, name);
        let a = self.exchange(&what, Method::DELETE, &path, None, None, 0)?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(self.fail(&what, &a))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = RestUrl::parse("rest:http://127.0.0.1:8000").unwrap();
        assert_eq!(u.base, "http://127.0.0.1:8000/");
        assert!(!u.https && u.pin.is_none());
        let fp = "ab".repeat(32);
        let u = RestUrl::parse(&format!("rest:https://ws-1:8443/repo#sha256={fp}")).unwrap();
        assert_eq!(u.base, "https://ws-1:8443/repo/");
        assert_eq!(u.pin, Some([0xab; 32]));
        assert_eq!(
            u.display(),
            format!("rest:https://ws-1:8443/repo/#sha256={fp}")
        );
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            RestUrl::parse(&format!("rest:https://h:1/#sha256={colons}"))
                .unwrap()
                .pin,
            Some([0xab; 32])
        );
        for bad in [
            "rest:ftp://h/",
            "rest:http://",
            "rest:https://h:1/#sha256=abc",
            "rest:https://h:1/#md5=00",
            "rest:http://h:1/?x=1",
            &format!("rest:http://h:1/#sha256={fp}"),
        ] {
            assert!(RestUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_messages_are_cut_and_cleaned() {
        let long = "x".repeat(1000) + "\u{1b}[31m";
        let m = server_message(long.as_bytes());
        assert_eq!(m.chars().count(), SERVER_MESSAGE_CHARS_MAX);
        assert!(
            !server_message(b"a\x1b[2Jb\nc")
                .chars()
                .any(char::is_control)
        );
    }
}
