//! Retention policies (`forget`): restic's keep rules, applied per group of snapshots.
//!
//! Snapshots are grouped (by sync set, else by host and paths); within a group, newest first,
//! a snapshot is kept if any rule keeps it: `within` (taken no longer than the duration before
//! the group's newest snapshot — relative to the newest, not to now, so a machine that stopped
//! backing up does not lose its history), `last N`, or the newest snapshot of each of the last N
//! hours/days/weeks/months/years (local time) that have one. The newest snapshot of a group is
//! always kept.

use std::collections::BTreeMap;

use super::Snapshot;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::time::parse_duration;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub within_ns: Option<i64>,
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Parses a sync set's `retention`: a duration (`30d`: every snapshot taken within it of
    /// the set's newest), or restic-style rules separated by commas (`keep-within 30d,
    /// keep-daily 90`; rules `keep-within D`, `keep-last N`, `keep-hourly N`, `keep-daily N`,
    /// `keep-weekly N`, `keep-monthly N`, `keep-yearly N`).
    pub fn parse(text: &str) -> Result<Policy> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "retention {text:?} is not a retention policy ({why}): write a duration such as 30d, or rules such as \"keep-within 30d, keep-daily 90\""
            ))
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(bad("it is empty"));
        }
        if t.starts_with(|c: char| c.is_ascii_digit()) {
            let d = parse_duration(t).map_err(|_| bad("not a duration"))?;
            if d <= 0 {
                return Err(bad("the duration is zero"));
            }
            return Ok(Policy {
                within_ns: Some(d),
                ..Policy::default()
            });
        }
        let mut p = Policy::default();
        for rule in t.split(',') {
            let rule = rule.trim();
            let (name, value) = rule
                .split_once(|c: char| c.is_whitespace() || c == '=' || c == ':')
                .map(|(n, v)| (n.trim(), v.trim()))
                .ok_or_else(|| bad(&format!("{rule:?} has no value")))?;
            let count = || -> Result<Option<u32>> {
                match value.parse::<u32>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(bad(&format!(
                        "{name} needs a count of at least 1, not {value:?}"
                    ))),
                }
            };
            let slot = match name {
                "keep-within" => {
                    let d = parse_duration(value)
                        .map_err(|_| bad(&format!("{value:?} is not a duration")))?;
                    if d <= 0 {
                        return Err(bad("keep-within is zero"));
                    }
                    if p.within_ns.replace(d).is_some() {
                        return Err(bad("keep-within is given twice"));
                    }
                    continue;
                }
                "keep-last" => &mut p.last,
                "keep-hourly" => &mut p.hourly,
                "keep-daily" => &mut p.daily,
                "keep-weekly" => &mut p.weekly,
                "keep-monthly" => &mut p.monthly,
                "keep-yearly" => &mut p.yearly,
                _ => return Err(bad(&format!("unknown rule {name:?}"))),
            };
            if slot.replace(count()?.unwrap_or(0)).is_some() {
                return Err(bad(&format!("{name} is given twice")));
            }
        }
        Ok(p)
    }
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub id: SnapshotId,
    pub keep: bool,
    pub reasons: Vec<&'static str>,
}

/// The group a snapshot belongs to.
pub fn group_key(s: &Snapshot) -> String {
    match &s.sync_set {
        Some(set) => format!("sync set {set}"),
        None => {
            let paths: Vec<String> = s.paths.iter().map(|p| super::display_path(p)).collect();
            format!("{} {}", s.host, paths.join(","))
        }
    }
}

fn bucket(time_ns: i64, unit: &str, tz: &jiff::tz::TimeZone) -> String {
    let ts =
        jiff::Timestamp::from_nanosecond(time_ns as i128).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let z = ts.to_zoned(tz.clone());
    match unit {
        "hourly" => format!("{}-{}-{}-{}", z.year(), z.month(), z.day(), z.hour()),
        "daily" => format!("{}-{}-{}", z.year(), z.month(), z.day()),
        "weekly" => {
            let w = z.date().iso_week_date();
            format!("{}-{}", w.year(), w.week())
        }
        "monthly" => format!("{}-{}", z.year(), z.month()),
        _ => format!("{}", z.year()),
    }
}

