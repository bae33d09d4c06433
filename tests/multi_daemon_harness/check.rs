//! Quiesce and check: waiting for convergence (and catching a status that claims it too early),
//! the checks at each quiesce, the deep checks at the end, and the failure report.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::fsview::{Digest, Entry, Item, digest, is_ancestor, is_temp, normalize};
use super::repo_view::Versions;
use super::{NAMES, SET, World};

/// Polls in a row in which an endpoint claims "in sync" (idle, same last step) while it is not,
/// before that counts as a false claim — a status read between a head's publication and the
/// daemon's next poll is not a lie.
const FALSE_CLAIM_POLLS: u32 = 4;
/// Pause between polls while waiting for convergence.
const POLL: Duration = Duration::from_millis(400);
/// A transient state (a file truncated before its new content was written) that a daemon
/// published although it lasted less than this was published too early: the settle window is
/// 100 ms.
const TRANSIENT_SHORT_US: u64 = 50_000;

#[derive(Debug, Clone)]
pub struct Finding {
    pub what: &'static str,
    pub detail: String,
}

fn finding(what: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        what,
        detail: detail.into(),
    }
}

/// The state at the end of a wait for convergence.
#[derive(Debug, Clone)]
pub struct Quiesced {
    /// From the end of the workload to convergence (or to the deadline).
    pub took: Duration,
    pub digests: Vec<Digest>,
    pub statuses: Vec<Result<Value, String>>,
    /// Current heads: name and publishing endpoint.
    pub heads: Result<Vec<(String, String)>, String>,
    /// Paths parked as conflicts at any endpoint.
    pub parked: BTreeSet<String>,
    pub findings: Vec<Finding>,
}

fn under_any(path: &str, roots: &BTreeSet<String>) -> bool {
    roots.iter().any(|r| r == path || is_ancestor(r, path))
}

fn without(d: &Digest, parked: &BTreeSet<String>, temps: bool) -> Digest {
    let mut out: Digest = d
        .iter()
        .filter(|(p, _)| {
            !under_any(p, parked) && (temps || !is_temp(p.rsplit('/').next().unwrap()))
        })
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    // A folder keeps its own version of a parked path, so the directories above it may be
    // there at that endpoint only: those that hold nothing else are left out too (deepest
    // first, so that a parent holding only such directories goes as well).
    let holders: Vec<String> = out
        .keys()
        .filter(|p| parked.iter().any(|r| is_ancestor(p, r)))
        .cloned()
        .collect();
    for h in holders.iter().rev() {
        let prefix = format!("{h}/");
        let holds_more = out
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix));
        if !holds_more {
            out.remove(h);
        }
    }
    out
}

/// Paths where the digests differ, with each side's entry.
fn differences(ds: &[&Digest], names: &[&str], limit: usize) -> Vec<String> {
    let paths: BTreeSet<&String> = ds.iter().flat_map(|d| d.keys()).collect();
    let mut out = Vec::new();
    for p in paths {
        let es: Vec<Option<&Entry>> = ds.iter().map(|d| d.get(p)).collect();
        if es.windows(2).all(|w| w[0] == w[1]) {
            continue;
        }
        if out.len() == limit {
            out.push("…".into());
            break;
        }
        let sides: Vec<String> = es
            .iter()
            .zip(names)
            .map(|(e, n)| {
                format!(
                    "{n}: {}",
                    e.map(|e| e.describe()).unwrap_or_else(|| "-".into())
                )
            })
            .collect();
        out.push(format!("{p}  [{}]", sides.join(" | ")));
    }
    out
}

