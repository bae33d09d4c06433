//! The randomized multi-daemon test (in the spirit of Dropbox's Nucleus tests and Jepsen):
//! three real daemons keep one sync set in sync — the laptop (`local`) through `prism-sync
//! serve` over TLS, two workspaces (`ws1`, `ws2`) on the repository directory itself — while a
//! seeded random workload edits all three folders. Then the workload stops and the harness
//! waits, for a stated time, until the endpoints converge, and checks what a user relies on:
//!
//! - every folder is the same (conflict copies included, at the same places);
//! - no write was silently lost: each write no later operation saw and replaced is in a folder
//!   (at its path or in a conflict copy of it), or — when the workload itself overwrote it
//!   right after a daemon had put it there — in the repository's versions;
//! - every version the repository holds is a state the workload really made (never a torn or
//!   half-written file), and the audit logs agree with the snapshots;
//! - `status --json` says in sync exactly when it is (one head, identical folders), and never
//!   says so while it is not; `conflicts` agrees with it on every endpoint;
//! - no temp file remains, no endpoint halted, and the repository passes `check`.
//!
//! On failure the report names the seed, the operation log's tail, the folder differences and
//! every endpoint's status and daemon log, and the work directory is kept (with the full
//! operation log in `oplog.jsonl`). Real daemons interleave nondeterministically — that is the
//! point — so a seed fixes the operation sequence and the timing jitter, not the outcome.
#![allow(dead_code)]

pub mod check;
pub mod fsview;
pub mod oracle;
pub mod repo_view;
pub mod rng;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::servers::{Machine, Serve};
use fsview::Item;
use oracle::{Event, Oracle};
use repo_view::RepoView;
use rng::Rng;
use workload::{Ctx, Op, Profile, content, now_ns};

pub const SET: &str = "chaos";
/// The endpoints: the laptop (through `serve`) and two workspaces (on the directory).
pub const NAMES: [&str; 3] = ["local", "ws1", "ws2"];

/// One run of the harness.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// Workload rounds; each ends with a quiesce and the checks.
    pub rounds: u32,
    /// Workload time per round.
    pub round: Duration,
    /// How long the endpoints may take to converge once the workload stops.
    pub converge_within: Duration,
    /// The set's conflict policy at every endpoint (`keep_both` or `user_prompt`).
    pub policy: &'static str,
    pub profile: Profile,
    /// The daemons' timings.
    pub timings: Timings,
    /// `check --read-data` at the end instead of `check`.
    pub read_data: bool,
    /// Kinds of finding that are known open bugs (with the reason, printed with every run):
    /// reported, not failed on. The CI version uses this while a fix is pending; the soak
    /// tolerates only what `PRISM_SOAK_TOLERATE` names (to hunt for other bugs meanwhile).
    pub tolerate: Vec<(String, String)>,
}

impl Config {
    /// The short version CI runs: one round of 35 s, every operation (daemon kills included),
    /// every check asserted; only the open bug B5 (a file caught between its truncation and its
    /// new content published, µs-wide, seen on keep-both conflict copies) is reported without
    /// failing.
    pub fn ci(seed: u64) -> Config {
        Config {
            seed,
            rounds: 1,
            round: Duration::from_secs(35),
            converge_within: Duration::from_secs(45),
            policy: "keep_both",
            profile: Profile::full(),
            timings: Timings::default(),
            read_data: false,
            tolerate: vec![(
                "published a half-written file".into(),
                "open bug B5: a file caught between truncation and write, see benches/README.md §11"
                    .into(),
            )],
        }
    }

