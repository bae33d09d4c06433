//! Credentials: every workspace has its own key (revocable alone) delivered as a file, never in
//! a command line or cloud-init user-data; a `rest:` set keeps its token and certificate pin; new
//! password key files are calibrated; a planted expensive key file cannot slow opening down.

mod cli_env;
mod servers;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use cli_env::{Env, OutputExt, write};
use prism_sync::format::keyfile::{Kdf, KeyFile};
use prism_sync::id::KeyId;

fn key_ids(env: &Env) -> Vec<(String, String)> {
    env.json(&["key", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_string(),
                k["host"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn each_workspace_gets_its_own_key_and_removing_it_revokes_that_workspace_alone() {
    let laptop = Env::without_password();
    let folder = laptop.path("laptop");
    write(&folder, "notes.txt", b"hello\n");
    laptop.ok(&["init", folder.to_str().unwrap(), "--name", "s"]);
    laptop.ok(&["sync", "s"]);
    let laptop_secret = fs::read_dir(laptop.home.join("sync/keys"))
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "key"))
        .map(|e| fs::read_to_string(e.path()).unwrap().trim().to_string())
        .unwrap();

    let mut workspaces = Vec::new();
    for ws in ["ws1", "ws2"] {
        let v = laptop.json(&["add-instance", "s", ws, "--user", "ada"]);
        let key_file = v["key_file"].as_str().unwrap().to_string();
        let md = fs::metadata(&key_file).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600, "{key_file}");
        let secret = fs::read_to_string(&key_file).unwrap().trim().to_string();
        assert_eq!(secret.len(), 64);
        assert_ne!(secret, laptop_secret, "not the laptop's key");
        let all = v.to_string();
        for s in [&secret, &laptop_secret] {
            assert!(!all.contains(s.as_str()), "a key secret was printed: {all}");
        }
        assert!(!all.contains("PRISM_SYNC_KEY"), "{all}");
        let unit = v["systemd_unit"].as_str().unwrap();
        for line in [
            "User=ada",
            "Environment=PRISM_HOME=/home/ada/.prism",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line}:\n{unit}");
        }
        let cloud = v["cloud_init"].as_str().unwrap();
        assert!(cloud.contains("ssm get-parameter"), "{cloud}");
        workspaces.push((ws, v["key_id"].as_str().unwrap().to_string(), key_file));
    }
    assert_ne!(workspaces[0].1, workspaces[1].1, "one key per workspace");
    // Running add-instance again hands out the same key.
    let again = laptop.json(&["add-instance", "s", "ws1"]);
    assert_eq!(again["key_id"].as_str().unwrap(), workspaces[0].1);
    let keys = key_ids(&laptop);
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(
        keys.iter()
            .any(|(id, host)| *id == workspaces[0].1 && host == "ws1")
    );

    let mut ws_envs = Vec::new();
    for (ws, _, key_file) in &workspaces {
        let e = Env::without_password();
        let f = e.path("folder");
        e.ok(&[
            "join",
            "s",
            f.to_str().unwrap(),
            "--repo",
            laptop.repo_str(),
            "--endpoint",
            ws,
            "--key-file",
            key_file,
        ]);
        e.ok(&["sync", "s"]);
        assert_eq!(fs::read(f.join("notes.txt")).unwrap(), b"hello\n");
        ws_envs.push(e);
    }
    // Revoke ws1: it can no longer open the repository; ws2 and the laptop go on.
    laptop.ok(&["key", "remove", &workspaces[0].1[..12]]);
    let o = ws_envs[0].run(&["sync", "s"]);
    assert_eq!(o.code(), 12, "{}", o.describe());
    ws_envs[1].ok(&["sync", "s"]);
    write(&folder, "more.txt", b"more\n");
    laptop.ok(&["sync", "s"]);
    ws_envs[1].ok(&["sync", "s"]);
    assert_eq!(
        fs::read(ws_envs[1].path("folder/more.txt")).unwrap(),
        b"more\n"
    );
}

