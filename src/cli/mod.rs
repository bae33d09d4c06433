//! The command line: parsing, rendering, exit codes. The only module that prints and the only
//! home of `anyhow`.
//!
//! Exit codes (restic's): 0 success; 1 fatal error; 3 finished but some files could not be read
//! or written (they are listed); 10 repository does not exist; 12 wrong password.

mod browse;
mod daemon;
mod exclude;
mod instance;
mod progress;
mod prompt;
mod remote;
mod render;
mod repo;
mod sync;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::Error;
use crate::home::Home;
use crate::repository::Credentials;
pub use render::Out;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FATAL: i32 = 1;
pub const EXIT_PARTIAL: i32 = 3;
pub const EXIT_NO_REPO: i32 = 10;
pub const EXIT_WRONG_PASSWORD: i32 = 12;

#[derive(Parser, Debug)]
#[command(
    name = "prism-sync",
    version,
    about = "Keeps research folders in sync between a laptop and cloud workspaces, and keeps every version."
)]
pub struct Cli {
    /// Home of all prism-sync config and state (sync sets, keys, caches).
    #[arg(long, env = "PRISM_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Repository: a directory path, file://…, s3://bucket/prefix, rest:http(s)://host:port/ or
    /// efs://fs-ID (default: the embedded repository under --home).
    #[arg(
        short = 'r',
        long,
        env = "PRISM_SYNC_REPO",
        global = true,
        value_name = "URL"
    )]
    pub repo: Option<String>,
    /// Read the password from the first line of this file (else env PRISM_SYNC_PASSWORD).
    #[arg(
        long,
        env = "PRISM_SYNC_PASSWORD_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// File holding the access token for rest: repositories (`serve` says where it keeps it);
    /// else the token stored with the sync set, else env PRISM_SYNC_REST_TOKEN.
    #[arg(
        long,
        env = "PRISM_SYNC_REST_TOKEN_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub rest_token_file: Option<PathBuf>,
    /// Send at most this many KiB per second to a remote repository (s3, rest); also
    /// `limit_upload` in a sync set's config.
    #[arg(long, env = "PRISM_SYNC_LIMIT_UPLOAD", global = true, value_name = "KIB_PER_S", value_parser = clap::value_parser!(u64).range(crate::backend::limit::LIMIT_KIB_MIN..))]
    pub limit_upload: Option<u64>,
    /// Receive at most this many KiB per second from a remote repository (s3, rest); also
    /// `limit_download` in a sync set's config.
    #[arg(long, env = "PRISM_SYNC_LIMIT_DOWNLOAD", global = true, value_name = "KIB_PER_S", value_parser = clap::value_parser!(u64).range(crate::backend::limit::LIMIT_KIB_MIN..))]
    pub limit_download: Option<u64>,
    /// Requests in flight at once to a remote repository (s3, rest).
    #[arg(long, env = "PRISM_SYNC_CONNECTIONS", global = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=crate::backend::CONNECTIONS_MAX as u64))]
    pub connections: Option<u64>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only what scripts need (ids), and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Repository management.
    Repo {
        #[command(subcommand)]
        cmd: RepoCommand,
    },
    /// Back up folders or files into a new snapshot; prints its id.
    Backup(BackupArgs),
    /// List snapshots (of the repository, or of sync set NAME).
    Snapshots(SnapshotsArgs),
    /// List the entries of a snapshot (below PATH).
    Ls(LsArgs),
    /// Show what changed between two snapshots.
    Diff {
        /// The older snapshot: id, id prefix or `latest`.
        snap_a: String,
        /// The newer snapshot: id, id prefix or `latest`.
        snap_b: String,
        #[command(flatten)]
        filter: SnapshotFilter,
    },
    /// Write one file of a snapshot to standard output.
    Dump {
        /// Snapshot id, id prefix or `latest` (the newest snapshot that holds PATH).
        snapshot: String,
        /// The file inside the snapshot, as `ls` shows it.
        path: std::ffi::OsString,
        #[command(flatten)]
        filter: SnapshotFilter,
    },
    /// Restore a snapshot (or the state at a time) into a directory.
    Restore(RestoreArgs),
    /// Remove snapshots according to a retention policy.
    Forget(ForgetArgs),
    /// Reclaim space of data no snapshot uses (safe while backups run).
    Prune(PruneArgs),
    /// Verify the repository's structure, and with --read-data its contents.
    Check(CheckArgs),
    /// Manage the passwords (key files) that open the repository.
    Key {
        #[command(subcommand)]
        cmd: KeyCommand,
    },
    /// Sizes and counts of the repository.
    Stats,
    /// Start syncing a folder (this machine is the laptop, `local`).
    Init(SyncInitArgs),
    /// Join a sync set from a workspace: keep DIR in sync with it.
    Join(JoinArgs),
    /// Record a workspace, give it a key of its own, and print what it needs (join command,
    /// systemd unit, cloud-init).
    AddInstance {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
        /// The workspace's name (its endpoint name when it joins).
        instance: Option<String>,
        /// The folder on the workspace (default: the laptop's path).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The repository URL as the workspace reaches it (default: the set's).
        #[arg(long = "instance-repo", value_name = "URL")]
        instance_repo: Option<String>,
        /// The account the agent runs as on the workspace (default: yours).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// PRISM_HOME of that account on the workspace (default: ~USER/.prism).
        #[arg(long = "instance-home", value_name = "DIR")]
        instance_home: Option<PathBuf>,
        /// The SSM parameter (SecureString) cloud-init reads the workspace's key from (default:
        /// /prism-sync/NAME/INSTANCE).
        #[arg(long = "ssm-parameter", value_name = "NAME")]
        ssm_parameter: Option<String>,
    },
    /// One sync step now, in the foreground.
    Sync {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
        /// Show the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Go ahead although the folder was emptied or many files were deleted (on purpose).
        #[arg(long)]
        allow_deletions: bool,
    },
    /// Apply the set's retention and prune (compact) its repository now, under the
    /// repository's maintenance lease. `sync` and the daemon do this by themselves.
    Maintain {
        /// The sync set (as `status` lists it).
        name: String,
        /// Only what is due (what `sync` starts in the background); else everything now.
        #[arg(long)]
        if_due: bool,
    },
    /// Make the shared state equal to this folder (up) or this folder equal to it (down).
    ForceSync {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
        /// `up`: the shared state becomes this folder; `down`: this folder becomes the shared state.
        #[arg(long, value_parser = ["up", "down"])]
        direction: String,
        /// Show what would change in either place; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the paths parked in conflict.
    Conflicts {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
    },
    /// Decide parked conflicts: keep the local, the remote, or both versions.
    Resolve {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
        /// The path (as `conflicts` lists it); or --all.
        path: Option<std::ffi::OsString>,
        /// Decide every parked conflict of the set the same way.
        #[arg(long)]
        all: bool,
        /// Which version stays: this folder's, the other side's, or both (the other one renamed).
        #[arg(long, value_parser = ["local", "remote", "both"])]
        keep: String,
    },
    /// Every version of one path in a sync set.
    History {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
        /// The path inside the synced folder.
        path: Option<std::ffi::OsString>,
    },
    /// How each sync set stands (works without a daemon).
    Status {
        /// Only this sync set (default: all).
        name: Option<String>,
    },
    /// Serve the repository directory (--repo) over HTTP(S) to rest: clients.
    Serve(remote::ServeArgs),
    /// Provision and list AWS EFS file systems.
    Efs {
        #[command(subcommand)]
        cmd: remote::EfsCommand,
    },
    /// Keep NAME in sync continuously (starts the daemon for this home if needed).
    Start {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
        /// Run the daemon in this terminal instead of in the background.
        #[arg(long, conflicts_with_all = ["install", "uninstall"])]
        foreground: bool,
        /// What a login agent runs: like --foreground, but with a daemon already running for
        /// this home (another set's agent), adds the set to it and waits, taking over if it goes.
        #[arg(long, hide = true, conflicts_with_all = ["install", "uninstall", "foreground"])]
        agent: bool,
        /// Also start it at every login: write and load a login agent (a systemd user unit on
        /// Linux, a LaunchAgent on macOS).
        #[arg(long, conflicts_with = "uninstall")]
        install: bool,
        /// Remove the login agent that --install wrote (and stop it).
        #[arg(long)]
        uninstall: bool,
    },
    /// Stop keeping NAME in sync (the daemon exits when no set is left).
    Stop {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
    },
    /// Pause NAME: the daemon applies and publishes nothing until `resume`.
    Pause {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
    },
    /// Resume a paused set.
    Resume {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
    },
    /// Wait until this folder's changes are published and the shared state's are applied.
    Flush {
        /// The sync set (as `status` lists it; may be left out when there is only one).
        name: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Every snapshot (or, with a sync set's NAME, every version) as a read-only folder
    /// (FUSE) until Ctrl-C or `umount`.
    Mount(browse::MountArgs),
    /// A local web app: every sync set's state, conflicts to settle, every version of every
    /// file by time (open the printed URL).
    Ui(browse::UiArgs),
    /// Print a shell completion script (e.g. `prism-sync completions bash > /etc/bash_completion.d/prism-sync`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (prism-sync.1 and one per command) into DIR.
    Man {
        /// Directory to write the pages into (created if missing), e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
    /// (internal) The daemon process that `start` launches.
    #[command(hide = true)]
    DaemonRun {
        /// The sync set to keep in sync first.
        #[arg(long)]
        first: Option<String>,
    },
}

/// `--mode`: the plan's spellings (`upload_only`) and ours (`upload-only`) both.
fn mode_values() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("bidirectional"),
        PossibleValue::new("upload-only").alias("upload_only"),
        PossibleValue::new("download-only").alias("download_only"),
    ])
}

