//! Progress of a long operation on a terminal: phase, done/total bytes and files, rate and ETA
//! once the total is known, and one summary line at the end. On a pipe, with `--json` or
//! `--quiet` nothing is drawn: the output is the results only.
//!
//! Two halves: [`plan`] turns a [`Reading`] of the operation's counters into the words of one
//! line (pure, unit-tested); [`Bar`] draws that line on stderr, redrawn at most every
//! [`REDRAW_INTERVAL`], and prints the summary when the operation ends.
//!
//! Owns: what a progress line says. Must not touch: the operations themselves (they only count).

use std::time::{Duration, Instant};

use super::render::Out;
use crate::units::bytes;

/// The line is redrawn at most this often (a terminal over ssh stays responsive).
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(200);

/// No rate or ETA before this much time has passed (the first fraction of a second says
/// nothing about the speed).
pub const RATE_AFTER: Duration = Duration::from_millis(500);

/// The counters of an operation at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// The operation, for the summary: `backup`, `sync`, `restore`.
    pub op: &'static str,
    /// What it does now: `backup`, `sync: scan + upload`, `restore`, …
    pub phase: String,
    /// Whether the file and byte counters mean something in this phase (a sync's merge and
    /// publish show the phase and the note only).
    pub counting: bool,
    /// What `files_done` counts (`packs` for `check --read-data`); empty: files.
    pub noun: &'static str,
    pub files_done: u64,
    /// Known once the pre-count finished (or from the snapshot's summary).
    pub files_total: Option<u64>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// Anything else worth a word (`2.0 MiB uploaded`), after the numbers.
    pub note: Option<String>,
    /// The counters start at zero in each phase (prune): rate and ETA count from the phase's
    /// start, not the operation's.
    pub per_phase: bool,
}

/// One progress line: `🔄 backup  12/40 files  3.00 MiB / 10.00 MiB  30%  1.00 MiB/s  ETA 0:07`.
/// Before the total is known: `🔄 backup  12 files  3.00 MiB (counting…)  1.00 MiB/s`.
pub fn plan(r: &Reading, elapsed: Duration) -> String {
    let mut parts = vec![format!("🔄 {}", r.phase)];
    if !r.counting {
        parts.extend(r.note.clone());
        return parts.join("  ");
    }
    let noun = noun(r);
    if let (None, 0, Some(t)) = (r.bytes_total, r.bytes_done, r.files_total) {
        // A phase that counts items only (prune walking snapshots): no bytes to show.
        let done = r.files_done.min(t);
        parts.push(format!("{done}/{t} {noun}"));
        parts.push(format!("{}%", percent(done, t)));
        if let Some(rate) = rate(done, elapsed).filter(|r| *r > 0.0) {
            let left = t.saturating_sub(done);
            parts.push(format!(
                "ETA {}",
                clock(Duration::from_secs_f64(left as f64 / rate))
            ));
        }
        parts.extend(r.note.clone());
        return parts.join("  ");
    }
    parts.push(match r.files_total {
        Some(t) => format!("{}/{t} {noun}", r.files_done.min(t)),
        None => format!("{} {noun}", r.files_done),
    });
    let rate = rate(r.bytes_done, elapsed);
    match r.bytes_total {
        Some(t) => {
            let done = r.bytes_done.min(t);
            parts.push(format!("{} / {}", bytes(done), bytes(t)));
            parts.push(format!("{}%", percent(done, t)));
        }
        None => parts.push(format!("{} (counting…)", bytes(r.bytes_done))),
    }
    if let Some(rate) = rate {
        parts.push(format!("{}/s", bytes(rate as u64)));
        if let Some(t) = r.bytes_total {
            let left = t.saturating_sub(r.bytes_done);
            if rate > 0.0 {
                parts.push(format!(
                    "ETA {}",
                    clock(Duration::from_secs_f64(left as f64 / rate))
                ));
            }
        }
    }
    if let Some(n) = &r.note {
        parts.push(n.clone());
    }
    parts.join("  ")
}

/// The line printed when the operation ends: `✅ backup: 40 files, 10.00 MiB in 0:10 (1.00 MiB/s)`.
pub fn summary(r: &Reading, elapsed: Duration) -> String {
    let noun = match r.files_done {
        1 => singular(noun(r)),
        _ => noun(r).to_string(),
    };
    let mut s = format!(
        "✅ {}: {} {noun}, {} in {}",
        r.op,
        r.files_done,
        bytes(r.bytes_done),
        clock(elapsed)
    );
    if elapsed.as_secs_f64() > 0.0 {
        s.push_str(&format!(
            " ({}/s)",
            bytes((r.bytes_done as f64 / elapsed.as_secs_f64()) as u64)
        ));
    }
    if let Some(n) = &r.note {
        s.push_str(&format!("; {n}"));
    }
    s
}

/// `files` → `file`, `packs deleted` → `pack deleted`: the first word without its plural `s`.
fn singular(noun: &str) -> String {
    let (first, rest) = noun.split_once(' ').unwrap_or((noun, ""));
    let first = first.strip_suffix('s').unwrap_or(first);
    if rest.is_empty() {
        first.to_string()
    } else {
        format!("{first} {rest}")
    }
}

