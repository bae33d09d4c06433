//! AWS EFS: resolving `efs://fs-ID[/path]` to where the file system is mounted on this machine
//! (the data path is NFS, so an EFS repository is a directory to the [`super::FsBackend`]), and
//! the control plane behind `prism-sync efs create|list` (aws-sdk-efs).
//!
//! A mount is found, in order: by its NFS source `fs-ID.efs.<region>.amazonaws.com:/…` in
//! the mount table ([`crate::sys::mounts`]); by an amazon-efs-utils TLS mount (source `127.0.0.1:/`, state file
//! `/var/run/efs/fs-ID.*.<port>` naming the same port); by the IP address of one of the file
//! system's mount targets (asked through the EFS API, only if some NFS mount has an IP source).
//! A laptop cannot mount EFS (mount targets live in a VPC): it uses `rest:` through a workspace
//! running `prism-sync serve`, or an `s3:` repository.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_efs::Client;
use aws_sdk_efs::error::DisplayErrorContext;
use aws_sdk_efs::types::{
    CreationInfo, LifeCycleState, LifecyclePolicy, PerformanceMode, PosixUser, RootDirectory, Tag,
    ThroughputMode, TransitionToIaRules, TransitionToPrimaryStorageClassRules,
};

use super::rt;

/// Where amazon-efs-utils keeps one state file per TLS mount.
const EFS_UTILS_STATE_DIR: &str = "/var/run/efs";
/// How long `efs create` waits for a new file system to become available.
const AVAILABLE_WAIT_MAX: Duration = Duration::from_secs(180);
/// Directory the access point exposes as the root of the file system.
pub const ACCESS_POINT_ROOT: &str = "/prism-sync";

/// `efs://fs-ID[/path]` split into the id and the path inside the file system ("/" if none).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("efs://")
        .ok_or_else(|| format!("{url} is not an efs:// URL: write efs://fs-0123456789abcdef0"))?;
    let (id, path) = match rest.split_once('/') {
        Some((id, p)) => (id, format!("/{}", p.trim_matches('/'))),
        None => (rest, "/".to_string()),
    };
    if !valid_fs_id(id) {
        return Err(format!(
            "{url}: {id:?} is not a file system id: write efs://fs-0123456789abcdef0 (see `prism-sync efs list`)"
        ));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("{url}: the path may not contain '..'"));
    }
    Ok((id.to_string(), path))
}

