//! The `pvsnap` command: argument parsing, output and exit codes. All work is
//! done by `pvsnap-engine`; this crate only glues it to a terminal.

mod audit;
mod cmd;
mod interrupt;
mod k8s;
mod output;
mod progress;
mod repo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, documented in README.md.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    /// A snapshot was saved, but some files could not be read.
    pub const INCOMPLETE: u8 = 3;
    /// Damage was found: a restore could not restore some files intact.
    pub const DAMAGED: u8 = 4;
    /// Another process holds a conflicting lock.
    pub const LOCKED: u8 = 11;
    /// The password opens no key slot.
    pub const WRONG_PASSWORD: u8 = 12;
}

/// The environment variables pvsnap reads, shown by `pvsnap --help`.
const ENVIRONMENT: &str = "\
Environment:
  PVSNAP_REPO            Repository folder (as --repo)
  PVSNAP_PASSWORD        Repository password
  PVSNAP_PASSWORD_FILE   File holding the repository password (as --password-file)
  PVSNAP_NEW_PASSWORD    New password for `key add` and `key passwd`
  PVSNAP_NODE            This node's Kubernetes name (as --node)
  PVSNAP_LOG             Log filter, e.g. `debug` or `pvsnap_engine=trace` (overrides -v)
  NO_COLOR               When set and not empty: no colour in log output
  XDG_DATA_HOME, HOME    Where the default repository of a non-root user lies
  KUBECONFIG             Kubernetes client configuration (else ~/.kube/config or in-cluster)
  PVSNAP_TOOL_TIMEOUT_SECS  Time limit of one btrfs, zfs or lvm tool call (600)
Hooks (--pre-hook, --post-hook) find PVSNAP_HOOK (pre|post), PVSNAP_SOURCE and
PVSNAP_SNAPSHOT_PATH (the host folder being read) in their environment.";

