//! Many sync steps, one edit each, on one endpoint and a local directory repository
//! (`cargo bench --bench many_steps`; results recorded in benches/README.md).
//!
//! The steps are driven in-process through the library (`endpoint::step`, exactly what `sync`
//! runs, without a process start per step) so thousands of them take minutes; maintenance
//! (retention, then prune with compaction) runs every `PRISM_BENCH_MAINTAIN_EVERY` steps
//! (default 100: a busy day's worth), as the daemon would when the set is idle. At each
//! checkpoint the real binary (a fresh process) is timed for a no-change `sync` (median of 3),
//! `history NAME PATH` and `restore NAME --at TIME` (median of 3), and the repository's object
//! counts and size are recorded.
//!
//! `PRISM_BENCH_STEPS` (default 1000) is the last checkpoint (checkpoints: 10, 100, 1000,
//! 10000 up to it); `PRISM_BENCH_FILES` (default 2000) the folder's file count;
//! `PRISM_BENCH_MAINTAIN_EVERY=0` turns maintenance off (the "before" column).
//!
//! `PRISM_BENCH_REPO=rest:http://127.0.0.1:PORT/` puts the set's repository there instead (e.g.
//! `prism-sync serve` behind `wan-proxy`; the token comes from `PRISM_SYNC_REST_TOKEN`), with
//! the metadata cache the CLI uses; `PRISM_BENCH_REPO_DIR` is then the served directory, for the
//! object counts.
//!
//! `PRISM_BENCH_WORK=DIR` keeps the home, folder and repository in DIR (a new directory) instead
//! of a temporary one, so the repository of a long run can be measured again; with
//! `PRISM_BENCH_MEASURE_ONLY=1` and the DIR of such a run, no step is made: the row of its
//! current number of steps is measured again (after a change to the binary).
//!
//! `PRISM_BENCH_BIN` times another build of the binary (e.g. a copy of an older one).
//!
//! Columns: `history` of the edited `notes.txt` (its cost may grow with its versions) and of
//! `d0/f0.txt` (never edited: one version at any age); the daemon columns start the daemon on
//! the set (`prism-sync start`, full rescans every second) and report its no-change step as the
//! duration the daemon itself gives in `status` (`last_step_ms`, median of 3 steps), and
//! `history`/`restore --at` as fresh CLI processes while it runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use prism_sync::endpoint::maintain::{Intervals, maintain};
use prism_sync::endpoint::{Endpoint, StepOptions, step};
use prism_sync::repository::{Credentials, Repository};

const SET: &str = "bench";

/// The binary timed: `PRISM_BENCH_BIN`, else the one built with this bench.
fn bin() -> String {
    std::env::var("PRISM_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_prism-sync").into())
}

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn run(home: &Path, args: &[&str]) -> Duration {
    run_env(home, args, &[])
}

fn run_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Duration {
    let t = Instant::now();
    let o = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .env("PRISM_HOME", home)
        .env_remove("PRISM_SYNC_PASSWORD")
        .env_remove("PRISM_SYNC_REPO")
        .output()
        .unwrap();
    let d = t.elapsed();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    d
}

fn median(home: &Path, args: &[&str]) -> Duration {
    let mut v: Vec<Duration> = (0..3).map(|_| run(home, args)).collect();
    v.sort();
    v[1]
}

fn count(dir: &Path) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                let (a, b) = count(&e.path());
                n += a;
                bytes += b;
            } else {
                n += 1;
                bytes += md.len();
            }
        }
    }
    (n, bytes)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The medians of a fresh `history` of `notes.txt`, of `d0/f0.txt` and of `restore --at`.
fn reads(home: &Path, at_step5: &str, target: &Path) -> [Duration; 3] {
    let history = median(home, &["history", SET, "notes.txt"]);
    let history_fixed = median(home, &["history", SET, "d0/f0.txt"]);
    let mut v: Vec<Duration> = (0..3)
        .map(|_| {
            let _ = std::fs::remove_dir_all(target);
            run(
                home,
                &[
                    "restore",
                    SET,
                    "--at",
                    at_step5,
                    "--path",
                    "notes.txt",
                    "--target",
                    target.to_str().unwrap(),
                ],
            )
        })
        .collect();
    v.sort();
    [history, history_fixed, v[1]]
}

/// The daemon's own duration of 3 no-change steps (median), read from its status.
fn daemon_steps(home: &Path) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = None;
    let mut v = Vec::new();
    while v.len() < 3 {
        assert!(Instant::now() < deadline, "the daemon made no steps");
        std::thread::sleep(Duration::from_millis(200));
        let Some(live) = prism_sync::status::ask_daemon(home)
            .and_then(|a| a.sets.into_iter().find(|l| l.set == SET))
        else {
            continue;
        };
        let (Some(ms), steps) = (live.last_step_ms, live.steps) else {
            continue;
        };
        // The first step after the start is the daemon's first (a full scan): not counted.
        if steps >= 2 && seen != Some(steps) {
            if seen.is_some() {
                v.push(Duration::from_millis(ms));
            }
            seen = Some(steps);
        }
    }
    v.sort();
    v[1]
}