fn conflict_paths(s: &Value) -> BTreeSet<String> {
    s["conflicts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["path"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The endpoint claims to be in sync: its daemon is idle and its status says in sync, or in sync
/// apart from parked conflicts.
fn claims_in_sync(s: &Value) -> bool {
    idle(s)
        && (s["in_sync"] == true
            || (!conflict_paths(s).is_empty()
                && s["state"].as_str().is_some_and(|t| {
                    // Older wording, or the current one: every reason is parked conflicts.
                    t.starts_with("in sync except")
                        || t.split("; ").all(|r| r.contains("conflict(s) parked"))
                })))
}

fn idle(s: &Value) -> bool {
    s["daemon"]["running"] == true
        && s["daemon"]["live"]["state"] == "idle"
        && s["daemon"]["live"]["pending_paths"].as_u64() == Some(0)
}

/// Waits (at most `converge_within`) until every folder is the same (parked paths aside), there
/// is one head, and every endpoint's daemon is idle and says in sync (apart from parked
/// conflicts) — twice in a row. Meanwhile, an endpoint
/// that keeps saying "in sync" while it is not (several heads, or its folder differs from the
/// head) is a finding.
pub fn converge(w: &mut World) -> Quiesced {
    let t0 = Instant::now();
    let deadline = t0 + w.cfg.converge_within;
    let mut stable = 0;
    let mut claims: [(u32, Option<Value>); 3] = Default::default();
    let mut head_digests: HashMap<String, Result<Digest, String>> = HashMap::new();
    let mut findings = Vec::new();
    let mut reported = [false; 3];
    loop {
        let statuses: Vec<Result<Value, String>> = w.eps.iter().map(|e| e.status()).collect();
        let digests: Vec<Digest> = w.eps.iter().map(|e| digest(&e.folder)).collect();
        w.view.refresh();
        let heads = w.view.heads(SET);
        let parked: BTreeSet<String> = statuses.iter().flatten().flat_map(conflict_paths).collect();
        let clean: Vec<Digest> = digests.iter().map(|d| without(d, &parked, true)).collect();
        let same = differences(&clean.iter().collect::<Vec<_>>(), &NAMES, 0).is_empty();
        let n_heads = heads.as_ref().map(|h| h.len()).unwrap_or(0);
        let says: Vec<bool> = statuses
            .iter()
            .map(|s| s.as_ref().is_ok_and(claims_in_sync))
            .collect();
        if same && n_heads == 1 && says.iter().all(|&b| b) {
            stable += 1;
        } else {
            stable = 0;
        }
        // False claims: an idle daemon whose status says in sync although it is not.
        for i in 0..3 {
            let Ok(s) = &statuses[i] else { continue };
            if !says[i] {
                claims[i] = (0, None);
                continue;
            }
            let truth = match heads.as_ref().map(|h| h.as_slice()) {
                Ok([(_, h)]) => {
                    let id = h.snapshot;
                    let hd = head_digests
                        .entry(id.to_hex())
                        .or_insert_with(|| w.view.snapshot_digest(&id));
                    match hd {
                        Ok(hd) => {
                            let mine = without(&digests[i], &parked, false);
                            let theirs = without(hd, &parked, false);
                            mine.len() == theirs.len()
                                && mine
                                    .iter()
                                    .all(|(p, e)| theirs.get(p).is_some_and(|t| t.same_content(e)))
                        }
                        Err(_) => true, // unreadable head: reported elsewhere
                    }
                }
                Ok(_) => false,
                Err(_) => true,
            };
            let step = s["last_step"].clone();
            if truth || claims[i].1.as_ref().is_some_and(|prev| *prev != step) {
                claims[i] = (if truth { 0 } else { 1 }, Some(step));
                continue;
            }
            claims[i].0 += 1;
            claims[i].1 = Some(step);
            if claims[i].0 >= FALSE_CLAIM_POLLS && !reported[i] {
                reported[i] = true;
                let why = match heads.as_ref().map(|h| h.len()) {
                    Ok(1) => {
                        let hd = head_digests
                            .values()
                            .last()
                            .and_then(|d| d.as_ref().ok())
                            .cloned()
                            .unwrap_or_default();
                        let diff = differences(
                            &[
                                &without(&digests[i], &parked, false),
                                &without(&hd, &parked, false),
                            ],
                            &[NAMES[i], "head"],
                            12,
                        );
                        format!(
                            "its folder differs from the single head:\n      {}",
                            diff.join("\n      ")
                        )
                    }
                    Ok(n) => format!("the set has {n} heads: {:?}", heads.as_ref().unwrap()),
                    Err(e) => e.clone(),
                };
                findings.push(finding(
                    "false in-sync",
                    format!(
                        "{} said it is in sync (idle daemon, status {}) for {FALSE_CLAIM_POLLS} polls ({:.1} s, same last step {}) while {why}",
                        NAMES[i],
                        s["state"],
                        (FALSE_CLAIM_POLLS as f64) * POLL.as_secs_f64(),
                        s["last_step"]
                    ),
                ));
            }
        }
        let done = stable >= 2;
        if done || Instant::now() > deadline {
            if !done {
                let diff = differences(&clean.iter().collect::<Vec<_>>(), &NAMES, 40);
                findings.push(finding(
                    "no convergence",
                    format!(
                        "not converged {:?} after the workload stopped: {} path(s) differ, {} head(s), in_sync {:?}, idle {:?}\n      {}",
                        w.cfg.converge_within,
                        diff.len(),
                        n_heads,
                        statuses.iter().map(|s| s.as_ref().map(|s| s["in_sync"].clone()).unwrap_or(Value::Null)).collect::<Vec<_>>(),
                        statuses.iter().map(|s| s.as_ref().is_ok_and(idle)).collect::<Vec<_>>(),
                        diff.join("\n      ")
                    ),
                ));
            }
            return Quiesced {
                took: t0.elapsed(),
                digests,
                statuses,
                heads: heads.map(|h| h.into_iter().map(|(n, h)| (n, h.endpoint)).collect()),
                parked,
                findings,
            };
        }
        std::thread::sleep(POLL);
    }
}

/// Checks at a quiesce (the endpoints converged): temp files, halts, conflicts visible
/// everywhere and agreeing with `conflicts`, file counts, and no lost write.
pub fn at_quiesce(w: &mut World, q: &Quiesced) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, d) in q.digests.iter().enumerate() {
        let temps: Vec<&String> = d
            .keys()
            .filter(|p| is_temp(p.rsplit('/').next().unwrap()))
            .collect();
        if !temps.is_empty() {
            out.push(finding(
                "temp files left",
                format!("{}: {temps:?}", NAMES[i]),
            ));
        }
    }
    let mut listed: Vec<BTreeSet<String>> = Vec::new();
    for (i, s) in q.statuses.iter().enumerate() {
        let Ok(s) = s else {
            out.push(finding(
                "status failed",
                format!("{}: {}", NAMES[i], s.as_ref().unwrap_err()),
            ));
            continue;
        };
        if !s["halt"].is_null() {
            out.push(finding("halted", format!("{}: {}", NAMES[i], s["halt"])));
        }
        let from_status = conflict_paths(s);
        match w.eps[i].json(&["conflicts", SET, "--json"]) {
            Ok(Value::Array(a)) => {
                let from_cmd: BTreeSet<String> = a
                    .iter()
                    .filter_map(|c| c["path"].as_str().map(str::to_string))
                    .collect();
                if from_cmd != from_status {
                    out.push(finding(
                        "conflicts disagree",
                        format!(
                            "{}: `conflicts` lists {from_cmd:?}, `status` {from_status:?}",
                            NAMES[i]
                        ),
                    ));
                }
            }
            other => out.push(finding(
                "conflicts failed",
                format!("{}: {other:?}", NAMES[i]),
            )),
        }
        listed.push(from_status);
        // Counts: the folder's files (regular files, or files and symlinks) here and shared.
        let d = &q.digests[i];
        let files = d
            .values()
            .filter(|e| matches!(e, Entry::File { .. }))
            .count() as u64;
        let links = d.values().filter(|e| matches!(e, Entry::Link(_))).count() as u64;
        let (local, shared) = (s["local"]["files"].as_u64(), s["shared"]["files"].as_u64());
        let plausible = |n: Option<u64>| n == Some(files) || n == Some(files + links);
        if q.parked.is_empty() && !(plausible(local) && plausible(shared)) {
            out.push(finding(
                "status counts wrong",
                format!("{}: status says local {local:?} and shared {shared:?} files; the folder holds {files} files and {links} symlinks", NAMES[i]),
            ));
        }
    }
    if listed.len() == 3 && !listed.windows(2).all(|p| p[0] == p[1]) {
        out.push(finding(
            "conflicts not visible everywhere",
            format!(
                "parked conflicts per endpoint: {:?}",
                NAMES.iter().zip(&listed).collect::<Vec<_>>()
            ),
        ));
    }
    out.extend(lost_writes(w, q, None).0);
    out
}