#[test]
fn a_rest_set_keeps_its_token_and_pin_and_needs_no_environment() {
    use servers::{Machine, Serve};
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start(tmp.path(), &tmp.path().join("served"), true, false);
    let fp = server.fingerprint.clone().unwrap();
    let bare = server.url.split('#').next().unwrap().to_string();
    let folder = tmp.path().join("folder");
    write(&folder, "a.txt", b"a\n");
    // The pin and the token come from the environment once, at init.
    let m = Machine::new(tmp.path().join("home"))
        .with_token()
        .var("PRISM_SYNC_REST_FINGERPRINT", &fp);
    m.ok(&[
        "init",
        folder.to_str().unwrap(),
        "--name",
        "r",
        "--repo",
        &bare,
    ]);
    let cfg = fs::read_to_string(tmp.path().join("home/sync/r.yml")).unwrap();
    assert!(cfg.contains(&format!("#sha256={fp}")), "{cfg}");
    let token_file = tmp.path().join("home/sync/r.rest-token");
    assert_eq!(fs::metadata(&token_file).unwrap().mode() & 0o777, 0o600);
    // From then on, nothing in the environment.
    let plain = Machine::new(tmp.path().join("home"));
    plain.ok(&["sync", "r"]);
    let st = plain.ok(&["status", "r", "--json"]).stdout;
    assert!(st.contains("\"r\""), "{st}");
}

#[test]
fn new_password_key_files_are_calibrated_to_at_least_64_mib() {
    let env = Env::new();
    // Without the test suites' toy-KDF switch: what users get.
    let o = env.run_env(&["repo", "init"], &[("PRISM_SYNC_INSECURE_TEST_KDF", None)]);
    assert_eq!(o.code(), 0, "{}", o.describe());
    let key = fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let kf = KeyFile::decode(&fs::read(key.path()).unwrap()).unwrap();
    let Kdf::Argon2id {
        memory_kib,
        iterations,
        ..
    } = kf.kdf
    else {
        panic!("{:?}", kf.kdf);
    };
    assert!(memory_kib >= 64 << 10, "{memory_kib} KiB");
    assert!((1..=10).contains(&iterations), "{iterations}");
    env.ok(&["snapshots"]);
}

/// A key file that decodes but opens nothing, with these Argon2id parameters, named so it sorts
/// before `before` (the order a plain listing would try them in).
fn planted(memory_kib: u32, iterations: u32, before: &str) -> (String, Vec<u8>) {
    for salt in 0u8.. {
        let kf = KeyFile {
            kdf: Kdf::Argon2id {
                memory_kib,
                iterations,
                lanes: 1,
            },
            salt: [salt; 32],
            created_ns: 0,
            host: "planted".into(),
            user: "mallory".into(),
            sealed_master: [7; 48],
        };
        let bytes = kf.encode();
        let id = KeyId::of_bytes(&bytes).to_hex();
        if id.as_str() < before {
            return (id, bytes);
        }
    }
    unreachable!()
}

#[test]
fn a_planted_expensive_key_file_does_not_slow_down_opening() {
    let env = Env::with_repo();
    let real = fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    // The most expensive parameters the decoder still accepts (1 GiB × 4 passes: seconds), and
    // parameters above its limits (the old maximum, 4 GiB × 64 passes: minutes).
    for (m, t) in [(1 << 20, 4), (4 << 20, 64)] {
        let (id, bytes) = planted(m, t, &real);
        let p = env.repo.join("keys").join(&id);
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
    }
    for round in ["first open on this machine", "key remembered"] {
        if round == "first open on this machine" {
            let _ = fs::remove_dir_all(env.home.join("sync/keys"));
        }
        let t0 = Instant::now();
        env.ok(&["snapshots"]);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{round}: opening took {:?}",
            t0.elapsed()
        );
    }
    // The wrong password still meets every key file it may: the planted cheap-enough one costs
    // time, the over-limit one is refused without running its KDF.
    let o = env.run_env(&["snapshots"], &[("PRISM_SYNC_PASSWORD", Some("wrong"))]);
    assert_eq!(o.code(), 12, "{}", o.describe());
}
