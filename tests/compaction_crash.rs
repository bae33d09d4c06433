//! Compaction interrupted by `kill -9` at random moments: every step writes small packs and an
//! index file; `maintain` (what `sync` starts in the background and the daemon runs when idle)
//! repacks them. Killed anywhere (in retention, while repacking, marking or deleting), the
//! repository passes `check --read-data`, every version restores bit for bit, and a later run
//! finishes the compaction: few packs, few index files.

mod cli_env;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cli_env::sets::{Ep, SET, World};

fn files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let md = e.metadata().unwrap();
        if md.is_dir() {
            n += files(&e.path());
        } else if !e.file_name().to_string_lossy().starts_with('.') {
            n += 1;
        }
    }
    n
}

fn set_snapshots(ep: &Ep, repo: &str) -> Vec<String> {
    let v = ep.json(&["snapshots", "--repo", repo]);
    v.as_array()
        .unwrap_or_else(|| panic!("snapshots --json: {v}"))
        .iter()
        .filter(|s| s["sync_set"] == SET && s["tags"].as_array().unwrap().is_empty())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The set's newest snapshot.
fn newest(ep: &Ep, repo: &str) -> String {
    let v = ep.json(&["snapshots", "--repo", repo]);
    let mut list: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["sync_set"] == SET)
        .map(|s| {
            let t: jiff::Timestamp = s["time"].as_str().unwrap().parse().unwrap();
            (
                format!("{:020}", t.as_nanosecond()),
                s["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    list.sort();
    list.pop().unwrap().1
}

/// A tiny xorshift, so the kill moments are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn compaction_killed_at_random_moments_leaves_a_whole_repository_and_every_version() {
    let w = World::new(1);
    let a = &w.eps[0];
    let repo = w.repo.to_str().unwrap().to_string();
    // Many steps, one edit each: each version of the folder is remembered by its snapshot.
    let mut versions: BTreeMap<String, String> = BTreeMap::new();
    let first = set_snapshots(a, &repo);
    for i in 0..40 {
        let content = format!("version {i}\n{}\n", "x".repeat(i * 37));
        a.write("notes.txt", &content);
        a.write(&format!("d/{}.txt", i % 7), &format!("side {i}\n"));
        a.sync();
        let id = newest(a, &repo);
        assert!(
            !first.contains(&id) && !versions.contains_key(&id),
            "step {i} made a snapshot"
        );
        versions.insert(id, content);
    }
    let packs_before = files(&w.repo.join("data"));
    let index_before = files(&w.repo.join("index"));
    assert!(
        packs_before >= 40,
        "{packs_before} packs: steps write small packs"
    );

    let mut rng = Rng(0x5eed_c0de);
    let mut killed = 0;
    // Kill moments are drawn within the length of the last run that was left to finish, so
    // most runs die mid-way however fast the machine is; rounds go on until enough did.
    let mut span = Duration::from_millis(250);
    let mut round = 0;
    while round < 16 || (killed < 6 && round < 40) {
        // New small packs to compact (these steps start no maintenance: with the default
        // intervals it is first due an hour after the set's first step).
        for j in 0..8 {
            a.write("r.txt", &format!("round {round} step {j}\n"));
            a.sync();
        }
        let mut child = a
            .cmd(&["maintain", SET])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let wait = Duration::from_micros(5_000 + rng.next() % span.as_micros().max(1) as u64);
        loop {
            if child.try_wait().unwrap().is_some() {
                span = started.elapsed();
                break;
            }
            if started.elapsed() >= wait {
                // SAFETY: killing the child this test spawned.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                killed += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.wait();
        // Whatever moment it died at: the repository is whole and nothing is lost.
        let check = a.run(&["check", "--repo", &repo, "--read-data"]);
        assert!(
            check.status.success(),
            "round {round} (killed after {wait:?}): check --read-data failed:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        round += 1;
    }
    eprintln!("{killed} of {round} maintenance runs were killed mid-way");
    assert!(
        killed >= 6,
        "only {killed} of {round} runs were killed mid-way"
    );

    // Runs left alone finish the compaction (a second one deletes what the first had to
    // leave for a session that was still live).
    let mut said = Vec::new();
    let (mut packs_after, mut index_after) = (usize::MAX, usize::MAX);
    for _ in 0..3 {
        let out = a.cmd(&["--json", "maintain", SET]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        said.push(v);
        a.ok(&["check", "--repo", &repo, "--read-data"]);
        packs_after = files(&w.repo.join("data"));
        index_after = files(&w.repo.join("index"));
        if packs_after * 4 < packs_before {
            break;
        }
    }
    assert!(
        packs_after * 4 < packs_before,
        "compaction left {packs_after} packs of {packs_before}; maintenance said: {said:?}"
    );
    assert!(
        index_after <= 3 && index_after < index_before,
        "{index_after} index files (were {index_before})"
    );

    // Every version restores bit for bit.
    for (id, content) in &versions {
        let target = w.tmp.path().join(format!("restore-{}", &id[..8]));
        a.ok(&[
            "restore",
            "--repo",
            &repo,
            id,
            "--target",
            target.to_str().unwrap(),
        ]);
        let got = std::fs::read_to_string(target.join("notes.txt")).unwrap();
        assert_eq!(&got, content, "snapshot {id} restores bit for bit");
        std::fs::remove_dir_all(&target).unwrap();
    }
}