/// Where the final folders hold each (path it stands for, content), by endpoint.
fn final_index(q: &Quiesced) -> HashMap<(String, Item), Vec<(usize, String)>> {
    let mut m: HashMap<(String, Item), Vec<(usize, String)>> = HashMap::new();
    for (i, d) in q.digests.iter().enumerate() {
        for (p, e) in d {
            if let Some(item) = e.item() {
                m.entry((normalize(p), item.clone()))
                    .or_default()
                    .push((i, p.clone()));
            }
        }
    }
    m
}

/// One line of an audit log.
#[derive(Debug, Clone)]
struct AuditLine {
    time_ns: i64,
    direction: String,
    action: String,
    path: String,
    hash: Option<String>,
    snapshot: Option<String>,
}

fn audit(w: &World, i: usize) -> Vec<AuditLine> {
    let text = std::fs::read_to_string(w.eps[i].audit_path()).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| AuditLine {
            time_ns: v["time"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_nanosecond() as i64)
                .unwrap_or(0),
            direction: v["direction"].as_str().unwrap_or("").into(),
            action: v["action"].as_str().unwrap_or("").into(),
            path: v["path"].as_str().unwrap_or("").into(),
            hash: v["hash"].as_str().map(str::to_string),
            snapshot: v["snapshot"].as_str().map(str::to_string),
        })
        .collect()
}

