//! Handlers of the browsing commands: `mount` (every version as a read-only folder) and `ui`
//! (the local web app).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;

use super::{Ctx, Outcome};
use crate::browse::{BrowseOptions, Browser, Report};
use crate::error::Error;
use crate::mount::{self, View};
use crate::repository::Repository;

#[derive(Args, Debug)]
pub struct MountArgs {
    /// `[NAME] MOUNTPOINT`: with a sync set's NAME, its versions; else every snapshot of the
    /// repository (--repo, default: the embedded one).
    #[arg(value_names = ["NAME", "MOUNTPOINT"], num_args = 1..=2, required = true)]
    pub args: Vec<PathBuf>,
    /// Decoded file data kept in memory for reads, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = crate::browse::BLOB_CACHE_BYTES_MAX >> 20)]
    pub cache_size: u64,
}

/// How often the mount checks for Ctrl-C and an outside `umount`.
const WAIT_TICK: Duration = Duration::from_millis(100);

pub fn mount(ctx: &Ctx, a: &MountArgs) -> Result<Outcome> {
    let (name, mountpoint) = match a.args.as_slice() {
        [mp] => (None, mp.clone()),
        [name, mp] => (Some(name.to_string_lossy().into_owned()), mp.clone()),
        _ => bail!(Error::invalid("give [NAME] MOUNTPOINT")),
    };
    let (repo, view, what) = match &name {
        Some(n) => {
            let ep = crate::endpoint::Endpoint::open(&ctx.home, n)?;
            let repo = Repository::open_url(&ep.cfg.repo, &ctx.credentials()?)?;
            (repo, View::Set(n.clone()), format!("the versions of {n}"))
        }
        None => {
            let repo = super::repo::open(ctx)?;
            let what = format!("the snapshots of {}", repo.location());
            (repo, View::Repository, what)
        }
    };
    repo.load_index()?;
    let opts = BrowseOptions {
        blob_cache_bytes_max: a.cache_size.max(1) << 20,
        ..BrowseOptions::default()
    };
    let report: Report = Arc::new(|m: &str| eprintln!("⚠️  {m}"));
    let browser = Arc::new(Browser::new(repo, opts, report.clone())?);
    let m = mount::mount(browser, view.clone(), &mountpoint, report)?;
    let shown = m.mountpoint().display().to_string();
    if ctx.out.json {
        ctx.out
            .json(&json!({"mountpoint": shown, "set": name, "read_only": true}));
    } else {
        ctx.out
            .line(format!("📂 Mounted {what} at {shown} (read-only)"));
        match view {
            View::Repository => ctx.out.kv(
                "Folders",
                "snapshots/<time>-<id>/, latest/, hosts/<host>/, tags/<tag>/",
            ),
            View::Set(_) => ctx.out.kv("Folders", "versions/<time>/, latest/"),
        }
        ctx.out.line(format!(
            "💡 Ctrl-C or `umount {shown}` ends it; new versions appear by themselves"
        ));
    }
    wait_for_end(&m)?;
    m.join()?;
    ctx.out.line(format!("✅ Unmounted {shown}"));
    Ok(Outcome::ok())
}

/// Unmount attempts per signal, and the pause between them.
const UNMOUNT_TRIES: u32 = 5;
const UNMOUNT_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// Waits until the mount ends; Ctrl-C, SIGTERM or SIGHUP unmount it (a busy mount stays, with
/// a message; the next signal tries again).
fn wait_for_end(m: &mount::Mounted) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            let asked = tokio::select! {
                _ = int.recv() => true,
                _ = term.recv() => true,
                _ = hup.recv() => true,
                _ = tokio::time::sleep(WAIT_TICK) => false,
            };
            if m.is_finished() {
                return Ok(());
            }
            if !asked {
                continue;
            }
            // A file closed a moment ago may still hold the mount: the kernel tells the file
            // system of the close after `close` returns. Try a few times before calling it busy.
            for attempt in 1..=UNMOUNT_TRIES {
                match m.unmount() {
                    Ok(()) => break,
                    Err(_) if attempt < UNMOUNT_TRIES => {
                        tokio::time::sleep(UNMOUNT_RETRY).await;
                    }
                    Err(e) => eprintln!(
                        "⚠️  cannot unmount {}: {e}. Leave it (cd elsewhere, close files in it), then press Ctrl-C again",
                        m.mountpoint().display()
                    ),
                }
            }
        }
    })
}

#[derive(Args, Debug)]
pub struct UiArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Allow an address other than loopback. The app speaks plain HTTP: anyone on the path can
    /// read the token in the URL and then act on your sync sets. Only on a network you trust.
    #[arg(long)]
    pub allow_remote: bool,
}

pub fn ui(ctx: &Ctx, a: &UiArgs) -> Result<Outcome> {
    let listen: std::net::SocketAddr = a.listen.parse().map_err(|_| {
        Error::invalid(format!(
            "--listen {}: write IP:PORT, e.g. 127.0.0.1:8080 (port 0: any free port)",
            a.listen
        ))
    })?;
    if !listen.ip().is_loopback() && !a.allow_remote {
        bail!(Error::invalid(format!(
            "--listen {listen} is not a loopback address: the app would be reachable from the network over plain HTTP. Use 127.0.0.1, or add --allow-remote if you mean it"
        )));
    }
    let home = std::path::absolute(&ctx.home).unwrap_or_else(|_| ctx.home.clone());
    let mut global: Vec<std::ffi::OsString> = vec!["--home".into(), home.clone().into()];
    if let Some(f) = &ctx.password_file {
        global.push("--password-file".into());
        global.push(std::path::absolute(f).unwrap_or_else(|_| f.clone()).into());
    }
    if let Some(f) = &ctx.rest_token_file {
        global.push("--rest-token-file".into());
        global.push(f.clone().into());
    }
    let exe = std::env::current_exe().map_err(|e| {
        Error::invalid(format!(
            "cannot find the prism-sync binary to run actions with: {e}"
        ))
    })?;
    let report: Report = Arc::new(|m: &str| eprintln!("⚠️  {m}"));
    let server = crate::ui::bind(crate::ui::UiOptions {
        home,
        listen,
        token: crate::id::hex_encode(&crate::crypto::random_bytes::<32>()),
        repo_url: ctx.repo_url(),
        creds: ctx.credentials()?,
        command: crate::ui::CommandLine { exe, global },
        report,
    })
    .map_err(Error::invalid)?;
    let url = server.url();
    if !listen.ip().is_loopback() {
        eprintln!(
            "⚠️  INSECURE: the app listens on {} over plain HTTP; anyone on the path can read the token",
            server.local_addr()
        );
    }
    if ctx.out.json {
        ctx.out
            .json(&json!({"url": url, "listen": server.local_addr().to_string()}));
    } else {
        ctx.out.line(format!("🌐 prism-sync ui: {url}"));
        ctx.out.line(
            "💡 Open it in a browser on this machine (the token in it is the key); Ctrl-C ends it",
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    server.run().map_err(Error::invalid)?;
    Ok(Outcome::ok())
}