/// `--conflict-policy`: `keep_both` (the plan's) and `keep-both` both.
fn policy_values() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("user_prompt").alias("user-prompt"),
        PossibleValue::new("keep_local").alias("keep-local"),
        PossibleValue::new("keep_remote").alias("keep-remote"),
        PossibleValue::new("keep_both").alias("keep-both"),
    ])
}

#[derive(Args, Debug)]
pub struct SyncInitArgs {
    /// The folder to keep in sync.
    pub dir: PathBuf,
    /// Name of the sync set (default: `<folder name>-sync`).
    #[arg(long)]
    pub name: Option<String>,
    /// What flows where: both ways, only from this folder, or only into it.
    #[arg(long, value_parser = mode_values(), default_value = "bidirectional")]
    pub mode: String,
    /// What happens when both sides changed a file: ask (park it), or keep one side or both.
    #[arg(long, value_parser = policy_values(), default_value = "user_prompt")]
    pub conflict_policy: String,
    /// Opt into the research categories (datasets upload-only, code bidirectional, results download-only).
    #[arg(long, value_parser = ["default", "research"])]
    pub rules: Option<String>,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The sync set to join (as `add-instance` printed it).
    pub name: String,
    /// The folder on this workspace to keep in sync.
    pub dir: PathBuf,
    /// This endpoint's name (default: the host name).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The workspace's key file that `add-instance` made (64 hex digits); else env
    /// PRISM_SYNC_KEY; else a password (PRISM_SYNC_PASSWORD) or a key already installed here.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The set's mode (as on the laptop; `add-instance` prints it).
    #[arg(long, value_parser = mode_values(), default_value = "bidirectional")]
    pub mode: String,
    /// What happens when both sides changed a file (as on the laptop).
    #[arg(long, value_parser = policy_values(), default_value = "user_prompt")]
    pub conflict_policy: String,
    /// The set's rules (as on the laptop; `add-instance` prints them).
    #[arg(long, value_parser = ["default", "research"])]
    pub rules: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Create a repository (without a password, a random key file is kept under --home).
    Init(InitArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Target pack size in MiB (1..=1024).
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub pack_size: u64,
    /// zstd level for data (-7..=22).
    #[arg(long, default_value_t = crate::repository::ZSTD_LEVEL, allow_hyphen_values = true, value_name = "LEVEL")]
    pub compression: i64,
    /// Let the directory's group read the repository (modes 0750/0440 instead of 0700/0400),
    /// e.g. an EFS shared by several users. Every file still needs the password or a key.
    #[arg(long)]
    pub group_access: bool,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Folders or files to back up (one folder: its contents are the snapshot's top level).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Leave out entries matching this glob (repeatable); without a `/` it matches a name at any
    /// depth, with one the path below the backed-up folder, with a leading `/` the absolute path.
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Like --exclude, ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexcludes: Vec<String>,
    /// Read --exclude patterns from FILE, one a line (`#` comments and blank lines skipped).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Read --iexclude patterns from FILE, one a line.
    #[arg(long = "iexclude-file", value_name = "FILE")]
    pub iexclude_files: Vec<PathBuf>,
    /// Show what would be backed up (files and bytes after the excludes); store nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Host name to record (default: this machine's).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Read every file instead of trusting the file cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Do not consider ctime when deciding a file is unchanged (network file systems).
    #[arg(long)]
    pub ignore_ctime: bool,
    /// Do not consider the inode number when deciding a file is unchanged.
    #[arg(long)]
    pub ignore_inode: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id, id prefix or `latest` — or a sync set's NAME.
    pub snapshot: String,
    /// Path inside the snapshot.
    pub path: Option<std::ffi::OsString>,
    #[command(flatten)]
    pub filter: SnapshotFilter,
    /// With a sync set: the state at this time (default: now).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Show type, mode, size and mtime.
    #[arg(short, long)]
    pub long: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id, id prefix or `latest` (or use --at) — or a sync set's NAME (with --at).
    pub snapshot: Option<String>,
    /// With a sync set: restore only this path of it.
    #[arg(long, value_name = "PATH")]
    pub path: Option<std::ffi::OsString>,
    /// Directory to restore into (must be empty unless --overwrite).
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Restore the state at this time: RFC 3339, YYYY-MM-DD, "YYYY-MM-DD HH:MM[:SS]", "N{s,m,h,d,w} ago",
    /// now, today, yesterday (the end of that day) — or, with a sync set, a version id as
    /// `history` prints it.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Restore only this path inside the snapshot (repeatable).
    #[arg(long, value_name = "PATH")]
    pub include: Vec<std::ffi::OsString>,
    /// Allow a non-empty target and replace files that exist there.
    #[arg(long)]
    pub overwrite: bool,
    /// With `latest`: the newest snapshot of this host (repeatable: any of them).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// With `latest`: the newest snapshot with this tag (repeatable: any; `a,b` needs both).
    #[arg(long = "tag", value_name = "TAG[,TAG]")]
    pub tags: Vec<String>,
    /// With a sync set: this version (an id or id prefix from `prism-sync snapshots NAME`)
    /// instead of --at.
    #[arg(long, value_name = "ID", conflicts_with = "at")]
    pub version: Option<String>,
    /// With a sync set and --path FILE: put that version back into the live folder, over the
    /// file there — only if the file is unchanged since the last sync step.
    #[arg(long, requires = "path", conflicts_with_all = ["target", "overwrite", "beside"])]
    pub in_place: bool,
    /// With a sync set and --path FILE: write that version into the live folder beside the
    /// file, as NAME.restored-YYYYMMDD-HHMMSS.EXT.
    #[arg(long, requires = "path", conflicts_with_all = ["target", "overwrite"])]
    pub beside: bool,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Keep snapshots taken within this duration before the newest (e.g. 30d).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep the newest N snapshots of each group.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    #[command(flatten)]
    pub filter: SnapshotFilter,
    /// Apply the policy per group of snapshots with equal values of these fields: a
    /// comma-separated subset of host, paths, tags (restic's default: host,paths; a sync set's
    /// versions always form their own group); empty: one group.
    #[arg(long, value_name = "FIELDS", default_value = "host,paths")]
    pub group_by: String,
    /// Run prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Show what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Tolerated unused space before partly used packs are repacked (e.g. 5%).
    #[arg(long, default_value = "5%", value_name = "PERCENT")]
    pub max_unused: String,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also read and verify every pack.
    #[arg(long)]
    pub read_data: bool,
    /// Read and verify a subset of packs: n/t (e.g. 1/5) or a percentage (e.g. 10%).
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    pub read_data_subset: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a password (from --new-password-file, env PRISM_SYNC_NEW_PASSWORD, or a prompt on a terminal).
    Add(NewPasswordArgs),
    /// List the key files.
    List,
    /// Remove a key file by id (prefix).
    Remove {
        /// The key's id or id prefix, as `key list` shows it.
        id: String,
    },
    /// Change the password: add a new key, remove the one in use.
    Passwd(NewPasswordArgs),
}

/// restic's snapshot filters: which snapshots a command considers (all given must match).
#[derive(Args, Debug, Default, Clone)]
pub struct SnapshotFilter {
    /// Only snapshots of this host (repeatable: any of them).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable: any of them; `a,b` needs both).
    #[arg(long = "tag", value_name = "TAG[,TAG]")]
    pub tags: Vec<String>,
    /// Only snapshots of this backed-up path (repeatable: all of them), as `snapshots` shows it.
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

impl SnapshotFilter {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    /// restic's rules: any --host; any --tag (each a comma-separated set it must hold all of);
    /// every --path among the snapshot's paths (relative ones taken from the working directory).
    pub fn matches(&self, s: &crate::snapshot::Snapshot) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let host = self.hosts.is_empty() || self.hosts.contains(&s.host);
        let tags = self.tags.is_empty()
            || self.tags.iter().any(|set| {
                set.split(',')
                    .filter(|t| !t.is_empty())
                    .all(|t| s.tags.iter().any(|have| have == t))
            });
        let paths = self.paths.iter().all(|p| {
            let abs: PathBuf = std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .components()
                .collect();
            s.paths
                .iter()
                .any(|have| have == abs.as_os_str().as_bytes())
        });
        host && tags && paths
    }
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// A sync set: list its versions.
    pub name: Option<String>,
    /// Show only the newest N snapshots of each host and paths.
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Args, Debug)]
pub struct NewPasswordArgs {
    /// File whose first line is the new password.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}

/// Loads the repository's index on another thread while `f` runs (resolving a snapshot lists and
/// reads snapshots): on a remote repository, one round trip of waiting instead of two.
pub fn with_index<T: Send>(
    repo: &crate::repository::Repository,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        let index = s.spawn(|| {
            let _t = crate::timing::span("load the index");
            repo.load_index()
        });
        let r = f();
        index.join().expect("index loader")?;
        r
    })
}

