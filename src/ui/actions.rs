//! Actions of the web app are command lines: the button runs the same `prism-sync` binary with
//! the arguments shown beside it (and the global options the app was started with), and the
//! page shows what ran, its exit code and its output.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::CommandLine;
use crate::repository::now_ns;

/// An action that runs longer is stopped (a sync of a huge folder should run from a terminal).
pub const ACTION_TIME_MAX: Duration = Duration::from_secs(30 * 60);
/// Output kept per stream.
const OUTPUT_BYTES_MAX: usize = 64 << 10;

/// A command that ran.
#[derive(Debug, Clone)]
pub struct ActionRun {
    /// As a user would type it (`prism-sync resolve p notes.md --keep local`).
    pub shown: String,
    /// Exit code; -1 when it was stopped or could not start.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub time_ns: i64,
}

impl ActionRun {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// One argument as a POSIX shell reads it back: as is when it is plain, else single-quoted.
pub fn shell_quote(arg: &OsStr) -> String {
    let b = arg.as_bytes();
    let plain = !b.is_empty()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&c));
    if plain {
        return String::from_utf8_lossy(b).into_owned();
    }
    let s = String::from_utf8_lossy(b).replace('\'', r"'\''");
    format!("'{s}'")
}

/// `prism-sync ARGS…` as shown (the global options are the app's, not the action's).
pub fn show(args: &[OsString]) -> String {
    let mut s = String::from("prism-sync");
    for a in args {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

fn read_capped(mut r: impl Read) -> String {
    let mut buf = Vec::new();
    let _ = r
        .by_ref()
        .take(OUTPUT_BYTES_MAX as u64)
        .read_to_end(&mut buf);
    // Drain the rest so the child never blocks on a full pipe.
    let _ = std::io::copy(&mut r, &mut std::io::sink());
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs `prism-sync ARGS…` and waits (blocking; call it off the async threads).
pub fn run(cmd: &CommandLine, args: Vec<OsString>) -> ActionRun {
    let shown = show(&args);
    let time_ns = now_ns();
    let failed = |msg: String| ActionRun {
        shown: shown.clone(),
        code: -1,
        stdout: String::new(),
        stderr: msg,
        time_ns,
    };
    let mut child = match Command::new(&cmd.exe)
        .args(&cmd.global)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run {}: {e}", cmd.exe.display())),
    };
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || read_capped(out));
    let err = std::thread::spawn(move || read_capped(err));
    let deadline = Instant::now() + ACTION_TIME_MAX;
    let code = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st.code().unwrap_or(-1),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
        }
    };
    ActionRun {
        shown,
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        time_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_shown_as_a_shell_reads_them() {
        let args: Vec<OsString> = ["resolve", "p", "my notes.md", "--keep", "local", "it's"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            show(&args),
            r"prism-sync resolve p 'my notes.md' --keep local 'it'\''s'"
        );
        assert_eq!(shell_quote(OsStr::new("")), "''");
        assert_eq!(shell_quote(OsStr::new("data/x.csv")), "data/x.csv");
    }
}