#[derive(Parser)]
#[command(
    name = "pvsnap",
    version,
    about = "Deduplicated, compressed, incremental snapshots of volume folders",
    after_help = ENVIRONMENT
)]
pub struct Cli {
    /// Repository folder (default: /var/lib/pvsnap/repo as root, else ~/.local/share/pvsnap/repo),
    /// or bucket: s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]
    #[arg(long, global = true, env = "PVSNAP_REPO")]
    pub repo: Option<std::path::PathBuf>,
    /// Requests to an S3 repository at a time (default 8)
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: Option<u16>,
    /// Read the repository password from this file
    #[arg(long, global = true, env = "PVSNAP_PASSWORD_FILE")]
    pub password_file: Option<std::path::PathBuf>,
    /// Read a remote repository without the local cache of its index, snapshots and trees
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Largest size of that cache, e.g. 512M or 4G (default 1G); the least recently used goes first
    #[arg(long, global = true, value_name = "SIZE", value_parser = repo::parse_cache_size)]
    pub cache_size: Option<u64>,
    /// No progress and no notices
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More log output (-v, -vv)
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a repository
    Init(cmd::init::Args),
    /// Take a snapshot of folders or Kubernetes volume claims
    Snapshot(cmd::snapshot::Args),
    /// List snapshots, oldest first
    Snapshots(cmd::inspect::SnapshotsArgs),
    /// List the files in a snapshot
    Ls(cmd::inspect::LsArgs),
    /// Restore a snapshot into a folder, a Kubernetes claim in place, or a new claim
    Restore(cmd::restore::Args),
    /// Write one file from a snapshot to standard output
    Dump(cmd::inspect::DumpArgs),
    /// Show what changed between two snapshots
    Diff(cmd::inspect::DiffArgs),
    /// Show repository size, deduplication and compression
    Stats(cmd::inspect::StatsArgs),
    /// Remove stale locks
    Unlock(cmd::init::UnlockArgs),
    /// Manage the passphrases of an encrypted repository
    #[command(subcommand)]
    Key(cmd::key::KeyCommand),
    #[command(flatten)]
    Maintenance(cmd::maintenance::Command),
    /// Show the snapshots as a read-only filesystem
    Mount(cmd::mount::Args),
    /// Copy snapshots into another repository (offsite), sending only what it lacks
    Copy(cmd::copy::Args),
    /// Print pvsnap's version, the repository format it writes and reads, and its build
    Version(cmd::about::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion(cmd::about::CompletionArgs),
    /// Write a man page for every command into a folder
    Man(cmd::about::ManArgs),
    /// Find the snapshots that hold a path matching a glob, newest first
    Find(cmd::find::Args),
    /// Add, remove or set the tags of snapshots
    Tag(cmd::tag::Args),
    /// Restore drill: restore a snapshot into a scratch folder, check every file, report the recovery time
    Drill(cmd::drill::Args),
    /// Inspect the storage a repository lives on (`repo probe`)
    #[command(subcommand)]
    Repo(cmd::probe::RepoCommand),
    /// Show who changed the repository or a volume, and how each run ended; verify or trim the trail
    Audit(cmd::audit::AuditArgs),
    /// Run scheduled jobs on this node, serve /healthz and /metrics, send notifications
    Serve(cmd::serve::Args),
    /// Print the repository's health in the Prometheus text format
    Metrics(cmd::health::MetricsArgs),
    /// Show each source's last snapshot and run, and the repository's checks, drills, space and locks; exit non-zero when unhealthy
    Status(cmd::health::StatusArgs),
}

fn main() -> ExitCode {
    // Large buffers (read blocks, packs) come and go all the time. glibc raises
    // its mmap threshold after the first ones are freed and then serves them
    // from per-thread arenas that never shrink, which doubled peak memory on
    // large files. A fixed threshold keeps them mmapped and returned on free.
    // SAFETY: mallopt only adjusts allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // Colour only for a person at a terminal: never in a redirected stderr
    // (cron mail, journald), never with NO_COLOR set (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PVSNAP_LOG")
                .unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .without_time()
        .with_target(false)
        .init();
    if matches!(
        cli.command,
        Command::Snapshots(_)
            | Command::Ls(_)
            | Command::Dump(_)
            | Command::Diff(_)
            | Command::Stats(_)
            | Command::Version(_)
            | Command::Completion(_)
            | Command::Find(_)
    ) {
        // Commands that only print end quietly when their reader stops
        // early (`pvsnap ls latest | head`), as other Unix tools do. They
        // open no socket, so no other write can raise SIGPIPE.
        // SAFETY: restores the default disposition of one signal; no
        // handler runs Rust code.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match &cli.command {
        Command::Init(a) => cmd::init::run(&cli, a),
        Command::Snapshot(a) => cmd::snapshot::run(&cli, a),
        Command::Snapshots(a) => cmd::inspect::snapshots(&cli, a),
        Command::Ls(a) => cmd::inspect::ls(&cli, a),
        Command::Restore(a) => cmd::restore::run(&cli, a),
        Command::Dump(a) => cmd::inspect::dump(&cli, a),
        Command::Diff(a) => cmd::inspect::diff(&cli, a),
        Command::Stats(a) => cmd::inspect::stats(&cli, a),
        Command::Unlock(a) => cmd::init::unlock(&cli, a),
        Command::Key(c) => cmd::key::run(&cli, c),
        Command::Maintenance(c) => cmd::maintenance::run(&cli, c),
        Command::Mount(a) => cmd::mount::run(&cli, a),
        Command::Copy(a) => cmd::copy::run(&cli, a),
        Command::Version(a) => cmd::about::run_version(a),
        Command::Completion(a) => cmd::about::run_completion(a),
        Command::Man(a) => cmd::about::run_man(a),
        Command::Find(a) => cmd::find::run(&cli, a),
        Command::Tag(a) => cmd::tag::run(&cli, a),
        Command::Drill(a) => cmd::drill::run(&cli, a),
        Command::Repo(c) => cmd::probe::run(&cli, c),
        Command::Audit(a) => cmd::audit::run(&cli, a),
        Command::Serve(a) => cmd::serve::run(&cli, a),
        Command::Metrics(a) => cmd::health::metrics(&cli, a),
        Command::Status(a) => cmd::health::status(&cli, a),
    };
    audit::finish(&cli, &result);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if output::is_broken_pipe(&e) {
                return ExitCode::from(exit::OK);
            }
            eprintln!("pvsnap: error: {}", output::error_text(&e));
            ExitCode::from(exit_code_for(&e))
        }
    }
}

fn exit_code_for(e: &anyhow::Error) -> u8 {
    use pvsnap_engine::error::{CryptoError, Error};
    match e.downcast_ref::<Error>() {
        Some(Error::Crypto(CryptoError::WrongPassword | CryptoError::DamagedSlots { .. })) => {
            exit::WRONG_PASSWORD
        }
        Some(Error::Locked { .. }) => exit::LOCKED,
        _ => exit::ERROR,
    }
}
