//! The Prism plan's own config, against the real binary: a set's config takes the plan's
//! `conflict_resolution:` block as written and maps it onto the set's policy, automatic rules
//! and retention; keys that are accepted but do nothing are named in a warning on `sync` and
//! `status`; unknown keys are still refused with a one-line error.

mod cli_env;

use cli_env::sets::{Ep, SET, World};

/// The plan's block (its directory-sync plan: policies `user_prompt` (default), `keep_local`,
/// `keep_remote`, `keep_both`, per-pattern automatic rules with an `action:`, losing versions
/// backed up in `.cws-sync-backups/` for 30 days), pasted into a set's config as a user would.
const PLAN_BLOCK: &str = r#"
conflict_resolution:
  policy: keep_local
  automatic_rules:
    - pattern: "*.ipynb"
      action: keep_both
    - pattern: "*.csv"
      action: keep-remote
  backup_strategy:
    location: .cws-sync-backups/
    retention: 14d
"#;

fn config_path(ep: &Ep) -> std::path::PathBuf {
    ep.home.join("sync").join(format!("{SET}.yml"))
}

fn append_config(ep: &Ep, text: &str) {
    let path = config_path(ep);
    let mut cfg = std::fs::read_to_string(&path).unwrap();
    cfg.push_str(text);
    std::fs::write(&path, cfg).unwrap();
}

fn stderr_of(ep: &Ep, args: &[&str]) -> (bool, String) {
    let o = ep.run(args);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Regression: pasting the plan's `conflict_resolution:` block failed with "unknown field
/// `conflict_resolution`", and `action:` in an automatic rule with "expected one of pattern,
/// policy".
#[test]
fn plan_conflict_resolution_block_is_accepted_and_acted_on() {
    let w = World::new(2);
    let (laptop, ws) = (&w.eps[0], &w.eps[1]);
    append_config(laptop, PLAN_BLOCK);

    let st = laptop.status();
    assert_eq!(st["conflict_policy"], "keep_local", "{st}");
    assert_eq!(st["maintenance"]["retention"], "14d", "{st}");

    // The automatic rule `*.ipynb` → keep_both acts: the conflict is not parked, both versions
    // stay. The set's policy (keep_local) acts on the other paths.
    laptop.write("nb.ipynb", "v0");
    laptop.write("notes.txt", "v0");
    laptop.sync();
    ws.sync();
    ws.write("nb.ipynb", "workspace edit");
    ws.write("notes.txt", "workspace edit");
    ws.sync();
    laptop.write("nb.ipynb", "laptop edit, longer");
    laptop.write("notes.txt", "laptop edit, longer");
    laptop.sync();

    let conflicts = laptop.json(&["conflicts", SET]);
    let parked = conflicts
        .as_array()
        .or_else(|| conflicts["conflicts"].as_array())
        .map(|a| a.len())
        .unwrap_or(0);
    assert_eq!(parked, 0, "nothing parked: {conflicts}");
    assert_eq!(
        laptop.read("notes.txt").as_deref(),
        Some("laptop edit, longer")
    );
    // keep_both: the incoming version takes the name, this side's is kept beside it.
    assert_eq!(laptop.read("nb.ipynb").as_deref(), Some("workspace edit"));
    let copies: Vec<String> = std::fs::read_dir(&laptop.folder)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nb.conflict-") && n.ends_with(".ipynb"))
        .collect();
    assert_eq!(copies.len(), 1, "one kept copy of nb.ipynb: {copies:?}");
    assert_eq!(
        std::fs::read_to_string(laptop.folder.join(&copies[0])).unwrap(),
        "laptop edit, longer"
    );
    assert!(
        !std::fs::read_dir(&laptop.folder)
            .unwrap()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("notes.conflict-")),
        "keep_local keeps no copy of notes.txt"
    );
}

/// Keys accepted but not acted on are named, one line each, on `sync` and `status`.
#[test]
fn accepted_but_ignored_keys_are_named_on_sync_and_status() {
    let w = World::new(1);
    let laptop = &w.eps[0];
    append_config(laptop, PLAN_BLOCK);
    append_config(laptop, "rules: research\n");
    std::fs::write(
        laptop.home.join("sync-rules.yml"),
        "default_rules:\n  size_limits:\n    max_file_size: 100MB\n    warn_file_size: 10MB\n\
         research_rules:\n  code:\n    include_patterns: [\"*.py\"]\n    sync_mode: bidirectional\n    real_time: true\n",
    )
    .unwrap();
    for args in [&["sync", SET][..], &["status", SET][..]] {
        let (ok, err) = stderr_of(laptop, args);
        assert!(ok, "{args:?}: {err}");
        let key = "conflict_resolution.backup_strategy.location";
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(key)).collect();
        assert_eq!(lines.len(), 1, "{args:?} names {key} once:\n{err}");
        assert!(lines[0].contains("ignored"), "{}", lines[0]);
        // `real_time` is acted on by the daemon (tests/cli_status.rs): no warning.
        assert!(!err.contains("real_time"), "{err}");
    }
    // With nothing ignored there is no warning.
    let w2 = World::new(1);
    let (ok, err) = stderr_of(&w2.eps[0], &["sync", SET]);
    assert!(ok && !err.contains("ignored"), "{err}");
}

