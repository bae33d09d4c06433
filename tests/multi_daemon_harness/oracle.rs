//! The oracle: every operation the workload made — what it saw at the paths it replaced or
//! removed (`observed`), what it left there (`written`) — and which writes are still *live*:
//! no later operation, at any endpoint, saw that content at that path and replaced it. A live
//! write must survive (at its path or in a conflict copy of it); a write that an operation saw
//! and replaced was superseded on purpose. Paths are compared normalized (conflict-copy
//! insertions stripped), so editing a conflict copy supersedes what it holds.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::json;

use super::fsview::{Item, normalize};

/// One operation of the workload at one endpoint.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// Position in the workload (allocated before the operation ran; concurrent operations get
    /// consecutive numbers).
    pub seq: u64,
    pub endpoint: usize,
    pub op: &'static str,
    /// Wall-clock time (ns since the epoch) when the operation began and ended.
    pub start_ns: i64,
    pub end_ns: i64,
    /// Paths the operation replaced, removed or moved away (a directory stands for everything
    /// below it).
    pub touched: Vec<String>,
    /// Files and symlinks at the touched paths right before the operation.
    pub observed: Vec<(String, Item)>,
    /// Files and symlinks the operation left.
    pub written: Vec<(String, Item)>,
    /// States that existed only while the operation ran (a file truncated before its new
    /// content was written), with how long they lasted in µs.
    pub transient: Vec<(String, Item, u64)>,
    pub note: String,
    /// The operation moved what it observed (a rename): each written item is an observed item
    /// at a new path, not new content.
    pub moves: bool,
    /// For a move: where the moved path (`touched[0]`) went.
    pub moved_to: Option<String>,
}

impl Event {
    pub fn json(&self, names: &[&str]) -> serde_json::Value {
        let pairs = |v: &[(String, Item)]| -> Vec<String> {
            v.iter()
                .map(|(p, i)| format!("{p} = {}", i.short()))
                .collect()
        };
        json!({
            "seq": self.seq,
            "endpoint": names[self.endpoint],
            "op": self.op,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "touched": self.touched,
            "observed": pairs(&self.observed),
            "written": pairs(&self.written),
            "transient": self.transient.iter().map(|(p, i, us)| format!("{p} = {} for {us} µs", i.short())).collect::<Vec<_>>(),
            "note": self.note,
        })
    }

    pub fn line(&self, names: &[&str]) -> String {
        let mut s = format!(
            "#{:<5} {:<6} {:<13}",
            self.seq, names[self.endpoint], self.op
        );
        for t in &self.touched {
            let _ = write!(s, " ~{t}");
        }
        for (p, i) in &self.written {
            let _ = write!(s, " +{p}={}", i.short());
        }
        if self.written.len() > 4 {
            s = format!(
                "#{:<5} {:<6} {:<13} {} touched, {} written (first: {})",
                self.seq,
                names[self.endpoint],
                self.op,
                self.touched.len(),
                self.written.len(),
                self.written[0].0
            );
        }
        if !self.note.is_empty() {
            let _ = write!(s, "  ({})", self.note);
        }
        s
    }
}

/// A write the oracle expects to survive.
#[derive(Debug, Clone)]
pub struct LiveWrite {
    pub seq: u64,
    pub endpoint: usize,
    /// As written (may be a conflict copy's name).
    pub path: String,
    /// Normalized: the path it stands for.
    pub key: String,
    pub item: Item,
}

#[derive(Default)]
pub struct Oracle {
    pub events: Vec<Event>,
}

impl Oracle {
    pub fn push(&mut self, e: Event) {
        self.events.push(e);
    }

    pub fn sorted(&mut self) {
        self.events.sort_by_key(|e| e.seq);
    }

