//! The login agent (`prism-sync start NAME --install` / `--uninstall`): the systemd user unit it
//! writes on Linux, run exactly as systemd would run it; and the LaunchAgent property list a Mac
//! gets, parsed as XML and checked key by key.
//!
//! The runs here have no user manager to talk to (no session bus), so loading fails and must be
//! reported as such, with the file left in place for the next login.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use prism_sync::daemon::agent::{AgentSpec, launch_agent_plist};

const SET: &str = "thesis";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_prism-sync")
}

struct Laptop {
    tmp: tempfile::TempDir,
}

impl Laptop {
    fn user_home(&self) -> PathBuf {
        self.tmp.path().join("user")
    }
    fn prism_home(&self) -> PathBuf {
        self.user_home().join(".prism")
    }
    fn unit_path(&self) -> PathBuf {
        self.user_home()
            .join(".config/systemd/user")
            .join(format!("prism-sync-{SET}.service"))
    }

    /// A command with this laptop's environment and no way to reach a user manager.
    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .env("HOME", self.user_home())
            .env("PRISM_HOME", self.prism_home())
            .env_remove("PRISM_SYNC_PASSWORD")
            .env_remove("PRISM_SYNC_REPO")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("PRISM_SYNC_POLL_MS", "100")
            .env("PRISM_SYNC_SETTLE_MS", "50")
            .current_dir(self.tmp.path());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(bin(), args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "prism-sync {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// A laptop with one set (password-less repository: a local key file).
fn laptop() -> Laptop {
    let l = Laptop {
        tmp: tempfile::tempdir().unwrap(),
    };
    let folder = l.tmp.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(l.user_home()).unwrap();
    std::fs::write(folder.join("a.txt"), "hello\n").unwrap();
    let repo = l.tmp.path().join("repo");
    l.ok(&[
        "init",
        folder.to_str().unwrap(),
        "--repo",
        repo.to_str().unwrap(),
        "--name",
        SET,
    ]);
    l
}

/// Splits an `ExecStart=` line the way systemd does for the quoting the unit uses: double-quoted
/// words with `\\` and `\"` escapes, `%%` and `$$` doubled.
fn systemd_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        match chars.next() {
            None => return words,
            Some('"') => {}
            Some(c) => panic!("unquoted word starting with {c:?} in {line}"),
        }
        let mut w = String::new();
        loop {
            match chars.next().expect("unterminated quote") {
                '"' => break,
                '\\' => w.push(chars.next().expect("escape")),
                c @ ('%' | '$') => {
                    assert_eq!(chars.next(), Some(c), "lone {c} in {line}");
                    w.push(c);
                }
                c => w.push(c),
            }
        }
        words.push(w);
    }
}