#[test]
fn unknown_key_in_the_plan_block_is_refused_with_one_line() {
    let w = World::new(1);
    let laptop = &w.eps[0];
    append_config(laptop, "conflict_resolution:\n  polcy: keep_both\n");
    let (ok, err) = stderr_of(laptop, &["sync", SET]);
    assert!(!ok, "refused: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("unknown field `polcy`"), "{err}");
    assert!(
        err.contains("expected one of policy"),
        "names the fix: {err}"
    );
    assert!(err.contains("p.yml"), "names the file: {err}");
}

#[test]
fn plan_block_that_contradicts_the_set_is_refused() {
    let w = World::new(1);
    let laptop = &w.eps[0];
    let path = config_path(laptop);
    let cfg = std::fs::read_to_string(&path).unwrap().replace(
        "conflict_policy: user_prompt",
        "conflict_policy: keep_remote",
    );
    std::fs::write(&path, cfg).unwrap();
    append_config(laptop, "conflict_resolution:\n  policy: keep-both\n");
    let (ok, err) = stderr_of(laptop, &["status", SET]);
    assert!(!ok, "refused: {err}");
    assert!(
        err.contains(
            "conflict_policy: keep_remote and conflict_resolution.policy: keep_both disagree"
        ),
        "{err}"
    );
}

/// Regression: `*.log`, in the plan's default excludes, was synced. It is a built-in exclude
/// now; `!*.log` in the set's `exclude_patterns` brings it back.
#[test]
fn log_files_are_excluded_by_default_and_can_be_brought_back() {
    let w = World::new(2);
    let (laptop, ws) = (&w.eps[0], &w.eps[1]);
    laptop.write("run.log", "noise");
    laptop.write("deep/train.log", "noise");
    laptop.write("keep.txt", "kept");
    laptop.sync();
    ws.sync();
    assert_eq!(ws.read("keep.txt").as_deref(), Some("kept"));
    assert_eq!(ws.read("run.log"), None);
    assert_eq!(ws.read("deep/train.log"), None);

    let path = config_path(laptop);
    let cfg = std::fs::read_to_string(&path)
        .unwrap()
        .replace("exclude_patterns: []", "exclude_patterns: [\"!*.log\"]");
    assert!(cfg.contains("!*.log"), "{cfg}");
    std::fs::write(&path, cfg).unwrap();
    laptop.sync();
    // The workspace still excludes them (its own config), so the shared state is what to check.
    let ls = laptop.ok(&["ls", SET, "deep"]);
    assert!(ls.contains("train.log"), "{ls}");
}

/// Regression: `warn_file_size` was parsed and ignored. A file over it is named in the step's
/// report (a warning on stderr, `large_files` in `--json`) and still synced.
#[test]
fn files_over_warn_file_size_are_named_and_still_synced() {
    let w = World::new(2);
    let (laptop, ws) = (&w.eps[0], &w.eps[1]);
    std::fs::write(
        laptop.home.join("sync-rules.yml"),
        "default_rules:\n  size_limits:\n    warn_file_size: 1KB\n",
    )
    .unwrap();
    laptop.write("big.bin", &"x".repeat(4096));
    laptop.write("small.txt", "small");
    let o = laptop.run(&["sync", SET]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("warn_file_size"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("big.bin"), "{err}");
    laptop.write("big2.bin", &"y".repeat(4096));
    let r = laptop.sync();
    let large = r["large_files"].as_array().unwrap();
    assert!(
        large
            .iter()
            .any(|f| f["path"] == "big2.bin" && f["size"] == 4096),
        "{r}"
    );
    assert!(!large.iter().any(|f| f["path"] == "small.txt"), "{r}");
    ws.sync();
    assert_eq!(ws.read("big.bin").map(|s| s.len()), Some(4096));
    assert_eq!(ws.read("big2.bin").map(|s| s.len()), Some(4096));
}

/// A config with the plan's block that the binary rewrites (`add-instance` saves it) keeps its
/// meaning: the moved values are written in the set's own spelling, what is not acted on stays.
#[test]
fn plan_block_survives_a_rewrite_of_the_config() {
    let w = World::new(1);
    let laptop = &w.eps[0];
    append_config(laptop, PLAN_BLOCK);
    laptop.json(&["add-instance", SET, "ws9"]);
    let text = std::fs::read_to_string(config_path(laptop)).unwrap();
    assert!(text.contains("conflict_policy: keep_local"), "{text}");
    assert!(text.contains("retention: 14d"), "{text}");
    assert!(text.contains(".cws-sync-backups/"), "{text}");
    let st = laptop.status();
    assert_eq!(st["conflict_policy"], "keep_local", "{st}");
    assert_eq!(st["maintenance"]["retention"], "14d", "{st}");
}