    /// Writes no later operation saw and replaced, one per (normalized path, content).
    ///
    /// A write made by a move (a rename) carries content that was written before: if that
    /// content was replaced at its old path by an operation elsewhere (a newer version of the
    /// file), the moved copy is superseded too — the newer version may take its place, as when
    /// a daemon finishes applying an update into a directory the user just renamed.
    pub fn live_writes(&self) -> Vec<LiveWrite> {
        let mut last_seen: HashMap<(String, &Item), u64> = HashMap::new();
        let mut replaced: HashSet<(String, &Item)> = HashSet::new();
        let mut source: HashMap<(String, &Item), String> = HashMap::new();
        for e in &self.events {
            for (p, i) in &e.observed {
                let s = last_seen.entry((normalize(p), i)).or_default();
                *s = (*s).max(e.seq);
                if !e.moves {
                    replaced.insert((normalize(p), i));
                }
            }
            if e.moves {
                for (to, i) in &e.written {
                    if let Some((from, _)) = e.observed.iter().find(|(_, o)| o == i) {
                        source.insert((normalize(to), i), normalize(from));
                    }
                }
            }
        }
        // Was this content replaced at the path it was moved from (or further back)?
        let replaced_upstream = |key: &str, item: &Item| -> bool {
            let mut at = key.to_string();
            for _ in 0..self.events.len() {
                let Some(from) = source.get(&(at.clone(), item)) else {
                    return false;
                };
                if replaced.contains(&(from.clone(), item)) {
                    return true;
                }
                at = from.clone();
            }
            false
        };
        let mut live: HashMap<(String, Item), LiveWrite> = HashMap::new();
        for e in &self.events {
            for (p, i) in &e.written {
                let key = normalize(p);
                if last_seen.get(&(key.clone(), i)).is_some_and(|&s| s > e.seq) {
                    continue;
                }
                if e.moves && replaced_upstream(&key, i) {
                    continue;
                }
                live.insert(
                    (key.clone(), i.clone()),
                    LiveWrite {
                        seq: e.seq,
                        endpoint: e.endpoint,
                        path: p.clone(),
                        key,
                        item: i.clone(),
                    },
                );
            }
        }
        let mut v: Vec<LiveWrite> = live.into_values().collect();
        v.sort_by(|a, b| a.seq.cmp(&b.seq).then(a.key.cmp(&b.key)));
        v
    }

    /// The moves the workload made: (operation, from, to), paths normalized.
    fn move_list(&self) -> Vec<(u64, String, String)> {
        self.events
            .iter()
            .filter_map(|e| {
                let to = e.moved_to.as_ref()?;
                Some((e.seq, normalize(e.touched.first()?), normalize(to)))
            })
            .collect()
    }

    /// Where `key` went through moves made after operation `after` (directories renamed above it
    /// carry it along: a daemon finishing a write into a renamed directory lands there), `key`
    /// itself included. Bounded.
    pub fn images(&self, key: &str, after: u64) -> Vec<String> {
        let moves = self.move_list();
        let mut out = vec![(key.to_string(), after)];
        let mut i = 0;
        while i < out.len() && out.len() < 64 {
            let (at, since) = out[i].clone();
            for (seq, from, to) in &moves {
                if *seq <= since {
                    continue;
                }
                let moved = if at == *from {
                    Some(to.clone())
                } else {
                    at.strip_prefix(&format!("{from}/"))
                        .map(|rest| format!("{to}/{rest}"))
                };
                if let Some(m) = moved
                    && !out.iter().any(|(p, _)| *p == m)
                {
                    out.push((m, *seq));
                }
            }
            i += 1;
        }
        out.into_iter().map(|(p, _)| p).collect()
    }

    /// The paths `key` may have come from through moves (the reverse of [`Oracle::images`]),
    /// `key` itself included. Bounded.
    pub fn origins(&self, key: &str) -> Vec<String> {
        let moves = self.move_list();
        let mut out = vec![key.to_string()];
        let mut i = 0;
        while i < out.len() && out.len() < 64 {
            let at = out[i].clone();
            for (_, from, to) in &moves {
                let back = if at == *to {
                    Some(from.clone())
                } else {
                    at.strip_prefix(&format!("{to}/"))
                        .map(|rest| format!("{from}/{rest}"))
                };
                if let Some(b) = back
                    && !out.contains(&b)
                {
                    out.push(b);
                }
            }
            i += 1;
        }
        out
    }

    /// Every state the workload created at a path (normalized), with the operation that made
    /// it and, for a transient state, how long it lasted (µs).
    pub fn known_states(&self) -> HashMap<(String, Item), (u64, Option<u64>)> {
        let mut out: HashMap<(String, Item), (u64, Option<u64>)> = HashMap::new();
        for e in &self.events {
            for (p, i, us) in &e.transient {
                out.entry((normalize(p), i.clone()))
                    .or_insert((e.seq, Some(*us)));
            }
        }
        for e in &self.events {
            for (p, i) in &e.written {
                // A real write wins over a transient state with the same content.
                out.insert((normalize(p), i.clone()), (e.seq, None));
            }
        }
        out
    }

