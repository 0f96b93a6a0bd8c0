//! `pvsnap init` and `pvsnap unlock`.

use anyhow::Result;
use pvsnap_engine::backend::ObjectKey;
use pvsnap_engine::format::ObjectKind;

use crate::Cli;

#[derive(clap::Args)]
pub struct Args {
    /// Encrypt the repository with a password (XChaCha20-Poly1305, Argon2id key slots)
    #[arg(long)]
    pub encryption: bool,
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let loc = crate::repo::location(cli)?;
    let pw = if a.encryption {
        Some(crate::repo::password(cli, true)?)
    } else {
        None
    };
    let repo = crate::repo::create(&loc.path, pw)?;
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
    Ok(crate::exit::OK)
}

#[derive(clap::Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no pvsnap runs on any host)
    #[arg(long)]
    pub remove_all: bool,
}

pub fn unlock(cli: &Cli, a: &UnlockArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    let host = pvsnap_engine::repo::hostname_public();
    let now = jiff::Timestamp::now();
    let mut removed = 0;
    for (id, info) in pvsnap_engine::lock::list_locks(repo.backend())? {
        if a.remove_all || info.is_stale(now, &host) {
            repo.backend()
                .delete(&ObjectKey::new(ObjectKind::Lock, id.to_hex()))?;
            removed += 1;
            if !cli.quiet {
                eprintln!("removed {}", info.describe());
            }
        }
    }
    if !cli.quiet {
        println!("{removed} lock(s) removed");
    }
    Ok(crate::exit::OK)
}
