//! History at any age, counted in requests: `history`, `snapshots NAME`, `restore NAME --at`
//! and `ls NAME --at` through a real `prism-sync serve --log-requests` send as many requests
//! after 40 steps as after 10 (what this machine has seen is in its metadata cache: snapshots,
//! index files and tree packs are write-once, so a cached copy is never stale). Before the
//! cache, each of them read every snapshot of the set (one request each) every time.

mod servers;

use servers::*;

/// Requests one command sends (the second run: the first one may fill the cache).
fn requests_of(server: &Serve, m: &Machine, args: &[&str]) -> Vec<(String, String)> {
    let r = m.run(args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    let before = server.requests().len();
    let r = m.run(args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    server.requests()[before..].to_vec()
}

#[test]
fn history_and_restore_at_send_no_more_requests_after_many_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start_logged(tmp.path(), &tmp.path().join("served"), false);
    let m = Machine::new(tmp.path().join("h")).with_token();
    let folder = tmp.path().join("folder");
    for i in 0..30 {
        write(
            &folder.join(format!("d{}/f{i}.txt", i % 3)),
            format!("file {i}\n").as_bytes(),
        );
    }
    write(&folder.join("notes.txt"), b"v0\n");
    m.ok(&[
        "init",
        folder.to_str().unwrap(),
        "--repo",
        &server.url,
        "--name",
        "s",
    ]);
    let mut step = 0;
    let mut steps_to = |n: usize| {
        while step < n {
            step += 1;
            write(&folder.join("notes.txt"), format!("v{step}\n").as_bytes());
            m.ok(&["sync", "s"]);
        }
    };
    steps_to(10);
    // A moment to restore: after step 10 (and before step 11).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let at = jiff::Timestamp::now().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let target = tmp.path().join("restored");
    let target = target.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["history", "s", "notes.txt"],
        vec!["snapshots", "s"],
        vec!["ls", "s", "--at", &at],
        vec![
            "restore",
            "s",
            "--at",
            &at,
            "--path",
            "notes.txt",
            "--target",
            target,
            "--overwrite",
        ],
    ];
    let count = |args: &[&str]| {
        let _ = std::fs::remove_dir_all(target);
        requests_of(&server, &m, args)
    };
    let at_10: Vec<Vec<(String, String)>> = commands.iter().map(|c| count(c)).collect();
    steps_to(40);
    let at_40: Vec<Vec<(String, String)>> = commands.iter().map(|c| count(c)).collect();
    for ((c, few), many) in commands.iter().zip(&at_10).zip(&at_40) {
        assert!(
            many.len() <= few.len(),
            "`{}` sent {} requests after 10 steps, {} after 40:\n{many:?}",
            c.join(" "),
            few.len(),
            many.len()
        );
        let snapshot_reads = many
            .iter()
            .filter(|(m, p)| m == "GET" && p.starts_with("/snapshots/") && p.len() > 11)
            .count();
        assert!(
            snapshot_reads <= 2,
            "`{}` read {snapshot_reads} snapshots after 40 steps: {many:?}",
            c.join(" ")
        );
    }
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("restored/notes.txt")).unwrap(),
        "v10\n",
        "restore --at gives the version of that moment"
    );
}
