//! Handlers of the daemon commands: `start`, `stop`, `pause`, `resume`, `flush`, and the hidden
//! `daemon-run` that `start` launches in the background.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use super::{Ctx, Outcome};
use crate::daemon::agent::{self, AgentSpec, Loaded};
use crate::daemon::control::{Op, request};
use crate::daemon::{Settings, running_pid};
use crate::endpoint::{Endpoint, StepOptions, step};
use crate::error::Error;

const ANSWER: Duration = Duration::from_secs(30);

fn ask(ctx: &Ctx, op: Op) -> Result<Option<serde_json::Value>> {
    match request(&ctx.home, op, ANSWER)? {
        None => Ok(None),
        Some(r) if r.ok => Ok(Some(r.result)),
        Some(r) => bail!(Error::invalid(
            r.error.unwrap_or_else(|| "the daemon refused".into())
        )),
    }
}

/// Starts the daemon for this home in the background and waits until it answers.
fn launch(ctx: &Ctx, first: &str) -> Result<u32> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::invalid(format!("cannot find the prism-sync binary: {e}")))?;
    let log_path = ctx.paths().daemon_file("log");
    let sync_dir = ctx.paths().sync_dir();
    crate::fsx::private::create_dir(&sync_dir).map_err(|e| Error::io(&sync_dir, e))?;
    let log = crate::fsx::private::append(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--home")
        .arg(&ctx.home)
        .arg("daemon-run")
        .arg("--first")
        .arg(first);
    if let Some(pf) = &ctx.password_file {
        cmd.arg("--password-file").arg(pf);
    }
    // A --rest-token-file given to `start` must reach the daemon (env is inherited, flags are
    // not); a token stored with the set needs nothing.
    if let Some(f) = &ctx.rest_token_file {
        cmd.arg("--rest-token-file").arg(f);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::io(&log_path, e))?)
        .stderr(log);
    crate::sys::detach_from_terminal(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::invalid(format!("cannot start the daemon: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(pid) = running_pid(&ctx.home) {
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            bail!(Error::invalid(format!(
                "the daemon exited at once ({status}): {last} (log: {})",
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(Error::invalid(format!(
        "the daemon did not come up within 20 s: see {}",
        log_path.display()
    )))
}

pub fn start(ctx: &Ctx, name: &str, foreground: bool) -> Result<Outcome> {
    Endpoint::open(&ctx.home, name)?; // the set must exist here
    if foreground {
        if let Some(pid) = running_pid(&ctx.home) {
            bail!(Error::invalid(format!(
                "a daemon already runs for this home (pid {pid}): `prism-sync start {name}` adds the set to it"
            )));
        }
        ctx.out
            .line(format!("🔄 Keeping {name} in sync (Ctrl-C stops)"));
        crate::daemon::run(
            &ctx.home,
            Some(name),
            Settings::from_env(),
            ctx.credentials()?,
        )?;
        return Ok(Outcome::ok());
    }
    let pid = match running_pid(&ctx.home) {
        Some(pid) => {
            ask(ctx, Op::Start { set: name.into() })?;
            pid
        }
        None => launch(ctx, name)?,
    };
    if ctx.out.json {
        ctx.out.json(&json!({"set": name, "daemon_pid": pid}));
    } else {
        ctx.out
            .line(format!("✅ {name} is kept in sync (daemon pid {pid})"));
        ctx.out.line(format!(
            "💡 prism-sync status {name}   ·   prism-sync flush {name} before a batch job"
        ));
    }
    Ok(Outcome::ok())
}

/// How often a login agent whose set another process's daemon serves checks that it still runs.
const AGENT_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// `start NAME --agent`, what a login agent runs. One daemon serves every set of a home, and
/// each set has its own agent: the first agent at login runs the daemon; one that finds it
/// running adds its set to it and waits, and runs the daemon itself (resuming every started
/// set) if that one goes away while its set is still started. A set stopped meanwhile
/// (`prism-sync stop NAME`) ends its agent with success, so the service manager leaves it be.
pub fn run_as_agent(ctx: &Ctx, name: &str) -> Result<Outcome> {
    Endpoint::open(&ctx.home, name)?; // the set must exist here
    let mut joined = false;
    loop {
        if let Some(pid) = running_pid(&ctx.home) {
            if !joined {
                ask(ctx, Op::Start { set: name.into() })?;
                joined = true;
            }
            loop {
                if !crate::daemon::is_started(&ctx.home, name)? {
                    return Ok(Outcome::ok());
                }
                if running_pid(&ctx.home) != Some(pid) {
                    break;
                }
                std::thread::sleep(AGENT_POLL);
            }
            continue;
        }
        match crate::daemon::run(
            &ctx.home,
            Some(name),
            Settings::from_env(),
            ctx.credentials()?,
        ) {
            Ok(()) => return Ok(Outcome::ok()),
            // Another agent took the home a moment before: serve the set through it.
            Err(_) if running_pid(&ctx.home).is_some() => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the login agent of `name` runs, every path absolute (the agent starts in another
/// directory, without this shell's environment).
fn agent_spec(ctx: &Ctx, name: &str) -> Result<AgentSpec> {
    let abs = |p: &std::path::Path| -> Result<std::path::PathBuf> {
        Ok(std::path::absolute(p).map_err(|e| Error::io(p, e))?)
    };
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| Error::invalid(format!("cannot find the prism-sync binary: {e}")))?;
    Ok(AgentSpec {
        name: name.into(),
        exe,
        home: abs(&ctx.home)?,
        password_file: ctx.password_file.as_deref().map(abs).transpose()?,
        rest_token_file: ctx.rest_token_file.as_deref().map(abs).transpose()?,
    })
}

fn user_home() -> Result<std::path::PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if std::path::Path::new(&h).is_absolute() => Ok(h.into()),
        _ => bail!(Error::invalid(
            "HOME is not set to an absolute path: the login agent goes under it; set HOME"
        )),
    }
}

/// `start NAME --install`: writes the login agent, loads it, and starts it now unless a daemon
/// already runs for this home (then it takes over at the next login).
pub fn install_agent(ctx: &Ctx, name: &str) -> Result<Outcome> {
    Endpoint::open(&ctx.home, name)?; // the set must exist here
    if ctx.password_file.is_none() && std::env::var_os("PRISM_SYNC_PASSWORD").is_some() {
        bail!(Error::invalid(
            "a login agent does not see PRISM_SYNC_PASSWORD from this shell: give the password in a file instead (--password-file FILE, mode 0600)"
        ));
    }
    let spec = agent_spec(ctx, name)?;
    let kind = crate::sys::LOGIN_AGENT;
    let path = agent::agent_path(kind, &spec, &user_home()?);
    agent::write_agent_file(&path, &agent::agent_text(kind, &spec))
        .map_err(|e| Error::io(&path, e))?;
    let running = running_pid(&ctx.home);
    let loaded = agent::load(kind, &spec, &path, running.is_none());
    if ctx.out.json {
        ctx.out.json(&json!({
            "set": name, "agent": path, "loaded": loaded == Loaded::Yes,
            "not_loaded_because": match &loaded { Loaded::No(why) => Some(why), Loaded::Yes => None },
        }));
        return Ok(Outcome::ok());
    }
    ctx.out.line(format!(
        "✅ {name} starts at every login ({})",
        path.display()
    ));
    match (&loaded, running) {
        (Loaded::Yes, None) => ctx.out.line(format!("✅ The agent runs now: prism-sync status {name}")),
        (Loaded::Yes, Some(pid)) => ctx.out.line(format!(
            "💡 A daemon already runs for this home (pid {pid}); the agent takes over at the next login"
        )),
        (Loaded::No(why), _) => ctx.out.line(format!(
            "💡 Not loaded now ({why}); it is loaded at the next login, or now with: {}",
            match kind {
                agent::AgentKind::SystemdUser => format!("systemctl --user enable --now {}", spec.unit_name()),
                agent::AgentKind::LaunchAgent => format!("launchctl bootstrap gui/$(id -u) {}", path.display()),
            }
        )),
    }
    Ok(Outcome::ok())
}

/// `start NAME --uninstall`: unloads the login agent (stopping it) and removes its file.
pub fn uninstall_agent(ctx: &Ctx, name: &str) -> Result<Outcome> {
    let spec = agent_spec(ctx, name)?;
    let kind = crate::sys::LOGIN_AGENT;
    let path = agent::agent_path(kind, &spec, &user_home()?);
    if !path.exists() {
        bail!(Error::invalid(format!(
            "no login agent for {name} at {}: nothing to remove (prism-sync start {name} --install writes one)",
            path.display()
        )));
    }
    let unloaded = agent::unload(kind, &spec);
    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    if kind == agent::AgentKind::SystemdUser {
        // Forget the removed unit; nothing to do when no manager is reachable.
        let _ = std::process::Command::new("systemctl")
            .args(["--user", "daemon-reload"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if ctx.out.json {
        ctx.out
            .json(&json!({"set": name, "agent": path, "removed": true,
            "unloaded": unloaded == Loaded::Yes}));
    } else {
        ctx.out.line(format!(
            "✅ {name} no longer starts at login (removed {})",
            path.display()
        ));
        if let Loaded::No(why) = unloaded {
            ctx.out.line(format!(
                "💡 Not unloaded ({why}); a running daemon keeps running: prism-sync stop {name}"
            ));
        }
    }
    Ok(Outcome::ok())
}

pub fn stop(ctx: &Ctx, name: &str) -> Result<Outcome> {
    match ask(ctx, Op::Stop { set: name.into() }) {
        Ok(Some(v)) => {
            let remaining = v["remaining"].as_u64().unwrap_or(0);
            ctx.out.line(format!(
                "✅ {name} is no longer kept in sync{}",
                if remaining == 0 {
                    "; the daemon stopped"
                } else {
                    ""
                }
            ));
        }
        Ok(None) => ctx.out.line(format!(
            "💡 No daemon runs for this home; {name} was not being kept in sync"
        )),
        Err(e) => return Err(e),
    }
    Ok(Outcome::ok())
}

pub fn pause(ctx: &Ctx, name: &str, pause: bool) -> Result<Outcome> {
    let ep = Endpoint::open(&ctx.home, name)?;
    let op = if pause {
        Op::Pause { set: name.into() }
    } else {
        Op::Resume { set: name.into() }
    };
    let told_daemon = match request(&ctx.home, op, ANSWER)? {
        Some(r) if r.ok => true,
        _ => {
            // No daemon (or it does not run this set): record it for whoever runs next.
            ep.state.update_meta(|m| m.paused = pause)?;
            false
        }
    };
    let what = if pause {
        "paused: nothing is applied or published until `prism-sync resume`"
    } else {
        "resumed"
    };
    ctx.out.line(format!(
        "✅ {name} {what}{}",
        if told_daemon {
            ""
        } else {
            " (no daemon runs it now)"
        }
    ));
    Ok(Outcome::ok())
}

pub fn flush(ctx: &Ctx, name: &str, timeout: u64) -> Result<Outcome> {
    let ep = Endpoint::open(&ctx.home, name)?;
    if ep.state.meta()?.paused {
        bail!(Error::invalid(format!(
            "{name} is paused: resume it first (prism-sync resume {name})"
        )));
    }
    let started = Instant::now();
    match request(
        &ctx.home,
        Op::Flush {
            set: name.into(),
            timeout_s: timeout,
        },
        Duration::from_secs(timeout + 10),
    )? {
        Some(r) if r.ok => {}
        Some(r)
            if r.error
                .as_deref()
                .is_some_and(|e| e.contains("does not run")) =>
        {
            flush_here(ctx, &ep, timeout)?
        }
        Some(r) => bail!(Error::invalid(r.error.unwrap_or_default())),
        None => flush_here(ctx, &ep, timeout)?,
    }
    if ctx.out.json {
        ctx.out.json(
            &json!({"set": name, "flushed": true, "seconds": started.elapsed().as_secs_f64()}),
        );
    } else {
        ctx.out.line(format!("✅ {name} is flushed: every change here is published and every published change is here"));
    }
    Ok(Outcome::ok())
}

/// No daemon runs the set: step in the foreground until nothing moves.
fn flush_here(ctx: &Ctx, ep: &Endpoint, timeout: u64) -> Result<()> {
    let repo = ctx.open_repo(&ep.cfg.repo)?;
    repo.backend().set_bandwidth(ep.cfg.bandwidth());
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let r = step(ep, &repo, &StepOptions::default())?;
        if let Some(h) = r.halted {
            bail!(Error::invalid(format!("{} is halted: {h}", ep.cfg.name)));
        }
        if !r.changed() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(Error::invalid(format!(
                "flush timed out after {timeout} s: the folder keeps changing"
            )));
        }
    }
}

/// The daemon process.
pub fn run(ctx: &Ctx, first: Option<&str>) -> Result<Outcome> {
    crate::daemon::run(&ctx.home, first, Settings::from_env(), ctx.credentials()?)?;
    Ok(Outcome::ok())
}
