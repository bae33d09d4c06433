//! The web app's doors, tested over raw HTTP against the real binary: no token, no page; the
//! token in the URL becomes an HttpOnly, SameSite=Strict cookie; a foreign Host header is
//! refused (DNS rebinding); changes need a POST that carries the token in its form; the app
//! refuses a network address unless told; downloads stream the exact bytes of a version.

mod cli_env;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cli_env::ui::RunningUi;
use cli_env::*;

/// Raw HTTP against a running app.
trait Http {
    fn cookie(&self) -> String;
    fn request(&self, raw: &str) -> (u16, String, Vec<u8>);
    fn get(&self, path: &str, cookie: Option<&str>, host: Option<&str>) -> (u16, String, Vec<u8>);
    fn post(&self, path: &str, cookie: &str, form: &str) -> (u16, String, Vec<u8>);
}

impl Http for RunningUi {
    fn cookie(&self) -> String {
        format!("prism_ui_token_{}={}", self.port, self.token)
    }

    /// Sends one request; returns (status, headers, body).
    fn request(&self, raw: &str) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response");
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head, buf[end + 4..].to_vec())
    }

    fn get(&self, path: &str, cookie: Option<&str>, host: Option<&str>) -> (u16, String, Vec<u8>) {
        let host = host
            .map(str::to_string)
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.port));
        let cookie = cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        self.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n"
        ))
    }

    fn post(&self, path: &str, cookie: &str, form: &str) -> (u16, String, Vec<u8>) {
        self.request(&format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            self.port,
            form.len()
        ))
    }
}

/// A body without chunked framing (hyper chunks streamed bodies).
fn unchunk(head: &str, body: &[u8]) -> Vec<u8> {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
        rest = &rest[nl + 2 + n + 2..];
    }
}

fn a_set_with_a_conflict() -> (Env, Env) {
    let laptop = Env::with_repo();
    let lf = laptop.path("project");
    write(&lf, "notes.md", b"one\n");
    laptop.ok(&["init", lf.to_str().unwrap(), "--name", "p"]);
    laptop.ok(&["sync", "p"]);
    let v = laptop.json(&["add-instance", "p", "ws1"]);
    let ws = Env::without_password();
    let wf = ws.path("project");
    ws.ok(&[
        "join",
        "p",
        wf.to_str().unwrap(),
        "--repo",
        laptop.repo_str(),
        "--endpoint",
        "ws1",
        "--key-file",
        v["key_file"].as_str().unwrap(),
    ]);
    ws.ok(&["sync", "p"]);
    write(&lf, "notes.md", b"laptop\n");
    write(&wf, "notes.md", b"workspace\n");
    laptop.ok(&["sync", "p"]);
    ws.ok(&["sync", "p"]);
    assert_eq!(ws.json(&["conflicts", "p"]).as_array().unwrap().len(), 1);
    (laptop, ws)
}

#[test]
fn every_request_needs_the_token_and_the_loopback_host() {
    let env = Env::with_repo();
    let ui = RunningUi::start(env.command::<&str>(&[]));
    for path in ["/", "/assets/app.js", "/sets/p/browse", "/repo/browse"] {
        let (st, _, _) = ui.get(path, None, None);
        assert_eq!(st, 401, "{path} without the token");
    }
    let (st, _, _) = ui.get("/?t=0000", None, None);
    assert_eq!(st, 401, "a wrong token");
    let wrong = format!("prism_ui_token_{}={}", ui.port, "0".repeat(64));
    assert_eq!(ui.get("/", Some(&wrong), None).0, 401, "a wrong cookie");

    // The token in the URL becomes a cookie, and leaves the address bar.
    let (st, head, _) = ui.get(&format!("/repo/browse?t={}&path=x", ui.token), None, None);
    assert_eq!(st, 303, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("location: /repo/browse?path=x"), "{head}");
    assert!(
        lower.contains(&format!(
            "set-cookie: {}; path=/; httponly; samesite=strict",
            ui.cookie().to_ascii_lowercase()
        )),
        "{head}"
    );

    let (st, head, body) = ui.get("/", Some(&ui.cookie()), None);
    assert_eq!(st, 200, "{head}");
    assert!(String::from_utf8_lossy(&body).contains("Sync sets"));
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(lower.contains("x-frame-options: deny"), "{head}");

    // DNS rebinding: a page of another site that resolves its name to 127.0.0.1 sends its own
    // Host header; even with the cookie (it would not have it) the app refuses.
    let (st, _, _) = ui.get(
        "/",
        Some(&ui.cookie()),
        Some(&format!("evil.example:{}", ui.port)),
    );
    assert_eq!(st, 403);
}

