//! `pvsnap init` and `pvsnap unlock`.

use anyhow::{Result, bail};
use pvsnap_engine::backend::local::Modes;

use crate::Cli;

#[derive(clap::Args)]
pub struct Args {
    /// Encrypt the repository with a password (XChaCha20-Poly1305, Argon2id key slots)
    #[arg(long)]
    pub encryption: bool,
    /// Chunk sizes in KiB as MIN,AVG,MAX (default 256,1024,4096)
    #[arg(long, value_parser = parse_chunker)]
    pub chunker: Option<(u32, u32, u32)>,
    /// Cut chunks exactly as the repository REPO does (its chunk sizes and
    /// gear seed), so snapshots taken directly into this one deduplicate
    /// with what `pvsnap copy` brings from REPO. Only the chunking is
    /// shared: this repository gets its own id, password, keys, compression
    /// and pack size (an encrypted one keeps the seed sealed with its own
    /// key). REPO's password: --from-password-file or PVSNAP_FROM_PASSWORD
    #[arg(long, value_name = "REPO", conflicts_with = "chunker")]
    pub copy_chunker_params_from: Option<std::path::PathBuf>,
    /// Read the password of the --copy-chunker-params-from repository from this file
    #[arg(long, value_name = "FILE", requires = "copy_chunker_params_from")]
    pub from_password_file: Option<std::path::PathBuf>,
    /// zstd level for new data, 0 for none (default 3)
    #[arg(long)]
    pub compression_level: Option<i32>,
    /// Target pack file size in MiB (default 16)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pack_size: Option<u32>,
    /// Let the owner's group read the repository (files 0640, folders 0750;
    /// default: owner only, 0600 and 0700). Later writers keep the choice.
    #[arg(long)]
    pub group_access: bool,
}

