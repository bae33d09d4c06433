//! `prism-sync serve` against clients without the token, token holders that misbehave, and a
//! served directory someone planted symlinks in. Each test reproduces one weakness of earlier
//! versions (see `format-spec/rest.md`, "Limits and hostile clients").
//!
//! Most tests run the real `serve` binary; the ones that need short deadlines or a small memory
//! budget run the library's server in-process with those [`Limits`].

mod servers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prism_sync::backend::{Backend, FsBackend, Kind, RestBackend};
use prism_sync::serve::{Limits, ServeOptions};
use servers::*;

fn hex(i: u8) -> String {
    prism_sync::id::hex_encode(&[i; 32])
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends `request` and reads until the server closes the connection (or 20 s pass): the whole
/// answer, whether the server closed, and how long that took.
fn until_closed(port: u16, request: &[u8]) -> (String, bool, Duration) {
    let mut s = connect(port);
    let t0 = Instant::now();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let closed = s.read_to_end(&mut buf).is_ok();
    (
        String::from_utf8_lossy(&buf).into_owned(),
        closed,
        t0.elapsed(),
    )
}

/// Status code of a one-shot request.
fn status(port: u16, request: &str) -> u16 {
    let mut s = connect(port);
    s.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The library's server in this process, with `limits`; returns its port.
fn in_process(root: &Path, limits: Limits) -> u16 {
    let server = prism_sync::serve::bind(ServeOptions {
        root: root.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        token: TOKEN.into(),
        tls: None,
        append_only: false,
        limits,
        events: None,
    })
    .unwrap();
    let port = server.local_addr().port();
    std::thread::spawn(move || server.run());
    port
}

#[test]
fn a_401_closes_the_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start(tmp.path(), &tmp.path().join("served"), false, false);
    let (answer, closed, took) = until_closed(
        server.port,
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-token-wrong-token\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        closed && took < Duration::from_secs(5),
        "closed {closed} after {took:?}"
    );
}

#[test]
fn clients_without_the_token_cannot_starve_clients_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start_with(
        tmp.path(),
        &tmp.path().join("served"),
        false,
        false,
        &["--max-connections", "8"],
    );
    let b = RestBackend::with_token(&server.url, Some(TOKEN.into())).unwrap();
    b.prepare().unwrap();
    // Every connection slot taken by a client that says nothing.
    let silent: Vec<TcpStream> = (0..8).map(|_| connect(server.port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let mut s = connect(server.port);
    s.write_all(
        format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the token holder waited {:?} behind silent clients",
        t0.elapsed()
    );
    drop(silent);
}

#[test]
fn a_connection_that_never_shows_the_token_is_closed_early() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits {
        pre_auth_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let port = in_process(&tmp.path().join("served"), limits);
    let mut s = connect(port);
    let t0 = Instant::now();
    let mut buf = Vec::new();
    assert!(s.read_to_end(&mut buf).is_ok(), "closed, not timed out");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn only_the_exact_names_of_the_repository_layout_are_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("served");
    let server = Serve::start(tmp.path(), &root, false, false);
    RestBackend::with_token(&server.url, Some(TOKEN.into()))
        .unwrap()
        .prepare()
        .unwrap();
    let auth = format!("Authorization: Bearer {TOKEN}");
    for path in [
        "/keys/ZZ_not_hex".to_string(),
        format!("/keys/{}", hex(0xab).to_uppercase()),
        format!("/data/{}", &hex(1)[..62]),
        format!("/data/zz{}", &hex(1)[2..]),
        format!("/snapshots/{}-x", hex(1)),
        "/heads/ab-cd".to_string(),
        format!("/sessions/{}", hex(1) + "00"),
    ] {
        let code = status(
            server.port,
            &format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 1\r\n\r\nz"),
        );
        assert_eq!(code, 400, "{path}");
    }
    // Nothing was stored, and data/ holds exactly the 256 shard directories.
    for kind in ["keys", "snapshots", "heads", "sessions"] {
        assert_eq!(
            std::fs::read_dir(root.join(kind)).unwrap().count(),
            0,
            "{kind}"
        );
    }
    assert_eq!(std::fs::read_dir(root.join("data")).unwrap().count(), 256);
    let ok = status(
        server.port,
        &format!(
            "POST /keys/{} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 1\r\n\r\nz",
            hex(7)
        ),
    );
    assert_eq!(ok, 200);
}

#[test]
fn symlinks_in_the_served_directory_are_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("served");
    let server = Serve::start(tmp.path(), &root, false, false);
    let b = RestBackend::with_token(&server.url, Some(TOKEN.into())).unwrap();
    b.prepare().unwrap();
    let secret = tmp.path().join("hostname-like-secret");
    std::fs::write(&secret, b"do-not-serve-me\n").unwrap();
    std::os::unix::fs::symlink(&secret, root.join("keys").join(hex(9))).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join(hex(0x12)), b"do-not-serve-me\n").unwrap();
    std::fs::remove_dir(root.join("data/12")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("data/12")).unwrap();
    let auth = format!("Authorization: Bearer {TOKEN}");
    for path in [format!("/keys/{}", hex(9)), format!("/data/{}", hex(0x12))] {
        let (answer, _, _) = until_closed(
            server.port,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(!answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(!answer.contains("do-not-serve-me"), "{path}: {answer}");
        let code = status(
            server.port,
            &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n"),
        );
        assert_ne!(code, 200, "{path}");
    }
    assert!(b.list(Kind::Key).unwrap().is_empty());
    assert!(b.list(Kind::Pack).unwrap().is_empty());
    // Nor is anything written through the symlinked shard.
    assert!(b.create(Kind::Pack, &hex(0x12), b"x").is_err());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn downloads_are_streamed_not_buffered_whole() {
    const OBJECT_BYTES: u64 = 192 << 20;
    const READERS: usize = 3;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("served");
    let server = Serve::start(tmp.path(), &root, false, false);
    RestBackend::with_token(&server.url, Some(TOKEN.into()))
        .unwrap()
        .prepare()
        .unwrap();
    // A large pack put in place directly (sparse: cheap to make, real bytes to send).
    let fs = FsBackend::new(&root);
    fs.create(Kind::Pack, &hex(0x42), b"head").unwrap();
    let path = root.join("data/42").join(hex(0x42));
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    std::fs::set_permissions(&path, perm).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(OBJECT_BYTES)
        .unwrap();
    let before = peak_rss(server.pid());
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let port = server.port;
            std::thread::spawn(move || {
                let mut s = connect(port);
                s.write_all(
                    format!(
                        "GET /data/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n",
                        hex(0x42)
                    )
                    .as_bytes(),
                )
                .unwrap();
                let mut n = 0u64;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    match s.read(&mut buf).unwrap() {
                        0 => break,
                        k => n += k as u64,
                    }
                }
                n
            })
        })
        .collect();
    for r in readers {
        let n = r.join().unwrap();
        assert!(
            n > OBJECT_BYTES,
            "the whole object arrived ({n} bytes with headers)"
        );
    }
    let grew = peak_rss(server.pid()).saturating_sub(before);
    assert!(
        grew < 64 << 20,
        "serving {READERS} downloads of {} MiB grew the server by {} MiB",
        OBJECT_BYTES >> 20,
        grew >> 20
    );
}

