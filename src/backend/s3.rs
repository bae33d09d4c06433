//! A repository in an S3 bucket (AWS or any S3-compatible server): `s3://bucket/prefix`.
//!
//! Objects live at `<prefix>/<Kind::path(name)>`, the same relative paths as in a directory
//! (`data/ab/abcd…`, `snapshots/…`, `config`), so a repository can be copied between a directory
//! and a bucket with any sync tool.
//!
//! Configuration comes from the usual AWS environment (aws-config): credentials from
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, the instance role, …; the region
//! from `AWS_REGION` (us-east-1 if none is set); a custom endpoint from `AWS_ENDPOINT_URL` (or
//! `AWS_ENDPOINT_URL_S3`). With a custom endpoint, requests use path-style addressing (most
//! S3-compatible servers need it; `PRISM_SYNC_S3_PATH_STYLE=0|1` overrides) and checksums are
//! only sent where S3 requires them (`AWS_REQUEST_CHECKSUM_CALCULATION` /
//! `AWS_RESPONSE_CHECKSUM_VALIDATION` override): several S3-compatible servers reject the SDK's
//! default CRC trailers.
//!
//! Create-only: S3 has no atomic create unless the server honours `If-None-Match: *`. Some
//! servers accept the header and ignore it, so `repo init` probes ([`S3Backend::probe`]) and the
//! config records what was proven. Until [`Backend::use_capabilities`] says CREATE_ONLY was
//! proven, `create` is HEAD-then-PUT: correct without concurrency, but two writers racing for
//! one name can both "win" (harmless for content-addressed objects; see
//! `format-spec/media.md`).
//!
//! The SDK's own retries are off: [`super::retry::RetryBackend`] is the one retry layer (it knows
//! how to handle a conditional create whose answer was lost). Errors are classified here:
//! connection failures, timeouts, 5xx, throttling and 409 `ConditionalRequestConflict` are
//! transient.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::limit::{Bandwidth, Limiter};
use super::{
    BResult, Backend, BackendError, ErrorKind, Kind, ObjectInfo, object_name, rt, valid_object_name,
};
use crate::format::config::Capabilities;
use crate::id::hex_encode;

/// Objects larger than this are uploaded in parts. Default packs (16 MiB) go in one PUT: one
/// request instead of three or more; S3 takes single PUTs up to 5 GiB.
pub const MULTIPART_THRESHOLD_BYTES: usize = 32 << 20;
/// Size of each part but the last (S3's minimum is 5 MiB).
pub const MULTIPART_PART_BYTES: usize = 8 << 20;
/// Parts in flight at once for one object.
const MULTIPART_PARALLEL_MAX: usize = 4;
/// Keys per listing page we ask for (S3's maximum).
const LIST_PAGE_KEYS: i32 = 1000;
/// An object we read whole must be below this (the format's largest pack plus slack).
const READ_BYTES_MAX: u64 = (1 << 30) + (64 << 20);

/// `s3://bucket/prefix` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
}