fn stop_daemon(home: &Path) {
    run(home, &["stop", SET]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while prism_sync::status::ask_daemon(home).is_some() {
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let last = env_u64("PRISM_BENCH_STEPS", 1000);
    let files = env_u64("PRISM_BENCH_FILES", 2000);
    let every = env_u64("PRISM_BENCH_MAINTAIN_EVERY", 100);
    let measure_only = std::env::var_os("PRISM_BENCH_MEASURE_ONLY").is_some_and(|v| v == "1");
    let (_tmp, work): (Option<tempfile::TempDir>, PathBuf) =
        match std::env::var_os("PRISM_BENCH_WORK") {
            Some(d) => {
                let d = PathBuf::from(d);
                if !measure_only {
                    std::fs::create_dir(&d).expect("PRISM_BENCH_WORK must name a new directory");
                }
                (None, d)
            }
            None => {
                assert!(
                    !measure_only,
                    "PRISM_BENCH_MEASURE_ONLY needs PRISM_BENCH_WORK"
                );
                let t = tempfile::Builder::new()
                    .prefix("prism-many-steps-")
                    .tempdir()
                    .unwrap();
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
    let home: PathBuf = work.join("home");
    let folder = work.join("folder");
    let remote = std::env::var("PRISM_BENCH_REPO").ok();
    let repo_dir = match (&remote, std::env::var_os("PRISM_BENCH_REPO_DIR")) {
        (Some(_), Some(d)) => PathBuf::from(d),
        (Some(_), None) => {
            panic!("PRISM_BENCH_REPO needs PRISM_BENCH_REPO_DIR (the served directory)")
        }
        (None, _) => work.join("repo"),
    };
    let repo_url = remote
        .clone()
        .unwrap_or_else(|| repo_dir.to_str().unwrap().to_string());
    if !measure_only {
        for i in 0..files {
            let p = folder.join(format!("d{}/f{i}.txt", i % 40));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("file {i}\n").repeat(20)).unwrap();
        }
        std::fs::write(folder.join("notes.txt"), "v0\n").unwrap();
        run(
            &home,
            &[
                "init",
                folder.to_str().unwrap(),
                "--repo",
                &repo_url,
                "--name",
                SET,
            ],
        );
        run(&home, &["sync", SET]);
    }
    let ep = Endpoint::open(&home, SET).unwrap();
    let creds = Credentials {
        password: None,
        local_keys_dir: home.join("sync/keys"),
    };
    let repo = Repository::open_url(&ep.cfg.repo, &creds)
        .unwrap()
        .with_cache(&prism_sync::home::Home::new(&home).cache_root());
    let iv = Intervals::from_env();
    let at_file = work.join("at_step5");
    let mut at_step5 = std::fs::read_to_string(&at_file).unwrap_or_default();
    let steps_file = work.join("steps");
    let mut n: u64 = std::fs::read_to_string(&steps_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    println!(
        "| steps | no-change sync | history notes.txt | history d0/f0.txt | restore --at | daemon step | daemon: history notes.txt | history d0/f0.txt | restore --at | packs | index files | snapshots | repository |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let checkpoints: Vec<u64> = if measure_only {
        vec![n]
    } else {
        [10, 100, 1000, 10_000]
            .into_iter()
            .filter(|c| *c <= last)
            .collect()
    };
    let started = Instant::now();
    for cp in checkpoints {
        while n < cp {
            n += 1;
            std::fs::write(folder.join("notes.txt"), format!("v{n}\n")).unwrap();
            step(&ep, &repo, &StepOptions::default()).unwrap();
            if n == 5 {
                std::thread::sleep(Duration::from_millis(1100));
                at_step5 = jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S").to_string();
                std::fs::write(&at_file, &at_step5).unwrap();
                std::thread::sleep(Duration::from_millis(1100));
            }
            if every > 0 && n.is_multiple_of(every) {
                maintain(&ep, &repo, &iv, true).unwrap();
            }
            std::fs::write(&steps_file, n.to_string()).unwrap();
        }
        let sync = median(&home, &["sync", SET]);
        let target = work.join("restored");
        let [history, history_fixed, restore] = reads(&home, &at_step5, &target);
        // The same with the daemon running the set (full rescans every second: a no-change
        // step each second).
        run_env(&home, &["start", SET], &[("PRISM_SYNC_FULL_RESCAN_S", "1")]);
        let daemon_step = daemon_steps(&home);
        let [d_history, d_history_fixed, d_restore] = reads(&home, &at_step5, &target);
        stop_daemon(&home);
        let (packs, _) = count(&repo_dir.join("data"));
        let (index, _) = count(&repo_dir.join("index"));
        let (snaps, _) = count(&repo_dir.join("snapshots"));
        let (_, size) = count(&repo_dir);
        println!(
            "| {cp} | {} | {} | {} | {} | {} | {} | {} | {} | {packs} | {index} | {snaps} | {:.1} MiB |",
            ms(sync),
            ms(history),
            ms(history_fixed),
            ms(restore),
            ms(daemon_step),
            ms(d_history),
            ms(d_history_fixed),
            ms(d_restore),
            size as f64 / (1 << 20) as f64
        );
    }
    eprintln!(
        "{n} steps, {files} files, maintenance every {every} steps, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
