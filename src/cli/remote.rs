//! Handlers of the remote-repository commands: `serve` (the REST server) and `efs create|list`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::render::bytes;
use super::{Ctx, Outcome};
use crate::backend::efs;
use crate::error::Error;
use crate::repository::hostname;
use crate::serve::{self, Limits, ServeOptions, TlsIdentity};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8000 or 0.0.0.0:8443 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Serve HTTPS with a self-signed certificate (made once, kept under --home); clients pin
    /// its fingerprint. The default on any address but loopback.
    #[arg(long, conflicts_with = "insecure_http")]
    pub tls: bool,
    /// Serve plain HTTP on a network address: the token then travels in clear text. Only for a
    /// network you trust (or behind a TLS proxy).
    #[arg(long)]
    pub insecure_http: bool,
    /// Refuse deletes (except of sessions and heads, which hold no data): clients can add
    /// snapshots but not remove any.
    #[arg(long)]
    pub append_only: bool,
    /// Read the access token from the first line of this file (default: a random token, made
    /// once and kept under --home).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Open connections at most.
    #[arg(long, value_name = "N", default_value_t = Limits::default().connections_max)]
    pub max_connections: usize,
    /// Print one line per connection and per request to standard error (time, peer, method,
    /// path, status, bytes, milliseconds): who asks for what, and how often.
    #[arg(long)]
    pub log_requests: bool,
}

#[derive(Subcommand, Debug)]
pub enum EfsCommand {
    /// Provision an encrypted EFS file system (plus an access point and a lifecycle
    /// configuration) and print its fs-… id. Running it again completes and reports the same one.
    Create {
        /// Name (and creation token) of the file system.
        name: String,
        /// Owner of the access point's root directory, and the user clients act as (default:
        /// yours).
        #[arg(long)]
        uid: Option<u32>,
        /// The group id the access point's directory belongs to (default: yours).
        #[arg(long)]
        gid: Option<u32>,
    },
    /// List the EFS file systems of the account in the region.
    List,
}

/// The directory `serve` exposes: a path, `file://…` or `efs://fs-ID[/path]`.
fn serve_root(url: &str) -> Result<PathBuf> {
    if url.starts_with("s3:") || url.starts_with("rest:") {
        bail!(Error::invalid(format!(
            "serve exposes a directory (a local disk or an EFS mount); {url} is not one: clients reach it directly with --repo {url}"
        )));
    }
    let path = if url.starts_with("efs:") {
        efs::resolve(url).map_err(Error::invalid)?
    } else {
        PathBuf::from(url.strip_prefix("file://").unwrap_or(url))
    };
    let abs = std::path::absolute(&path).map_err(|e| Error::io(&path, e))?;
    Ok(abs)
}

fn parse_listen(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.to_socket_addrs().map(|mut it| it.next()) {
        Ok(Some(a)) => Ok(a),
        _ => bail!(Error::invalid(format!(
            "--listen {s}: write HOST:PORT, e.g. 127.0.0.1:8000 or 0.0.0.0:8443"
        ))),
    }
}

fn absolute_display(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

pub(super) fn read_token_file(f: &Path) -> Result<String> {
    let line = super::read_password_file(f)?;
    let token = String::from_utf8(line)
        .map_err(|_| Error::invalid(format!("{}: the token must be text", f.display())))?;
    let token = token.trim().to_string();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(Error::invalid(format!(
            "{}: the token must be at least 16 printable characters without spaces (e.g. `openssl rand -hex 32`)",
            f.display()
        )));
    }
    Ok(token)
}

