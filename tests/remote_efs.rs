//! EFS through its API against moto's EFS on 127.0.0.1 (PRISM_TEST_S3_ENDPOINT serves every AWS
//! API moto has): `efs create` provisions an encrypted file system with an access point and a
//! lifecycle configuration and prints its id; running it again completes and reports the same
//! one; `efs list` shows it. `efs://` URLs of file systems not mounted here fail clearly.

mod servers;

use servers::*;

#[test]
fn efs_create_provisions_an_encrypted_file_system_and_list_shows_it() {
    let ep = s3_endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let m = Machine::new(tmp.path().join("h")).with_s3(&ep);
    let name = unique_bucket("efs");
    let v: serde_json::Value = serde_json::from_str(
        &m.ok(&[
            "efs", "create", &name, "--json", "--uid", "1000", "--gid", "1000",
        ])
        .stdout,
    )
    .unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("fs-"), "{v}");
    assert_eq!(v["encrypted"], true, "{v}");
    assert_eq!(v["existed"], false, "{v}");
    assert_eq!(v["creation_token"], name.as_str(), "{v}");
    assert!(
        v["access_point_id"].as_str().unwrap().starts_with("fsap-"),
        "{v}"
    );
    // Again: the same file system, completed, nothing new.
    let again = m.ok(&["efs", "create", &name]).stdout;
    assert!(again.contains(&format!("ID: {id}")), "{again}");
    assert!(again.starts_with("✅"), "{again}");
    let q = m.ok(&["efs", "create", &name, "-q"]).stdout;
    assert_eq!(q.trim(), id);
    let list: serde_json::Value =
        serde_json::from_str(&m.ok(&["efs", "list", "--json"]).stdout).unwrap();
    let found: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["creation_token"] == name.as_str())
        .collect();
    assert_eq!(found.len(), 1, "exactly one file system per name: {list}");
    assert_eq!(found[0]["id"], id.as_str());
    let human = m.ok(&["efs", "list"]).stdout;
    assert!(human.contains(&id), "{human}");
}

#[test]
fn bad_names_missing_regions_and_unmounted_file_systems_get_clear_errors() {
    let ep = s3_endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let m = Machine::new(tmp.path().join("h")).with_s3(&ep);
    let r = m.run(&["efs", "create", "no spaces allowed"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("not a usable file system name"),
        "{}",
        r.stderr
    );
    let mut c = m.command(&["efs", "list"]);
    c.env_remove("AWS_REGION").env_remove("AWS_DEFAULT_REGION");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("AWS_REGION"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = m.run(&["snapshots", "--repo", "efs://fs-0123456789abcdef0"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("not mounted on this machine"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("serve"), "{}", r.stderr);
    let r = m.run(&["snapshots", "--repo", "efs://not-an-id"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not a file system id"), "{}", r.stderr);
}
