//! Helpers for the remote-repository tests: finding or starting the S3 server (moto),
//! starting tests' own moto instances, `prism-sync serve` child processes, and a restartable
//! TCP proxy that can also strip conditional-write headers (a server that "accepts and ignores"
//! them).
//!
//! Servers are real processes on 127.0.0.1; nothing here mocks the AWS SDK. A missing server is a
//! test failure with instructions, never a silent skip.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prism_sync::backend::aws::Overrides;
use prism_sync::backend::{BResult, Backend, DynBackend, Kind, ObjectInfo, S3Backend};
use prism_sync::format::config::Capabilities;

pub const BIN: &str = env!("CARGO_BIN_EXE_prism-sync");

/// The binary these machines run: [`BIN`], or `PRISM_TEST_BIN` when set — a copy of a build,
/// so a long soak keeps running one binary while the tree is rebuilt, or another branch's.
pub fn bin() -> String {
    std::env::var("PRISM_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}
pub const S3_ENV: &str = "PRISM_TEST_S3_ENDPOINT";
pub const MOTO_ENV: &str = "PRISM_TEST_MOTO_SERVER";
pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "testtesttest";

/// The S3 endpoint: `PRISM_TEST_S3_ENDPOINT` when set (`.ci/run` starts one moto for every test
/// binary), else a moto server this test process starts once on a free port and that ends with
/// it (so a fresh clone's `cargo test --locked` needs nothing started by hand).
pub fn s3_endpoint() -> String {
    if let Ok(e) = std::env::var(S3_ENV)
        && !e.trim().is_empty()
    {
        return e.trim().trim_end_matches('/').to_string();
    }
    static SHARED: std::sync::OnceLock<(String, Mutex<Child>)> = std::sync::OnceLock::new();
    SHARED.get_or_init(start_shared_moto).0.clone()
}

/// moto's version the tests are written against (as `.ci/run` installs it).
pub const MOTO_VERSION: &str = "5.2.5";

/// The `moto_server` to run: `PRISM_TEST_MOTO_SERVER`, else the one in the cache venv
/// (`~/.cache/prism-sync/moto-venv`), created with `python3 -m venv` and pip the first time —
/// one test process at a time (a lock file beside it), the others wait and reuse it.
pub fn moto_server_bin() -> PathBuf {
    if let Ok(b) = std::env::var(MOTO_ENV)
        && !b.trim().is_empty()
    {
        return PathBuf::from(b);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let cache = Path::new(&home).join(".cache/prism-sync");
    std::fs::create_dir_all(&cache).expect("create ~/.cache/prism-sync");
    let venv = cache.join("moto-venv");
    let bin = venv.join("bin/moto_server");
    let lock = std::fs::File::create(cache.join("moto-venv.lock")).expect("moto-venv.lock");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("lock moto-venv");
    let installed = || {
        Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('moto'))",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == MOTO_VERSION)
    };
    if !(bin.is_file() && installed()) {
        let _ = std::fs::remove_dir_all(&venv);
        let run = |c: &mut Command, what: &str| {
            let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                o.status.success(),
                "{what} failed (the S3 tests need moto; install python3 and python3-venv, or set {S3_ENV}):\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv ~/.cache/prism-sync/moto-venv",
        );
        run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("moto[server]=={MOTO_VERSION}"),
            ]),
            "pip install moto[server]",
        );
    }
    drop(lock);
    bin
}

/// Starts moto for this test process: a shell watches the process and stops moto when it ends
/// (a static's destructor never runs).
fn start_shared_moto() -> (String, Mutex<Child>) {
    let bin = moto_server_bin();
    let port = free_port();
    let watcher = Command::new("sh")
        .args([
            "-c",
            r#""$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 & m=$!; trap 'kill $m 2>/dev/null' EXIT; while kill -0 "$2" 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done"#,
        ])
        .arg(&bin)
        .arg(port.to_string())
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} ({e})", bin.display()));
    wait_for_port(port, "moto_server", Duration::from_secs(120));
    (format!("http://127.0.0.1:{port}"), Mutex::new(watcher))
}