/// The token kept under the home directory, made on first use.
fn kept_token(dir: &Path) -> Result<(String, PathBuf)> {
    let path = dir.join("token");
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => return Ok((t.trim().to_string(), path)),
        Ok(_) => bail!(Error::invalid(format!(
            "{} holds no usable token: delete it to make a new one",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!(Error::io(&path, e)),
    }
    crate::fsx::private::create_dir(dir).map_err(|e| Error::io(dir, e))?;
    let token = crate::id::hex_encode(&crate::crypto::random_bytes::<32>());
    crate::serve::write_private(&path, format!("{token}\n").as_bytes()).map_err(Error::invalid)?;
    Ok((token, path))
}

pub fn serve(ctx: &Ctx, a: &ServeArgs) -> Result<Outcome> {
    let Some(url) = ctx.repo.clone() else {
        bail!(Error::invalid(
            "serve needs --repo DIR (or efs://fs-ID): the repository directory to serve"
        ));
    };
    let root = serve_root(&url)?;
    let listen = parse_listen(&a.listen)?;
    let state_dir = ctx.paths().serve_dir();
    let (token, token_origin) = match &a.token_file {
        Some(f) => (read_token_file(f)?, absolute_display(f)),
        None => {
            let (t, p) = kept_token(&state_dir)?;
            (t, absolute_display(&p))
        }
    };
    // TLS unless the address is loopback, or the user opted out loudly.
    let use_tls = a.tls || (!listen.ip().is_loopback() && !a.insecure_http);
    let tls = if use_tls {
        let mut names = vec!["localhost".to_string(), hostname()];
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_string());
        }
        Some(TlsIdentity::load_or_generate(&state_dir, names).map_err(Error::invalid)?)
    } else {
        None
    };
    let fingerprint = tls.as_ref().map(|t| t.fingerprint());
    let limits = Limits {
        connections_max: a.max_connections.max(1),
        ..Limits::default()
    };
    let server = serve::bind(ServeOptions {
        root: root.clone(),
        listen,
        token: token.clone(),
        tls,
        append_only: a.append_only,
        limits,
        events: a
            .log_requests
            .then(|| -> serve::EventSink { std::sync::Arc::new(log_event) }),
    })
    .map_err(Error::invalid)?;
    let addr = server.local_addr();
    let host = if addr.ip().is_unspecified() {
        hostname()
    } else {
        match addr.ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        }
    };
    let client_url = match &fingerprint {
        Some(fp) => format!("rest:https://{host}:{}/#sha256={fp}", addr.port()),
        None => format!("rest:http://{host}:{}/", addr.port()),
    };
    if fingerprint.is_none() && !addr.ip().is_loopback() {
        eprintln!(
            "⚠️  INSECURE: --insecure-http serves plain HTTP on the network address {addr}: anyone on the path can read the access token and then read, add or delete repository objects (their content stays encrypted). Drop --insecure-http to serve TLS."
        );
    }
    if ctx.out.json {
        ctx.out.json(&json!({
            "url": client_url,
            "token_file": token_origin,
            "fingerprint": fingerprint,
            "listen": addr.to_string(),
            "repository": root.display().to_string(),
            "tls": fingerprint.is_some(),
            "append_only": a.append_only,
        }));
    } else if ctx.out.quiet {
        println!("{client_url}");
    } else {
        ctx.out.line(format!(
            "✅ Serving the repository {} on {addr}",
            root.display()
        ));
        ctx.out.kv("URL", &client_url);
        // The token itself is never printed (stdout may end in a journal anyone with access to
        // the logs reads): it stays in its 0600 file.
        ctx.out.kv("Token", format!("in {token_origin}"));
        if let Some(fp) = &fingerprint {
            ctx.out
                .kv("TLS", format!("self-signed certificate, sha256={fp}"));
        }
        ctx.out.kv(
            "Mode",
            if a.append_only {
                "append-only (deletes refused, except sessions and heads)"
            } else {
                "read-write"
            },
        );
        ctx.out.line(format!(
            "💡 On the laptop: copy the token file, then prism-sync snapshots --repo '{client_url}' --rest-token-file TOKEN_FILE"
        ));
    }
    server.run().map_err(Error::invalid)?;
    Ok(Outcome::ok())
}

