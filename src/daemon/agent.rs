//! The login agent: what makes the system start `prism-sync start NAME --foreground` at login,
//! so a laptop keeps a set in sync after a reboot without a terminal.
//!
//! Owns: the text of a systemd user unit (Linux) and of a LaunchAgent property list (macOS),
//! where each goes, and loading or unloading it through the system's own tool (`systemctl
//! --user`, `launchctl`). Both texts are generated on every system (so both are tested here);
//! which one `install` writes is [`crate::sys::LOGIN_AGENT`]. Must not touch: the daemon's
//! running state (the agent runs the ordinary foreground daemon).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::home::Home;

pub use crate::sys::LoginAgent as AgentKind;

/// What the agent runs: `exe --home HOME [--password-file F] [--rest-token-file F] start NAME
/// --foreground`. Every path is absolute.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    pub exe: PathBuf,
    pub home: PathBuf,
    pub password_file: Option<PathBuf>,
    pub rest_token_file: Option<PathBuf>,
}

impl AgentSpec {
    /// The command line, program first.
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![
            self.exe.display().to_string(),
            "--home".into(),
            self.home.display().to_string(),
        ];
        if let Some(f) = &self.password_file {
            v.extend(["--password-file".into(), f.display().to_string()]);
        }
        if let Some(f) = &self.rest_token_file {
            v.extend(["--rest-token-file".into(), f.display().to_string()]);
        }
        v.extend(["start".into(), self.name.clone(), "--agent".into()]);
        v
    }

    /// The systemd unit's name (`prism-sync-NAME.service`; set names are valid unit names).
    pub fn unit_name(&self) -> String {
        format!("prism-sync-{}.service", self.name)
    }

    /// The LaunchAgent's label (also its file name without `.plist`).
    pub fn label(&self) -> String {
        format!("org.prism-sync.agent.{}", self.name)
    }

    /// Where the agent's output goes (the daemon also writes its own log).
    pub fn log_path(&self) -> PathBuf {
        Home::new(&self.home).agent_log(&self.name)
    }
}

/// One argument of `ExecStart=`, quoted for systemd: inside double quotes, `\` and `"`
/// escaped; `%` (specifiers) and `$` (variables) doubled.
fn systemd_quote(arg: &str) -> String {
    let mut s = String::with_capacity(arg.len() + 2);
    s.push('"');
    for c in arg.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '%' => s.push_str("%%"),
            '$' => s.push_str("$$"),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The systemd user unit. It restarts the daemon when it fails (not when it is stopped with
/// `prism-sync stop`, which ends it successfully) and starts with the user's session.
pub fn systemd_user_unit(spec: &AgentSpec) -> String {
    let exec: Vec<String> = spec.argv().iter().map(|a| systemd_quote(a)).collect();
    format!(
        "# Written by `prism-sync start {name} --install`; removed by `--uninstall`.
[Unit]
Description=prism-sync: keep the sync set {name} in sync
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={exec}
Restart=on-failure
RestartSec=10
UMask=0077

[Install]
WantedBy=default.target
",
        name = spec.name,
        exec = exec.join(" "),
    )
}

/// Escapes text for XML character data and attribute values.
fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// The LaunchAgent property list: runs at load (login), restarted when it exits with a failure
/// (KeepAlive.SuccessfulExit = false), output appended to [`AgentSpec::log_path`].
pub fn launch_agent_plist(spec: &AgentSpec) -> String {
    let args: String = spec
        .argv()
        .iter()
        .map(|a| format!("\t\t<string>{}</string>\n", xml_escape(a)))
        .collect();
    let log = xml_escape(&spec.log_path().display().to_string());
    // No `--` inside the comment: XML forbids it.
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by prism-sync (start with the install option); removed with the uninstall option. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{label}</string>
	<key>ProgramArguments</key>
	<array>
{args}	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>10</integer>
	<key>ProcessType</key>
	<string>Background</string>
	<key>Umask</key>
	<integer>63</integer>
	<key>StandardOutPath</key>
	<string>{log}</string>
	<key>StandardErrorPath</key>
	<string>{log}</string>
</dict>
</plist>
"#,
        label = xml_escape(&spec.label()),
    )
}

/// Where the agent file of `kind` goes for a user whose home directory is `user_home`
/// (`$XDG_CONFIG_HOME` is honoured for systemd).
pub fn agent_path(kind: AgentKind, spec: &AgentSpec, user_home: &Path) -> PathBuf {
    match kind {
        AgentKind::SystemdUser => {
            let config = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| user_home.join(".config"));
            config.join("systemd").join("user").join(spec.unit_name())
        }
        AgentKind::LaunchAgent => user_home
            .join("Library")
            .join("LaunchAgents")
            .join(format!("{}.plist", spec.label())),
    }
}