#[test]
fn install_writes_a_systemd_user_unit_whose_command_runs_the_daemon_and_uninstall_removes_it() {
    let l = laptop();
    let out = l.ok(&["start", SET, "--install", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["agent"].as_str(), Some(l.unit_path().to_str().unwrap()));
    // No session bus here: not loaded, and the reason says which tool failed.
    assert_eq!(v["loaded"], false, "{v}");
    assert!(
        v["not_loaded_because"]
            .as_str()
            .is_some_and(|w| w.contains("systemctl")),
        "{v}"
    );

    let unit = std::fs::read_to_string(l.unit_path()).unwrap();
    for line in [
        "[Unit]",
        "[Service]",
        "Type=simple",
        "Restart=on-failure",
        "[Install]",
        "WantedBy=default.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let argv = systemd_words(exec);
    let exe = Path::new(bin()).canonicalize().unwrap();
    assert_eq!(
        argv,
        [
            exe.to_str().unwrap(),
            "--home",
            l.prism_home().to_str().unwrap(),
            "start",
            SET,
            "--agent"
        ],
        "{unit}"
    );

    // Run the unit's command as systemd would (no terminal, another directory, no PRISM_HOME):
    // the daemon comes up for this home, and `stop` ends it with success, so Restart=on-failure
    // does not bring it back.
    let mut daemon = l
        .cmd(
            &argv[0],
            &argv[1..].iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .env_remove("PRISM_HOME")
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&l.ok(&["status", SET, "--json"])).unwrap();
        if st["daemon"]["running"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's daemon did not come up: {st}"
        );
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the agent's daemon exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    l.ok(&["stop", SET]);
    let status = exit_within_30s(&mut daemon, "the daemon did not exit after stop");
    assert!(status.success(), "stopped agent exits with {status}");

    let out = l.ok(&["start", SET, "--uninstall"]);
    assert!(out.contains("no longer starts at login"), "{out}");
    assert!(!l.unit_path().exists());
    let o = l.run(&["start", SET, "--uninstall"]);
    assert_eq!(o.status.code(), Some(1), "second uninstall");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no login agent for thesis"), "{err}");
}

#[test]
fn install_refuses_a_password_only_in_the_environment() {
    let l = laptop();
    let o = l
        .cmd(bin(), &["start", SET, "--install"])
        .env("PRISM_SYNC_PASSWORD", "secret")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--password-file"), "{err}");
    assert!(!l.unit_path().exists());
}

#[test]
fn install_of_an_unknown_set_fails_and_writes_nothing() {
    let l = laptop();
    let o = l.run(&["start", "nope", "--install"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!l.user_home().join(".config/systemd").exists());
}

// ---- the LaunchAgent (macOS): generated here, parsed as XML --------------------------------

/// A parsed XML element: name and children (text is kept as a child with name "#text").
#[derive(Debug)]
struct El {
    name: String,
    text: String,
    kids: Vec<El>,
}

/// Parses XML into elements, checking that every end tag matches its start tag.
fn parse_xml(text: &str) -> El {
    let mut stack = vec![El {
        name: "#doc".into(),
        text: String::new(),
        kids: vec![],
    }];
    for tok in xmlparser::Tokenizer::from(text) {
        match tok.unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{text}")) {
            xmlparser::Token::ElementStart { local, .. } => stack.push(El {
                name: local.to_string(),
                text: String::new(),
                kids: vec![],
            }),
            xmlparser::Token::ElementEnd { end, .. } => match end {
                xmlparser::ElementEnd::Open => {}
                xmlparser::ElementEnd::Close(_, local) => {
                    let el = stack.pop().unwrap();
                    assert_eq!(el.name, local.as_str(), "mismatched end tag");
                    stack.last_mut().unwrap().kids.push(el);
                }
                xmlparser::ElementEnd::Empty => {
                    let el = stack.pop().unwrap();
                    stack.last_mut().unwrap().kids.push(el);
                }
            },
            xmlparser::Token::Text { text: t } => {
                let el = stack.last_mut().unwrap();
                el.text.push_str(&unescape(t.as_str()));
            }
            _ => {}
        }
    }
    assert_eq!(stack.len(), 1, "unclosed elements");
    stack.pop().unwrap()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The value element of `key` in a plist `<dict>`.
fn dict_get<'a>(dict: &'a El, key: &str) -> &'a El {
    assert_eq!(dict.name, "dict");
    let i = dict
        .kids
        .iter()
        .position(|k| k.name == "key" && k.text == key)
        .unwrap_or_else(|| panic!("no key {key}"));
    &dict.kids[i + 1]
}

#[test]
fn the_launch_agent_plist_parses_and_runs_the_foreground_daemon_at_login() {
    let spec = AgentSpec {
        name: "thesis".into(),
        exe: "/Applications/Prism & Co/prism-sync".into(),
        home: "/Users/me/<prism>".into(),
        password_file: Some("/Users/me/pw \"file\"".into()),
        rest_token_file: None,
    };
    let text = launch_agent_plist(&spec);
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist"));
    let doc = parse_xml(&text);
    let plist = doc.kids.iter().find(|e| e.name == "plist").expect("plist");
    assert_eq!(plist.kids.len(), 1);
    let dict = &plist.kids[0];
    assert_eq!(dict_get(dict, "Label").text, "org.prism-sync.agent.thesis");
    let args: Vec<&str> = dict_get(dict, "ProgramArguments")
        .kids
        .iter()
        .map(|s| {
            assert_eq!(s.name, "string");
            s.text.as_str()
        })
        .collect();
    assert_eq!(
        args,
        [
            "/Applications/Prism & Co/prism-sync",
            "--home",
            "/Users/me/<prism>",
            "--password-file",
            "/Users/me/pw \"file\"",
            "start",
            "thesis",
            "--agent"
        ]
    );
    assert_eq!(dict_get(dict, "RunAtLoad").name, "true");
    let keep = dict_get(dict, "KeepAlive");
    assert_eq!(dict_get(keep, "SuccessfulExit").name, "false");
    assert_eq!(
        dict_get(dict, "StandardErrorPath").text,
        "/Users/me/<prism>/sync/agent-thesis.log"
    );
    assert_eq!(dict_get(dict, "Umask").text, "63"); // 0o077
}

/// The exit status of `child`, which must end within 30 s (`what` says otherwise).
fn exit_within_30s(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the daemon of this laptop's home serves `set` now.
fn served(l: &Laptop, set: &str) -> bool {
    let st: serde_json::Value = serde_json::from_str(&l.ok(&["status", set, "--json"])).unwrap();
    !st["daemon"]["live"].is_null()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two sets in one home each get a login agent, and one daemon serves a home: the agent that
/// comes second adds its set to the running daemon and waits (it used to fail with "a daemon
/// already runs" and be restarted by the service manager every 10 s, its set never served);
/// when the daemon goes away the waiting agent runs it, resuming both sets; `stop` of both ends
/// it with success.
#[test]
fn two_sets_agents_share_the_home_s_daemon_and_the_survivor_takes_over() {
    let l = laptop();
    let second = l.tmp.path().join("notes-folder");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(second.join("n.txt"), "n\n").unwrap();
    let repo2 = l.tmp.path().join("repo2");
    l.ok(&[
        "init",
        second.to_str().unwrap(),
        "--repo",
        repo2.to_str().unwrap(),
        "--name",
        "notes",
    ]);
    let agent = |set: &str| {
        l.cmd(bin(), &["start", set, "--agent"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = agent(SET);
    wait_for("the first agent's daemon serves its set", || {
        served(&l, SET)
    });
    let mut other = agent("notes");
    wait_for(
        "the second agent's set is served by the running daemon",
        || served(&l, "notes"),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        other.try_wait().unwrap().is_none(),
        "the second agent waits beside the daemon instead of exiting"
    );
    assert!(served(&l, SET), "the first set is still served");

    // The daemon (in the first agent's process) dies: the second agent runs it, both sets.
    first.kill().unwrap();
    first.wait().unwrap();
    wait_for("the waiting agent takes over with both sets", || {
        served(&l, SET) && served(&l, "notes")
    });
    assert!(other.try_wait().unwrap().is_none());

    l.ok(&["stop", SET]);
    l.ok(&["stop", "notes"]);
    let status = exit_within_30s(&mut other, "the agent did not end after stop");
    assert!(status.success(), "a stopped agent exits with {status}");
}
