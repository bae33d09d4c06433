//! Progress that tells the truth, against the real binary: on a terminal (a pseudo-terminal
//! made by `script`, util-linux) a backup shows its total, a percentage, a rate and an ETA and
//! ends with a summary line; a restore and a sync show their phase and total and a summary; on a
//! pipe nothing of it is printed, only the results. The backup's reads are slowed with
//! `PRISM_SYNC_READ_LIMIT_KIB` so that the progress line is redrawn several times.

mod cli_env;

use std::process::Command;

use cli_env::sets::{SET, World};
use cli_env::*;

/// Runs `args` under a pseudo-terminal with `env`'s environment (plus `vars`); returns the exit
/// code and everything the terminal showed.
fn on_terminal(cmd: Command, args: &[&str]) -> (i32, String) {
    let cmdline = std::iter::once(cmd.get_program().to_str().unwrap())
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = Command::new("script");
    c.arg("-qec").arg(cmdline).arg("/dev/null");
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(std::process::Stdio::null());
    let o = c.output().expect("script (util-linux) runs");
    (o.status.code().unwrap_or(-1), o.out() + &o.err())
}

/// Three files, 6 MB in all.
fn data(env: &Env) -> std::path::PathBuf {
    let dir = env.path("data");
    write(&dir, "a.bin", &random_bytes(3_000_000, 1));
    write(&dir, "sub/b.bin", &random_bytes(2_000_000, 2));
    write(&dir, "sub/c.bin", &random_bytes(1_000_000, 3));
    dir
}

const TOTAL: &str = "5.72 MiB";

fn has_percentage(s: &str) -> bool {
    s.split(|c: char| c.is_whitespace())
        .any(|w| w.len() > 1 && w.ends_with('%') && w[..w.len() - 1].parse::<u32>().is_ok())
}

