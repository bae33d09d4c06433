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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use prism_sync::endpoint::maintain::{Intervals, maintain};
use prism_sync::endpoint::{Endpoint, StepOptions, step};
use prism_sync::repository::{Credentials, Repository};

const SET: &str = "bench";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_prism-sync")
}

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn run(home: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    let o = Command::new(bin())
        .args(args)
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let last = env_u64("PRISM_BENCH_STEPS", 1000);
    let files = env_u64("PRISM_BENCH_FILES", 2000);
    let every = env_u64("PRISM_BENCH_MAINTAIN_EVERY", 100);
    let tmp = tempfile::Builder::new()
        .prefix("prism-many-steps-")
        .tempdir()
        .unwrap();
    let home: PathBuf = tmp.path().join("home");
    let folder = tmp.path().join("folder");
    let remote = std::env::var("PRISM_BENCH_REPO").ok();
    let repo_dir = match (&remote, std::env::var_os("PRISM_BENCH_REPO_DIR")) {
        (Some(_), Some(d)) => PathBuf::from(d),
        (Some(_), None) => {
            panic!("PRISM_BENCH_REPO needs PRISM_BENCH_REPO_DIR (the served directory)")
        }
        (None, _) => tmp.path().join("repo"),
    };
    let repo_url = remote
        .clone()
        .unwrap_or_else(|| repo_dir.to_str().unwrap().to_string());
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
    let ep = Endpoint::open(&home, SET).unwrap();
    let creds = Credentials {
        password: None,
        local_keys_dir: home.join("sync/keys"),
    };
    let repo = Repository::open_url(&ep.cfg.repo, &creds)
        .unwrap()
        .with_cache(&prism_sync::home::Home::new(&home).cache_root());
    let iv = Intervals::from_env();
    let mut at_step5 = String::new();
    println!(
        "| steps | no-change sync | history | restore --at | packs | index files | snapshots | repository |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let checkpoints: Vec<u64> = [10, 100, 1000, 10_000]
        .into_iter()
        .filter(|c| *c <= last)
        .collect();
    let started = Instant::now();
    let mut n = 0;
    for cp in checkpoints {
        while n < cp {
            n += 1;
            std::fs::write(folder.join("notes.txt"), format!("v{n}\n")).unwrap();
            step(&ep, &repo, &StepOptions::default()).unwrap();
            if n == 5 {
                std::thread::sleep(Duration::from_millis(1100));
                at_step5 = jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S").to_string();
                std::thread::sleep(Duration::from_millis(1100));
            }
            if every > 0 && n % every == 0 {
                maintain(&ep, &repo, &iv, true).unwrap();
            }
        }
        let sync = median(&home, &["sync", SET]);
        let history = median(&home, &["history", SET, "notes.txt"]);
        let target = tmp.path().join("restored");
        let restore = {
            let mut v: Vec<Duration> = (0..3)
                .map(|_| {
                    let _ = std::fs::remove_dir_all(&target);
                    run(
                        &home,
                        &[
                            "restore",
                            SET,
                            "--at",
                            &at_step5,
                            "--path",
                            "notes.txt",
                            "--target",
                            target.to_str().unwrap(),
                        ],
                    )
                })
                .collect();
            v.sort();
            v[1]
        };
        let (packs, _) = count(&repo_dir.join("data"));
        let (index, _) = count(&repo_dir.join("index"));
        let (snaps, _) = count(&repo_dir.join("snapshots"));
        let (_, size) = count(&repo_dir);
        println!(
            "| {cp} | {} | {} | {} | {packs} | {index} | {snaps} | {:.1} MiB |",
            ms(sync),
            ms(history),
            ms(restore),
            size as f64 / (1 << 20) as f64
        );
    }
    eprintln!(
        "{n} steps, {files} files, maintenance every {every} steps, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