/// Global settings every command needs.
pub struct Ctx {
    pub home: PathBuf,
    pub repo: Option<String>,
    pub password_file: Option<PathBuf>,
    pub rest_token_file: Option<PathBuf>,
    pub out: Out,
}

impl Ctx {
    /// The paths under `--home`.
    pub fn paths(&self) -> Home {
        Home::new(&self.home)
    }

    /// The repository URL: --repo, else the embedded default under the home directory.
    pub fn repo_url(&self) -> String {
        match &self.repo {
            Some(r) => r.clone(),
            None => self.paths().default_repo().display().to_string(),
        }
    }

    /// Opens the repository at `url` with this home's metadata cache (remote repositories).
    pub fn open_repo(&self, url: &str) -> anyhow::Result<crate::repository::Repository> {
        Ok(self.open_url(url)?.with_cache(&self.paths().cache_root()))
    }

    /// Opens the repository at `url`; when it needs a password that neither the environment nor
    /// --password-file gave, asks for one on the terminal (never on a pipe).
    pub fn open_url(&self, url: &str) -> crate::error::Result<crate::repository::Repository> {
        use crate::repository::Repository;
        let creds = self
            .credentials()
            .map_err(|e| Error::invalid(format!("{e:#}")))?;
        match Repository::open_url(url, &creds) {
            Err(e @ Error::NoPassword { .. }) => {
                let Error::NoPassword { location, .. } = &e else {
                    unreachable!()
                };
                match prompt::password(&format!("Password for {location}: "))? {
                    Some(pw) if !pw.is_empty() => Repository::open_url(
                        url,
                        &Credentials {
                            password: Some(pw),
                            ..creds
                        },
                    ),
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let password = match (&self.password_file, std::env::var_os("PRISM_SYNC_PASSWORD")) {
            (Some(f), _) => Some(read_password_file(f)?),
            (None, Some(p)) => Some(p.into_encoded_bytes()),
            (None, None) => None,
        };
        if password.as_ref().is_some_and(|p| p.is_empty()) {
            anyhow::bail!(Error::invalid(
                "the password is empty: set a non-empty PRISM_SYNC_PASSWORD or password file"
            ));
        }
        Ok(Credentials {
            password,
            local_keys_dir: self.paths().local_keys_dir(),
        })
    }
}

pub fn read_password_file(f: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let s = std::fs::read(f).map_err(|e| Error::io(f, e))?;
    let line = s.split(|&b| b == b'\n').next().unwrap_or(&[]);
    Ok(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
}

fn default_home() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".prism"),
        None => PathBuf::from(".prism"),
    }
}

/// `man DIR`: the page of the whole command and one per subcommand (`prism-sync-backup.1`, …).
fn man_pages(ctx: &Ctx, dir: &std::path::Path) -> anyhow::Result<Outcome> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    let mut page = |c: clap::Command, file: String| -> anyhow::Result<()> {
        let path = dir.join(&file);
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf)?;
        std::fs::write(&path, buf).map_err(|e| Error::io(&path, e))?;
        written.push(path);
        Ok(())
    };
    page(cmd.clone(), "prism-sync.1".into())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("prism-sync-{}", sub.get_name());
        let file = format!("{name}.1");
        // A one-shot command: the page's title outlives nothing but this process.
        page(sub.clone().name(&*name.leak()), file)?;
    }
    if ctx.out.json {
        ctx.out.json(&serde_json::json!({"written": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()}));
    } else {
        ctx.out.line(format!(
            "✅ Wrote {} in {}",
            render::count(written.len() as u64, "man page", "man pages"),
            dir.display()
        ));
    }
    Ok(Outcome::ok())
}