/// Live writes missing from every folder. A write is excused only when the workload itself
/// replaced it at another endpoint right after that endpoint's daemon had put it there (the
/// audit log shows the daemon writing it before the operation ended) and a published version
/// still holds it. Returns the findings and the number of excused writes.
pub fn lost_writes(
    w: &mut World,
    q: &Quiesced,
    versions: Option<&Versions>,
) -> (Vec<Finding>, usize) {
    let finals = final_index(q);
    let live = w.oracle.live_writes();
    let missing: Vec<_> = live
        .iter()
        .filter(|lw| {
            !finals.contains_key(&(lw.key.clone(), lw.item.clone()))
                && !w
                    .oracle
                    .images(&lw.key, lw.seq)
                    .into_iter()
                    .any(|p| finals.contains_key(&(p, lw.item.clone())))
        })
        .collect();
    if missing.is_empty() {
        return (vec![], 0);
    }
    let walked;
    let versions = match versions {
        Some(v) => v,
        None => {
            walked = w.view.versions(SET).0;
            &walked
        }
    };
    let acked: HashSet<(String, &Item)> = versions
        .pairs
        .keys()
        .map(|(p, i)| (normalize(p), i))
        .collect();
    let audits: Vec<Vec<AuditLine>> = (0..3).map(|i| audit(w, i)).collect();
    let mut out = Vec::new();
    let mut excused = 0;
    for lw in missing {
        let is_acked = acked.contains(&(lw.key.clone(), &lw.item));
        let excuse = w
            .oracle
            .events
            .iter()
            .filter(|e| e.seq > lw.seq)
            .find_map(|e| {
                let touches = e.touched.iter().any(|t| {
                    let t = normalize(t);
                    t == lw.key || is_ancestor(&t, &lw.key)
                });
                let saw = e
                    .observed
                    .iter()
                    .any(|(p, i)| normalize(p) == lw.key && *i == lw.item);
                if !touches || saw {
                    return None;
                }
                audits[e.endpoint]
                    .iter()
                    .find(|a| {
                        a.direction == "down"
                            && normalize(&a.path) == lw.key
                            && a.time_ns <= e.end_ns
                            && a.hash
                                .as_deref()
                                .and_then(|h| w.view.item_for_audit_hash(h))
                                == Some(&lw.item)
                    })
                    .map(|a| (e.seq, e.endpoint, a.time_ns))
            });
        if let (Some(_), true) = (excuse, is_acked) {
            excused += 1;
            continue;
        }
        let elsewhere: Vec<String> = q
            .digests
            .iter()
            .enumerate()
            .flat_map(|(i, d)| {
                d.iter()
                    .filter(|(_, e)| e.item() == Some(&lw.item))
                    .map(move |(p, _)| format!("{}:{p}", NAMES[i]))
            })
            .collect();
        let now: Vec<String> = q
            .digests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                format!(
                    "{}: {}",
                    NAMES[i],
                    d.get(&lw.key)
                        .map(|e| e.describe())
                        .unwrap_or_else(|| "-".into())
                )
            })
            .collect();
        let hist: Vec<String> = w
            .oracle
            .history_of(&lw.key)
            .iter()
            .map(|e| e.line(&NAMES))
            .collect();
        let lines: Vec<String> = (0..3)
            .flat_map(|i| {
                audits[i]
                    .iter()
                    .filter(|a| normalize(&a.path) == lw.key)
                    .map(move |a| {
                        format!(
                            "{} {} {} {} {} {:?} {:?}",
                            NAMES[i],
                            jiff::Timestamp::from_nanosecond(a.time_ns as i128).unwrap(),
                            a.direction,
                            a.action,
                            a.path,
                            a.hash,
                            a.snapshot
                        )
                    })
            })
            .collect();
        out.push(finding(
            "lost write",
            format!(
                "{} wrote {} at {} (op #{}); no later operation saw and replaced it, and no folder holds it at that path or a conflict copy of it (in a published version: {is_acked}; anywhere in a folder: {elsewhere:?}).\n      now: {}\n      operations on the path:\n        {}\n      audit lines for the path:\n        {}",
                NAMES[lw.endpoint],
                lw.item.short(),
                lw.path,
                lw.seq,
                now.join(" | "),
                hist.join("\n        "),
                lines.join("\n        ")
            ),
        ));
    }
    (out, excused)
}

