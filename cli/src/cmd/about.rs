//! `pvsnap version` and `pvsnap completion SHELL`: what a user asks of any
//! command-line tool before trusting it with data.

use std::io::Write;

use anyhow::Result;
use pvsnap_engine::repo::format::REPO_VERSION;
use serde::Serialize;

use crate::exit;

#[derive(clap::Args)]
pub struct VersionArgs {
    /// Print the version as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Version {
    version: &'static str,
    /// The repository version (the config's) this build creates and reads;
    /// FORMAT.md gives the versions of each object.
    repository_version: u32,
    /// The commit the binary was built from: `PVSNAP_COMMIT` at build time,
    /// "unknown" when it was not set.
    commit: &'static str,
    profile: &'static str,
    target: String,
}

fn version() -> Version {
    Version {
        version: env!("CARGO_PKG_VERSION"),
        repository_version: REPO_VERSION,
        commit: option_env!("PVSNAP_COMMIT").unwrap_or("unknown"),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
    }
}

pub fn run_version(a: &VersionArgs) -> Result<u8> {
    let v = version();
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
    } else {
        writeln!(
            out,
            "pvsnap {} (repository version {}; commit {}, {} build, {})",
            v.version, v.repository_version, v.commit, v.profile, v.target
        )?;
    }
    Ok(exit::OK)
}

#[derive(clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for
    pub shell: clap_complete::Shell,
}

/// Writes the completion script for `shell` to standard output, e.g.
/// `pvsnap completion bash > /etc/bash_completion.d/pvsnap`.
pub fn run_completion(a: &CompletionArgs) -> Result<u8> {
    let mut cmd = <crate::Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "pvsnap", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        // A reader that stopped early (`| head`) is no error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        r => r.map(|()| exit::OK).map_err(Into::into),
    }
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Folder to write the pages into (created if missing), e.g. /usr/local/share/man/man1
    #[arg(long, value_name = "DIR")]
    pub dir: std::path::PathBuf,
}

/// Writes one man page per command, generated from the command-line
/// definition: `pvsnap.1`, `pvsnap-snapshot.1`, `pvsnap-key-add.1`, …
pub fn run_man(a: &ManArgs) -> Result<u8> {
    std::fs::create_dir_all(&a.dir).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot create the folder for the man pages: {e}",
            a.dir.display()
        )
    })?;
    let mut cmd = <crate::Cli as clap::CommandFactory>::command();
    cmd.build();
    let mut written = 0;
    write_pages(&cmd, "pvsnap", &a.dir, &mut written)?;
    println!("wrote {written} man pages to {}", a.dir.display());
    Ok(exit::OK)
}

/// Writes the page of `cmd` (named `name`) and those of its subcommands.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &std::path::Path,
    written: &mut usize,
) -> Result<()> {
    let page = cmd
        .clone()
        .name(name.to_string())
        .version(env!("CARGO_PKG_VERSION"));
    let mut roff = Vec::new();
    clap_mangen::Man::new(page).render(&mut roff)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, roff)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the man page: {e}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
