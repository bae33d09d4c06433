//! The command line: parsing, rendering, exit codes. The only module that prints and the only
//! home of `anyhow`.
//!
//! Exit codes (restic's): 0 success; 1 fatal error; 3 finished but some files could not be read
//! or written (they are listed); 10 repository does not exist; 12 wrong password.

mod browse;
mod daemon;
mod instance;
mod remote;
mod render;
mod repo;
mod sync;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::Error;
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
    #[arg(long, env = "PRISM_SYNC_REPO", global = true, value_name = "URL")]
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
    Snapshots {
        /// A sync set: list its versions.
        name: Option<String>,
    },
    /// List the entries of a snapshot (below PATH).
    Ls(LsArgs),
    /// Show what changed between two snapshots.
    Diff { snap_a: String, snap_b: String },
    /// Write one file of a snapshot to standard output.
    Dump {
        snapshot: String,
        path: std::ffi::OsString,
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
        name: String,
        instance: String,
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
        name: String,
        /// Show the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Go ahead although the folder was emptied or many files were deleted (on purpose).
        #[arg(long)]
        allow_deletions: bool,
    },
    /// Make the shared state equal to this folder (up) or this folder equal to it (down).
    ForceSync {
        name: String,
        #[arg(long, value_parser = ["up", "down"])]
        direction: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// List the paths parked in conflict.
    Conflicts { name: String },
    /// Decide parked conflicts: keep the local, the remote, or both versions.
    Resolve {
        name: String,
        /// The path (as `conflicts` lists it); or --all.
        path: Option<std::ffi::OsString>,
        #[arg(long)]
        all: bool,
        #[arg(long, value_parser = ["local", "remote", "both"])]
        keep: String,
    },
    /// Every version of one path in a sync set.
    History {
        name: String,
        path: std::ffi::OsString,
    },
    /// How each sync set stands (works without a daemon).
    Status { name: Option<String> },
    /// Serve the repository directory (--repo) over HTTP(S) to rest: clients.
    Serve(remote::ServeArgs),
    /// Provision and list AWS EFS file systems.
    Efs {
        #[command(subcommand)]
        cmd: remote::EfsCommand,
    },
    /// Keep NAME in sync continuously (starts the daemon for this home if needed).
    Start {
        name: String,
        /// Run the daemon in this terminal instead of in the background.
        #[arg(long, conflicts_with_all = ["install", "uninstall"])]
        foreground: bool,
        /// Also start it at every login: write and load a login agent (a systemd user unit on
        /// Linux, a LaunchAgent on macOS).
        #[arg(long, conflicts_with = "uninstall")]
        install: bool,
        /// Remove the login agent that --install wrote (and stop it).
        #[arg(long)]
        uninstall: bool,
    },
    /// Stop keeping NAME in sync (the daemon exits when no set is left).
    Stop { name: String },
    /// Pause NAME: the daemon applies and publishes nothing until `resume`.
    Pause { name: String },
    /// Resume a paused set.
    Resume { name: String },
    /// Wait until this folder's changes are published and the shared state's are applied.
    Flush {
        name: String,
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
    /// (internal) The daemon process that `start` launches.
    #[command(hide = true)]
    DaemonRun {
        #[arg(long)]
        first: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct SyncInitArgs {
    /// The folder to keep in sync.
    pub dir: PathBuf,
    /// Name of the sync set (default: `<folder name>-sync`).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, value_parser = ["bidirectional", "upload-only", "download-only"], default_value = "bidirectional")]
    pub mode: String,
    #[arg(long, value_parser = ["user_prompt", "keep_local", "keep_remote", "keep_both"], default_value = "user_prompt")]
    pub conflict_policy: String,
    /// Opt into the research categories (datasets upload-only, code bidirectional, results download-only).
    #[arg(long, value_parser = ["default", "research"])]
    pub rules: Option<String>,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    pub name: String,
    pub dir: PathBuf,
    /// This endpoint's name (default: the host name).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The workspace's key file that `add-instance` made (64 hex digits); else env
    /// PRISM_SYNC_KEY; else a password (PRISM_SYNC_PASSWORD) or a key already installed here.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The set's mode (as on the laptop; `add-instance` prints it).
    #[arg(long, value_parser = ["bidirectional", "upload-only", "download-only"], default_value = "bidirectional")]
    pub mode: String,
    #[arg(long, value_parser = ["user_prompt", "keep_local", "keep_remote", "keep_both"], default_value = "user_prompt")]
    pub conflict_policy: String,
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
    #[arg(long, default_value_t = crate::repository::ZSTD_LEVEL, allow_hyphen_values = true)]
    pub compression: i64,
    /// Let the directory's group read the repository (modes 0750/0440 instead of 0700/0400),
    /// e.g. an EFS shared by several users. Every file still needs the password or a key.
    #[arg(long)]
    pub group_access: bool,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
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
    /// Restore the state at this time: RFC 3339, YYYY-MM-DD, "YYYY-MM-DD HH:MM[:SS]", "N{s,m,h,d,w} ago".
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Restore only this path inside the snapshot (repeatable).
    #[arg(long, value_name = "PATH")]
    pub include: Vec<std::ffi::OsString>,
    /// Allow a non-empty target and replace files that exist there.
    #[arg(long)]
    pub overwrite: bool,
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
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
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
    /// Add a password (from env PRISM_SYNC_NEW_PASSWORD or --new-password-file).
    Add(NewPasswordArgs),
    /// List the key files.
    List,
    /// Remove a key file by id (prefix).
    Remove { id: String },
    /// Change the password: add a new key, remove the one in use.
    Passwd(NewPasswordArgs),
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
        let index = s.spawn(|| repo.load_index());
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
    pub fn sync_dir(&self) -> PathBuf {
        self.home.join("sync")
    }

    /// The repository URL: --repo, else the embedded default under the home directory.
    pub fn repo_url(&self) -> String {
        match &self.repo {
            Some(r) => r.clone(),
            None => self
                .sync_dir()
                .join("repos")
                .join("default")
                .display()
                .to_string(),
        }
    }

    /// Opens the repository at `url` with this home's metadata cache (remote repositories).
    pub fn open_repo(&self, url: &str) -> anyhow::Result<crate::repository::Repository> {
        Ok(
            crate::repository::Repository::open_url(url, &self.credentials()?)?
                .with_cache(&crate::repository::cache::cache_root(&self.home)),
        )
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
            local_keys_dir: self.sync_dir().join("keys"),
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
        Command::Snapshots { name: Some(n) } => sync::snapshots(ctx, &n),
        Command::Snapshots { name: None } => repo::snapshots(ctx),
        Command::Ls(a) if sync::is_set(ctx, &a.snapshot) => sync::ls(ctx, &a),
        Command::Ls(a) => repo::ls(ctx, &a),
        Command::Diff { snap_a, snap_b } => repo::diff(ctx, &snap_a, &snap_b),
        Command::Dump { snapshot, path } => repo::dump(ctx, &snapshot, &path),
        Command::Restore(a) if a.snapshot.as_deref().is_some_and(|s| sync::is_set(ctx, s)) => {
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
        } => instance::add_instance(
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
        ),
        Command::Sync {
            name,
            dry_run,
            allow_deletions,
        } => sync::sync(ctx, &name, None, dry_run, allow_deletions),
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
            sync::sync(ctx, &name, Some(f), dry_run, false)
        }
        Command::Conflicts { name } => sync::conflicts(ctx, &name),
        Command::Resolve {
            name,
            path,
            all,
            keep,
        } => sync::resolve(ctx, &name, path, all, &keep),
        Command::History { name, path } => sync::history(ctx, &name, &path),
        Command::Status { name } => sync::status(ctx, name.as_deref()),
        Command::Serve(a) => remote::serve(ctx, &a),
        Command::Efs { cmd } => remote::efs(ctx, &cmd),
        Command::Start {
            name,
            install: true,
            ..
        } => daemon::install_agent(ctx, &name),
        Command::Start {
            name,
            uninstall: true,
            ..
        } => daemon::uninstall_agent(ctx, &name),
        Command::Start {
            name, foreground, ..
        } => daemon::start(ctx, &name, foreground),
        Command::Stop { name } => daemon::stop(ctx, &name),
        Command::Pause { name } => daemon::pause(ctx, &name, true),
        Command::Resume { name } => daemon::pause(ctx, &name, false),
        Command::Flush { name, timeout } => daemon::flush(ctx, &name, timeout),
        Command::Mount(a) => browse::mount(ctx, &a),
        Command::Ui(a) => browse::ui(ctx, &a),
        Command::DaemonRun { first } => daemon::run(ctx, first.as_deref()),
    }
}