/// The deep checks at the end (daemons stopped): every published or safety version is a state
/// the workload made, the audit logs agree with the snapshots, the repository passes `check`.
pub fn finally(w: &mut World) -> (Vec<Finding>, String) {
    let mut out = Vec::new();
    let (published, safety) = w.view.versions(SET);
    let known = w.oracle.known_states();
    for (what, versions) in [("published", &published), ("before-sync", &safety)] {
        // Content never at that path, and half-made states (a file caught between its
        // truncation and its new content, which lasted microseconds): both are torn reads.
        let (mut never, mut torn) = (Vec::new(), Vec::new());
        for ((p, item), snap) in &versions.pairs {
            let key = normalize(p);
            let state = known.get(&(key.clone(), item.clone())).or_else(|| {
                w.oracle
                    .origins(&key)
                    .into_iter()
                    .find_map(|o| known.get(&(o, item.clone())))
            });
            match state {
                None => never.push(format!("{p} = {} in {}", item.short(), snap.short())),
                Some((seq, Some(us))) if *us < TRANSIENT_SHORT_US => torn.push(format!(
                    "{p} = {} in {}: the truncated state of op #{seq}, which lasted {us} µs",
                    item.short(),
                    snap.short()
                )),
                Some(_) => {}
            }
        }
        let (k_never, k_torn) = if what == "published" {
            (
                "published a state never made",
                "published a half-written file",
            )
        } else {
            ("saved a state never made", "saved a half-written file")
        };
        for (kind, mut bad, why) in [
            (
                k_never,
                never,
                "content the workload never left at that path",
            ),
            (
                k_torn,
                torn,
                "a file caught while the workload was writing it",
            ),
        ] {
            if !bad.is_empty() {
                bad.sort();
                out.push(finding(
                    kind,
                    format!(
                        "{} {what} version(s) hold {why}:\n      {}",
                        bad.len(),
                        bad.iter()
                            .take(30)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n      ")
                    ),
                ));
            }
        }
    }
    // The audit logs: every published change names a snapshot that holds exactly that.
    let mut trees: HashMap<String, Option<Digest>> = HashMap::new();
    let mut up_lines = 0;
    for (i, name) in NAMES.iter().enumerate() {
        for a in audit(w, i).into_iter().filter(|a| a.direction == "up") {
            up_lines += 1;
            let Some(snap) = &a.snapshot else {
                out.push(finding(
                    "audit line without snapshot",
                    format!("{}: {a:?}", name),
                ));
                continue;
            };
            let d = trees.entry(snap.clone()).or_insert_with(|| {
                prism_sync::id::SnapshotId::from_hex(snap)
                    .and_then(|id| w.view.snapshot_digest(&id).ok())
            });
            let Some(d) = d else {
                out.push(finding(
                    "audit names a missing snapshot",
                    format!("{}: {a:?}", name),
                ));
                continue;
            };
            let there = d.get(&a.path).and_then(|e| e.item().cloned());
            let claimed = a
                .hash
                .as_deref()
                .map(|h| w.view.item_for_audit_hash(h).cloned());
            let ok = match (&claimed, &there) {
                (None, None) => a.action == "deleted",
                (Some(Some(c)), Some(t)) => c == t,
                _ => false,
            };
            if !ok {
                out.push(finding(
                    "audit disagrees with snapshot",
                    format!("{}: {a:?}; the snapshot holds {there:?}", name),
                ));
            }
        }
    }
    let q_final = Quiesced {
        took: Duration::ZERO,
        digests: w.eps.iter().map(|e| digest(&e.folder)).collect(),
        statuses: vec![],
        heads: Ok(vec![]),
        parked: BTreeSet::new(),
        findings: vec![],
    };
    let (lost, excused) = lost_writes(w, &q_final, Some(&published));
    out.extend(lost);
    let mut args = vec!["check", "--repo", w.repo.to_str().unwrap()];
    if w.cfg.read_data {
        args.push("--read-data");
    }
    let r = w.eps[1].m.run(&args);
    if r.code != 0 {
        out.push(finding(
            "check failed",
            format!("{}\n{}", r.stdout, r.stderr),
        ));
    }
    let live = w.oracle.live_writes();
    let acked: HashSet<(String, &Item)> = published
        .pairs
        .keys()
        .map(|(p, i)| (normalize(p), i))
        .collect();
    let live_acked = live
        .iter()
        .filter(|l| acked.contains(&(l.key.clone(), &l.item)))
        .count();
    let writes: usize = w.oracle.events.iter().map(|e| e.written.len()).sum();
    let copies = q_final.digests[0]
        .keys()
        .filter(|p| normalize(p) != **p)
        .count();
    let stats = format!(
        "{writes} writes, {} live at the end ({live_acked} of them in published versions), {excused} overwritten by the workload right after a daemon wrote them, {} published and {} before-sync snapshots, {up_lines} audit lines published, {copies} conflict copies",
        live.len(),
        published.snapshots,
        safety.snapshots
    );
    (out, stats)
}

