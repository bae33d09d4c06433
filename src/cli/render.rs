//! Output helpers: the Prism style (✅ 🔄 ⚠️ ❌ 💡 and indented `Key: value` lines) for people,
//! JSON for machines; progress lines (only on a terminal) are in `progress`.

use std::io::IsTerminal;

/// How the user asked us to talk.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
}

impl Out {
    pub fn human(&self) -> bool {
        !self.json && !self.quiet
    }

    /// Prints a JSON document (pretty) to stdout.
    pub fn json<T: serde::Serialize + ?Sized>(&self, v: &T) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).expect("JSON values serialize")
        );
    }

    pub fn line(&self, s: impl AsRef<str>) {
        if self.human() {
            println!("{}", s.as_ref());
        }
    }

    pub fn kv(&self, key: &str, value: impl std::fmt::Display) {
        if self.human() {
            println!("   {key}: {value}");
        }
    }

    pub fn warn(&self, s: impl AsRef<str>) {
        if !self.json || self.verbose > 0 {
            eprintln!("⚠️  {}", s.as_ref());
        }
    }

    /// Whether a progress display may be drawn (stderr is a terminal, not quiet, not JSON).
    pub fn progress_allowed(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }
}

pub use crate::units::bytes;

pub fn seconds(ns: u64) -> String {
    format!("{:.2} s", ns as f64 / 1e9)
}

/// "1 file", "2 files": a count with the noun in the right number.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