pub fn overrides(endpoint: &str) -> Overrides {
    Overrides {
        endpoint_url: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A bucket name no other test uses.
pub fn unique_bucket(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let r = prism_sync::id::hex_encode(&prism_sync::crypto::random_bytes::<4>());
    format!("prism-{tag}-{}-{n}-{r}", std::process::id())
}

/// An S3 backend on a fresh bucket, prepared, with the capabilities its probe proves in use
/// (as after `repo init`), wrapped in the retry layer like `repository::open_backend` does.
pub fn s3_backend(endpoint: &str, tag: &str) -> DynBackend {
    let url = format!("s3://{}/repo", unique_bucket(tag));
    let b = S3Backend::open_with(&url, overrides(endpoint))
        .unwrap()
        .with_multipart(8 << 20, 5 << 20);
    let b: DynBackend = Arc::new(prism_sync::backend::RetryBackend::new(
        Arc::new(b),
        Default::default(),
    ));
    b.prepare().unwrap();
    let caps = b.probe_capabilities().unwrap();
    assert!(
        caps.has(Capabilities::CREATE_ONLY),
        "moto proves If-None-Match; got {caps:?}"
    );
    b.use_capabilities(caps);
    b
}

/// Environment for a `prism-sync` child talking to S3 at `endpoint`.
pub fn s3_env(cmd: &mut Command, endpoint: &str) {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, max: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < max,
            "{what} did not listen on 127.0.0.1:{port} within {max:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- a test's own moto ---------------------------------------------------------------------

/// A moto server of the test's own (for tests that stop and start servers).
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = moto_server_bin();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): set {MOTO_ENV} to moto's moto_server",
                    bin.display()
                )
            });
        wait_for_port(port, "moto_server", Duration::from_secs(60));
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- a restartable TCP proxy ---------------------------------------------------------------