fn noun(r: &Reading) -> &'static str {
    if r.noun.is_empty() { "files" } else { r.noun }
}

/// Bytes per second over the whole run so far (`None`: too early to say).
fn rate(done: u64, elapsed: Duration) -> Option<f64> {
    (elapsed >= RATE_AFTER).then(|| done as f64 / elapsed.as_secs_f64())
}

/// Whole percent, never 100 before the end.
fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    let p = (done as u128 * 100 / total as u128) as u64;
    if done < total { p.min(99) } else { 100 }
}

/// `0:07`, `12:05`, `1:02:03`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// A progress line on stderr, fed by a closure that reads the operation's counters; drawn only
/// where [`Out::progress_allowed`]. [`Bar::finish`] clears it and prints the summary.
pub struct Bar {
    inner: Option<Drawing>,
}

struct Drawing {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<(Reading, Duration)>,
}

impl Bar {
    pub fn start(out: &Out, read: impl Fn() -> Reading + Send + 'static) -> Bar {
        if !out.progress_allowed() {
            return Bar { inner: None };
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut phase = (String::new(), started);
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_style(indicatif::ProgressStyle::with_template("{wide_msg}").expect("template"));
            loop {
                let r = read();
                if r.phase != phase.0 {
                    phase = (r.phase.clone(), Instant::now());
                }
                let since = if r.per_phase { phase.1 } else { started };
                pb.set_message(plan(&r, since.elapsed()));
                match stopped.recv_timeout(REDRAW_INTERVAL) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            pb.finish_and_clear();
            (read(), started.elapsed())
        });
        Bar {
            inner: Some(Drawing { stop, handle }),
        }
    }

    /// Clears the line; after a success, prints the summary line on stderr.
    pub fn finish(mut self, ok: bool) {
        if let Some(d) = self.inner.take() {
            let _ = d.stop.send(());
            if let Ok((r, elapsed)) = d.handle.join()
                && ok
            {
                eprintln!("{}", summary(&r, elapsed));
            }
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(d) = self.inner.take() {
            let _ = d.stop.send(());
            let _ = d.handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(done: u64, total: Option<u64>) -> Reading {
        Reading {
            op: "backup",
            phase: "backup".into(),
            counting: true,
            noun: "files",
            files_done: 3,
            files_total: total.map(|_| 10),
            bytes_done: done,
            bytes_total: total,
            note: None,
            per_phase: false,
        }
    }

    #[test]
    fn a_known_total_gives_percentage_rate_and_eta() {
        let line = plan(&reading(3 << 20, Some(10 << 20)), Duration::from_secs(3));
        assert_eq!(
            line,
            "🔄 backup  3/10 files  3.00 MiB / 10.00 MiB  30%  1.00 MiB/s  ETA 0:07"
        );
    }

    #[test]
    fn an_unknown_total_says_counting_and_has_no_eta() {
        let line = plan(&reading(3 << 20, None), Duration::from_secs(3));
        assert_eq!(line, "🔄 backup  3 files  3.00 MiB (counting…)  1.00 MiB/s");
    }

    #[test]
    fn no_rate_in_the_first_moment_and_never_100_percent_early() {
        let line = plan(&reading(999, Some(1000)), Duration::from_millis(100));
        assert!(line.contains("99%") && !line.contains("/s"), "{line}");
    }

    #[test]
    fn files_changed_after_the_count_do_not_go_past_the_total() {
        let mut r = reading(12 << 20, Some(10 << 20));
        r.files_done = 11;
        let line = plan(&r, Duration::from_secs(2));
        assert!(
            line.contains("10/10 files") && line.contains("100%"),
            "{line}"
        );
        assert!(line.contains("ETA 0:00"), "{line}");
    }

    #[test]
    fn a_phase_without_counters_shows_its_note_only() {
        let r = Reading {
            op: "sync",
            phase: "sync: download + apply".into(),
            note: Some("12 changes".into()),
            ..Reading::default()
        };
        assert_eq!(
            plan(&r, Duration::from_secs(5)),
            "🔄 sync: download + apply  12 changes"
        );
    }

    #[test]
    fn a_phase_counting_items_only_shows_no_bytes() {
        let r = Reading {
            op: "prune",
            phase: "prune: find used data".into(),
            counting: true,
            noun: "snapshots",
            files_done: 5,
            files_total: Some(20),
            per_phase: true,
            ..Reading::default()
        };
        assert_eq!(
            plan(&r, Duration::from_secs(5)),
            "🔄 prune: find used data  5/20 snapshots  25%  ETA 0:15"
        );
    }

    #[test]
    fn the_summary_has_counts_time_and_rate() {
        let s = summary(&reading(10 << 20, Some(10 << 20)), Duration::from_secs(10));
        assert_eq!(s, "✅ backup: 3 files, 10.00 MiB in 0:10 (1.00 MiB/s)");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
        let one = Reading {
            op: "prune",
            noun: "packs deleted",
            files_done: 1,
            bytes_done: 3 << 20,
            ..Reading::default()
        };
        assert_eq!(
            summary(&one, Duration::from_secs(3)),
            "✅ prune: 1 pack deleted, 3.00 MiB in 0:03 (1.00 MiB/s)"
        );
    }
}