pub fn valid_fs_id(id: &str) -> bool {
    id.strip_prefix("fs-")
        .is_some_and(|h| (8..=40).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One NFS mount of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsMount {
    pub mount_point: PathBuf,
    /// The server part of the source (`fs-….efs.….amazonaws.com`, `127.0.0.1`, `10.0.1.5`).
    pub host: String,
    /// The exported path (`/` or `/sub`).
    pub export: String,
    /// `port=` of the super options, if any.
    pub port: Option<u16>,
}

/// The NFS mounts of a mount table.
pub fn nfs_mounts(mounts: &[crate::sys::Mount]) -> Vec<NfsMount> {
    let mut out = Vec::new();
    for m in mounts {
        if !m.fs_type.starts_with("nfs") {
            continue;
        }
        let Some((host, export)) = m.source.rsplit_once(":/") else {
            continue;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = m
            .options
            .split(',')
            .find_map(|o| o.strip_prefix("port="))
            .and_then(|p| p.parse().ok());
        out.push(NfsMount {
            mount_point: m.mount_point.clone(),
            host,
            export: format!("/{}", export.trim_matches('/')),
            port,
        });
    }
    out
}

/// The local directory of `path` inside a file system, given the mounts that are the file
/// system (the deepest export that contains `path` wins).
fn local_path(mounts: &[&NfsMount], path: &str) -> Option<PathBuf> {
    let mut best: Option<(&NfsMount, usize)> = None;
    for m in mounts {
        let inside =
            m.export == "/" || path == m.export || path.starts_with(&format!("{}/", m.export));
        if inside && best.is_none_or(|(_, l)| m.export.len() > l) {
            best = Some((m, m.export.len()));
        }
    }
    let (m, _) = best?;
    let rel = path[if m.export == "/" { 0 } else { m.export.len() }..].trim_start_matches('/');
    Some(if rel.is_empty() {
        m.mount_point.clone()
    } else {
        m.mount_point.join(rel)
    })
}

/// Finds the directory of `path` in file system `fs_id` among `mounts`, using the EFS DNS name,
/// then efs-utils state file names (`fs-ID.<mount point>.<port>`), then mount-target IPs.
pub fn find_mount(
    mounts: &[NfsMount],
    fs_id: &str,
    path: &str,
    efs_utils_state: &[String],
    target_ips: &[String],
) -> Option<PathBuf> {
    let dns = format!("{fs_id}.efs.");
    let by_dns: Vec<&NfsMount> = mounts
        .iter()
        .filter(|m| m.host.starts_with(&dns) && m.host.contains(".amazonaws.com"))
        .collect();
    if let Some(p) = local_path(&by_dns, path) {
        return Some(p);
    }
    let by_state: Vec<&NfsMount> = mounts
        .iter()
        .filter(|m| {
            m.port.is_some_and(|port| {
                efs_utils_state.iter().any(|f| {
                    f.starts_with(&format!("{fs_id}.")) && f.ends_with(&format!(".{port}"))
                })
            })
        })
        .collect();
    if let Some(p) = local_path(&by_state, path) {
        return Some(p);
    }
    let by_ip: Vec<&NfsMount> = mounts
        .iter()
        .filter(|m| target_ips.contains(&m.host))
        .collect();
    local_path(&by_ip, path)
}

fn not_mounted(fs_id: &str) -> String {
    format!(
        "EFS file system {fs_id} is not mounted on this machine (no NFS mount of {fs_id}.efs.<region>.amazonaws.com): \
         mount it (e.g. `sudo mount -t efs {fs_id} /mnt/efs`) and use efs://{fs_id} or the directory; \
         a laptop cannot mount EFS: run `prism-sync serve --repo efs://{fs_id}` on a workspace and use its rest: URL, or use an s3:// repository"
    )
}

/// Resolves `efs://fs-ID[/path]` to a local directory.
pub fn resolve(url: &str) -> Result<PathBuf, String> {
    let (fs_id, path) = parse_url(url)?;
    let table = crate::sys::mounts()
        .map_err(|e| format!("cannot read the mount table to find {fs_id}: {e}"))?;
    let mounts = nfs_mounts(&table);
    let state: Vec<String> = std::fs::read_dir(EFS_UTILS_STATE_DIR)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(p) = find_mount(&mounts, &fs_id, &path, &state, &[]) {
        return Ok(p);
    }
    let has_ip_mounts = mounts
        .iter()
        .any(|m| m.host.parse::<std::net::IpAddr>().is_ok());
    if has_ip_mounts {
        let id = fs_id.clone();
        let ips = rt::block_on(url, async move {
            let client = client().await?;
            let out = client
                .describe_mount_targets()
                .file_system_id(id)
                .send()
                .await
                .map_err(|e| efs_error("DescribeMountTargets", e))?;
            Ok::<_, String>(
                out.mount_targets()
                    .iter()
                    .filter_map(|t| t.ip_address().map(str::to_string))
                    .collect::<Vec<_>>(),
            )
        })
        .map_err(|e| e.message)?;
        if let Ok(ips) = ips
            && let Some(p) = find_mount(&mounts, &fs_id, &path, &[], &ips)
        {
            return Ok(p);
        }
    }
    Err(not_mounted(&fs_id))
}

// ---- control plane ---------------------------------------------------------------------------

fn efs_error<E>(
    op: &str,
    e: aws_sdk_efs::error::SdkError<E, aws_sdk_efs::config::http::HttpResponse>,
) -> String
where
    E: std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&e).to_string();
    let hint = if detail.contains("redentials") {
        ": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
    } else if matches!(
        e,
        aws_sdk_efs::error::SdkError::DispatchFailure(_)
            | aws_sdk_efs::error::SdkError::TimeoutError(_)
    ) {
        ": is the EFS API reachable? (check the network and AWS_ENDPOINT_URL)"
    } else {
        ""
    };
    format!("EFS {op} failed: {detail}{hint}")
}

async fn client() -> Result<Client, String> {
    let sdk = super::aws::sdk_config().await;
    if sdk.region().is_none() {
        return Err(
            "no AWS region: set AWS_REGION (EFS file systems live in one region)".to_string(),
        );
    }
    Ok(Client::new(&sdk))
}

/// A file system as `efs list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSystem {
    pub id: String,
    pub name: Option<String>,
    pub creation_token: String,
    pub state: String,
    pub size_bytes: i64,
    pub encrypted: bool,
    pub mount_targets: i32,
    /// RFC 3339.
    pub created: String,
}

fn describe(d: &aws_sdk_efs::types::FileSystemDescription) -> FileSystem {
    FileSystem {
        id: d.file_system_id().to_string(),
        name: d.name().map(str::to_string),
        creation_token: d.creation_token().to_string(),
        state: d.life_cycle_state().as_str().to_string(),
        size_bytes: d.size_in_bytes().map_or(0, |s| s.value()),
        encrypted: d.encrypted().unwrap_or(false),
        mount_targets: d.number_of_mount_targets(),
        created: d
            .creation_time()
            .fmt(aws_sdk_efs::primitives::DateTimeFormat::DateTime)
            .unwrap_or_default(),
    }
}