/// The agent file's text for `kind`.
pub fn agent_text(kind: AgentKind, spec: &AgentSpec) -> String {
    match kind {
        AgentKind::SystemdUser => systemd_user_unit(spec),
        AgentKind::LaunchAgent => launch_agent_plist(spec),
    }
}

/// What loading or unloading did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// The system tool took it (and, on install, started it).
    Yes,
    /// It could not be loaded now (no user manager reachable, …): the reason. The file is in
    /// place and is loaded at the next login.
    No(String),
}

/// Runs a system tool; `Err(reason)` with its last line of output when it fails.
fn run(tool: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(tool).args(args).stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!(
                "`{tool} {}` failed: {}",
                args.join(" "),
                last.trim()
            ))
        }
        Err(e) => Err(format!("cannot run {tool}: {e}")),
    }
}

/// Whether a systemd user manager answers for this user (it does not in containers, over some
/// `su` sessions, or without lingering after logout).
pub fn systemd_user_manager_reachable() -> Result<(), String> {
    run("systemctl", &["--user", "show-environment"])
}

/// Loads the agent at `path` and starts it now (`start_now`) or only at the next login.
pub fn load(kind: AgentKind, spec: &AgentSpec, path: &Path, start_now: bool) -> Loaded {
    let r = match kind {
        AgentKind::SystemdUser => systemd_user_manager_reachable()
            .and_then(|()| run("systemctl", &["--user", "daemon-reload"]))
            .and_then(|()| {
                let unit = spec.unit_name();
                if start_now {
                    run("systemctl", &["--user", "enable", "--now", &unit])
                } else {
                    run("systemctl", &["--user", "enable", &unit])
                }
            }),
        AgentKind::LaunchAgent => {
            let domain = format!("gui/{}", crate::sys::uid());
            let p = path.display().to_string();
            // RunAtLoad starts it on bootstrap; without start_now it is loaded disabled.
            if start_now {
                run("launchctl", &["bootstrap", &domain, &p])
            } else {
                run(
                    "launchctl",
                    &["enable", &format!("{domain}/{}", spec.label())],
                )
            }
        }
    };
    match r {
        Ok(()) => Loaded::Yes,
        Err(why) => Loaded::No(why),
    }
}

/// Stops and unloads the agent (before its file is removed).
pub fn unload(kind: AgentKind, spec: &AgentSpec) -> Loaded {
    let r = match kind {
        AgentKind::SystemdUser => systemd_user_manager_reachable().and_then(|()| {
            run(
                "systemctl",
                &["--user", "disable", "--now", &spec.unit_name()],
            )
        }),
        AgentKind::LaunchAgent => run(
            "launchctl",
            &[
                "bootout",
                &format!("gui/{}/{}", crate::sys::uid(), spec.label()),
            ],
        ),
    };
    match r {
        Ok(()) => Loaded::Yes,
        Err(why) => Loaded::No(why),
    }
}

/// Writes `text` to `path` (mode 0644: the system's agent loader reads it), creating its
/// directory, through a temp file renamed into place.
pub fn write_agent_file(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().expect("agent path has a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.prism-tmp-{}",
        path.file_name().expect("file name").to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    let r = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AgentSpec {
        AgentSpec {
            name: "thesis".into(),
            exe: "/opt/prism sync/bin/prism-sync".into(),
            home: "/home/me/.prism".into(),
            password_file: Some("/home/me/100%$pw \"x\"".into()),
            rest_token_file: None,
        }
    }

    #[test]
    fn the_systemd_unit_quotes_every_argument_of_its_command() {
        let u = systemd_user_unit(&spec());
        let exec = u
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        assert_eq!(
            exec,
            r#""/opt/prism sync/bin/prism-sync" "--home" "/home/me/.prism" "--password-file" "/home/me/100%%$$pw \"x\"" "start" "thesis" "--agent""#
        );
        assert!(u.contains("\nRestart=on-failure\n"), "{u}");
        assert!(u.contains("\n[Install]\nWantedBy=default.target\n"), "{u}");
    }

    #[test]
    fn agent_files_go_where_the_system_looks() {
        let s = spec();
        let home = Path::new("/Users/me");
        assert_eq!(
            agent_path(AgentKind::LaunchAgent, &s, home),
            PathBuf::from("/Users/me/Library/LaunchAgents/org.prism-sync.agent.thesis.plist")
        );
        assert!(
            agent_path(AgentKind::SystemdUser, &s, home)
                .ends_with("systemd/user/prism-sync-thesis.service")
        );
    }
}
