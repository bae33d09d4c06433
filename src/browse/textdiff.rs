//! Line diffs of two texts for people: side-by-side rows with line numbers, only the changed
//! parts and a few lines around them.

use std::time::Duration;

use similar::{DiffTag, TextDiffConfig};

/// Files bigger than this are not diffed (sizes and times are shown instead).
pub const DIFF_BYTES_MAX: u64 = 1 << 20;
/// Unchanged lines shown around each change.
pub const CONTEXT_LINES: usize = 3;
/// A diff that takes longer is approximated (fewer, larger changes) rather than waited for.
const DIFF_TIME_MAX: Duration = Duration::from_secs(2);

/// Text a diff can show: UTF-8 without NUL bytes.
pub fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// One side of a row: line number (from 1) and text (without its line end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub no: usize,
    pub text: String,
}

/// One row of a side-by-side diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Same(Side, Side),
    /// Removed (left only), added (right only) or changed (both).
    Changed(Option<Side>, Option<Side>),
    /// Unchanged lines left out.
    Gap,
}

/// Side-by-side rows of the differences between `old` (left) and `new` (right), with
/// [`CONTEXT_LINES`] around each change. Empty when the texts are equal.
pub fn side_by_side(old: &str, new: &str) -> Vec<Row> {
    let diff = TextDiffConfig::default()
        .timeout(DIFF_TIME_MAX)
        .diff_lines(old, new);
    let line = |s: Option<&str>| s.unwrap_or("").trim_end_matches(['\n', '\r']).to_string();
    let a = |i: usize| Side {
        no: i + 1,
        text: line(diff.old_slice(i)),
    };
    let b = |i: usize| Side {
        no: i + 1,
        text: line(diff.new_slice(i)),
    };
    let old_lines = old.split_inclusive('\n').count();
    let mut rows = Vec::new();
    for (g, group) in diff.grouped_ops(CONTEXT_LINES).iter().enumerate() {
        if g > 0 || group.first().is_some_and(|op| op.old_range().start > 0) {
            rows.push(Row::Gap);
        }
        for op in group {
            let (tag, ro, rn) = op.as_tag_tuple();
            match tag {
                DiffTag::Equal => {
                    for (i, j) in ro.zip(rn) {
                        rows.push(Row::Same(a(i), b(j)));
                    }
                }
                _ => {
                    let (lo, ln) = (ro.len(), rn.len());
                    for k in 0..lo.max(ln) {
                        rows.push(Row::Changed(
                            (k < lo).then(|| a(ro.start + k)),
                            (k < ln).then(|| b(rn.start + k)),
                        ));
                    }
                }
            }
        }
    }
    if rows.last().is_some_and(|r| !matches!(r, Row::Gap)) {
        let end_a = match rows.last() {
            Some(Row::Same(x, _)) => x.no,
            _ => 0,
        };
        if end_a > 0 && end_a < old_lines {
            rows.push(Row::Gap);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_rows() {
        assert!(side_by_side("a\nb\n", "a\nb\n").is_empty());
    }

    #[test]
    fn changes_are_paired_and_far_lines_left_out() {
        let old: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let new = old
            .replace("line 10\n", "line ten\n")
            .replace("line 20\n", "");
        let rows = side_by_side(&old, &new);
        assert_eq!(rows[0], Row::Gap, "lines 1-6 are left out");
        let changed: Vec<_> = rows
            .iter()
            .filter_map(|r| match r {
                Row::Changed(l, r) => Some((l.clone(), r.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(changed.len(), 2);
        assert_eq!(changed[0].0.as_ref().unwrap().text, "line 10");
        assert_eq!(changed[0].1.as_ref().unwrap().text, "line ten");
        assert_eq!(changed[1].0.as_ref().unwrap().no, 20);
        assert!(changed[1].1.is_none(), "a removed line has no right side");
        assert!(rows.contains(&Row::Same(
            Side {
                no: 7,
                text: "line 7".into()
            },
            Side {
                no: 7,
                text: "line 7".into()
            }
        )));
        assert!(
            !rows
                .iter()
                .any(|r| matches!(r, Row::Same(x, _) if x.no == 2))
        );
    }

    #[test]
    fn binary_is_not_text() {
        assert!(as_text(b"a\0b").is_none());
        assert!(as_text(&[0xff, 0xfe]).is_none());
        assert_eq!(as_text(b"ok\n"), Some("ok\n"));
    }
}
