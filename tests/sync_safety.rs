//! Sync must never lie and never lose: reproductions of what went wrong with two or three real
//! endpoints (separate `PRISM_HOME`s) on one repository, each run against the real binary.
//! Every test is named after the failure it guards against.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::sets::{SET, World};

fn mode_of(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `chmod 4755 tool.sh` on the laptop arrived as `-rwsr-xr-x` on the workspace.
#[test]
fn setuid_setgid_and_sticky_bits_are_never_published_nor_applied() {
    let w = World::new(2);
    let (a, b) = (&w.eps[0], &w.eps[1]);
    let tool = a.write("tool.sh", "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let shared = a.write("shared/readme.txt", "x\n");
    std::fs::set_permissions(
        shared.parent().unwrap(),
        std::fs::Permissions::from_mode(0o3775),
    )
    .unwrap();
    a.sync();
    b.sync();
    assert_eq!(mode_of(&b.path("tool.sh")), 0o755, "setuid must not travel");
    assert_eq!(
        mode_of(&b.path("shared")) & 0o7000,
        0,
        "setgid and sticky bits of a directory must not travel"
    );
    // The laptop's own file keeps its bits (sync does not touch what it does not publish), and
    // a later step does not see a change there.
    assert_eq!(mode_of(&tool), 0o4755);
    let r = a.sync();
    assert!(r["uploads"].as_array().unwrap().is_empty(), "{r}");
}

/// A plain `sync` published a file that was being appended to (50,534,784 of 50,558,336
/// bytes); the next step corrected it.
#[test]
fn a_file_appended_to_while_sync_reads_it_is_left_for_the_next_step() {
    let w = World::new(1);
    let a = &w.eps[0];
    let big = a.path("growing.bin");
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&big).unwrap();
        for i in 0..(48 << 20) / chunk.len() {
            let mut c = chunk.clone();
            c[0] = i as u8;
            c[1] = (i >> 8) as u8;
            f.write_all(&c).unwrap();
        }
    }
    // A writer keeps appending while the step reads the file.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, big, chunk) = (stop.clone(), big.clone(), chunk.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&chunk[..4096]).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let report = a.sync();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let ls = a.json(&["ls", SET]);
    let listed: Vec<&str> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        !listed.contains(&"growing.bin"),
        "a file written to during the read must not be published: {listed:?}\n{report}"
    );
    assert!(
        report["deferred"]
            .as_array()
            .is_some_and(|d| d.iter().any(|p| p == "growing.bin")),
        "the step says it left the file for later: {report}"
    );
    // Once the writer is done, the next step publishes the whole file.
    a.sync();
    let ls = a.json(&["ls", SET]);
    let size = std::fs::metadata(&big).unwrap().len();
    assert!(
        ls["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "growing.bin" && e["size"] == size),
        "{ls}"
    );
}
