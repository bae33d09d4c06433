//! `add-instance`: record a workspace, give it a key of its own, and print what it needs — the
//! join command, a hardened systemd unit and a cloud-init snippet.
//!
//! Each workspace gets its own key file in the repository (a fresh 256-bit secret, labelled with
//! the workspace's name), so `key remove` revokes that workspace alone and nothing that opens
//! the laptop's repository ever leaves the laptop. The secret is delivered as a file the user
//! copies (mode 0600 under `$PRISM_HOME/sync/instances/`), or through a secret store the
//! cloud-init snippet reads at boot (AWS SSM Parameter Store, SecureString): never in instance
//! user-data, which any process on the instance can read from the metadata service.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde_json::json;

use super::{Ctx, Outcome};
use crate::backend;
use crate::endpoint::Endpoint;
use crate::endpoint::config::{InstanceInfo, SetConfig};
use crate::error::Error;
use crate::id::hex_encode;
use crate::repository::{Repository, add_workspace_key, list_keys, username};
use crate::sync::{Mode, Policy};

pub struct AddInstance {
    pub name: String,
    pub instance: String,
    /// The folder on the workspace (default: the laptop's path).
    pub dir: Option<PathBuf>,
    /// The repository URL as the workspace reaches it (default: the set's).
    pub instance_repo: Option<String>,
    /// The account the agent runs as on the workspace (default: this user's name).
    pub user: Option<String>,
    /// `PRISM_HOME` of that account (default: `~user/.prism`).
    pub instance_home: Option<PathBuf>,
    /// The SSM parameter the cloud-init snippet reads the key from.
    pub ssm_parameter: Option<String>,
}

/// Where the key to deliver to a workspace is kept on this machine (0600).
pub fn delivery_path(ctx: &Ctx, set: &str, instance: &str) -> PathBuf {
    ctx.paths().instance_key(set, instance)
}

/// The workspace's key: the one made earlier if it is still in the repository and still here
/// to deliver, else a new one.
fn workspace_key(
    ctx: &Ctx,
    repo: &Repository,
    cfg: &mut SetConfig,
    instance: &str,
) -> Result<(String, PathBuf, bool)> {
    let path = delivery_path(ctx, &cfg.name, instance);
    let known = cfg
        .instances
        .iter()
        .find(|i| i.name == instance)
        .and_then(|i| i.key_id.clone());
    if let Some(id) = &known
        && path.exists()
        && list_keys(repo)?.iter().any(|k| k.id.to_hex() == *id)
    {
        return Ok((id.clone(), path, false));
    }
    let (id, secret) = add_workspace_key(repo, instance)?;
    crate::fsx::private::write_atomic(&path, format!("{}\n", hex_encode(&secret)).as_bytes())
        .map_err(|e| Error::io(&path, e))?;
    let id = id.to_hex();
    match cfg.instances.iter_mut().find(|i| i.name == instance) {
        Some(i) => i.key_id = Some(id.clone()),
        None => cfg.instances.push(InstanceInfo {
            name: instance.into(),
            added: jiff::Timestamp::now().to_string(),
            key_id: Some(id.clone()),
            folder: None,
        }),
    }
    cfg.save(&ctx.paths())?;
    Ok((id, path, true))
}

