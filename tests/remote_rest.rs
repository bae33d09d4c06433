//! `prism-sync serve` and the rest backend as real processes on 127.0.0.1: every repository
//! command through plain HTTP and TLS, authentication, certificate pinning, append-only mode,
//! the server's limits (spoken to in raw HTTP), and a hostile server that must not crash the
//! client.

mod servers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use prism_sync::backend::{Backend, ErrorKind, Kind, RestBackend};
use servers::*;

fn name(i: u8) -> String {
    prism_sync::id::hex_encode(&[i; 32])
}

/// Sends raw bytes to the server and returns the status code and the whole answer.
fn raw_http(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut rest = String::new();
    let mut line = String::new();
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        rest.push_str(&line);
        if line == "\r\n" {
            break;
        }
        line.clear();
    }
    (code, format!("{status}{rest}"))
}

fn repository_cycle(tls: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Serve::start(tmp.path(), &tmp.path().join("served"), tls, false);
    let url = server.url.clone();
    assert_eq!(url.contains("#sha256="), tls, "{url}");
    let m = Machine::new(tmp.path().join("laptop")).with_token();
    let src = tmp.path().join("src");
    write(&src.join("notes.md"), b"through serve\n");
    write(&src.join("data/a.bin"), &bytes(7, 2 << 20));
    let out = m
        .ok(&["repo", "init", "--repo", &url, "--pack-size", "1"])
        .stdout;
    assert!(out.contains("✅ Repository created at rest:"), "{out}");
    // The server stores plain repository files; the key never went there.
    assert!(server.root.join("config").is_file());
    assert!(!server.home.join("sync/keys").exists());
    let first = m
        .ok(&["backup", "--repo", &url, "-q", src.to_str().unwrap()])
        .stdout;
    write(&src.join("notes.md"), b"changed\n");
    m.ok(&["backup", "--repo", &url, src.to_str().unwrap()]);
    assert_eq!(
        m.ok(&["dump", "--repo", &url, "latest", "notes.md"]).stdout,
        "changed\n"
    );
    m.ok(&["diff", "--repo", &url, first.trim(), "latest"]);
    m.ok(&["ls", "--repo", &url, "latest"]);
    let target = tmp.path().join("restored");
    m.ok(&[
        "restore",
        "--repo",
        &url,
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(digest(&target), digest(&src));
    // A restarted server (same port, token and certificate) serves on.
    server.restart();
    m.ok(&["check", "--repo", &url, "--read-data"]);
    m.ok(&["forget", "--repo", &url, "--keep-last", "1", "--prune"]);
    m.ok(&["check", "--repo", &url, "--read-data"]);
    m.ok(&["stats", "--repo", &url]);
    // The directory is a normal repository: the server's machine opens it directly.
    let local = Machine::new(tmp.path().join("laptop"));
    local.ok(&["check", "--repo", server.root.to_str().unwrap()]);
}

#[test]
fn every_repository_command_works_through_serve_over_http() {
    repository_cycle(false);
}

#[test]
fn every_repository_command_works_through_serve_over_tls() {
    repository_cycle(true);
}

#[test]
fn no_token_or_a_wrong_token_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start(tmp.path(), &tmp.path().join("served"), false, false);
    let url = server.url.clone();
    let none = Machine::new(tmp.path().join("h1"));
    let r = none.run(&["repo", "init", "--repo", &url]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("PRISM_SYNC_REST_TOKEN"), "{}", r.stderr);
    let wrong =
        Machine::new(tmp.path().join("h2")).var("PRISM_SYNC_REST_TOKEN", "not-the-token-at-all");
    let r = wrong.run(&["snapshots", "--repo", &url]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("refused the token"), "{}", r.stderr);
    // --rest-token-file works as well as the variable (the token itself is never an argument).
    let flag = Machine::new(tmp.path().join("h3"));
    let tf = server.token_file.to_str().unwrap();
    flag.ok(&["repo", "init", "--repo", &url, "--rest-token-file", tf]);
    let r = flag.run(&["snapshots", "--repo", &url, "--rest-token", TOKEN]);
    assert_eq!(r.code, 1, "--rest-token is gone: {}", r.stderr);
    let (code, head) = raw_http(server.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    let (code, _) = raw_http(
        server.port,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
    );
    assert_eq!(code, 200);
}

#[test]
fn a_certificate_that_does_not_match_the_pin_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start(tmp.path(), &tmp.path().join("served"), true, false);
    let m = Machine::new(tmp.path().join("h")).with_token();
    let wrong_pin = format!(
        "rest:https://127.0.0.1:{}/#sha256={}",
        server.port,
        "00".repeat(32)
    );
    let r = m.run(&["repo", "init", "--repo", &wrong_pin]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("TLS failed"), "{}", r.stderr);
    assert!(r.stderr.contains("not the pinned"), "{}", r.stderr);
    // No pin: the self-signed certificate is not trusted.
    let no_pin = format!("rest:https://127.0.0.1:{}/", server.port);
    let r = m.run(&["repo", "init", "--repo", &no_pin]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("TLS failed"), "{}", r.stderr);
    // The pin from the environment works too.
    let fp = server.fingerprint.clone().unwrap();
    m.clone()
        .var("PRISM_SYNC_REST_FINGERPRINT", &fp)
        .ok(&["repo", "init", "--repo", &no_pin]);
    // Plain HTTP to a TLS server fails cleanly.
    let plain = format!("rest:http://127.0.0.1:{}/", server.port);
    let t = std::time::Instant::now();
    let r = m.run(&["snapshots", "--repo", &plain]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("use the rest:https://"), "{}", r.stderr);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "not retried: {:?}",
        t.elapsed()
    );
}