/// Regression: on a terminal a 1 GiB backup showed a spinner with no total, percentage, rate or
/// ETA.
#[test]
fn a_backup_on_a_terminal_shows_total_percentage_rate_eta_and_a_summary() {
    let env = Env::with_repo();
    let dir = data(&env);
    let mut cmd = env.command::<&str>(&[]);
    // 6 MB at 1.5 MiB/s: about four seconds, a redraw every 200 ms.
    cmd.env("PRISM_SYNC_READ_LIMIT_KIB", "1536");
    let (code, shown) = on_terminal(cmd, &["backup", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{shown}");
    let lines: Vec<&str> = shown
        .split(['\r', '\n'])
        .filter(|l| l.contains("🔄 backup"))
        .collect();
    assert!(lines.len() >= 5, "few progress lines:\n{shown}");
    assert!(
        lines.iter().any(|l| l.contains(&format!("/ {TOTAL}"))),
        "no total:\n{shown}"
    );
    assert!(
        lines.iter().any(|l| has_percentage(l)),
        "no percentage:\n{shown}"
    );
    assert!(
        lines.iter().any(|l| l.contains("/s") && l.contains("ETA ")),
        "no rate and ETA:\n{shown}"
    );
    assert!(
        shown.contains(&format!("✅ backup: 3 files, {TOTAL} in ")),
        "no summary line:\n{shown}"
    );
    assert!(
        shown.contains("Snapshot") && shown.contains("saved"),
        "{shown}"
    );
}

/// On a pipe: the results only — no progress line, no percentage, rate, ETA or summary.
#[test]
fn a_backup_on_a_pipe_prints_results_only() {
    let env = Env::with_repo();
    let dir = data(&env);
    let o = env.run_env(
        &["backup", dir.to_str().unwrap()],
        &[("PRISM_SYNC_READ_LIMIT_KIB", Some("4096"))],
    );
    assert_exit(&o, 0, "backup");
    let all = o.out() + &o.err();
    for word in ["🔄", "ETA", "/s", "counting", "✅ backup:"] {
        assert!(!all.contains(word), "{word:?} on a pipe:\n{all}");
    }
    assert!(!has_percentage(&all), "a percentage on a pipe:\n{all}");
    assert!(o.out().contains("Snapshot"), "{all}");
    // --json on a terminal: no progress either (only the document).
    let mut cmd = env.command::<&str>(&[]);
    cmd.env("PRISM_SYNC_READ_LIMIT_KIB", "4096");
    let (code, shown) = on_terminal(cmd, &["--json", "backup", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{shown}");
    assert!(!shown.contains("🔄") && !shown.contains("ETA"), "{shown}");
}

#[test]
fn a_bad_read_limit_is_refused_with_the_fix() {
    let env = Env::with_repo();
    let dir = data(&env);
    let o = env.run_env(
        &["backup", dir.to_str().unwrap()],
        &[("PRISM_SYNC_READ_LIMIT_KIB", Some("fast"))],
    );
    assert_exit(&o, 1, "backup with a bad limit");
    assert!(o.err().contains("PRISM_SYNC_READ_LIMIT_KIB"), "{}", o.err());
}

/// A restore knows its total from the snapshot: the terminal shows it and a summary.
#[test]
fn a_restore_on_a_terminal_shows_its_total_and_a_summary() {
    let env = Env::with_repo();
    let dir = data(&env);
    let id = env.backup_id(&dir);
    let target = env.path("restored");
    let (code, shown) = on_terminal(
        env.command::<&str>(&[]),
        &["restore", &id, "--target", target.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("🔄 restore") && shown.contains(&format!("/ {TOTAL}")),
        "no restore progress with a total:\n{shown}"
    );
    assert!(
        shown.contains(&format!("✅ restore: 3 files, {TOTAL} in ")),
        "no summary:\n{shown}"
    );
}

/// `check --read-data` counts the packs it reads against those it chose, with their bytes.
#[test]
fn check_read_data_on_a_terminal_shows_packs_and_bytes_against_the_total() {
    let env = Env::with_repo();
    let dir = data(&env);
    env.backup_id(&dir);
    let mut cmd = env.command::<&str>(&[]);
    cmd.env("PRISM_SYNC_READ_LIMIT_KIB", "2048");
    let (code, shown) = on_terminal(cmd, &["check", "--read-data"]);
    assert_eq!(code, 0, "{shown}");
    let line = shown
        .split(['\r', '\n'])
        .find(|l| l.contains("🔄 check: read data"))
        .unwrap_or_else(|| panic!("no read-data progress:\n{shown}"));
    assert!(line.contains(" packs ") && has_percentage(line), "{line}");
    assert!(
        shown.contains("✅ check --read-data: "),
        "no summary:\n{shown}"
    );
    // On a pipe: none of it.
    let o = env.run(&["check", "--read-data"]);
    assert_exit(&o, 0, "check");
    let all = o.out() + &o.err();
    assert!(
        !all.contains("🔄") && !all.contains("✅ check --read-data"),
        "{all}"
    );
}

/// Regression: `sync` showed "scanning: 0 files, 393 MiB read" while it was uploading. Its
/// progress names the phase (scan + upload, merge, download + apply, publish).
#[test]
fn a_sync_on_a_terminal_names_its_phase_and_ends_with_a_summary() {
    let w = World::new(1);
    let laptop = &w.eps[0];
    laptop.write("new/one.txt", "one\n");
    std::fs::write(laptop.path("new/big.bin"), random_bytes(2_000_000, 9)).unwrap();
    let (code, shown) = on_terminal(laptop.cmd(&[]), &["sync", SET]);
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("🔄 sync: scan + upload"),
        "no phase:\n{shown}"
    );
    assert!(!shown.contains("scanning"), "{shown}");
    assert!(shown.contains("✅ sync: "), "no summary:\n{shown}");
    // On a pipe: none of it.
    laptop.write("new/two.txt", "two\n");
    let o = laptop.run(&["sync", SET]);
    assert!(o.status.success());
    let all = o.out() + &o.err();
    assert!(
        !all.contains("🔄 sync:") && !all.contains("✅ sync:"),
        "{all}"
    );
}

/// Regression (issue 15, point 3): `prune` printed nothing until it ended. On a terminal it
/// names each phase with what it counts against the phase's total (snapshots walked, packs
/// deleted with their bytes) and ends with a summary line; on a pipe only the results.
#[test]
fn a_prune_on_a_terminal_names_its_phases_and_ends_with_a_summary() {
    let env = Env::with_repo();
    let dir = data(&env);
    env.backup_id(&dir);
    std::fs::remove_file(dir.join("a.bin")).unwrap();
    write(&dir, "d.bin", &random_bytes(1_500_000, 4));
    env.backup_id(&dir);
    env.ok(&["forget", "--keep-last", "1"]);
    let mut cmd = env.command::<&str>(&[]);
    // The packs it repacks (about 6 MB) read at 2 MiB/s: a few seconds, redrawn every 200 ms.
    cmd.env("PRISM_SYNC_READ_LIMIT_KIB", "2048");
    let (code, shown) = on_terminal(cmd, &["prune"]);
    assert_eq!(code, 0, "{shown}");
    let lines: Vec<&str> = shown
        .split(['\r', '\n'])
        .filter(|l| l.contains("🔄 prune: "))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("🔄 prune: read index")),
        "no first phase:\n{shown}"
    );
    let repack = lines
        .iter()
        .find(|l| {
            l.contains("🔄 prune: repack ")
                && l.contains(" packs repacked ")
                && l.contains(" / ") // bytes against the phase's total
                && has_percentage(l)
                && l.contains("/s")
                && l.contains("ETA ")
        })
        .unwrap_or_else(|| panic!("no repack line with packs, percentage, rate, ETA:\n{shown}"));
    assert!(
        repack.contains(" MiB  "),
        "the total is the packs' size: {repack}"
    );
    let summary = shown
        .split(['\r', '\n'])
        .find(|l| l.contains("✅ prune: "))
        .unwrap_or_else(|| panic!("no summary:\n{shown}"));
    // The last phase deleted the pack(s) that held a.bin (after copying what is still used).
    let deleted: u64 = summary
        .split("✅ prune: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    let noun = if deleted == 1 {
        " pack deleted, "
    } else {
        " packs deleted, "
    };
    assert!(
        deleted >= 1 && summary.contains(noun) && summary.contains(" MiB in "),
        "{summary}"
    );
    assert!(shown.contains("Pruned"), "the results follow:\n{shown}");

    // On a pipe: the results only.
    std::fs::remove_file(dir.join("d.bin")).unwrap();
    env.backup_id(&dir);
    env.ok(&["forget", "--keep-last", "1"]);
    let o = env.run(&["prune"]);
    assert_exit(&o, 0, "prune");
    let all = o.out() + &o.err();
    for word in ["🔄", "ETA", "✅ prune:"] {
        assert!(!all.contains(word), "{word:?} on a pipe:\n{all}");
    }
    assert!(o.out().contains("Pruned"), "{all}");
}