/// What `efs create` did.
#[derive(Debug, Clone)]
pub struct Created {
    pub fs: FileSystem,
    pub access_point_id: String,
    /// The file system existed already (same creation token): nothing new was made but what
    /// was missing.
    pub existed: bool,
    pub lifecycle: String,
}

/// Owner of the access point's root directory and the user NFS clients act as through it.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    pub uid: u32,
    pub gid: u32,
}

/// A creation token / name `efs create` accepts.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Provisions (or completes) an encrypted file system named `name`: CreateFileSystem with the
/// name as creation token (so running it again finds the same one), CreateAccessPoint rooted at
/// [`ACCESS_POINT_ROOT`], PutLifecycleConfiguration (to Infrequent Access after 30 days, back on
/// first access). Backups are left to the account's AWS Backup plans.
pub fn create(name: &str, opts: CreateOptions) -> Result<Created, String> {
    if !valid_name(name) {
        return Err(format!(
            "{name:?} is not a usable file system name: 1-64 letters, digits, '-', '_', '.'"
        ));
    }
    let name = name.to_string();
    rt::block_on("efs create", async move {
        let c = client().await?;
        let existing = c
            .describe_file_systems()
            .creation_token(&name)
            .send()
            .await
            .map_err(|e| efs_error("DescribeFileSystems", e))?;
        let (mut fs, existed) = match existing.file_systems().first() {
            Some(d) => (describe(d), true),
            None => {
                let tag = Tag::builder()
                    .key("Name")
                    .value(&name)
                    .build()
                    .map_err(|e| e.to_string())?;
                let out = c
                    .create_file_system()
                    .creation_token(&name)
                    .encrypted(true)
                    .performance_mode(PerformanceMode::GeneralPurpose)
                    .throughput_mode(ThroughputMode::Elastic)
                    .tags(tag)
                    .send()
                    .await
                    .map_err(|e| efs_error("CreateFileSystem", e))?;
                let fs = FileSystem {
                    id: out.file_system_id().to_string(),
                    name: out.name().map(str::to_string),
                    creation_token: out.creation_token().to_string(),
                    state: out.life_cycle_state().as_str().to_string(),
                    size_bytes: out.size_in_bytes().map_or(0, |s| s.value()),
                    encrypted: out.encrypted().unwrap_or(false),
                    mount_targets: out.number_of_mount_targets(),
                    created: out
                        .creation_time()
                        .fmt(aws_sdk_efs::primitives::DateTimeFormat::DateTime)
                        .unwrap_or_default(),
                };
                (fs, false)
            }
        };
        let started = std::time::Instant::now();
        while fs.state != LifeCycleState::Available.as_str() {
            if fs.state == LifeCycleState::Error.as_str()
                || fs.state == LifeCycleState::Deleting.as_str()
                || fs.state == LifeCycleState::Deleted.as_str()
            {
                return Err(format!(
                    "EFS file system {} is in state {}: delete it or choose another name",
                    fs.id, fs.state
                ));
            }
            if started.elapsed() > AVAILABLE_WAIT_MAX {
                return Err(format!(
                    "EFS file system {} is still {} after {} s: run `prism-sync efs create {name}` again later to finish",
                    fs.id,
                    fs.state,
                    AVAILABLE_WAIT_MAX.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let d = c
                .describe_file_systems()
                .file_system_id(&fs.id)
                .send()
                .await
                .map_err(|e| efs_error("DescribeFileSystems", e))?;
            if let Some(d) = d.file_systems().first() {
                fs = describe(d);
            }
        }
        let aps = c
            .describe_access_points()
            .file_system_id(&fs.id)
            .send()
            .await
            .map_err(|e| efs_error("DescribeAccessPoints", e))?;
        let ap_token = format!("{name}-prism-sync");
        let access_point_id = match aps.access_points().iter().find(|a| {
            a.client_token() == Some(ap_token.as_str())
                || a.root_directory().and_then(|r| r.path()) == Some(ACCESS_POINT_ROOT)
        }) {
            Some(a) => a.access_point_id().unwrap_or_default().to_string(),
            None => {
                let user = PosixUser::builder()
                    .uid(opts.uid as i64)
                    .gid(opts.gid as i64)
                    .build()
                    .map_err(|e| e.to_string())?;
                let root = RootDirectory::builder()
                    .path(ACCESS_POINT_ROOT)
                    .creation_info(
                        CreationInfo::builder()
                            .owner_uid(opts.uid as i64)
                            .owner_gid(opts.gid as i64)
                            .permissions("0750")
                            .build()
                            .map_err(|e| e.to_string())?,
                    )
                    .build();
                let tag = Tag::builder()
                    .key("Name")
                    .value(format!("{name} prism-sync"))
                    .build()
                    .map_err(|e| e.to_string())?;
                let ap = c
                    .create_access_point()
                    .client_token(&ap_token)
                    .file_system_id(&fs.id)
                    .posix_user(user)
                    .root_directory(root)
                    .tags(tag)
                    .send()
                    .await
                    .map_err(|e| efs_error("CreateAccessPoint", e))?;
                ap.access_point_id().unwrap_or_default().to_string()
            }
        };
        c.put_lifecycle_configuration()
            .file_system_id(&fs.id)
            .lifecycle_policies(
                LifecyclePolicy::builder()
                    .transition_to_ia(TransitionToIaRules::After30Days)
                    .build(),
            )
            .lifecycle_policies(
                LifecyclePolicy::builder()
                    .transition_to_primary_storage_class(
                        TransitionToPrimaryStorageClassRules::After1Access,
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(|e| efs_error("PutLifecycleConfiguration", e))?;
        Ok(Created {
            fs,
            access_point_id,
            existed,
            lifecycle: "Infrequent Access after 30 days, back to Standard on first access"
                .into(),
        })
    })
    .map_err(|e| e.message)?
}

/// Every file system of the account in the region (DescribeFileSystems, all pages).
pub fn list() -> Result<Vec<FileSystem>, String> {
    rt::block_on("efs list", async move {
        let c = client().await?;
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = c
                .describe_file_systems()
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| efs_error("DescribeFileSystems", e))?;
            out.extend(page.file_systems().iter().map(describe));
            match page.next_marker() {
                Some(m) if !m.is_empty() => marker = Some(m.to_string()),
                _ => break,
            }
        }
        Ok(out)
    })
    .map_err(|e| e.message)?
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw
95 22 0:50 / /mnt/efs rw,relatime shared:50 - nfs4 fs-0123456789abcdef0.efs.us-east-1.amazonaws.com:/ rw,vers=4.1,rsize=1048576,wsize=1048576,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.0.1.7,local_lock=none,addr=10.0.1.23
96 22 0:51 / /mnt/sub\\040dir rw,relatime shared:51 - nfs4 fs-0123456789abcdef0.efs.us-east-1.amazonaws.com:/projects rw,vers=4.1,addr=10.0.1.23
97 22 0:52 / /mnt/tls rw,relatime shared:52 - nfs4 127.0.0.1:/ rw,vers=4.1,port=20049,addr=127.0.0.1
98 22 0:53 / /mnt/ip rw,relatime shared:53 - nfs4 10.0.2.9:/ rw,vers=4.1,addr=10.0.2.9
";

    #[test]
    fn urls_parse() {
        assert_eq!(
            parse_url("efs://fs-0123456789abcdef0").unwrap(),
            ("fs-0123456789abcdef0".into(), "/".into())
        );
        assert_eq!(
            parse_url("efs://fs-01234567/a/b/").unwrap(),
            ("fs-01234567".into(), "/a/b".into())
        );
        for bad in [
            "efs://",
            "efs://fs-xyz",
            "efs://vol-01234567",
            "efs://fs-01234567/../x",
            "s3://b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts_are_found_by_dns_name_state_file_or_ip() {
        let m = nfs_mounts(&crate::sys::parse_mountinfo(MOUNTINFO));
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/sub dir"));
        let id = "fs-0123456789abcdef0";
        assert_eq!(
            find_mount(&m, id, "/", &[], &[]),
            Some(PathBuf::from("/mnt/efs"))
        );
        assert_eq!(
            find_mount(&m, id, "/repo", &[], &[]),
            Some(PathBuf::from("/mnt/efs/repo"))
        );
        // The deeper export wins for paths inside it.
        assert_eq!(
            find_mount(&m, id, "/projects/x", &[], &[]),
            Some(PathBuf::from("/mnt/sub dir/x"))
        );
        assert_eq!(find_mount(&m, "fs-99999999", "/", &[], &[]), None);
        let state = vec!["fs-aaaaaaaa.mnt.tls.20049".to_string()];
        assert_eq!(
            find_mount(&m, "fs-aaaaaaaa", "/r", &state, &[]),
            Some(PathBuf::from("/mnt/tls/r"))
        );
        assert_eq!(
            find_mount(&m, "fs-bbbbbbbb", "/", &[], &["10.0.2.9".into()]),
            Some(PathBuf::from("/mnt/ip"))
        );
    }

    #[test]
    fn an_unmounted_file_system_gets_a_clear_error() {
        let e = resolve("efs://fs-0000000000000000f").unwrap_err();
        assert!(e.contains("not mounted on this machine"), "{e}");
        assert!(e.contains("serve"), "{e}");
    }
}
