//! The set's conflict list as heads carry it (`format-spec/sync.md`, "Conflicts everywhere"),
//! and how the lists of concurrent heads are combined.
//!
//! The list is a set of entries keyed by (path, endpoint, class, version) — see
//! [`SharedConflict::key`]. An entry leaves only by a resolution that travels: a `Resolved`
//! entry under the same key. Combining lists is a join: per key, a resolution beats the entry it
//! resolves (a version not adopted), and for a parked conflict the later of parked and resolved
//! (both by the clock of the endpoint it names) wins. So combining is commutative, associative
//! and idempotent: endpoints that combine the same heads, in any order and any number of times,
//! get the same list — and a step that changes nothing publishes nothing.

use std::collections::BTreeMap;

use crate::format::head::{ConflictState, SharedConflict};

/// How long a resolution is carried in the heads after it was made (ns). A head derived from a
/// state older than this (a step that ran this long) can bring a resolved entry back; the
/// endpoint it names then resolves it again.
pub const RESOLVED_KEPT_NS: i64 = 3_600 * 1_000_000_000;

/// Which of two entries under one key the combination keeps.
fn wins(new: &SharedConflict, old: &SharedConflict) -> bool {
    let rank = |c: &SharedConflict| {
        let resolved = c.state == ConflictState::Resolved;
        if c.class() == 1 {
            // A version not adopted: its resolution always wins.
            (u8::from(resolved), 0i64, c.canonical_bytes())
        } else {
            // Parked and resolved again as often as the user likes: the latest wins.
            (
                0,
                c.time_ns,
                [vec![u8::from(resolved)], c.canonical_bytes()].concat(),
            )
        }
    };
    rank(new) > rank(old)
}

/// An entry's key, owned: path, endpoint, class, version.
type Key = (Vec<u8>, String, u8, Option<[u8; 32]>);

/// The combination of conflict lists, in canonical order (see the module docs).
pub fn combine(entries: impl IntoIterator<Item = SharedConflict>) -> Vec<SharedConflict> {
    let mut by_key: BTreeMap<Key, SharedConflict> = BTreeMap::new();
    for c in entries {
        let (p, e, class, v) = c.key();
        let key = (p.to_vec(), e.to_string(), class, v.map(|v| v.0));
        match by_key.get(&key) {
            Some(old) if !wins(&c, old) => {}
            _ => {
                by_key.insert(key, c);
            }
        }
    }
    by_key.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SnapshotId;

    fn entry(path: &str, ep: &str, state: ConflictState, t: i64, v: Option<u8>) -> SharedConflict {
        SharedConflict {
            path: path.into(),
            endpoint: ep.into(),
            state,
            time_ns: t,
            version: v.map(|b| SnapshotId([b; 32])),
            ancestor: None,
            extra: vec![],
        }
    }

    use ConflictState::{Parked, Resolved, Unadopted};

    /// B11: each endpoint resolved the entries naming it; combining the three heads must not
    /// bring them back.
    #[test]
    fn resolutions_travel_and_combining_is_a_join() {
        let base = [
            entry("h", "a", Unadopted, 10, Some(1)),
            entry("h", "b", Unadopted, 11, Some(2)),
            entry("h", "c", Unadopted, 12, Some(3)),
        ];
        let resolved_by = |me: &str| -> Vec<SharedConflict> {
            base.iter()
                .map(|c| {
                    if c.endpoint == me {
                        SharedConflict {
                            state: Resolved,
                            time_ns: 100,
                            ..c.clone()
                        }
                    } else {
                        c.clone()
                    }
                })
                .collect()
        };
        let (a, b, c) = (resolved_by("a"), resolved_by("b"), resolved_by("c"));
        let abc = combine(a.iter().chain(&b).chain(&c).cloned());
        let cba = combine(c.iter().chain(&b).chain(&a).cloned());
        assert_eq!(abc, cba, "commutative");
        let live = abc.iter().filter(|c| c.state != ConflictState::Resolved);
        assert_eq!(live.count(), 0, "{abc:?}");
        assert_eq!(combine(abc.iter().chain(&abc).cloned()), abc, "idempotent");
        let ab_then_c = combine(combine(a.iter().chain(&b).cloned()).into_iter().chain(c));
        assert_eq!(ab_then_c, abc, "associative");
    }

    #[test]
    fn a_parked_conflict_is_the_latest_of_parked_and_resolved() {
        let parked = entry("p", "a", Parked, 5, None);
        let resolved = entry("p", "a", Resolved, 7, None);
        let again = entry("p", "a", Parked, 9, None);
        assert_eq!(
            combine([parked.clone(), resolved.clone()]),
            vec![resolved.clone()]
        );
        assert_eq!(combine([resolved.clone(), parked]), vec![resolved.clone()]);
        assert_eq!(combine([again.clone(), resolved]), vec![again]);
    }

    #[test]
    fn versions_not_adopted_are_kept_apart() {
        let v1 = entry("p", "a", Unadopted, 5, Some(1));
        let v2 = entry("p", "a", Unadopted, 6, Some(2));
        let r1 = entry("p", "a", Resolved, 8, Some(1));
        let out = combine([v2.clone(), r1.clone(), v1]);
        assert_eq!(out, vec![r1, v2]);
    }
}