/// Forwards 127.0.0.1:`port` to `target`. `stop` drops the listener and every connection (as a
/// server going down does); `start` listens again on the same port. With `strip_conditional`,
/// `If-None-Match` and `If-Match` request headers are removed: the server then behaves like one
/// that accepts and ignores them. `rate` limits bytes per second towards the server.
pub struct Proxy {
    pub port: u16,
    target: SocketAddr,
    strip_conditional: bool,
    bytes_per_sec: Option<u64>,
    running: Mutex<Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn new(target_port: u16, strip_conditional: bool, bytes_per_sec: Option<u64>) -> Proxy {
        let p = Proxy {
            port: free_port(),
            target: SocketAddr::from(([127, 0, 0, 1], target_port)),
            strip_conditional,
            bytes_per_sec,
            running: Mutex::new(None),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        p.start();
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(&self) {
        let mut running = self.running.lock().unwrap();
        if running.is_some() {
            return;
        }
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, conns, target, strip, rate) = (
            stop.clone(),
            self.conns.clone(),
            self.target,
            self.strip_conditional,
            self.bytes_per_sec,
        );
        let h = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        {
                            let mut c = conns.lock().unwrap();
                            c.push(client.try_clone().unwrap());
                            c.push(server.try_clone().unwrap());
                        }
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        std::thread::spawn(move || {
                            if strip {
                                forward_stripping(client, server, rate)
                            } else {
                                copy_limited(client, server, rate)
                            }
                        });
                        std::thread::spawn(move || copy_limited(s2, c2, None));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        *running = Some((stop, h));
    }

    pub fn stop(&self) {
        if let Some((stop, h)) = self.running.lock().unwrap().take() {
            stop.store(true, Ordering::SeqCst);
            let _ = h.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn copy_limited(mut from: TcpStream, mut to: TcpStream, bytes_per_sec: Option<u64>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(r) = bytes_per_sec {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / r as f64));
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Client → server, request by request, without conditional headers.
fn forward_stripping(client: TcpStream, mut server: TcpStream, rate: Option<u64>) {
    let mut r = BufReader::new(client);
    loop {
        let mut head = Vec::new();
        let mut len = 0u64;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = server.shutdown(Shutdown::Write);
                    return;
                }
                Ok(_) => {}
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("if-none-match:") || lower.starts_with("if-match:") {
                continue;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            let end = line == "\r\n";
            head.extend_from_slice(line.as_bytes());
            if end {
                break;
            }
        }
        if server.write_all(&head).is_err() {
            return;
        }
        if chunked {
            let mut rest = r;
            let _ = std::io::copy(&mut rest, &mut server);
            return;
        }
        let mut body = (&mut r).take(len);
        if std::io::copy(&mut body, &mut server).is_err() {
            return;
        }
        if let Some(rate) = rate {
            std::thread::sleep(Duration::from_secs_f64(len as f64 / rate as f64));
        }
    }
}

// ---- prism-sync serve ------------------------------------------------------------------------

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A `prism-sync serve` child process.
pub struct Serve {
    child: Option<Child>,
    pub home: PathBuf,
    pub root: PathBuf,
    pub token_file: PathBuf,
    pub port: u16,
    pub tls: bool,
    pub append_only: bool,
    /// `rest:…` URL the server printed.
    pub url: String,
    pub fingerprint: Option<String>,
    /// With `--log-requests`: the file its log goes to.
    pub log: Option<PathBuf>,
    /// More arguments for `serve` (e.g. `--max-connections`).
    pub extra: Vec<String>,
}

impl Serve {
    /// Starts a server over `root` (its state in `dir/serve-home`).
    pub fn start(dir: &Path, root: &Path, tls: bool, append_only: bool) -> Serve {
        Self::start_with(dir, root, tls, append_only, &[])
    }

    /// [`Serve::start`] with more arguments for `serve`.
    pub fn start_with(
        dir: &Path,
        root: &Path,
        tls: bool,
        append_only: bool,
        extra: &[&str],
    ) -> Serve {
        let home = dir.join("serve-home");
        std::fs::create_dir_all(&home).unwrap();
        let token_file = dir.join("serve-token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let mut s = Serve {
            child: None,
            home,
            root: root.to_path_buf(),
            token_file,
            port: 0,
            tls,
            append_only,
            url: String::new(),
            fingerprint: None,
            log: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.launch();
        s
    }

    /// [`Serve::start`] with `--log-requests` into `dir/serve.log` (see [`Serve::requests`]).
    pub fn start_logged(dir: &Path, root: &Path, tls: bool) -> Serve {
        let home = dir.join("serve-home");
        std::fs::create_dir_all(&home).unwrap();
        let token_file = dir.join("serve-token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let mut s = Serve {
            child: None,
            home,
            root: root.to_path_buf(),
            token_file,
            port: 0,
            tls,
            append_only: false,
            url: String::new(),
            fingerprint: None,
            log: Some(dir.join("serve.log")),
            extra: Vec::new(),
        };
        s.launch();
        s
    }

    /// Lines of the request log so far (`<ms> <peer> <METHOD> <path> <status> …`, and
    /// `<ms> <peer> CONNECT tls|plain` per connection).
    pub fn log_lines(&self) -> Vec<String> {
        // The server logs right after answering: give the last line a moment.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.as_ref().expect("started with start_logged");
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Requests answered so far: (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.log_lines()
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() >= 5 && f[2] != "CONNECT").then(|| (f[2].to_string(), f[3].to_string()))
            })
            .collect()
    }

    /// Connections accepted so far (TLS handshakes, with `tls`).
    pub fn connections(&self) -> usize {
        self.log_lines()
            .iter()
            .filter(|l| l.split(' ').nth(2) == Some("CONNECT"))
            .count()
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--json", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--repo")
            .arg(&self.root)
            .arg("--token-file")
            .arg(&self.token_file)
            .env("PRISM_HOME", &self.home)
            .env("HOME", &self.home)
            .env_remove("PRISM_SYNC_REST_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if self.tls {
            cmd.arg("--tls");
        }
        if self.append_only {
            cmd.arg("--append-only");
        }
        if let Some(log) = &self.log {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            cmd.arg("--log-requests").stderr(f);
        }
        cmd.args(&self.extra);
        let mut child = cmd.spawn().expect("spawn prism-sync serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut text = String::new();
        let v: serde_json::Value = loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let status = child.wait();
                panic!("prism-sync serve exited before printing its URL ({status:?}): {text}");
            }
            text.push_str(&line);
            if let Ok(v) = serde_json::from_str(&text) {
                break v;
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        self.url = v["url"].as_str().unwrap().to_string();
        self.fingerprint = v["fingerprint"].as_str().map(str::to_string);
        let listen: SocketAddr = v["listen"].as_str().unwrap().parse().unwrap();
        self.port = listen.port();
        self.child = Some(child);
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: the server vanishes mid-request, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port, with the same token and (kept) certificate.
    pub fn restart(&mut self) {
        self.kill();
        let (url, fp) = (self.url.clone(), self.fingerprint.clone());
        self.launch();
        assert_eq!(self.url, url, "the URL survives a restart");
        assert_eq!(self.fingerprint, fp, "the certificate survives a restart");
    }

    pub fn backend(self) -> DynBackend {
        let b =
            prism_sync::backend::RestBackend::with_token(&self.url, Some(TOKEN.into())).unwrap();
        Arc::new(WithServer {
            inner: Arc::new(prism_sync::backend::RetryBackend::new(
                Arc::new(b),
                Default::default(),
            )),
            _server: Arc::new(Mutex::new(self)),
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A backend that keeps its server process alive as long as it lives.
pub struct WithServer {
    pub inner: DynBackend,
    pub _server: Arc<Mutex<Serve>>,
}

impl Backend for WithServer {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn prepare(&self) -> BResult<()> {
        self.inner.prepare()
    }
    fn create(&self, kind: Kind, name: &str, data: &[u8]) -> BResult<()> {
        self.inner.create(kind, name, data)
    }
    fn read(&self, kind: Kind, name: &str) -> BResult<Vec<u8>> {
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> BResult<Vec<u8>> {
        self.inner.read_range(kind, name, offset, length)
    }
    fn list(&self, kind: Kind) -> BResult<Vec<ObjectInfo>> {
        self.inner.list(kind)
    }
    fn delete(&self, kind: Kind, name: &str) -> BResult<()> {
        self.inner.delete(kind, name)
    }
}

/// A rest backend on a fresh, prepared repository directory under `dir`.
pub fn rest_backend(dir: &Path, tls: bool) -> DynBackend {
    let root = dir.join(if tls { "rest-tls-repo" } else { "rest-repo" });
    let b = Serve::start(
        &dir.join(if tls { "tls" } else { "plain" }),
        &root,
        tls,
        false,
    )
    .backend();
    b.prepare().unwrap();
    b
}

// ---- running the CLI -------------------------------------------------------------------------

/// Output of one run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self, what: &str) -> Run {
        assert_eq!(
            self.code, 0,
            "{what} failed (exit {}):\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// One machine's environment for the binary: its own home, and how it reaches the repository.
#[derive(Clone)]
pub struct Machine {
    pub home: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl Machine {
    pub fn new(home: PathBuf) -> Machine {
        std::fs::create_dir_all(&home).unwrap();
        Machine { home, vars: vec![] }
    }

    pub fn with_s3(mut self, endpoint: &str) -> Machine {
        for (k, v) in [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            self.vars.push((k.into(), v.into()));
        }
        self
    }

    pub fn with_token(mut self) -> Machine {
        self.vars
            .push(("PRISM_SYNC_REST_TOKEN".into(), TOKEN.into()));
        self
    }

    pub fn var(mut self, k: &str, v: &str) -> Machine {
        self.vars.push((k.into(), v.into()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        for v in [
            "PRISM_HOME",
            "PRISM_SYNC_REPO",
            "PRISM_SYNC_PASSWORD",
            "PRISM_SYNC_PASSWORD_FILE",
            "PRISM_SYNC_REST_TOKEN",
            "PRISM_SYNC_REST_FINGERPRINT",
            "PRISM_SYNC_KEY",
            "AWS_PROFILE",
        ] {
            c.env_remove(v);
        }
        c.env("PRISM_HOME", &self.home)
            .env("HOME", &self.home)
            .env("NO_COLOR", "1")
            // Toy KDF parameters for password key files (tests only).
            .env("PRISM_SYNC_INSECURE_TEST_KDF", "1")
            .stdin(Stdio::null())
            .args(args);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let o = self.command(args).output().expect("run prism-sync");
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn ok(&self, args: &[&str]) -> Run {
        self.run(args).ok(&format!("prism-sync {}", args.join(" ")))
    }

    /// Joins `laptop`'s set as workspace `endpoint`, syncing `folder`, with the key from the
    /// join command that `add-instance --json` prints on the laptop.
    pub fn join_set(&self, laptop: &Machine, set: &str, endpoint: &str, folder: &Path, repo: &str) {
        let dir = folder.to_str().unwrap();
        let out = laptop
            .ok(&["add-instance", set, endpoint, "--json", "--dir", dir])
            .stdout;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let join = v["join"].as_str().unwrap();
        assert!(
            join.contains("--repo") && join.contains("--key-file"),
            "{join}"
        );
        assert!(
            !join.contains("PRISM_SYNC_KEY"),
            "no key in the command: {join}"
        );
        // The workspace's own key file, where add-instance wrote it (one machine here).
        let key_file = v["key_file"]
            .as_str()
            .expect("add-instance names the key file");
        self.ok(&[
            "join",
            set,
            dir,
            "--repo",
            repo,
            "--endpoint",
            endpoint,
            "--key-file",
            key_file,
        ]);
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Relative path → BLAKE3 of the content, for every file below `root`.
pub fn digest(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(
                    rel,
                    blake3::hash(&std::fs::read(&p).unwrap())
                        .to_hex()
                        .to_string(),
                );
            }
        }
    }
    out
}
