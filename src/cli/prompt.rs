//! Passwords typed at a terminal: read from the controlling terminal with echo off, and only when
//! standard input is a terminal (a pipe or a script never waits for a prompt).

use std::io::{Read, Write};

use crate::error::{Error, Result};

/// True if a person can answer a prompt: standard input is a terminal.
pub fn interactive() -> bool {
    rustix::termios::isatty(std::io::stdin())
}

/// Turns the terminal's echo off until dropped.
struct NoEcho<'a> {
    tty: &'a std::fs::File,
    saved: Option<rustix::termios::Termios>,
}

impl<'a> NoEcho<'a> {
    fn new(tty: &'a std::fs::File) -> Self {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(tty).ok();
        if let Some(t) = &saved {
            let mut quiet = t.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            quiet.local_modes.insert(LocalModes::ECHONL);
            let _ = tcsetattr(tty, OptionalActions::Flush, &quiet);
        }
        NoEcho { tty, saved }
    }
}

impl Drop for NoEcho<'_> {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(self.tty, rustix::termios::OptionalActions::Now, t);
        }
    }
}

fn open_tty() -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| Error::io("/dev/tty", e))
}

fn read_line(tty: &std::fs::File, prompt: &str) -> Result<Vec<u8>> {
    let mut w = tty;
    w.write_all(prompt.as_bytes())
        .map_err(|e| Error::io("/dev/tty", e))?;
    w.flush().map_err(|e| Error::io("/dev/tty", e))?;
    // Byte by byte: nothing past the newline is taken from the terminal.
    let mut line = Vec::new();
    let mut r = tty;
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b).map_err(|e| Error::io("/dev/tty", e))? {
            0 if line.is_empty() => return Err(Error::invalid("no password typed (end of input)")),
            0 => break,
            _ if b[0] == b'\n' => break,
            _ => line.push(b[0]),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Asks for an existing password; `None` if nobody can answer (no terminal).
pub fn password(prompt: &str) -> Result<Option<Vec<u8>>> {
    if !interactive() {
        return Ok(None);
    }
    let tty = open_tty()?;
    let _quiet = NoEcho::new(&tty);
    Ok(Some(read_line(&tty, prompt)?))
}

/// Asks for a new password twice; `None` if nobody can answer (no terminal). An empty answer is
/// returned as such (the caller decides what it means).
pub fn new_password(prompt: &str) -> Result<Option<Vec<u8>>> {
    if !interactive() {
        return Ok(None);
    }
    let tty = open_tty()?;
    let _quiet = NoEcho::new(&tty);
    let first = read_line(&tty, prompt)?;
    if first.is_empty() {
        return Ok(Some(first));
    }
    let again = read_line(&tty, "Type it again: ")?;
    if again != first {
        return Err(Error::invalid(
            "the two passwords differ: nothing was changed; run the command again",
        ));
    }
    Ok(Some(first))
}