    /// The soak: `PRISM_SOAK_DURATION_S` (default 1800) of workload in rounds of
    /// `PRISM_SOAK_ROUND_S` (default 180), seed `PRISM_SOAK_SEED` (default: from the clock,
    /// printed), policy `PRISM_SOAK_POLICY` (default `keep_both`); `PRISM_SOAK_TOLERATE` lists
    /// kinds of finding (comma-separated) to report without failing, `PRISM_SOAK_WITHOUT`
    /// operations (by name, e.g. `kill-daemon`) to leave out; `PRISM_SOAK_POLL_MS`,
    /// `PRISM_SOAK_SETTLE_MS` (at least 100), `PRISM_SOAK_SETTLE_CAP_MS` and
    /// `PRISM_SOAK_FULL_RESCAN_S` set the daemons' timings.
    pub fn soak_from_env() -> Config {
        let num = |k: &str, d: u64| -> u64 {
            std::env::var(k)
                .ok()
                .map(|v| {
                    v.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{k}={v} is not a number"))
                })
                .unwrap_or(d)
        };
        let duration = num("PRISM_SOAK_DURATION_S", 1800);
        let round = num("PRISM_SOAK_ROUND_S", 180).clamp(10, duration.max(10));
        let policy = match std::env::var("PRISM_SOAK_POLICY").as_deref() {
            Ok("user_prompt") => "user_prompt",
            Ok("keep_both") | Err(_) => "keep_both",
            Ok(other) => panic!("PRISM_SOAK_POLICY={other}: use keep_both or user_prompt"),
        };
        let without: Vec<Op> = std::env::var("PRISM_SOAK_WITHOUT")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                *Op::ALL
                    .iter()
                    .find(|o| o.name() == n)
                    .unwrap_or_else(|| panic!("PRISM_SOAK_WITHOUT: no operation {n:?}"))
            })
            .collect();
        Config {
            seed: num("PRISM_SOAK_SEED", now_ns() as u64 % 1_000_000),
            rounds: duration.div_ceil(round) as u32,
            round: Duration::from_secs(round),
            converge_within: Duration::from_secs(num("PRISM_SOAK_CONVERGE_S", 90)),
            policy,
            profile: Profile::full().without(&without),
            timings: Timings {
                poll_ms: num("PRISM_SOAK_POLL_MS", 250),
                settle_ms: num("PRISM_SOAK_SETTLE_MS", 100).max(100),
                settle_cap_ms: num("PRISM_SOAK_SETTLE_CAP_MS", 1000),
                full_rescan_s: num("PRISM_SOAK_FULL_RESCAN_S", 600),
            },
            read_data: true,
            tolerate: std::env::var("PRISM_SOAK_TOLERATE")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| (k.to_string(), "PRISM_SOAK_TOLERATE".to_string()))
                .collect(),
        }
    }
}

/// The daemons' timings (their `PRISM_SYNC_*` variables).
#[derive(Debug, Clone)]
pub struct Timings {
    pub poll_ms: u64,
    pub settle_ms: u64,
    pub settle_cap_ms: u64,
    /// The safety-net full rescan. The default (600 s, as in production) keeps it out of the
    /// way: convergence must not depend on it.
    pub full_rescan_s: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            poll_ms: 250,
            settle_ms: 100,
            settle_cap_ms: 1000,
            full_rescan_s: 600,
        }
    }
}

/// One endpoint: its own home (so its own daemon) and folder.
pub struct Endpoint {
    pub name: &'static str,
    pub m: Machine,
    pub folder: PathBuf,
}