    /// The operations that touched or wrote `path` (normalized), or a directory above it (the
    /// last 30).
    pub fn history_of(&self, key: &str) -> Vec<&Event> {
        let hits = |p: &String| {
            let n = normalize(p);
            n == key || super::fsview::is_ancestor(&n, key)
        };
        let all: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| e.touched.iter().any(hits) || e.written.iter().any(|(p, _)| hits(p)))
            .collect();
        all[all.len().saturating_sub(30)..].to_vec()
    }

    pub fn tail(&self, n: usize, names: &[&str]) -> String {
        let start = self.events.len().saturating_sub(n);
        self.events[start..]
            .iter()
            .map(|e| e.line(names))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn jsonl(&self, names: &[&str]) -> String {
        let mut s = String::new();
        for e in &self.events {
            s.push_str(&e.json(names).to_string());
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, endpoint: usize, observed: &[(&str, &str)], written: &[(&str, &str)]) -> Event {
        let items = |v: &[(&str, &str)]| -> Vec<(String, Item)> {
            v.iter()
                .map(|(p, c)| (p.to_string(), Item::file(c.as_bytes())))
                .collect()
        };
        Event {
            seq,
            endpoint,
            op: "test",
            observed: items(observed),
            written: items(written),
            ..Default::default()
        }
    }

    fn live(o: &Oracle) -> Vec<(String, u64)> {
        o.live_writes()
            .into_iter()
            .map(|w| (w.path, w.seq))
            .collect()
    }

    #[test]
    fn a_write_is_superseded_only_by_an_operation_that_saw_it() {
        let mut o = Oracle::default();
        o.push(ev(1, 0, &[], &[("a", "v1")]));
        // Endpoint 1 replaces `a` without having seen v1 (a concurrent edit): both stay live.
        o.push(ev(2, 1, &[("a", "v0")], &[("a", "v2")]));
        assert_eq!(live(&o), vec![("a".into(), 1), ("a".into(), 2)]);
        // Endpoint 2 saw v2 and deleted it: v2 is gone on purpose, v1 still must survive.
        o.push(ev(3, 2, &[("a", "v2")], &[]));
        assert_eq!(live(&o), vec![("a".into(), 1)]);
    }

    #[test]
    fn editing_a_conflict_copy_supersedes_the_version_it_holds() {
        let mut o = Oracle::default();
        o.push(ev(1, 0, &[], &[("x.txt", "mine")]));
        o.push(ev(
            2,
            1,
            &[("x.conflict-20261201-101010-local.txt", "mine")],
            &[("x.conflict-20261201-101010-local.txt", "edited")],
        ));
        assert_eq!(
            live(&o),
            vec![("x.conflict-20261201-101010-local.txt".into(), 2)]
        );
        let known = o.known_states();
        assert!(known.contains_key(&("x.txt".into(), Item::file(b"mine"))));
        assert!(known.contains_key(&("x.txt".into(), Item::file(b"edited"))));
    }

    #[test]
    fn a_moved_copy_of_content_replaced_elsewhere_is_superseded_with_it() {
        let mut o = Oracle::default();
        o.push(ev(1, 0, &[], &[("d/f", "v1")]));
        // Endpoint 0 edits d/f (it saw v1); endpoint 1, not yet aware, renames d to e.
        o.push(ev(2, 0, &[("d/f", "v1")], &[("d/f", "v2")]));
        let mut mv = ev(3, 1, &[("d/f", "v1")], &[("e/f", "v1")]);
        mv.moves = true;
        o.push(mv);
        assert_eq!(
            live(&o),
            vec![("d/f".into(), 2)],
            "v2 must survive; v1 was replaced"
        );
        // A move whose content nobody replaced stays live at its new path.
        let mut o = Oracle::default();
        o.push(ev(1, 0, &[], &[("d/g", "w")]));
        let mut mv = ev(2, 1, &[("d/g", "w")], &[("e/g", "w")]);
        mv.moves = true;
        o.push(mv);
        assert_eq!(live(&o), vec![("e/g".into(), 2)]);
    }

    #[test]
    fn paths_follow_later_directory_moves_both_ways() {
        let mut o = Oracle::default();
        let mut mv = ev(5, 1, &[], &[]);
        mv.touched = vec!["d".into()];
        mv.moved_to = Some("e/d2".into());
        o.push(mv);
        assert_eq!(
            o.images("d/x/f", 4),
            vec!["d/x/f".to_string(), "e/d2/x/f".into()]
        );
        assert_eq!(
            o.images("d/x/f", 5),
            vec!["d/x/f".to_string()],
            "an earlier move does not carry a later write"
        );
        assert_eq!(
            o.origins("e/d2/x/f"),
            vec!["e/d2/x/f".to_string(), "d/x/f".into()]
        );
        assert_eq!(
            o.images("dx/f", 0),
            vec!["dx/f".to_string()],
            "a sibling with the same prefix is not below d"
        );
    }

    #[test]
    fn an_earlier_observation_does_not_supersede_a_later_write() {
        let mut o = Oracle::default();
        o.push(ev(1, 0, &[("a", "v1")], &[]));
        o.push(ev(2, 0, &[], &[("a", "v1")])); // written again later (moved back)
        assert_eq!(live(&o), vec![("a".into(), 2)]);
    }
}