impl S3Url {
    pub fn parse(url: &str) -> Result<S3Url, String> {
        let rest = url
            .strip_prefix("s3://")
            .or_else(|| url.strip_prefix("s3:"))
            .ok_or_else(|| format!("{url} is not an s3:// URL: write s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && !bucket.starts_with(['.', '-'])
            && !bucket.ends_with(['.', '-']);
        if !bucket_ok {
            return Err(format!(
                "{url}: {bucket:?} is not a valid bucket name (3-63 of a-z 0-9 . -): write s3://bucket/prefix"
            ));
        }
        let prefix = prefix.trim_matches('/');
        let segments_ok = prefix.is_empty()
            || prefix.split('/').all(|s| {
                !s.is_empty()
                    && s != "."
                    && s != ".."
                    && s.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'=')
                    })
            });
        if !segments_ok {
            return Err(format!(
                "{url}: the prefix {prefix:?} may only hold path segments of letters, digits and - _ . + ="
            ));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

pub struct S3Backend {
    client: Client,
    url: S3Url,
    region: String,
    /// Capability bits the repository config says were proven; 0 until told.
    caps: AtomicU32,
    multipart_threshold_bytes: usize,
    multipart_part_bytes: usize,
    bandwidth: RwLock<Bandwidth>,
}

/// An S3 error reduced to what callers branch on.
struct S3Err {
    status: Option<u16>,
    code: Option<String>,
    kind: ErrorKind,
    message: String,
}

fn classify<E>(e: SdkError<E, HttpResponse>) -> S3Err
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e
        .as_service_error()
        .and_then(|s| s.code())
        .map(str::to_string);
    let detail = DisplayErrorContext(&e).to_string();
    let kind = match &e {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorKind::Transient,
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() || d.is_other() => {
            ErrorKind::Transient
        }
        SdkError::ServiceError(_) => match (status, code.as_deref()) {
            (Some(404), _) | (_, Some("NoSuchKey" | "NotFound" | "NoSuchBucket")) => {
                ErrorKind::NotFound
            }
            (Some(409), Some("ConditionalRequestConflict")) => ErrorKind::Transient,
            (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout"))
            | (_, Some("InternalError" | "ServiceUnavailable" | "RequestTimeTooSkewed")) => {
                ErrorKind::Transient
            }
            (Some(s), _) if s == 429 || s >= 500 => ErrorKind::Transient,
            _ => ErrorKind::Other,
        },
        _ => ErrorKind::Other,
    };
    let hint = match (status, code.as_deref()) {
        (_, Some("NoSuchBucket")) => {
            " (the bucket does not exist: create it, or run `prism-sync repo init` which creates it)"
        }
        (Some(403), _)
        | (_, Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch")) => {
            " (access denied: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and the bucket policy)"
        }
        _ if detail.contains("credentials") || detail.contains("Credentials") => {
            " (no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        }
        _ if kind == ErrorKind::Transient && status.is_none() => {
            " (is the S3 endpoint reachable? check AWS_ENDPOINT_URL and the network)"
        }
        _ => "",
    };
    S3Err {
        status,
        code,
        kind,
        message: format!("S3: {detail}{hint}"),
    }
}

impl S3Err {
    fn into_backend(self, object: impl Into<String>) -> BackendError {
        BackendError::new(self.kind, object, self.message)
    }
    fn precondition_failed(&self) -> bool {
        self.status == Some(412) || self.code.as_deref() == Some("PreconditionFailed")
    }
}

/// How a create is made conditional.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Condition {
    None,
    IfNoneMatch,
}

fn env_flag(name: &str) -> Option<bool> {
    match std::env::var(name).ok()?.trim() {
        "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

async fn make_client(o: super::aws::Overrides) -> (Client, String) {
    use aws_sdk_s3::config::Region;
    let sdk = super::aws::sdk_config_with(&o).await;
    let mut b = aws_sdk_s3::config::Builder::from(&sdk);
    let region = match sdk.region() {
        Some(r) => r.to_string(),
        None => {
            b = b.region(Region::new("us-east-1"));
            "us-east-1".to_string()
        }
    };
    let custom_endpoint = o.endpoint_url.is_some()
        || sdk.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    b = b.force_path_style(env_flag("PRISM_SYNC_S3_PATH_STYLE").unwrap_or(custom_endpoint));
    (Client::from_conf(b.build()), region)
}

impl S3Backend {
    /// Connects to the bucket an `s3://` URL names (no request is made yet).
    pub fn open(url: &str) -> Result<S3Backend, String> {
        Self::open_with(url, super::aws::Overrides::default())
    }

    /// [`S3Backend::open`] with settings that take precedence over the environment.
    pub fn open_with(url: &str, o: super::aws::Overrides) -> Result<S3Backend, String> {
        let parsed = S3Url::parse(url)?;
        let (client, region) = rt::block_on(url, make_client(o)).map_err(|e| e.message)?;
        Ok(S3Backend {
            client,
            url: parsed,
            region,
            caps: AtomicU32::new(0),
            multipart_threshold_bytes: MULTIPART_THRESHOLD_BYTES,
            multipart_part_bytes: MULTIPART_PART_BYTES,
            bandwidth: RwLock::new(Bandwidth::default()),
        })
    }

    /// Changes when and how objects are uploaded in parts (tests use small values).
    pub fn with_multipart(mut self, threshold_bytes: usize, part_bytes: usize) -> Self {
        self.multipart_threshold_bytes = threshold_bytes.max(1);
        self.multipart_part_bytes = part_bytes.max(5 << 20);
        self
    }

    fn key(&self, kind: Kind, name: &str) -> BResult<String> {
        if kind != Kind::Config && !valid_object_name(name) {
            return Err(BackendError::new(
                ErrorKind::Other,
                object_name(kind, name),
                "invalid object name",
            ));
        }
        Ok(format!("{}{}", self.url.prefix, kind.path(name)))
    }

    fn create_only_proven(&self) -> bool {
        Capabilities(self.caps.load(Ordering::Relaxed)).has(Capabilities::CREATE_ONLY)
    }

    /// Size of an object, or None if it does not exist.
    async fn head(client: Client, bucket: String, key: String) -> Result<Option<u64>, S3Err> {
        match client.head_object().bucket(bucket).key(key).send().await {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => {
                let e = classify(e);
                if e.kind == ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn put(
        client: Client,
        bucket: String,
        key: String,
        data: Bytes,
        cond: Condition,
        threshold: usize,
        part: usize,
    ) -> Result<(), S3Err> {
        if data.len() > threshold {
            return Self::put_multipart(client, bucket, key, data, cond, part).await;
        }
        let mut req = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data));
        if cond == Condition::IfNoneMatch {
            req = req.if_none_match("*");
        }
        req.send().await.map(|_| ()).map_err(classify)
    }

    async fn put_multipart(
        client: Client,
        bucket: String,
        key: String,
        data: Bytes,
        cond: Condition,
        part: usize,
    ) -> Result<(), S3Err> {
        let created = client
            .create_multipart_upload()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .map_err(classify)?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(S3Err {
                status: None,
                code: None,
                kind: ErrorKind::Other,
                message: "S3: CreateMultipartUpload answered without an upload id".into(),
            });
        };
        let result = async {
            let chunks: Vec<(i32, Bytes)> = (0..data.len().div_ceil(part))
                .map(|i| {
                    let end = ((i + 1) * part).min(data.len());
                    (i as i32 + 1, data.slice(i * part..end))
                })
                .collect();
            let mut parts = Vec::with_capacity(chunks.len());
            for batch in chunks.chunks(MULTIPART_PARALLEL_MAX) {
                let mut set = tokio::task::JoinSet::new();
                for (n, body) in batch.iter().cloned() {
                    let req = client
                        .upload_part()
                        .bucket(&bucket)
                        .key(&key)
                        .upload_id(&upload_id)
                        .part_number(n)
                        .content_length(body.len() as i64)
                        .body(ByteStream::from(body));
                    set.spawn(async move { (n, req.send().await) });
                }
                while let Some(joined) = set.join_next().await {
                    let (n, r) = joined.map_err(|e| S3Err {
                        status: None,
                        code: None,
                        kind: ErrorKind::Other,
                        message: format!("S3: a part upload task failed: {e}"),
                    })?;
                    let out = r.map_err(classify)?;
                    parts.push(
                        CompletedPart::builder()
                            .part_number(n)
                            .set_e_tag(out.e_tag().map(str::to_string))
                            .build(),
                    );
                }
            }
            parts.sort_by_key(|p| p.part_number());
            let mut req = client
                .complete_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                );
            if cond == Condition::IfNoneMatch {
                req = req.if_none_match("*");
            }
            req.send().await.map(|_| ()).map_err(classify)
        }
        .await;
        if result.is_err() {
            // Leave no half upload behind (they cost storage until a lifecycle rule removes
            // them); a failure here changes nothing about the answer.
            let _ = client
                .abort_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    fn download_limit(&self) -> Option<std::sync::Arc<Limiter>> {
        self.bandwidth.read().expect("bandwidth").download.clone()
    }

    async fn get(
        client: Client,
        bucket: String,
        key: String,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, S3Err> {
        Self::get_paced(client, bucket, key, range, None).await
    }

    /// A GET whose answer is read at most as fast as `limit` allows.
    async fn get_paced(
        client: Client,
        bucket: String,
        key: String,
        range: Option<(u64, u64)>,
        pace: Option<std::sync::Arc<Limiter>>,
    ) -> Result<Vec<u8>, S3Err> {
        let mut req = client.get_object().bucket(bucket).key(key);
        if let Some((offset, length)) = range {
            req = req.range(format!("bytes={}-{}", offset, offset + length - 1));
        }
        let out = req.send().await.map_err(classify)?;
        let announced = out.content_length().unwrap_or(0).max(0) as u64;
        let limit = range.map(|r| r.1).unwrap_or(READ_BYTES_MAX);
        if announced > limit {
            return Err(S3Err {
                status: None,
                code: None,
                kind: ErrorKind::Other,
                message: format!("S3 announced {announced} bytes, more than the {limit} expected"),
            });
        }
        let mut stream = out.body;
        let mut body = Vec::with_capacity(announced as usize);
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| S3Err {
                status: None,
                code: None,
                kind: ErrorKind::Transient,
                message: format!("S3: reading the answer failed: {e}"),
            })?;
            if body.len() as u64 + piece.len() as u64 > limit {
                return Err(S3Err {
                    status: None,
                    code: None,
                    kind: ErrorKind::Other,
                    message: format!("S3 sent more than the {limit} bytes expected"),
                });
            }
            if let Some(l) = &pace {
                l.pace(piece.len()).await;
            }
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }

    async fn list_keys(
        client: Client,
        bucket: String,
        prefix: String,
    ) -> Result<Vec<(String, u64)>, S3Err> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(&bucket)
                .prefix(&prefix)
                .max_keys(LIST_PAGE_KEYS)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(classify)?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((k.to_string(), o.size().unwrap_or(0).max(0) as u64));
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) && !t.is_empty() => {
                    token = Some(t.to_string())
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Tries the conditional writes on a scratch object and returns what the server really
    /// enforces: CREATE_ONLY if a second `If-None-Match: *` PUT is refused with 412 and left the
    /// object unchanged, COMPARE_AND_SWAP if `If-Match` with a wrong ETag is refused and with
    /// the right one succeeds. A server that ignores the headers proves nothing.
    pub fn probe(&self) -> BResult<Capabilities> {
        let key = format!(
            "{}.probe-{}",
            self.url.prefix,
            hex_encode(&crate::crypto::random_bytes::<8>())
        );
        let (client, bucket) = (self.client.clone(), self.url.bucket.clone());
        let what = self.location();
        let r = rt::block_on(&what, async move {
            let put = |body: &'static [u8], if_none: bool, if_match: Option<String>| {
                let mut req = client
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .body(ByteStream::from_static(body));
                if if_none {
                    req = req.if_none_match("*");
                }
                if let Some(m) = if_match {
                    req = req.if_match(m);
                }
                req.send()
            };
            let read =
                || async { Self::get(client.clone(), bucket.clone(), key.clone(), None).await };
            let mut caps = 0u32;
            // 1. A fresh name: the conditional create must succeed.
            match put(b"probe 1", true, None).await.map_err(classify) {
                Ok(_) => {
                    // 2. Again: must be refused, and leave the object as it was.
                    let second = put(b"probe 2", true, None).await.map_err(classify);
                    let refused = match second {
                        Err(e) if e.kind == ErrorKind::Transient => return Err(e),
                        Err(e) => e.precondition_failed(),
                        Ok(_) => false,
                    };
                    if refused && read().await?.as_slice() == b"probe 1" {
                        caps |= Capabilities::CREATE_ONLY;
                    }
                }
                Err(e) if e.kind == ErrorKind::Transient => return Err(e),
                Err(_) => {} // the server refuses the header: no capability
            }
            // 3. Compare-and-swap with a wrong ETag must be refused …
            let wrong = "\"00000000000000000000000000000000\"".to_string();
            match put(b"probe 3", false, Some(wrong)).await.map_err(classify) {
                Err(e) if e.precondition_failed() => {
                    // … and with the right one succeed.
                    let etag = client
                        .head_object()
                        .bucket(&bucket)
                        .key(&key)
                        .send()
                        .await
                        .map_err(classify)?
                        .e_tag()
                        .map(str::to_string);
                    if let Some(etag) = etag
                        && put(b"probe 4", false, Some(etag)).await.is_ok()
                        && read().await?.as_slice() == b"probe 4"
                    {
                        caps |= Capabilities::COMPARE_AND_SWAP;
                    }
                }
                Err(e) if e.kind == ErrorKind::Transient => return Err(e),
                _ => {}
            }
            let _ = client
                .delete_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await;
            Ok(Capabilities(caps))
        })?;
        r.map_err(|e| e.into_backend(format!("the conditional-write probe of {what}")))
    }

    async fn ensure_bucket(client: Client, bucket: String, region: String) -> Result<(), S3Err> {
        match client.head_bucket().bucket(&bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = classify(e);
                if e.status != Some(404) && e.kind != ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        let mut req = client.create_bucket().bucket(&bucket);
        if region != "us-east-1" {
            use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        match req.send().await.map_err(classify) {
            Ok(_) => Ok(()),
            // Someone (maybe our own lost attempt) created it meanwhile.
            Err(e) if matches!(e.code.as_deref(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        format!(
            "s3://{}/{}",
            self.url.bucket,
            self.url.prefix.trim_end_matches('/')
        )
        .trim_end_matches('/')
        .to_string()
    }

    /// Creates the bucket if it does not exist, and refuses a prefix that already holds objects.
    fn prepare(&self) -> BResult<()> {
        let (c, b, p) = (
            self.client.clone(),
            self.url.bucket.clone(),
            self.url.prefix.clone(),
        );
        let region = self.region.clone();
        let what = self.location();
        rt::block_on(&what, async move {
            Self::ensure_bucket(c.clone(), b.clone(), region).await?;
            let page = c
                .list_objects_v2()
                .bucket(&b)
                .prefix(&p)
                .max_keys(2)
                .send()
                .await
                .map_err(classify)?;
            // A leftover probe object is not data.
            let occupied = page
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .any(|k| !k[p.len().min(k.len())..].starts_with(".probe-"));
            Ok(occupied)
        })?
        .map_err(|e: S3Err| e.into_backend(what.clone()))
        .and_then(|occupied| {
            if occupied {
                Err(BackendError::new(
                    ErrorKind::AlreadyExists,
                    what,
                    "the prefix holds objects but no repository: choose an empty bucket or prefix",
                ))
            } else {
                Ok(())
            }
        })
    }

    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
        let key = self.key(kind, name)?;
        let what = object_name(kind, name);
        let (c, b) = (self.client.clone(), self.url.bucket.clone());
        let body = Bytes::copy_from_slice(data);
        let (threshold, part) = (self.multipart_threshold_bytes, self.multipart_part_bytes);
        let proven = self.create_only_proven();
        let upload = self.bandwidth.read().expect("bandwidth").upload.clone();
        let r: Result<bool, S3Err> = rt::block_on(&what, async move {
            if let Some(l) = &upload {
                // The SDK signs and sends the body whole: pace the object as one piece.
                l.pace(body.len()).await;
            }
            if !proven
                && Self::head(c.clone(), b.clone(), key.clone())
                    .await?
                    .is_some()
            {
                return Ok(false);
            }
            let cond = if proven {
                Condition::IfNoneMatch
            } else {
                Condition::None
            };
            match Self::put(c, b, key, body, cond, threshold, part).await {
                Ok(()) => Ok(true),
                Err(e) if proven && e.precondition_failed() => Ok(false),
                Err(e) => Err(e),
            }
        })?;
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(BackendError::new(
                ErrorKind::AlreadyExists,
                what,
                "already exists",
            )),
            Err(e) => Err(e.into_backend(what)),
        }
    }

    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
        let key = self.key(kind, name)?;
        let what = object_name(kind, name);
        let (c, b) = (self.client.clone(), self.url.bucket.clone());
        let pace = self.download_limit();
        rt::block_on(&what, Self::get_paced(c, b, key, None, pace))?
            .map_err(|e| e.into_backend(what))
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        let key = self.key(kind, name)?;
        let what = object_name(kind, name);
        let (c, b) = (self.client.clone(), self.url.bucket.clone());
        let short = |what: String| {
            BackendError::new(
                ErrorKind::Other,
                what,
                format!("shorter than {} bytes", offset.saturating_add(length)),
            )
        };
        if length == 0 {
            // No byte range can say "nothing"; check existence and size instead.
            return match rt::block_on(&what, Self::head(c, b, key))? {
                Ok(Some(size)) if size >= offset => Ok(Vec::new()),
                Ok(Some(_)) => Err(short(what)),
                Ok(None) => Err(BackendError::not_found(what)),
                Err(e) => Err(e.into_backend(what)),
            };
        }
        if offset.checked_add(length).is_none() {
            return Err(short(what));
        }
        let pace = self.download_limit();
        match rt::block_on(
            &what,
            Self::get_paced(c, b, key, Some((offset, length)), pace),
        )? {
            Ok(v) if v.len() as u64 == length => Ok(v),
            Ok(_) => Err(short(what)),
            Err(e) if e.status == Some(416) => Err(short(what)),
            Err(e) => Err(e.into_backend(what)),
        }
    }

    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        let (c, b) = (self.client.clone(), self.url.bucket.clone());
        let what = format!("the {} list", kind.noun());
        if kind == Kind::Config {
            let key = self.key(kind, "")?;
            return match rt::block_on(&what, Self::head(c, b, key))? {
                Ok(Some(size)) => Ok(vec![ObjectInfo {
                    name: "config".into(),
                    size,
                }]),
                Ok(None) => Ok(vec![]),
                Err(e) => Err(e.into_backend(what)),
            };
        }
        let prefix = format!("{}{}/", self.url.prefix, kind.dir());
        let keys = rt::block_on(&what, Self::list_keys(c, b, prefix.clone()))?
            .map_err(|e| e.into_backend(what))?;
        let mut out: Vec<ObjectInfo> = keys
            .into_iter()
            .filter_map(|(k, size)| {
                let rel = k.strip_prefix(&prefix)?;
                let name = if kind == Kind::Pack {
                    let (sub, name) = rel.split_once('/')?;
                    (name.len() >= 2 && sub == &name[..2]).then_some(name)?
                } else {
                    rel
                };
                valid_object_name(name).then(|| ObjectInfo {
                    name: name.to_string(),
                    size,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// HEAD then DELETE: S3 answers 204 whether or not the key existed, and the contract
    /// wants `NotFound` for a missing object.
    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        let key = self.key(kind, name)?;
        let what = object_name(kind, name);
        let (c, b) = (self.client.clone(), self.url.bucket.clone());
        let r: Result<bool, S3Err> = rt::block_on(&what, async move {
            if Self::head(c.clone(), b.clone(), key.clone())
                .await?
                .is_none()
            {
                return Ok(false);
            }
            c.delete_object()
                .bucket(b)
                .key(key)
                .send()
                .await
                .map_err(classify)?;
            Ok(true)
        })?;
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(BackendError::not_found(what)),
            Err(e) => Err(e.into_backend(what)),
        }
    }

    fn parallelism(&self) -> usize {
        super::connections()
    }

    fn set_bandwidth(&self, limits: Bandwidth) {
        *self.bandwidth.write().expect("bandwidth") = limits;
    }

    fn probe_capabilities(&self) -> BResult<Capabilities> {
        self.probe()
    }

    fn use_capabilities(&self, caps: Capabilities) {
        self.caps.store(caps.0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_bucket_and_prefix() {
        let u = S3Url::parse("s3://my-bucket/research/repo/").unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.prefix, "research/repo/");
        assert_eq!(S3Url::parse("s3://bkt").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3://bkt/").unwrap().prefix, "");
        for bad in [
            "s3://",
            "s3://UPPER/x",
            "s3://ab/x",
            "s3://bkt/a/../b",
            "s3://bkt/a//b",
            "s3://bkt/a b",
            "file:///x",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }
}