#[test]
fn append_only_refuses_deletes_of_data_but_not_of_sessions_heads_and_presence() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start(tmp.path(), &tmp.path().join("served"), false, true);
    let b = RestBackend::with_token(&server.url, Some(TOKEN.into())).unwrap();
    b.prepare().unwrap();
    for kind in [Kind::Pack, Kind::Index, Kind::Snapshot, Kind::Key] {
        b.create(kind, &name(1), b"x").unwrap();
        let e = b.delete(kind, &name(1)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Other);
        assert!(e.message.contains("append-only"), "{}", e.message);
        assert_eq!(b.read(kind, &name(1)).unwrap(), b"x");
    }
    let head = format!("{}-{}", &name(3)[..16], name(2));
    // A daemon's heartbeat replaces the one before it: deletable too.
    let presence = format!("{0}-{0}-{0}", &name(4)[..16]);
    for (kind, n) in [
        (Kind::Session, name(2)),
        (Kind::Head, head),
        (Kind::Presence, presence),
    ] {
        b.create(kind, &n, b"y").unwrap();
        b.delete(kind, &n).unwrap();
    }
    // Backups go through; forget does not.
    let m = Machine::new(tmp.path().join("h")).with_token();
    let served2 = Serve::start(
        &tmp.path().join("2"),
        &tmp.path().join("served2"),
        false,
        true,
    );
    let url2 = served2.url.clone();
    let src = tmp.path().join("src");
    write(&src.join("f"), b"1");
    m.ok(&["repo", "init", "--repo", &url2]);
    m.ok(&["backup", "--repo", &url2, src.to_str().unwrap()]);
    write(&src.join("f"), b"2");
    m.ok(&["backup", "--repo", &url2, src.to_str().unwrap()]);
    let r = m.run(&["forget", "--repo", &url2, "--keep-last", "1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("append-only"), "{}", r.stderr);
    m.ok(&["check", "--repo", &url2]);
}

#[test]
fn the_server_enforces_its_limits_and_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start(tmp.path(), &tmp.path().join("served"), false, false);
    let p = server.port;
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let b = RestBackend::with_token(&server.url, Some(TOKEN.into())).unwrap();
    b.prepare().unwrap();
    // Repeating prepare (a lost answer) is harmless; after init it is a conflict.
    b.prepare().unwrap();
    b.create(Kind::Pack, &name(1), &bytes(1, 1000)).unwrap();
    let cases = [
        // Too large: refused before any byte of the body is sent.
        (
            format!(
                "POST /data/{} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 5000000000\r\n\r\n",
                name(2)
            ),
            413,
        ),
        (
            format!(
                "POST /data/{} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                name(2)
            ),
            411,
        ),
        (
            format!(
                "GET /data/{} HTTP/1.1\r\nHost: x\r\n{auth}Range: bytes=0-1,5-6\r\n\r\n",
                name(1)
            ),
            400,
        ),
        (
            format!(
                "GET /data/{} HTTP/1.1\r\nHost: x\r\n{auth}Range: bytes=2000-\r\n\r\n",
                name(1)
            ),
            416,
        ),
        (
            format!(
                "GET /data/{} HTTP/1.1\r\nHost: x\r\n{auth}Range: bytes=990-5000\r\n\r\n",
                name(1)
            ),
            206,
        ),
        (
            format!("GET /data/.hidden HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            400,
        ),
        (
            format!("GET /locks/ HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            404,
        ),
        (
            format!(
                "PUT /data/{} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n",
                name(3)
            ),
            405,
        ),
        (
            format!("DELETE /config HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            405,
        ),
        (
            format!(
                "POST /data/{} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1\r\n\r\nz",
                name(1)
            ),
            409,
        ),
        (
            format!("GET /data/{} HTTP/1.1\r\nHost: x\r\n{auth}\r\n", name(9)),
            404,
        ),
    ];
    for (req, want) in cases {
        let (code, head) = raw_http(p, &req);
        assert_eq!(code, want, "{req}\n→ {head}");
        assert!(
            head.to_ascii_lowercase().contains("prism-sync-rest: 1"),
            "{head}"
        );
    }
    let (code, head) = raw_http(
        p,
        &format!(
            "GET /data/{} HTTP/1.1\r\nHost: x\r\n{auth}Range: bytes=990-5000\r\n\r\n",
            name(1)
        ),
    );
    assert_eq!(code, 206);
    assert!(head.contains("bytes 990-999/1000"), "{head}");
    // A client that opens a connection and sends nothing is dropped after the header timeout
    // (30 s); here: the server still answers others meanwhile.
    let _idle = TcpStream::connect(("127.0.0.1", p)).unwrap();
    assert_eq!(b.read(Kind::Pack, &name(1)).unwrap(), bytes(1, 1000));
}

/// A server that answers every request with `answer`.
fn hostile(answer: &'static [u8]) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        for s in l.incoming().take(64) {
            let Ok(mut s) = s else { break };
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
        }
    });
    (port, h)
}