#[test]
fn a_trickling_upload_cannot_hold_the_upload_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("served");
    let limits = Limits {
        buffered_bytes_max: 4 << 20,
        body_grace: Duration::from_secs(1),
        body_bytes_per_sec_min: 4 << 20,
        ..Limits::default()
    };
    let port = in_process(&root, limits);
    let url = format!("rest:http://127.0.0.1:{port}/");
    let b = RestBackend::with_token(&url, Some(TOKEN.into())).unwrap();
    b.prepare().unwrap();
    // A token holder announces the whole budget and then sends a byte now and then.
    let mut slow = connect(port);
    slow.write_all(
        format!(
            "POST /data/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
            hex(1),
            4 << 20
        )
        .as_bytes(),
    )
    .unwrap();
    let trickle = std::thread::spawn(move || {
        let mut answer = Vec::new();
        for _ in 0..40 {
            if slow.write_all(b"z").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = slow.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    b.create(Kind::Pack, &hex(2), &vec![7u8; 1 << 20]).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "the upload waited {:?} for the trickler's budget",
        t0.elapsed()
    );
    let answer = trickle.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        b.read(Kind::Pack, &hex(1)).is_err(),
        "the trickled object was not stored"
    );
}

/// Starts `serve` on `listen` and returns its first JSON answer and its stderr so far.
fn serve_json(dir: &Path, listen: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--json", "--listen", listen, "--repo"])
        .arg(dir.join("served"))
        .args(extra)
        .env("PRISM_HOME", dir.join("home"))
        .env_remove("PRISM_SYNC_REST_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let v = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "serve exited: {text}"
        );
        text.push_str(&line);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            break v;
        }
    };
    let _ = child.kill();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let _ = child.wait();
    (v, err)
}

#[test]
fn tls_is_the_default_on_a_network_address_and_the_token_is_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let (v, _) = serve_json(tmp.path(), "0.0.0.0:0", &[]);
    assert!(
        v["url"].as_str().unwrap().starts_with("rest:https://"),
        "{v}"
    );
    assert_eq!(v["tls"], true, "{v}");
    assert!(
        v["fingerprint"].as_str().is_some_and(|f| f.len() == 64),
        "{v}"
    );
    let token = std::fs::read_to_string(tmp.path().join("home/sync/serve/token")).unwrap();
    assert!(
        !v.to_string().contains(token.trim()),
        "the token was printed: {v}"
    );
    assert!(
        v["token_file"].as_str().unwrap().ends_with("serve/token"),
        "{v}"
    );
    // Opting out is possible, and loud.
    let (v, err) = serve_json(tmp.path(), "0.0.0.0:0", &["--insecure-http"]);
    assert!(
        v["url"].as_str().unwrap().starts_with("rest:http://"),
        "{v}"
    );
    assert!(err.contains("INSECURE"), "{err}");
    // Loopback stays plain HTTP unless --tls.
    let (v, err) = serve_json(tmp.path(), "127.0.0.1:0", &[]);
    assert!(
        v["url"].as_str().unwrap().starts_with("rest:http://"),
        "{v}"
    );
    assert!(!err.contains("INSECURE"), "{err}");
}
