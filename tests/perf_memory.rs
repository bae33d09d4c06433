//! Peak memory of the real binary, in a test binary of its own: the kernel charges a child
//! started with vfork the parent's peak RSS too, so nothing else may run in this process.

mod lib_fixtures;

use std::process::Command;

use lib_fixtures::*;

/// Peak RSS of the real binary backing up one big file stays flat: memory must not grow with
/// file size (chunks stream through bounded queues; one pack is open at a time).
#[test]
fn backup_memory_does_not_grow_with_file_size() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(src.join("big.dat")).unwrap();
        for i in 0..96u64 {
            // 2 MiB blocks, alternately random and text: both compressor paths run.
            let block = if i % 2 == 0 {
                bytes(i, 2 << 20)
            } else {
                text(i, 2 << 20)
            };
            f.write_all(&block).unwrap();
        }
    }
    let bin = env!("CARGO_BIN_EXE_prism-sync");
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .env("PRISM_HOME", t.path().join("home"))
            .env("PRISM_SYNC_PASSWORD", "guard")
            .env("PRISM_SYNC_INSECURE_TEST_KDF", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let repo = t.path().join("repo");
    run(&["repo", "init", "--repo", repo.to_str().unwrap()]);
    run(&[
        "backup",
        "--repo",
        repo.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    // Max RSS over every child this test process waited for (the two above; the only test in
    // this binary).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer for getrusage.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    let peak_mib = ru.ru_maxrss as f64 / 1024.0;
    eprintln!("peak RSS of a 192 MiB backup: {peak_mib:.1} MiB");
    assert!(
        peak_mib < 100.0,
        "backing up a 192 MiB file peaked at {peak_mib:.1} MiB"
    );
}
