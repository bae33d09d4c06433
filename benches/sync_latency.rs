//! Sync latency with two real daemons on one machine and one directory repository
//! (`cargo bench --bench sync_latency`; results recorded in benches/README.md).
//!
//! Measures, with the daemon's default timings:
//! 1. latency from a write finishing on one endpoint to the content being in place on the
//!    other, 100 edits in each direction (p50, p90, p99, max);
//! 2. a burst of 1,000 new small files: time until all are on the other side;
//! 3. a 1 GiB file edited (64 bytes) in the middle: propagation time and bytes added to the
//!    repository;
//! 4. a daemon watching a 100,000-file tree: CPU use while idle (60 s) and RSS.
//!
//! `PRISM_BENCH_QUICK=1` shrinks everything (a smoke run).

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SET: &str = "bench";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_prism-sync")
}

struct Ep {
    home: PathBuf,
    folder: PathBuf,
}

impl Ep {
    fn run(&self, args: &[&str], key: Option<&str>) -> String {
        let mut c = Command::new(bin());
        c.args(args)
            .env("PRISM_HOME", &self.home)
            .env_remove("PRISM_SYNC_PASSWORD")
            .env_remove("PRISM_SYNC_REPO");
        for k in [
            "PRISM_SYNC_POLL_MS",
            "PRISM_SYNC_SETTLE_MS",
            "PRISM_SYNC_SETTLE_CAP_MS",
        ] {
            c.env_remove(k);
        }
        if let Some(k) = key {
            c.env("PRISM_SYNC_KEY", k);
        }
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.home.join("sync/daemon.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

fn pair(root: &Path, seed_files: &dyn Fn(&Path)) -> (Ep, Ep, PathBuf) {
    let repo = root.join("repo");
    let a = Ep {
        home: root.join("home-a"),
        folder: root.join("laptop"),
    };
    let b = Ep {
        home: root.join("home-b"),
        folder: root.join("workspace"),
    };
    std::fs::create_dir_all(&a.folder).unwrap();
    seed_files(&a.folder);
    a.run(
        &[
            "init",
            a.folder.to_str().unwrap(),
            "--repo",
            repo.to_str().unwrap(),
            "--name",
            SET,
            "-q",
        ],
        None,
    );
    a.run(&["sync", SET, "-q"], None);
    let v: serde_json::Value =
        serde_json::from_str(&a.run(&["add-instance", SET, "ws1", "--json"], None)).unwrap();
    let key_file = v["key_file"].as_str().unwrap().to_string();
    b.run(
        &[
            "join",
            SET,
            b.folder.to_str().unwrap(),
            "--repo",
            repo.to_str().unwrap(),
            "--endpoint",
            "ws1",
            "--key-file",
            &key_file,
            "-q",
        ],
        None,
    );
    b.run(&["sync", SET, "-q"], None);
    a.run(&["start", SET, "-q"], None);
    b.run(&["start", SET, "-q"], None);
    (a, b, repo)
}

fn stop(eps: &[&Ep]) {
    for e in eps {
        e.run(&["stop", SET, "-q"], None);
    }
}

fn wait_content(p: &Path, want: &[u8], timeout: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if std::fs::read(p).is_ok_and(|c| c == want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "{} did not arrive within {timeout:?}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(label: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: n={} p50={:.0} ms p90={:.0} ms p99={:.0} ms max={:.0} ms",
        v.len(),
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.9)),
        ms(percentile(&v, 0.99)),
        ms(*v.last().unwrap())
    );
}

fn du(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let md = e.metadata().unwrap();
        n += if md.is_dir() { du(&e.path()) } else { md.len() };
    }
    n
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap() // utime + stime
}

fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

