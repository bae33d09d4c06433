//! Where a command's time goes: with `PRISM_SYNC_TIMING=1` in the environment, each [`Span`]
//! prints its name and duration on stderr when it ends (`benches/README.md` §12c shows how they
//! were used). Off, a span costs one relaxed load.

use std::sync::OnceLock;
use std::time::Instant;

/// The environment variable that turns the spans on.
pub const TIMING_ENV: &str = "PRISM_SYNC_TIMING";

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(TIMING_ENV).is_some_and(|v| v == "1"))
}

/// A timed part of a command; prints when dropped (if timing is on).
pub struct Span {
    name: &'static str,
    start: Option<Instant>,
}

/// Starts a span named `name`.
pub fn span(name: &'static str) -> Span {
    Span {
        name,
        start: enabled().then(Instant::now),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(s) = self.start {
            eprintln!(
                "timing: {}: {:.2} ms",
                self.name,
                s.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}
