//! A running `prism-sync ui` for the web app's tests: started from a prepared command, it reads
//! the URL the app prints (with its one-time token) and stops the app when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct RunningUi {
    child: Child,
    /// The URL it printed, with the token: `http://127.0.0.1:PORT/?t=TOKEN`.
    pub url: String,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub port: u16,
    pub token: String,
}

impl RunningUi {
    /// Runs `cmd ui` (the command carries the test's environment) and waits for its URL.
    pub fn start(mut cmd: Command) -> RunningUi {
        let mut child = cmd
            .arg("ui")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prism-sync ui");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(i) = l.find("http://") {
                        break l[i..].trim().to_string();
                    }
                }
                _ => {
                    let st = child.wait().unwrap();
                    panic!("prism-sync ui ended ({st}) without printing its URL");
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let at = url.find("/?t=").expect("the URL has the token");
        let base = url[..at].to_string();
        let port: u16 = base["http://127.0.0.1:".len()..]
            .parse()
            .expect("the URL names a loopback port");
        let token = url[at + 4..].to_string();
        assert_eq!(token.len(), 64, "{url}");
        RunningUi {
            child,
            url,
            base,
            port,
            token,
        }
    }

    /// The app's URL for `path` (no token: the browser carries the cookie).
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for RunningUi {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