fn main() {
    let quick = std::env::var_os("PRISM_BENCH_QUICK").is_some();
    let edits = if quick { 10 } else { 100 };
    let burst = if quick { 100 } else { 1000 };
    let big: u64 = if quick { 64 << 20 } else { 1 << 30 };
    let tree_files = if quick { 5_000 } else { 100_000 };
    let idle_secs = if quick { 5 } else { 60 };
    let tmp = tempfile::Builder::new()
        .prefix("prism-bench-")
        .tempdir_in(std::env::var("PRISM_BENCH_DIR").unwrap_or("/tmp".into()))
        .unwrap();
    println!(
        "# sync latency, two daemons, one directory repository ({})",
        if quick { "quick" } else { "full" }
    );

    // 1. Single edits, both directions.
    {
        let (a, b, _) = pair(&tmp.path().join("edits"), &|f| {
            std::fs::write(f.join("seed.txt"), "seed").unwrap()
        });
        wait_content(&b.folder.join("seed.txt"), b"seed", Duration::from_secs(30));
        for (from, to, label) in [
            (&a, &b, "laptop → workspace"),
            (&b, &a, "workspace → laptop"),
        ] {
            let mut lat = Vec::new();
            for i in 0..edits {
                let content = format!("edit {i} from {label}\n").into_bytes();
                let name = format!("e-{}-{i}.txt", label.len());
                std::fs::write(from.folder.join(&name), &content).unwrap();
                lat.push(wait_content(
                    &to.folder.join(&name),
                    &content,
                    Duration::from_secs(30),
                ));
                std::thread::sleep(Duration::from_millis(50));
            }
            report(&format!("edit latency {label}"), lat);
        }
        // 2. A burst of new small files.
        let t0 = Instant::now();
        for i in 0..burst {
            std::fs::create_dir_all(a.folder.join(format!("burst/{}", i % 20))).unwrap();
            std::fs::write(
                a.folder.join(format!("burst/{}/f{i}.txt", i % 20)),
                format!("burst file {i}\n"),
            )
            .unwrap();
        }
        let written = t0.elapsed();
        for i in (0..burst).rev() {
            wait_content(
                &b.folder.join(format!("burst/{}/f{i}.txt", i % 20)),
                format!("burst file {i}\n").as_bytes(),
                Duration::from_secs(120),
            );
        }
        println!(
            "burst of {burst} files: written in {:.2} s, all on the other side {:.2} s after the first write",
            written.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
        stop(&[&a, &b]);
    }

    // 3. A big file edited in the middle.
    {
        let (a, b, repo) = pair(&tmp.path().join("big"), &|_| {});
        let path = a.folder.join("dataset.bin");
        {
            let mut f = std::fs::File::create(&path).unwrap();
            let mut buf = vec![0u8; 8 << 20];
            let mut x = blake3::Hasher::new().update(b"big").finalize_xof();
            for _ in 0..(big / buf.len() as u64) {
                x.fill(&mut buf);
                f.write_all(&buf).unwrap();
            }
        }
        let t0 = Instant::now();
        let size = std::fs::metadata(&path).unwrap().len();
        loop {
            if std::fs::metadata(b.folder.join("dataset.bin")).is_ok_and(|m| m.len() == size) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(600));
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "{} MiB file created: on the other side after {:.2} s",
            big >> 20,
            t0.elapsed().as_secs_f64()
        );
        a.run(&["flush", SET, "-q"], None);
        b.run(&["flush", SET, "-q"], None);
        let before = du(&repo);
        {
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.seek(SeekFrom::Start(big / 2)).unwrap();
            f.write_all(&[0xAB; 64]).unwrap();
        }
        let want_mid = [0xABu8; 64];
        let t0 = Instant::now();
        loop {
            if let Ok(mut f) = std::fs::File::open(b.folder.join("dataset.bin")) {
                let mut got = [0u8; 64];
                f.seek(SeekFrom::Start(big / 2)).unwrap();
                if std::io::Read::read_exact(&mut f, &mut got).is_ok() && got == want_mid {
                    break;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(600));
            std::thread::sleep(Duration::from_millis(5));
        }
        let lat = t0.elapsed();
        a.run(&["flush", SET, "-q"], None);
        let added = du(&repo) - before;
        println!(
            "64 bytes edited in the middle of the {} MiB file: on the other side after {:.2} s; repository grew by {} KiB",
            big >> 20,
            lat.as_secs_f64(),
            added >> 10
        );
        stop(&[&a, &b]);
    }

    // 4. Idle daemon on a big tree.
    {
        let root = tmp.path().join("idle");
        let a = Ep {
            home: root.join("home"),
            folder: root.join("tree"),
        };
        // 100 files per directory, 10 directories per parent: 1,000 directories for 100k files.
        for i in 0..tree_files {
            let d = a
                .folder
                .join(format!("p{:02}/d{:03}", (i / 1000) % 100, (i / 100) % 1000));
            if i % 100 == 0 {
                std::fs::create_dir_all(&d).unwrap();
            }
            std::fs::write(d.join(format!("f{i}.txt")), format!("{i}\n")).unwrap();
        }
        let repo = root.join("repo");
        a.run(
            &[
                "init",
                a.folder.to_str().unwrap(),
                "--repo",
                repo.to_str().unwrap(),
                "--name",
                SET,
                "-q",
            ],
            None,
        );
        let t0 = Instant::now();
        a.run(&["sync", SET, "-q"], None);
        println!(
            "{tree_files} files: first sync {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let t0 = Instant::now();
        a.run(&["start", SET, "-q"], None);
        a.run(&["flush", SET, "-q"], None);
        println!(
            "daemon start + first full rescan + flush: {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        // Measure the steady state: after the start-up rescans have finished.
        std::thread::sleep(Duration::from_secs(15));
        let pid = a.pid();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let c0 = cpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(idle_secs));
        let cpu = (cpu_ticks(pid) - c0) as f64 / hz;
        println!(
            "idle daemon watching {tree_files} files for {idle_secs} s: CPU {:.2} % of one core, RSS {} MiB",
            cpu * 100.0 / idle_secs as f64,
            rss_kib(pid) >> 10
        );
        stop(&[&a]);
    }
}