impl Endpoint {
    pub fn json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let r = self.m.run(args);
        if r.code != 0 {
            return Err(format!(
                "prism-sync {} exited {}: {}",
                args.join(" "),
                r.code,
                r.stderr.trim()
            ));
        }
        serde_json::from_str(&r.stdout)
            .map_err(|e| format!("prism-sync {}: {e}: {}", args.join(" "), r.stdout))
    }

    pub fn status(&self) -> Result<serde_json::Value, String> {
        self.json(&["status", SET, "--json"])
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.m.home.join("sync/daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn kill_daemon(&self) {
        if let Some(pid) = self.daemon_pid() {
            // SAFETY: signalling the daemon this harness started for this home.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = std::fs::remove_file(self.m.home.join("sync/daemon.pid"));
        }
    }

    fn start(&self) {
        self.m.ok(&["start", SET]);
    }

    pub fn daemon_log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.m.home.join("sync/daemon.log")).unwrap_or_default();
        let v: Vec<&str> = log.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.m.home.join(format!("sync/{SET}.audit.jsonl"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    Paused,
    Killed,
}

/// The three endpoints, the server and the repository.
pub struct World {
    pub cfg: Config,
    pub dir: PathBuf,
    tmp: Option<tempfile::TempDir>,
    pub repo: PathBuf,
    pub serve: Serve,
    pub eps: Vec<Endpoint>,
    pub view: RepoView,
    pub oracle: Oracle,
    rng: Rng,
    next_seq: u64,
    down: [Option<(Instant, Down)>; 3],
    pub ops_run: std::collections::BTreeMap<&'static str, u64>,
}

impl Drop for World {
    fn drop(&mut self) {
        for e in &self.eps {
            e.kill_daemon(); // never leave daemons behind
        }
    }
}

fn machine(home: PathBuf, t: &Timings) -> Machine {
    Machine::new(home)
        .var("PRISM_SYNC_POLL_MS", &t.poll_ms.to_string())
        .var("PRISM_SYNC_SETTLE_MS", &t.settle_ms.to_string())
        .var("PRISM_SYNC_SETTLE_CAP_MS", &t.settle_cap_ms.to_string())
        .var("PRISM_SYNC_FULL_RESCAN_S", &t.full_rescan_s.to_string())
        .var("PRISM_SYNC_BACKOFF_MAX_S", "2")
}

/// Sets `key: value` in a set's YAML config (replacing the line, or adding it).
fn set_config(home: &Path, pairs: &[(&str, &str)]) {
    let path = home.join(format!("sync/{SET}.yml"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in pairs {
        let prefix = format!("{k}:");
        let line = format!("{k}: {v}");
        if text.lines().any(|l| l.starts_with(&prefix)) {
            text = text
                .lines()
                .map(|l| {
                    if l.starts_with(&prefix) {
                        line.clone()
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n";
        } else {
            text.push_str(&line);
            text.push('\n');
        }
    }
    std::fs::write(&path, text).unwrap();
}

/// The harness's settings of a set at one endpoint.
fn tune(home: &Path, policy: &str) {
    // The workload deletes on purpose (whole trees, bursts, directories turned into files,
    // moves with edits) and replaces more than half of a folder of ~100 files within two or
    // three minutes: by the guard's own measure (the net loss of what was there when its
    // 10-minute window began) that is a mass deletion, and at the default 50 % the set halts
    // (seed 4501: "57 of the 113 files there were 2 minute(s) ago would be gone"). The share is
    // set to 100 % — what a user whose tools replace the folder's contents would choose; the
    // net loss can never exceed it. The count limit goes too: in a 30-minute soak the folder
    // grows to ~5,000 files and the workload replaces more than 1,000 of them within ten
    // minutes (seed 7001, round 4: "1189 of the 4989 files there were 3 minute(s) ago would be
    // gone" halted all three endpoints at the default of 1000). The guard itself is tested in
    // tests/sync_safety.rs; here it would only stop the workload. `PRISM_SOAK_DELETE_PERCENT`
    // and `PRISM_SOAK_DELETE_COUNT` override them.
    let pct = std::env::var("PRISM_SOAK_DELETE_PERCENT").unwrap_or_else(|_| "100.0".into());
    let count = std::env::var("PRISM_SOAK_DELETE_COUNT").unwrap_or_else(|_| "1000000".into());
    set_config(
        home,
        &[
            ("conflict_policy", policy),
            ("max_delete_percent", &pct),
            ("max_delete_count", &count),
        ],
    );
}

impl World {
    /// Creates the server, the set (the laptop seeds it), the two workspaces, and starts the
    /// three daemons.
    pub fn create(cfg: Config) -> World {
        let tmp = tempfile::Builder::new()
            .prefix("prism-multi-daemon-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let repo = dir.join("repo");
        let serve = Serve::start(&dir.join("serve"), &repo, true, false);
        let mut rng = Rng::new(cfg.seed);
        let mut oracle = Oracle::default();

        let laptop = Endpoint {
            name: NAMES[0],
            m: machine(dir.join("home-local"), &cfg.timings).with_token(),
            folder: dir.join("local"),
        };
        oracle.push(seed_tree(&laptop.folder, cfg.seed, &mut rng));
        let folder = laptop.folder.to_str().unwrap();
        laptop.m.ok(&[
            "init",
            folder,
            "--repo",
            &serve.url,
            "--name",
            SET,
            "--conflict-policy",
            cfg.policy,
        ]);
        tune(&laptop.m.home, cfg.policy);
        laptop.m.ok(&["sync", SET]);
        let mut eps = vec![laptop];
        for name in &NAMES[1..] {
            let ep = Endpoint {
                name,
                m: machine(dir.join(format!("home-{name}")), &cfg.timings),
                folder: dir.join(name),
            };
            ep.m.join_set(&eps[0].m, SET, name, &ep.folder, repo.to_str().unwrap());
            tune(&ep.m.home, cfg.policy);
            eps.push(ep);
        }
        for ep in &eps {
            ep.start();
        }
        let view = RepoView::open(&repo, &eps[1].m.home.join("sync/keys"));
        World {
            cfg,
            dir,
            tmp: Some(tmp),
            repo,
            serve,
            eps,
            view,
            oracle,
            rng,
            next_seq: 1,
            down: [None; 3],
            ops_run: Default::default(),
        }
    }

    fn seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    fn ctx(&self, ep: usize, seq: u64) -> Ctx<'_> {
        Ctx {
            root: &self.eps[ep].folder,
            endpoint: ep,
            seq,
            seed: self.cfg.seed,
            profile: &self.cfg.profile,
        }
    }

    fn record(&mut self, events: Option<Vec<Event>>) {
        for e in events.into_iter().flatten() {
            *self.ops_run.entry(e.op).or_default() += 1;
            self.oracle.push(e);
        }
    }

    /// Resumes paused daemons and restarts killed ones whose time has come (all, with `all`).
    fn revive(&mut self, all: bool) {
        for i in 0..3 {
            let Some((at, how)) = self.down[i] else {
                continue;
            };
            if !all && Instant::now() < at {
                continue;
            }
            let seq = self.seq();
            let ep = &self.eps[i];
            let op = match how {
                Down::Paused => {
                    ep.m.ok(&["resume", SET]);
                    "resume-daemon"
                }
                Down::Killed => {
                    ep.start();
                    "restart-daemon"
                }
            };
            self.down[i] = None;
            let t = now_ns();
            self.oracle.push(Event {
                seq,
                endpoint: i,
                op,
                start_ns: t,
                end_ns: t,
                ..Default::default()
            });
        }
    }

    /// Runs the workload for `d`.
    pub fn workload(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.revive(false);
            let op = self.cfg.profile.choose(&mut self.rng);
            let ep = self.rng.below(3) as usize;
            match op {
                Op::Pause => {
                    let (lo, hi) = self.cfg.profile.pause_ms;
                    std::thread::sleep(Duration::from_millis(self.rng.range(lo, hi)));
                }
                Op::PauseDaemon | Op::KillDaemon => self.take_down(op, ep),
                Op::SameFileEdit | Op::Concurrent => self.at_once(op, ep),
                Op::SlowAppend => {
                    let seq = self.seq();
                    self.next_seq += workload::SLOW_APPENDS_MAX;
                    let mut rng = self.rng.fork();
                    let ev = workload::slow_append(&self.ctx(ep, seq), &mut rng);
                    self.record(ev);
                }
                _ => {
                    let seq = self.seq();
                    let mut rng = self.rng.fork();
                    let ev = workload::execute(op, &self.ctx(ep, seq), &mut rng);
                    self.record(ev);
                }
            }
            let j = self.rng.range(0, self.cfg.profile.jitter_ms);
            std::thread::sleep(Duration::from_millis(j));
        }
    }

    fn take_down(&mut self, op: Op, ep: usize) {
        if self.down[ep].is_some() {
            return;
        }
        let (lo, hi) = self.cfg.profile.daemon_down_ms;
        let until = Instant::now() + Duration::from_millis(self.rng.range(lo, hi));
        let seq = self.seq();
        let t = now_ns();
        let how = if op == Op::PauseDaemon {
            self.eps[ep].m.ok(&["pause", SET]);
            Down::Paused
        } else {
            self.eps[ep].kill_daemon();
            Down::Killed
        };
        self.down[ep] = Some((until, how));
        self.record(Some(vec![Event {
            seq,
            endpoint: ep,
            op: op.name(),
            start_ns: t,
            end_ns: now_ns(),
            ..Default::default()
        }]));
    }

    /// The last act of a round, the moment most likely to leave a head unmerged: every endpoint
    /// creates a file at the same instant, and two of them edit the same hot file, while all
    /// daemons run; then the workload stops.
    fn finale(&mut self, round: u32) {
        self.revive(true);
        let seqs: Vec<u64> = (0..5).map(|_| self.seq()).collect();
        let mut rngs: Vec<Rng> = (0..5).map(|_| self.rng.fork()).collect();
        let hot = self.rng.below(workload::HOT_FILES);
        let barrier = std::sync::Barrier::new(5);
        let ctxs: Vec<Ctx> = (0..5).map(|k| self.ctx(k % 3, seqs[k])).collect();
        let events: Vec<Event> = std::thread::scope(|s| {
            let handles: Vec<_> = ctxs
                .iter()
                .zip(rngs.iter_mut())
                .enumerate()
                .map(|(k, (cx, rng))| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        if k < 3 {
                            workload::create_at(
                                cx,
                                rng,
                                &format!("finale/r{round}-{}.txt", NAMES[k]),
                            )
                        } else {
                            workload::hot_edit(cx, rng, hot)
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("finale thread"))
                .collect()
        });
        for e in events {
            self.record(Some(vec![e]));
        }
    }

    /// Two endpoints act at the same moment: the same hot file, or two random operations.
    fn at_once(&mut self, op: Op, first: usize) {
        let second = (first + 1 + self.rng.below(2) as usize) % 3;
        let hot = self.rng.below(workload::HOT_FILES);
        let ops = [*self.rng.pick(Op::SIMPLE), *self.rng.pick(Op::SIMPLE)];
        let (s1, s2) = (self.seq(), self.seq());
        let (mut r1, mut r2) = (self.rng.fork(), self.rng.fork());
        let barrier = std::sync::Barrier::new(2);
        let (c1, c2) = (self.ctx(first, s1), self.ctx(second, s2));
        let run = |cx: &Ctx, rng: &mut Rng, which: Op| -> Option<Vec<Event>> {
            barrier.wait();
            if op == Op::SameFileEdit {
                Some(vec![workload::hot_edit(cx, rng, hot)])
            } else {
                workload::execute(which, cx, rng).map(|mut v| {
                    for e in &mut v {
                        e.note = format!("concurrent {}", e.note).trim().to_string();
                    }
                    v
                })
            }
        };
        let (a, b) = std::thread::scope(|s| {
            let h = s.spawn(|| run(&c2, &mut r2, ops[1]));
            let a = run(&c1, &mut r1, ops[0]);
            (a, h.join().expect("workload thread"))
        });
        self.record(a);
        self.record(b);
    }

    /// Runs the whole test: rounds of workload, each followed by a quiesce and the checks; the
    /// deep checks at the end. Panics with a report on the first failing round.
    pub fn run(mut self) {
        eprintln!(
            "multi-daemon test: seed {}, {} round(s) of {:?}, policy {}, work dir {}",
            self.cfg.seed,
            self.cfg.rounds,
            self.cfg.round,
            self.cfg.policy,
            self.dir.display()
        );
        let first = check::converge(&mut self);
        let findings = self.untolerated(first.findings.clone());
        if !findings.is_empty() {
            self.fail("initial sync", findings, Some(&first));
        }
        let mut converge_times = vec![];
        for round in 1..=self.cfg.rounds {
            let t = Instant::now();
            self.workload(self.cfg.round);
            self.finale(round);
            self.revive(true);
            let q = check::converge(&mut self);
            let mut findings = self.untolerated(q.findings.clone());
            if findings.is_empty() {
                let more = check::at_quiesce(&mut self, &q);
                findings.extend(self.untolerated(more));
            }
            if !findings.is_empty() {
                self.fail(&format!("round {round}"), findings, Some(&q));
            }
            converge_times.push(q.took);
            eprintln!(
                "round {round}/{}: {} operations so far, converged {:.1} s after the workload stopped ({:.0} s)",
                self.cfg.rounds,
                self.oracle.events.len(),
                q.took.as_secs_f64(),
                t.elapsed().as_secs_f64()
            );
        }
        for ep in &self.eps {
            ep.m.ok(&["stop", SET]);
        }
        let (findings, stats) = check::finally(&mut self);
        let findings = self.untolerated(findings);
        if !findings.is_empty() {
            self.fail("final checks", findings, None);
        }
        eprintln!(
            "multi-daemon test passed: seed {}, {} operations {:?}; {stats}; convergence took {:?}",
            self.cfg.seed,
            self.oracle.events.len(),
            self.ops_run,
            converge_times
        );
    }

    /// The findings that fail the run; tolerated ones (known open bugs) are printed.
    fn untolerated(&self, findings: Vec<check::Finding>) -> Vec<check::Finding> {
        let mut fail = Vec::new();
        for f in findings {
            match self.cfg.tolerate.iter().find(|(kind, _)| *kind == f.what) {
                Some((_, why)) => eprintln!("tolerated [{}] ({why}): {}", f.what, f.detail),
                None => fail.push(f),
            }
        }
        fail
    }

    /// Prints the report, keeps the work directory, and panics.
    pub fn fail(
        &mut self,
        when: &str,
        findings: Vec<check::Finding>,
        q: Option<&check::Quiesced>,
    ) -> ! {
        self.oracle.sorted();
        let _ = std::fs::write(self.dir.join("oplog.jsonl"), self.oracle.jsonl(&NAMES));
        let report = check::report(self, when, &findings, q);
        let _ = std::fs::write(self.dir.join("report.txt"), &report);
        for ep in &self.eps {
            ep.kill_daemon();
        }
        if let Some(t) = self.tmp.take() {
            let _ = t.keep();
        }
        panic!("{report}");
    }
}

/// The laptop's folder before the set exists: kept files, the hot files, a few trees, links.
fn seed_tree(root: &Path, seed: u64, rng: &mut Rng) -> Event {
    let mut e = Event {
        seq: 0,
        endpoint: 0,
        op: "seed",
        start_ns: now_ns(),
        ..Default::default()
    };
    let mut put = |rel: String, data: Vec<u8>| {
        let p = root.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data).unwrap();
        e.written.push((rel, Item::file(&data)));
    };
    for k in 0..40 {
        let len = rng.range(20, 3000) as usize;
        put(
            format!("keep/{}/k{k}.txt", ["a", "b", "c"][k % 3]),
            content(seed, 0, &format!("keep {k}"), len, false),
        );
    }
    for k in 0..workload::HOT_FILES {
        put(
            format!("hot/h{k}.txt"),
            content(seed, 0, &format!("hot {k}"), 200, false),
        );
    }
    for d in 0..5 {
        for k in 0..12 {
            let len = rng.range(20, 5000) as usize;
            put(
                format!("d{d}/{}/x{k}.csv", ["p", "q"][k % 2]),
                content(seed, 0, &format!("tree {d} {k}"), len, false),
            );
        }
    }
    put(
        "data/raw.bin".into(),
        content(seed, 0, "raw", 1 << 20, true),
    );
    for (name, target) in [("latest", "d0/p/x0.csv"), ("dangling", "nowhere")] {
        std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        e.written.push((name.into(), Item::Link(target.into())));
    }
    e.end_ns = now_ns();
    e
}