fn parse_chunker(s: &str) -> Result<(u32, u32, u32), String> {
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{p}` is not a number of KiB"))
        })
        .collect::<Result<_, _>>()?;
    let bytes = |k: u32| {
        k.checked_mul(1024)
            .ok_or_else(|| format!("{k} KiB is too large a chunk size"))
    };
    match parts.as_slice() {
        [a, b, c] if a <= b && b <= c => Ok((bytes(*a)?, bytes(*b)?, bytes(*c)?)),
        _ => Err(format!(
            "`{s}` is not MIN,AVG,MAX in KiB with MIN <= AVG <= MAX"
        )),
    }
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let loc = crate::repo::location(cli)?;
    crate::repo::check_location(&loc.path)?;
    let pw = if a.encryption {
        let pw = crate::repo::password(cli, true)?;
        if pw.is_empty() {
            bail!(
                "the password is empty; an encrypted repository needs one. Give a non-empty password via PVSNAP_PASSWORD, --password-file or the prompt (nothing was created)"
            );
        }
        Some(pw)
    } else {
        None
    };
    let mut opts = pvsnap_engine::InitOptions {
        password: pw,
        ..Default::default()
    };
    if let Some(from) = &a.copy_chunker_params_from {
        let from = crate::repo::location_of(from)?;
        let other = crate::repo::open_other(
            &from,
            crate::repo::backend(cli, &from)?,
            crate::repo::PasswordSource {
                file: a.from_password_file.as_deref(),
                file_flag: "--from-password-file",
                env: "PVSNAP_FROM_PASSWORD",
                prompt: "password of the repository to copy chunker parameters from: ",
            },
            "--copy-chunker-params-from",
        )?;
        opts.chunker = pvsnap_engine::repo::ChunkerParams {
            seed: Some(other.chunker_seed()),
            ..other.config().chunker
        };
    }
    if let Some((min, avg, max)) = a.chunker {
        opts.chunker.min = min;
        opts.chunker.avg = avg;
        opts.chunker.max = max;
    }
    if let Some(l) = a.compression_level {
        opts.compression_level = l;
    }
    if let Some(p) = a.pack_size {
        opts.pack_size = p * 1024 * 1024;
    }
    let modes = if a.group_access {
        Modes::GROUP
    } else {
        Modes::PRIVATE
    };
    let repo = crate::repo::create_at(cli, &loc, opts, modes)?;
    if !cli.quiet {
        println!(
            "created {} repository {} at {}",
            if a.encryption {
                "encrypted"
            } else {
                "unencrypted"
            },
            repo.config().id.short(),
            loc.path.display()
        );
    }
    if let Some(s3) = loc.s3.as_ref().filter(|_| !cli.quiet) {
        // What the server does, tried once now: `pvsnap repo probe` again.
        match crate::repo::s3_backend(cli, s3).and_then(|b| Ok(b.probe()?)) {
            Ok(p) => print!("{}", crate::cmd::probe::text(&s3.display(), &p)),
            Err(e) => eprintln!(
                "pvsnap: warning: the repository was created, but probing the server failed: {}; `pvsnap repo probe` tries again",
                crate::output::error_text(&e)
            ),
        }
    }
    let repo_arg = if loc.explicit {
        format!("--repo {} ", loc.path.display())
    } else {
        String::new()
    };
    if a.encryption {
        eprintln!(
            "pvsnap: warning: keep this password safe: without it the data in this repository cannot be read, and nobody can recover it. Add a second password now with `pvsnap {repo_arg}key add` (the new one from PVSNAP_NEW_PASSWORD, --new-password-file or the prompt)"
        );
    } else if let Some(given) = password_given(cli) {
        eprintln!(
            "pvsnap: warning: {given} is set, but --encryption was not given: this repository is NOT encrypted and the password is not used. To encrypt, remove {} (it holds nothing yet) and run `pvsnap {repo_arg}init --encryption`",
            loc.path.display()
        );
    }
    Ok(crate::exit::OK)
}

/// Where a password was given that an unencrypted `init` does not use.
pub fn password_given(cli: &Cli) -> Option<&'static str> {
    if cli.password_file.is_some() {
        Some("--password-file (or PVSNAP_PASSWORD_FILE)")
    } else if std::env::var_os("PVSNAP_PASSWORD").is_some() {
        Some("PVSNAP_PASSWORD")
    } else {
        None
    }
}

#[derive(clap::Args)]
pub struct UnlockArgs {
    /// Remove every lock, live ones too (only when no pvsnap runs on any host)
    #[arg(long, conflicts_with = "locks")]
    pub remove_all: bool,
    /// Remove these locks (id or its first digits, as the "locked" message
    /// names them), live or not; make sure their process is gone first
    #[arg(value_name = "LOCK")]
    pub locks: Vec<String>,
}

/// Removes stale and unreadable locks, every lock, or the named ones.
pub fn unlock(cli: &Cli, a: &UnlockArgs) -> Result<u8> {
    use pvsnap_engine::repo::lock::{self, Unlock};
    // Locks are never encrypted: no password is needed to remove them, and
    // a repository whose key slots cannot be opened can still be unlocked.
    let loc = crate::repo::location(cli)?;
    let backend = crate::repo::backend(cli, &loc)?;
    crate::repo::check_location(&loc.path)?;
    if !backend.exists(&pvsnap_engine::backend::ObjectKey::config())? {
        if let Some(e) = crate::repo::config_missing(&loc.path) {
            return Err(e);
        }
        anyhow::bail!(
            "{}: not a pvsnap repository (no config object); name the repository with --repo",
            loc.path.display()
        );
    }
    let host = pvsnap_engine::repo::hostname_public();
    let which = if a.remove_all {
        Unlock::All
    } else if !a.locks.is_empty() {
        Unlock::Named(a.locks.clone())
    } else {
        Unlock::Stale
    };
    let r = lock::unlock(&backend, &which, &host)?;
    if !cli.quiet {
        let now = backend.now()?;
        for (l, status) in &r.removed {
            match status.reason() {
                Some(why) => eprintln!("removed {}: {why}", l.describe_at(now)),
                None => eprintln!("removed {} (it was live)", l.describe_at(now)),
            }
        }
        for l in &r.kept {
            eprintln!(
                "kept {}: it is live; `pvsnap unlock {}` removes it once its process is gone",
                l.describe_at(now),
                l.short()
            );
        }
        println!("{} lock(s) removed", r.removed.len());
    }
    Ok(crate::exit::OK)
}
