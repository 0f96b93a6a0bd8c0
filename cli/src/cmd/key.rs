//! `pvsnap key list|add|passwd|remove`: passphrases of an encrypted repository.

use anyhow::Result;
use pvsnap_engine::repo::crypto::KdfParams;
use pvsnap_engine::repo::id::KeyId;
use zeroize::Zeroizing;

use crate::{Cli, output};

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// List the key slots
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Add a passphrase (read from --new-password-file, PVSNAP_NEW_PASSWORD or the terminal)
    Add {
        /// File holding the new passphrase
        #[arg(long)]
        new_password_file: Option<std::path::PathBuf>,
    },
    /// Change the password that opens the repository (new one from --new-password-file, PVSNAP_NEW_PASSWORD or the terminal); the old key slot is removed only after the new one opens the repository
    Passwd {
        /// File holding the new passphrase
        #[arg(long)]
        new_password_file: Option<std::path::PathBuf>,
    },
    /// Remove a key slot by id or unique prefix
    Remove { id: String },
}

/// The new password; every copy read on the way is wiped.
fn new_password(file: &Option<std::path::PathBuf>) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = file {
        let s =
            Zeroizing::new(std::fs::read(f).map_err(|e| {
                anyhow::anyhow!("{}: cannot read the new password: {e}", f.display())
            })?);
        return Ok(Zeroizing::new(s.strip_suffix(b"\n").unwrap_or(&s).to_vec()));
    }
    if let Some(p) = std::env::var_os("PVSNAP_NEW_PASSWORD") {
        return Ok(Zeroizing::new(
            std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec(),
        ));
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        anyhow::bail!("give the new password with --new-password-file or PVSNAP_NEW_PASSWORD");
    }
    let p = Zeroizing::new(rpassword::prompt_password("new password: ")?);
    if *Zeroizing::new(rpassword::prompt_password("again: ")?) != *p {
        anyhow::bail!("the two passwords differ");
    }
    Ok(Zeroizing::new(p.as_bytes().to_vec()))
}

pub fn run(cli: &Cli, c: &KeyCommand) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    match c {
        KeyCommand::List { json } => {
            let keys = repo.keys()?;
            if *json {
                output::json(&keys)?;
            } else {
                for k in keys {
                    match &k.damaged {
                        None => println!(
                            "{} {} {} {}",
                            if k.current { "*" } else { " " },
                            k.id.short(),
                            k.created,
                            k.hostname
                        ),
                        Some(why) => println!(
                            "! {} damaged: {why}; `pvsnap key remove {}` removes it",
                            k.id.short(),
                            k.id.short()
                        ),
                    }
                }
            }
        }
        KeyCommand::Add { new_password_file } => {
            repo.keys()?; // an unencrypted repository: say so before asking
            let pw = new_password(new_password_file)?;
            let id = repo.add_key(&pw, KdfParams::default())?;
            if !cli.quiet {
                println!("added key {}", id.short());
            }
        }
        KeyCommand::Passwd { new_password_file } => {
            repo.keys()?; // an unencrypted repository: say so before asking
            let pw = new_password(new_password_file)?;
            let (old, new) = repo.change_password(&pw, KdfParams::default())?;
            if !cli.quiet {
                println!(
                    "changed the password: key {} replaces key {}",
                    new.short(),
                    old.short()
                );
            }
        }
        KeyCommand::Remove { id } => {
            let matches: Vec<KeyId> = repo
                .keys()?
                .into_iter()
                .map(|k| k.id)
                .filter(|k| k.to_hex().starts_with(&id.to_ascii_lowercase()))
                .collect();
            match matches.as_slice() {
                [one] => {
                    repo.remove_key(one)?;
                    if !cli.quiet {
                        println!("removed key {}", one.short());
                    }
                }
                [] => anyhow::bail!("no key matches `{id}`; list them with `pvsnap key list`"),
                _ => anyhow::bail!("`{id}` matches {} keys; give more digits", matches.len()),
            }
        }
    }
    Ok(crate::exit::OK)
}
