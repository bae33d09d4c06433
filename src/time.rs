//! Times as users write them: RFC 3339, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` (local time) and
//! `N{s,m,h,d,w} ago`; durations like `30d`. All results are ns since the Unix epoch.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use crate::error::{Error, Result};

const NS: i64 = 1_000_000_000;

fn unit_ns(unit: &str) -> Option<i64> {
    Some(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => NS,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * NS,
        "h" | "hour" | "hours" => 3600 * NS,
        "d" | "day" | "days" => 86_400 * NS,
        "w" | "week" | "weeks" => 7 * 86_400 * NS,
        "y" | "year" | "years" => 365 * 86_400 * NS,
        _ => return None,
    })
}

/// A duration: one or more `N{s,m,h,d,w,y}` terms (`30d`, `1w2d`, `90m`).
pub fn parse_duration(s: &str) -> Result<i64> {
    let bad = || {
        Error::invalid(format!(
            "{s:?} is not a duration: write e.g. 30d, 12h, 2w or 1w3d (units s, m, h, d, w, y)"
        ))
    };
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let ulen = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let u = unit_ns(&rest[..ulen]).ok_or_else(bad)?;
        total = n
            .checked_mul(u)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = rest[ulen..].trim_start();
    }
    Ok(total)
}

/// Parses a point in time, relative to `now` for `… ago` forms, in `tz` for local forms. A bare
/// date means the end of that day (the state as it was on that day).
pub fn parse_time_in(s: &str, now: Timestamp, tz: &TimeZone) -> Result<i64> {
    let t = s.trim();
    let bad = || {
        Error::invalid(format!(
            "{s:?} is not a time: write RFC 3339 (2026-11-20T14:00:00Z), YYYY-MM-DD, \"YYYY-MM-DD HH:MM[:SS]\", \"N{{s,m,h,d,w}} ago\", now, today, yesterday, or a version id from `history`"
        ))
    };
    // Words: now, and the end of today or yesterday (like a bare date).
    let today = now.to_zoned(tz.clone()).date();
    let day = match t.to_ascii_lowercase().as_str() {
        "now" => return Ok(now.as_nanosecond() as i64),
        "today" => Some(today),
        "yesterday" => today.yesterday().ok(),
        _ => None,
    };
    if let Some(d) = day {
        let end = d.to_datetime(jiff::civil::Time::MAX);
        let z: Zoned = end.to_zoned(tz.clone()).map_err(|_| bad())?;
        return Ok(z.timestamp().as_nanosecond() as i64);
    }
    if let Some(ago) = t.strip_suffix("ago") {
        let d = parse_duration(ago.trim()).map_err(|_| bad())?;
        return Ok(now.as_nanosecond() as i64 - d);
    }
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts.as_nanosecond() as i64);
    }
    let zoned = |dt: DateTime| -> Result<i64> {
        let z: Zoned = dt.to_zoned(tz.clone()).map_err(|_| bad())?;
        Ok(z.timestamp().as_nanosecond() as i64)
    };
    if t.len() == 10
        && let Ok(d) = t.parse::<Date>()
    {
        let end = d.to_datetime(jiff::civil::Time::MAX);
        return zoned(end);
    }
    let normalized = t.replacen(' ', "T", 1);
    if let Ok(dt) = normalized.parse::<DateTime>() {
        return zoned(dt);
    }
    Err(bad())
}

pub fn parse_time(s: &str) -> Result<i64> {
    parse_time_in(s, Timestamp::now(), &TimeZone::system())
}

/// `2026-11-27 14:03:05` in the local time zone.
pub fn format_local(ns: i64) -> String {
    match Timestamp::from_nanosecond(ns as i128) {
        Ok(ts) => ts
            .to_zoned(TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => format!("@{ns}ns"),
    }
}

/// RFC 3339 in UTC with nanoseconds, for JSON.
pub fn format_rfc3339(ns: i64) -> String {
    match Timestamp::from_nanosecond(ns as i128) {
        Ok(ts) => ts.to_string(),
        Err(_) => format!("@{ns}ns"),
    }
}

/// "2 seconds ago", "3 days ago".
pub fn format_ago(ns: i64, now_ns: i64) -> String {
    let s = (now_ns - ns).max(0) / NS;
    let (n, unit) = match s {
        0..60 => (s, "second"),
        60..3600 => (s / 60, "minute"),
        3600..86_400 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let tz = TimeZone::UTC;
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let at = |s| parse_time_in(s, now, &tz).unwrap();
        let ts = |s: &str| s.parse::<Timestamp>().unwrap().as_nanosecond() as i64;
        assert_eq!(at("2026-11-20T14:00:00Z"), ts("2026-11-20T14:00:00Z"));
        assert_eq!(at("2026-11-20T14:00:00+02:00"), ts("2026-11-20T12:00:00Z"));
        assert_eq!(at("2026-11-20"), ts("2026-11-20T23:59:59.999999999Z"));
        assert_eq!(at("2026-11-20 14:00"), ts("2026-11-20T14:00:00Z"));
        assert_eq!(at("2026-11-20 14:00:30"), ts("2026-11-20T14:00:30Z"));
        assert_eq!(at("2 d ago"), ts("2026-11-25T12:00:00Z"));
        assert_eq!(at("90m ago"), ts("2026-11-27T10:30:00Z"));
        assert_eq!(at("1w ago"), ts("2026-11-20T12:00:00Z"));
        assert!(parse_time_in("yesterday-ish", now, &tz).is_err());
        assert!(parse_time_in("5 fortnights ago", now, &tz).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400 * NS);
        assert_eq!(parse_duration("1w2d").unwrap(), 9 * 86_400 * NS);
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("99999999999999y").is_err());
    }
}