#[test]
fn changes_need_a_post_with_the_form_token() {
    let (_laptop, ws) = a_set_with_a_conflict();
    let ui = RunningUi::start(ws.command::<&str>(&[]));
    let c = ui.cookie();
    // Not by GET, not without the form token, not with a wrong one.
    let (st, _, _) = ui.get("/sets/p/resolve?path=notes.md&keep=local", Some(&c), None);
    assert_eq!(st, 405);
    let (st, _, _) = ui.post("/sets/p/resolve", &c, "path=notes.md&keep=local");
    assert!(
        st == 400 || st == 422,
        "a form without the token is rejected: {st}"
    );
    let (st, _, _) = ui.post(
        "/sets/p/resolve",
        &c,
        &format!("token={}&path=notes.md&keep=local", "f".repeat(64)),
    );
    assert_eq!(st, 403);
    assert_eq!(
        ws.json(&["conflicts", "p"]).as_array().unwrap().len(),
        1,
        "nothing was resolved"
    );

    // With it: the command runs, and the page says which.
    let (st, _, body) = ui.post(
        "/sets/p/resolve",
        &c,
        &format!("token={}&path=notes.md&keep=local", ui.token),
    );
    let page = String::from_utf8_lossy(&body);
    assert_eq!(st, 200, "{page}");
    assert!(
        page.contains("prism-sync resolve p notes.md --keep local"),
        "{page}"
    );
    assert!(ws.json(&["conflicts", "p"]).as_array().unwrap().is_empty());
    let (_, _, body) = ui.get("/", Some(&c), None);
    assert!(
        String::from_utf8_lossy(&body).contains("prism-sync resolve p notes.md --keep local"),
        "the dashboard lists the action"
    );
}

#[test]
fn downloads_stream_the_exact_bytes_of_a_version() {
    let env = Env::with_repo();
    let folder = env.path("project");
    let big = random_bytes(9 << 20, 5);
    write(&folder, "data/big.bin", &big);
    write(&folder, "weird name's.txt", b"x");
    env.ok(&["init", folder.to_str().unwrap(), "--name", "p"]);
    env.ok(&["sync", "p"]);
    write(&folder, "data/big.bin", b"small now");
    env.ok(&["sync", "p"]);
    let first = env.json(&["snapshots", "p"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ui = RunningUi::start(env.command::<&str>(&[]));
    let c = ui.cookie();
    let (st, head, body) = ui.get(
        &format!("/sets/p/download?v={}&path=data/big.bin", &first[..8]),
        Some(&c),
        None,
    );
    assert_eq!(st, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-disposition: attachment; filename=\"big.bin\""),
        "{head}"
    );
    let got = unchunk(&head, &body);
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the first version's bytes");
    let (st, _, _) = ui.get(
        "/sets/p/download?v=ffffffff&path=data/big.bin",
        Some(&c),
        None,
    );
    assert_eq!(st, 404, "an unknown version");
    let (st, _, _) = ui.get("/sets/nosuchset/browse", Some(&c), None);
    assert_eq!(st, 404, "an unknown set");
    // The repository view lists the same snapshots.
    let (st, _, body) = ui.get("/repo/browse", Some(&c), None);
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("Version 2 of 2"));
}

#[test]
fn ui_refuses_a_network_address_unless_told() {
    let env = Env::with_repo();
    let o = env.run(&["ui", "--listen", "0.0.0.0:0"]);
    assert_exit(&o, 1, "ui on a network address");
    assert!(o.err().contains("--allow-remote"), "{}", o.err());
    let o = env.run(&["ui", "--listen", "nonsense"]);
    assert_exit(&o, 1, "ui with a bad address");
    assert!(o.err().contains("IP:PORT"), "{}", o.err());
}