/// Quotes a word for a POSIX shell when it needs it.
fn sh(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The hardened unit that runs the agent as `user` with its own `PRISM_HOME`.
fn systemd_unit(
    name: &str,
    dir: &Path,
    user: &str,
    home: &Path,
    repo_dir: Option<&Path>,
) -> String {
    let mut writable = vec![dir.display().to_string(), home.display().to_string()];
    if let Some(r) = repo_dir {
        writable.push(r.display().to_string());
    }
    format!(
        "[Unit]
Description=prism-sync agent keeping {dir} in sync ({name})
After=network-online.target remote-fs.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Environment=PRISM_HOME={home}
ExecStart=/usr/local/bin/prism-sync start {name} --agent
Restart=on-failure
RestartSec=5
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={writable}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
AmbientCapabilities=

[Install]
WantedBy=multi-user.target
",
        dir = dir.display(),
        home = home.display(),
        writable = writable.join(" "),
    )
}

pub fn add_instance(ctx: &Ctx, a: &AddInstance) -> Result<Outcome> {
    let (name, instance) = (a.name.as_str(), a.instance.as_str());
    let ep = Endpoint::open(&ctx.home, name)?;
    let repo = Repository::open_url(&ep.cfg.repo, &ctx.credentials()?)?;
    if !SetConfig::valid_name(instance) || instance == "local" || instance == "merge" {
        bail!(Error::invalid(format!(
            "{instance:?} is not a usable workspace name: letters, digits, '-', '_', '.'"
        )));
    }
    let mut cfg = ep.cfg.clone();
    let (key_id, key_path, new_key) = workspace_key(ctx, &repo, &mut cfg, instance)?;
    let dir = a.dir.clone().unwrap_or_else(|| cfg.local_path.clone());
    let folder = dir.display().to_string();
    if let Some(i) = cfg.instances.iter_mut().find(|i| i.name == instance)
        && i.folder.as_deref() != Some(folder.as_str())
    {
        i.folder = Some(folder);
        cfg.save(&ctx.paths())?;
    }
    let url = a.instance_repo.clone().unwrap_or_else(|| cfg.repo.clone());
    let user = a.user.clone().unwrap_or_else(username);
    let home = a.instance_home.clone().unwrap_or_else(|| {
        if user == "root" {
            PathBuf::from("/root/.prism")
        } else {
            PathBuf::from(format!("/home/{user}/.prism"))
        }
    });
    let copied_key = format!("{name}-{instance}.key");
    let mut args: Vec<String> = vec![
        "join".into(),
        name.into(),
        dir.display().to_string(),
        "--repo".into(),
        url.clone(),
        "--endpoint".into(),
        instance.into(),
    ];
    if cfg.sync_mode != Mode::Bidirectional {
        args.extend(["--mode".into(), cfg.sync_mode.name().into()]);
    }
    if cfg.conflict_policy != Policy::UserPrompt {
        args.extend([
            "--conflict-policy".into(),
            cfg.conflict_policy.name().into(),
        ]);
    }
    if let Some(r) = &cfg.rules {
        args.extend(["--rules".into(), r.clone()]);
    }
    let words = |key: &str| {
        let mut w: Vec<String> = args.iter().map(|s| sh(s)).collect();
        w.extend(["--key-file".into(), sh(key)]);
        w.join(" ")
    };
    let join = format!("prism-sync {}", words(&copied_key));
    let repo_dir = backend::local_dir(&url);
    let unit_name = format!("prism-sync-{name}.service");
    let unit = systemd_unit(name, &dir, &user, &home, repo_dir.as_deref());
    let param = a
        .ssm_parameter
        .clone()
        .unwrap_or_else(|| format!("/prism-sync/{name}/{instance}"));
    let boot_key = format!("/run/prism-sync/{copied_key}");
    let store_key = format!(
        "aws ssm put-parameter --type SecureString --overwrite --name {} --value file://{}",
        sh(&param),
        sh(&key_path.display().to_string())
    );
    let cloud_init = format!(
        "#cloud-config
# The workspace's key is not in this file (user-data is readable by every process on the
# instance): it is read at boot from the SSM SecureString {param}, which the instance's
# role must be allowed to read (ssm:GetParameter, kms:Decrypt), and removed after the join.
write_files:
  - path: /etc/systemd/system/{unit_name}
    permissions: '0644'
    content: |
{unit_lines}
runcmd:
  - [ install, -d, -m, '0700', -o, {user}, /run/prism-sync ]
  - [ sh, -c, \"umask 077 && aws ssm get-parameter --with-decryption --name {param_q} --query Parameter.Value --output text > {boot_key} && chown {user} {boot_key}\" ]
  - [ runuser, -u, {user}, --, env, PRISM_HOME={home}, /usr/local/bin/prism-sync, {join_args} ]
  - [ rm, -f, {boot_key} ]
  - [ systemctl, daemon-reload ]
  - [ systemctl, enable, --now, {unit_name} ]
",
        unit_lines = unit
            .lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        param_q = sh(&param),
        home = home.display(),
        join_args = args
            .iter()
            .cloned()
            .chain(["--key-file".into(), boot_key.clone()])
            .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let short = &key_id[..8];
    if ctx.out.json {
        ctx.out.json(&json!({
            "set": name, "instance": instance, "key_id": key_id, "key_new": new_key,
            "key_file": key_path.display().to_string(), "join": join, "user": user,
            "instance_home": home.display().to_string(), "ssm_parameter": param,
            "store_key": store_key, "systemd_unit_name": unit_name, "systemd_unit": unit,
            "cloud_init": cloud_init,
        }));
        return Ok(Outcome::ok());
    }
    ctx.out
        .line(format!("✅ Workspace {instance} added to {name}"));
    ctx.out.kv(
        "Key",
        format!(
            "{short} (its own: `prism-sync key remove {short}` revokes {instance} alone), in {}",
            key_path.display()
        ),
    );
    ctx.out.line(format!(
        "💡 Copy the key file to {instance} (it opens the repository: treat it like a password), e.g. scp {} {instance}:{copied_key}",
        sh(&key_path.display().to_string())
    ));
    ctx.out.line(format!("💡 Then on {instance}, as {user}:"));
    println!("   {join}");
    println!("   rm {copied_key}");
    ctx.out.line(format!("💡 Keep it syncing: install this unit as /etc/systemd/system/{unit_name}, then `systemctl enable --now {unit_name}`:"));
    println!("{unit}");
    ctx.out.line(format!(
        "💡 Or at launch, with cloud-init: first store the key as a secret (from here), then use the snippet below:\n   {store_key}"
    ));
    println!("{cloud_init}");
    Ok(Outcome::ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(sh("/home/ada/research"), "/home/ada/research");
        assert_eq!(
            sh("rest:https://h:1/#sha256=ab"),
            "'rest:https://h:1/#sha256=ab'"
        );
        assert_eq!(sh("it's"), "'it'\\''s'");
        assert_eq!(sh(""), "''");
    }

    #[test]
    fn the_unit_runs_as_its_user_with_its_home_and_is_hardened() {
        let u = systemd_unit(
            "p-sync",
            Path::new("/home/ada/p"),
            "ada",
            Path::new("/home/ada/.prism"),
            Some(Path::new("/mnt/efs/prism")),
        );
        for line in [
            "User=ada",
            "Environment=PRISM_HOME=/home/ada/.prism",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/home/ada/p /home/ada/.prism /mnt/efs/prism",
            "PrivateTmp=yes",
        ] {
            assert!(u.lines().any(|l| l == line), "{line} missing:\n{u}");
        }
    }
}