/// One line of `serve --log-requests` (stderr: the URL and token go to stdout).
fn log_event(e: &serve::ServeEvent) {
    let ms = jiff::Timestamp::now().as_millisecond();
    match e {
        serve::ServeEvent::Connection { peer, tls } => {
            eprintln!("{ms} {peer} CONNECT {}", if *tls { "tls" } else { "plain" })
        }
        serve::ServeEvent::Request {
            peer,
            method,
            path,
            status,
            bytes_in,
            bytes_out,
            elapsed,
        } => eprintln!(
            "{ms} {peer} {method} {path} {status} in={bytes_in} out={bytes_out} {}ms",
            elapsed.as_millis()
        ),
    }
}

fn fs_json(f: &efs::FileSystem) -> Value {
    json!({
        "id": f.id, "name": f.name, "creation_token": f.creation_token, "state": f.state,
        "size_bytes": f.size_bytes, "encrypted": f.encrypted, "mount_targets": f.mount_targets,
        "created": f.created,
    })
}

pub fn efs(ctx: &Ctx, cmd: &EfsCommand) -> Result<Outcome> {
    match cmd {
        EfsCommand::Create { name, uid, gid } => {
            let opts = efs::CreateOptions {
                uid: uid.unwrap_or_else(crate::sys::uid),
                gid: gid.unwrap_or_else(crate::sys::gid),
            };
            let c = efs::create(name, opts).map_err(Error::invalid)?;
            if ctx.out.json {
                let mut v = fs_json(&c.fs);
                v["access_point_id"] = json!(c.access_point_id);
                v["access_point_root"] = json!(efs::ACCESS_POINT_ROOT);
                v["lifecycle"] = json!(c.lifecycle);
                v["existed"] = json!(c.existed);
                ctx.out.json(&v);
            } else if ctx.out.quiet {
                println!("{}", c.fs.id);
            } else {
                if c.existed {
                    ctx.out.line(format!(
                        "✅ EFS file system {name} exists; its access point and lifecycle are set"
                    ));
                } else {
                    ctx.out.line(format!("✅ EFS file system {name} created"));
                }
                ctx.out.kv("ID", &c.fs.id);
                ctx.out
                    .kv("Encrypted", if c.fs.encrypted { "yes" } else { "no" });
                ctx.out.kv(
                    "Access point",
                    format!(
                        "{} (root {}, uid:gid {}:{})",
                        c.access_point_id,
                        efs::ACCESS_POINT_ROOT,
                        opts.uid,
                        opts.gid
                    ),
                );
                ctx.out.kv("Lifecycle", &c.lifecycle);
                ctx.out.kv("State", &c.fs.state);
                ctx.out.line(format!(
                    "💡 On a workspace in its VPC (with a mount target): sudo mount -t efs {id} /mnt/efs, then --repo efs://{id}/prism",
                    id = c.fs.id
                ));
            }
            Ok(Outcome::ok())
        }
        EfsCommand::List => {
            let list = efs::list().map_err(Error::invalid)?;
            if ctx.out.json {
                ctx.out
                    .json(&Value::Array(list.iter().map(fs_json).collect()));
            } else if ctx.out.quiet {
                for f in &list {
                    println!("{}", f.id);
                }
            } else if list.is_empty() {
                ctx.out
                    .line("💡 No EFS file systems in this region yet: prism-sync efs create NAME");
            } else {
                ctx.out
                    .line(format!("✅ {} EFS file system(s)", list.len()));
                for f in &list {
                    ctx.out.kv(
                        &f.id,
                        format!(
                            "{}, {}, {}, {}, {} mount target(s)",
                            f.name.as_deref().unwrap_or(&f.creation_token),
                            f.state,
                            bytes(f.size_bytes.max(0) as u64),
                            if f.encrypted {
                                "encrypted"
                            } else {
                                "not encrypted"
                            },
                            f.mount_targets
                        ),
                    );
                }
            }
            Ok(Outcome::ok())
        }
    }
}