/// The failure report: enough to understand and reproduce.
pub fn report(w: &World, when: &str, findings: &[Finding], q: Option<&Quiesced>) -> String {
    let mut s = String::new();
    let c = &w.cfg;
    let _ = writeln!(
        s,
        "\n=== multi-daemon test FAILED at {when}: seed {}, policy {}, {} round(s) of {:?}, converge within {:?}",
        c.seed, c.policy, c.rounds, c.round, c.converge_within
    );
    let _ = writeln!(
        s,
        "reproduce: PRISM_SOAK_SEED={} PRISM_SOAK_DURATION_S={} PRISM_SOAK_ROUND_S={} PRISM_SOAK_POLICY={} cargo test --test multi_daemon soak -- --ignored --nocapture",
        c.seed,
        c.round.as_secs() * c.rounds as u64,
        c.round.as_secs(),
        c.policy
    );
    let _ = writeln!(
        s,
        "work dir kept: {} (oplog.jsonl: every operation; home-*/sync/: state, audit logs, daemon.log)",
        w.dir.display()
    );
    if !c.tolerate.is_empty() {
        let kinds: Vec<&str> = c.tolerate.iter().map(|(k, _)| k.as_str()).collect();
        let _ = writeln!(s, "tolerated (reported, not failed on): {kinds:?}");
    }
    let _ = writeln!(s, "--- {} finding(s)", findings.len());
    for f in findings {
        let _ = writeln!(s, "[{}] {}", f.what, f.detail);
    }
    let _ = writeln!(s, "--- last 40 of {} operations", w.oracle.events.len());
    let _ = writeln!(s, "{}", w.oracle.tail(40, &NAMES));
    if let Some(q) = q {
        let ds: Vec<&Digest> = q.digests.iter().collect();
        let diff = differences(&ds, &NAMES, 40);
        let _ = writeln!(s, "--- folder differences ({} shown)", diff.len());
        for d in diff {
            let _ = writeln!(s, "  {d}");
        }
        let _ = writeln!(s, "--- heads: {:?}", q.heads);
        for (i, st) in q.statuses.iter().enumerate() {
            let line = match st {
                Ok(v) => format!(
                    "in_sync {} state {:?} halt {} conflicts {} local {} shared {} last_step {} live {}",
                    v["in_sync"],
                    v["state"],
                    v["halt"],
                    v["conflicts"],
                    v["local"],
                    v["shared"],
                    v["last_step"],
                    v["daemon"]["live"]
                ),
                Err(e) => e.clone(),
            };
            let _ = writeln!(s, "--- status {}: {line}", NAMES[i]);
        }
    }
    for e in &w.eps {
        let _ = writeln!(
            s,
            "--- daemon log {} (tail)\n{}",
            e.name,
            e.daemon_log_tail(15)
        );
        if let Some(u) = unwatched_dirs(e) {
            let _ = writeln!(
                s,
                "--- directories of {} its daemon does not watch (inotify): {u:?}",
                e.name
            );
        }
    }
    let counts: BTreeMap<&str, u64> = w.ops_run.iter().map(|(k, v)| (*k, *v)).collect();
    let _ = writeln!(s, "--- operations run: {counts:?}");
    s
}

/// Directories of the endpoint's folder that its live daemon holds no inotify watch on (read
/// from `/proc/PID/fdinfo`): changes in them go unseen until a full rescan. `None` without a
/// live daemon.
fn unwatched_dirs(e: &super::Endpoint) -> Option<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let pid = e.daemon_pid()?;
    let mut watched = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let is_inotify =
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("inotify"));
        if !is_inotify {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        for word in info.split_whitespace() {
            if let Some(ino) = word
                .strip_prefix("ino:")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            {
                watched.insert(ino);
            }
        }
    }
    let mut out = Vec::new();
    let d = digest(&e.folder);
    for (p, entry) in std::iter::once((String::new(), Entry::Dir)).chain(d) {
        if entry != Entry::Dir {
            continue;
        }
        if let Ok(md) = std::fs::symlink_metadata(e.folder.join(&p))
            && !watched.contains(&md.ino())
        {
            out.push(if p.is_empty() { ".".into() } else { p });
        }
    }
    Some(out)
}