/// What a command reports besides success: files it could not handle (exit code 3).
pub struct Outcome {
    pub partial: bool,
}

impl Outcome {
    pub fn ok() -> Self {
        Outcome { partial: false }
    }
}

/// Maps an error to its exit code.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<Error>() {
        Some(Error::RepoNotFound { .. }) => EXIT_NO_REPO,
        Some(Error::WrongPassword { .. }) => EXIT_WRONG_PASSWORD,
        _ => EXIT_FATAL,
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_FATAL } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    if let Some(f) = &cli.rest_token_file {
        match remote::read_token_file(f) {
            Ok(t) => crate::backend::rest::set_token(&t),
            Err(e) => {
                eprintln!("❌ {e:#}");
                return EXIT_FATAL;
            }
        }
    }
    crate::backend::limit::set_process_limits(cli.limit_upload, cli.limit_download);
    if let Some(n) = cli.connections {
        crate::backend::set_connections(n as usize);
    }
    let ctx = Ctx {
        home: cli.home.clone().unwrap_or_else(default_home),
        repo: cli.repo.clone(),
        password_file: cli.password_file.clone(),
        rest_token_file: cli
            .rest_token_file
            .as_ref()
            .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone())),
        out: Out {
            json: cli.json,
            quiet: cli.quiet,
            verbose: cli.verbose,
        },
    };
    match run(&ctx, cli.cmd) {
        Ok(o) if o.partial => EXIT_PARTIAL,
        Ok(_) => EXIT_OK,
        Err(e) => {
            let msg = e
                .chain()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("❌ {msg}");
            exit_code(&e)
        }
    }
}

fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<Outcome> {
    match cmd {
        Command::Repo {
            cmd: RepoCommand::Init(a),
        } => repo::init(ctx, &a),
        Command::Backup(a) => repo::backup(ctx, &a),
        Command::Snapshots(a) => match &a.name {
            Some(n) => sync::snapshots(ctx, n),
            None => repo::snapshots(ctx, &a),
        },
        Command::Ls(a) if sync::is_set(ctx, &a.snapshot) => sync::ls(ctx, &a),
        Command::Ls(a) => repo::ls(ctx, &a),
        Command::Diff {
            snap_a,
            snap_b,
            filter,
        } => repo::diff(ctx, &snap_a, &snap_b, &filter),
        Command::Dump {
            snapshot,
            path,
            filter,
        } => repo::dump(ctx, &snapshot, &path, &filter),
        Command::Restore(a) if a.snapshot.as_deref().is_some_and(|s| sync::is_set(ctx, s)) => {
            sync::restore(ctx, &a)
        }
        // `restore --at TIME` with no name and no repository of its own here: the sync set's
        // versions (the only set, or an error naming them), as `history` takes them.
        Command::Restore(mut a)
            if a.snapshot.is_none()
                && a.at.is_some()
                && ctx.repo.is_none()
                && !ctx.paths().default_repo().exists()
                && !crate::endpoint::config::SetConfig::list(&ctx.paths())?.is_empty() =>
        {
            a.snapshot = Some(sync::set_name(ctx, None)?);
            sync::restore(ctx, &a)
        }
        Command::Restore(a) => repo::restore(ctx, &a),
        Command::Forget(a) => repo::forget(ctx, &a),
        Command::Prune(a) => repo::prune(ctx, &a),
        Command::Check(a) => repo::check(ctx, &a),
        Command::Key { cmd } => repo::key(ctx, cmd),
        Command::Stats => repo::stats(ctx),
        Command::Init(a) => sync::init(ctx, &a),
        Command::Join(a) => sync::join(ctx, &a),
        Command::AddInstance {
            name,
            instance,
            dir,
            instance_repo,
            user,
            instance_home,
            ssm_parameter,
        } => {
            // `add-instance WS` with a single set: the one argument is the workspace.
            let (name, instance) = match (name, instance) {
                (n, Some(i)) => (sync::set_name(ctx, n)?, i),
                (Some(i), None) => (sync::set_name(ctx, None)?, i),
                (None, None) => anyhow::bail!(Error::invalid(
                    "name the workspace: prism-sync add-instance [NAME] INSTANCE"
                )),
            };
            instance::add_instance(
                ctx,
                &instance::AddInstance {
                    name,
                    instance,
                    dir,
                    instance_repo,
                    user,
                    instance_home,
                    ssm_parameter,
                },
            )
        }
        Command::Sync {
            name,
            dry_run,
            allow_deletions,
        } => sync::sync(
            ctx,
            &sync::set_name(ctx, name)?,
            None,
            dry_run,
            allow_deletions,
        ),
        Command::Maintain { name, if_due } => sync::maintain(ctx, &name, if_due),
        Command::ForceSync {
            name,
            direction,
            dry_run,
        } => {
            let f = if direction == "up" {
                crate::sync::Force::Up
            } else {
                crate::sync::Force::Down
            };
            sync::sync(ctx, &sync::set_name(ctx, name)?, Some(f), dry_run, false)
        }
        Command::Conflicts { name } => sync::conflicts(ctx, &sync::set_name(ctx, name)?),
        Command::Resolve {
            name,
            path,
            all,
            keep,
        } => {
            let (name, path) = sync::name_and_path(ctx, name, path)?;
            sync::resolve(ctx, &name, path, all, &keep)
        }
        Command::History { name, path } => {
            let (name, path) = sync::name_and_path(ctx, name, path)?;
            let Some(path) = path else {
                anyhow::bail!(Error::invalid(
                    "name the file: prism-sync history [NAME] PATH"
                ));
            };
            sync::history(ctx, &name, &path)
        }
        Command::Status { name: Some(n) } => {
            sync::status(ctx, Some(&sync::set_name(ctx, Some(n))?))
        }
        Command::Status { name: None } => sync::status(ctx, None),
        Command::Serve(a) => remote::serve(ctx, &a),
        Command::Efs { cmd } => remote::efs(ctx, &cmd),
        Command::Start {
            name,
            install: true,
            ..
        } => daemon::install_agent(ctx, &sync::set_name(ctx, name)?),
        Command::Start {
            name,
            uninstall: true,
            ..
        } => daemon::uninstall_agent(ctx, &sync::set_name(ctx, name)?),
        Command::Start {
            name, agent: true, ..
        } => daemon::run_as_agent(ctx, &sync::set_name(ctx, name)?),
        Command::Start {
            name, foreground, ..
        } => daemon::start(ctx, &sync::set_name(ctx, name)?, foreground),
        Command::Stop { name } => daemon::stop(ctx, &sync::set_name(ctx, name)?),
        Command::Pause { name } => daemon::pause(ctx, &sync::set_name(ctx, name)?, true),
        Command::Resume { name } => daemon::pause(ctx, &sync::set_name(ctx, name)?, false),
        Command::Flush { name, timeout } => {
            daemon::flush(ctx, &sync::set_name(ctx, name)?, timeout)
        }
        Command::Mount(a) => browse::mount(ctx, &a),
        Command::Ui(a) => browse::ui(ctx, &a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "prism-sync", &mut std::io::stdout());
            Ok(Outcome::ok())
        }
        Command::Man { dir } => man_pages(ctx, &dir),
        Command::DaemonRun { first } => daemon::run(ctx, first.as_deref()),
    }
}