/// Applies the policy with calendar buckets in `tz` (the local zone in the CLI); returns one
/// decision per snapshot, grouped, newest first within a group.
pub fn apply(
    snaps: &[(SnapshotId, Snapshot)],
    policy: &Policy,
    tz: &jiff::tz::TimeZone,
) -> BTreeMap<String, Vec<Decision>> {
    let mut groups: BTreeMap<String, Vec<&(SnapshotId, Snapshot)>> = BTreeMap::new();
    for s in snaps {
        groups.entry(group_key(&s.1)).or_default().push(s);
    }
    let mut out = BTreeMap::new();
    for (key, mut members) in groups {
        members.sort_by(|a, b| b.1.time_ns.cmp(&a.1.time_ns).then(b.0.cmp(&a.0)));
        let newest = members[0].1.time_ns;
        let mut counters: Vec<(&'static str, u32, Option<String>)> = [
            ("hourly", policy.hourly),
            ("daily", policy.daily),
            ("weekly", policy.weekly),
            ("monthly", policy.monthly),
            ("yearly", policy.yearly),
        ]
        .into_iter()
        .filter_map(|(n, c)| c.map(|c| (n, c, None)))
        .collect();
        let mut last = policy.last;
        let mut decisions = Vec::new();
        for (i, (id, s)) in members.iter().map(|m| (&m.0, &m.1)).enumerate() {
            let mut reasons = Vec::new();
            if i == 0 {
                reasons.push("newest");
            }
            if let Some(w) = policy.within_ns
                && newest.saturating_sub(s.time_ns) <= w
            {
                reasons.push("within");
            }
            if let Some(n) = last.as_mut()
                && *n > 0
            {
                *n -= 1;
                reasons.push("last");
            }
            for (unit, left, seen) in counters.iter_mut() {
                let b = bucket(s.time_ns, unit, tz);
                if *left > 0 && seen.as_ref() != Some(&b) {
                    *left -= 1;
                    *seen = Some(b);
                    reasons.push(unit);
                }
            }
            decisions.push(Decision {
                id: *id,
                keep: !reasons.is_empty(),
                reasons,
            });
        }
        out.insert(key, decisions);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_rules_and_refuses_the_rest() {
        let day = 86_400_000_000_000i64;
        assert_eq!(Policy::parse("30d").unwrap().within_ns, Some(30 * day));
        let p = Policy::parse("keep-within 30d, keep-daily 90").unwrap();
        assert_eq!((p.within_ns, p.daily), (Some(30 * day), Some(90)));
        let p = Policy::parse("keep-last=5,keep-monthly: 12").unwrap();
        assert_eq!((p.last, p.monthly), (Some(5), Some(12)));
        for bad in [
            "banana",
            "",
            "0d",
            "keep-daily",
            "keep-daily 0",
            "keep-daily x",
            "keep-within banana",
            "keep-last 3, keep-last 4",
            "keep-hourly 2, retain 3",
        ] {
            let e = Policy::parse(bad).unwrap_err().to_string();
            assert!(e.contains("write a duration such as 30d"), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{bad:?}: one line: {e}");
        }
    }
    use crate::format::snapshot::Summary;
    use crate::id::BlobId;

    fn snap(time_ns: i64) -> Snapshot {
        Snapshot {
            time_ns,
            tree: BlobId::default(),
            host: "h".into(),
            user: "u".into(),
            paths: vec![b"/p".to_vec()],
            tags: vec![],
            parents: vec![],
            sync_set: None,
            endpoint: None,
            summary: Summary::default(),
            program_version: "t".into(),
            extra: vec![],
        }
    }

    const HOUR: i64 = 3600 * 1_000_000_000;

    fn kept(snaps: &[(SnapshotId, Snapshot)], p: &Policy) -> Vec<u8> {
        let d = apply(snaps, p, &jiff::tz::TimeZone::UTC);
        let mut v: Vec<u8> = d
            .values()
            .flatten()
            .filter(|d| d.keep)
            .map(|d| d.id.0[0])
            .collect();
        v.sort();
        v
    }

    #[test]
    fn keep_last_and_within() {
        let snaps: Vec<_> = (0..10u8)
            .map(|i| (SnapshotId([i; 32]), snap(i as i64 * HOUR)))
            .collect();
        assert_eq!(
            kept(
                &snaps,
                &Policy {
                    last: Some(3),
                    ..Default::default()
                }
            ),
            vec![7, 8, 9]
        );
        assert_eq!(
            kept(
                &snaps,
                &Policy {
                    within_ns: Some(2 * HOUR),
                    ..Default::default()
                }
            ),
            vec![7, 8, 9]
        );
        assert_eq!(
            kept(
                &snaps,
                &Policy {
                    within_ns: Some(0),
                    ..Default::default()
                }
            ),
            vec![9]
        );
    }

    #[test]
    fn keep_hourly_takes_the_newest_of_each_hour() {
        let snaps: Vec<_> = (0..6u8)
            .map(|i| (SnapshotId([i; 32]), snap(i as i64 * HOUR / 2)))
            .collect();
        // Two snapshots per hour: 0,1 | 2,3 | 4,5 — the newest of the last two hours: 5 and 3.
        assert_eq!(
            kept(
                &snaps,
                &Policy {
                    hourly: Some(2),
                    ..Default::default()
                }
            ),
            vec![3, 5]
        );
    }
}