#[test]
fn a_hostile_or_broken_server_gives_errors_not_panics() {
    let answers: [&'static [u8]; 7] = [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nprism-sync-rest: 1\r\nContent-Length: 99999999999\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nprism-sync-rest: 1\r\nContent-Length: 9\r\n\r\n{\"x\":1}  ",
        b"HTTP/1.1 200 OK\r\nprism-sync-rest: 1\r\nContent-Length: 40\r\n\r\n[{\"name\":\"../../etc\",\"size\":-1}]        ",
        b"HTTP/1.1 206 Partial Content\r\nprism-sync-rest: 1\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nprism-sync-rest: 1\r\nContent-Length: 100\r\n\r\nshort",
    ];
    for (i, a) in answers.into_iter().enumerate() {
        let (port, _h) = hostile(a);
        // A fresh client per call: the server closes every connection after its answer.
        let b = || {
            RestBackend::with_token(
                &format!("rest:http://127.0.0.1:{port}/"),
                Some(TOKEN.into()),
            )
            .unwrap()
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (
                b().list(Kind::Pack).map(|_| ()),
                b().read_range(Kind::Pack, &name(1), 0, 10).map(|_| ()),
                b().read(Kind::Pack, &name(1)).map(|_| ()),
            )
        }));
        let (l, rr, rd) = r.unwrap_or_else(|_| panic!("answer {i} made the client panic"));
        assert!(l.is_err(), "answer {i}: list must fail");
        assert!(rr.is_err(), "answer {i}: ranged read must fail");
        // A complete 200 answer is bytes like any other (their hash is checked above us).
        assert_eq!(rd.is_err(), ![2, 3].contains(&i), "answer {i}: read");
        if i == 5 {
            // 404 without the prism-sync header: not "no such object" but a wrong URL.
            let e = rd.unwrap_err();
            assert_eq!(e.kind, ErrorKind::Other);
            assert!(e.message.contains("prism-sync header"), "{}", e.message);
        }
    }
}

#[test]
fn serve_explains_what_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Machine::new(tmp.path().join("h"));
    let r = m.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("serve needs --repo"), "{}", r.stderr);
    let r = m.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--repo",
        "s3://bucket/x",
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("serve exposes a directory"),
        "{}",
        r.stderr
    );
    let r = m.run(&["serve", "--listen", "nonsense", "--repo", "/tmp/x"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--listen"), "{}", r.stderr);
    let short = tmp.path().join("short-token");
    std::fs::write(&short, "abc\n").unwrap();
    let r = m.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--repo",
        "/tmp/x",
        "--token-file",
        short.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("at least 16"), "{}", r.stderr);
    for bad in ["rest:ftp://x/", "rest:https://h:1/#sha256=zz"] {
        let r = m.run(&["snapshots", "--repo", bad]);
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("rest:"), "{}", r.stderr);
    }
}
