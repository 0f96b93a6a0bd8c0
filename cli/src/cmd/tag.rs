//! `pvsnap tag SNAPSHOT… --add/--remove/--set TAG`: change the tags of
//! snapshots by writing each again under a new id.

use anyhow::{Result, bail};
use pvsnap_engine::repo::lock::LockGuard;

use crate::Cli;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["add", "remove", "set"])))]
pub struct Args {
    /// Snapshots to change: ids, unique prefixes, latest, latest:SOURCE
    #[arg(required = true, value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Add this tag (repeatable, or a comma list)
    #[arg(long, value_delimiter = ',', value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove this tag (repeatable, or a comma list)
    #[arg(long, value_delimiter = ',', value_name = "TAG")]
    pub remove: Vec<String>,
    /// Replace all tags with these (repeatable, or a comma list; `--set ''` removes every tag)
    #[arg(long, value_delimiter = ',', value_name = "TAG", conflicts_with_all = ["add", "remove"])]
    pub set: Vec<String>,
}

/// The tags `old` becomes; `None` when nothing changes.
fn changed(old: &[String], a: &Args) -> Option<Vec<String>> {
    let mut tags: Vec<String> = if a.set.is_empty() {
        old.to_vec()
    } else {
        a.set.iter().filter(|t| !t.is_empty()).cloned().collect()
    };
    tags.retain(|t| !a.remove.contains(t));
    tags.extend(a.add.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
    (tags != old).then_some(tags)
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    if a.add.iter().chain(&a.remove).any(|t| t.trim().is_empty()) {
        bail!("a tag given to --add or --remove is empty; name the tag (`--add daily`)");
    }
    let repo = crate::repo::open(cli, false, false)?;
    let host = pvsnap_engine::repo::hostname_public();
    // Shared, as a backup: prune (exclusive) must not run while a snapshot
    // exists only as its new copy or only as its old one.
    let _guard = LockGuard::acquire(repo.backend().clone(), false, "tag", &host)?;
    let (snaps, bad) = repo.snapshots_lenient()?;
    pvsnap_engine::repo::warn_unreadable_snapshots(&bad);
    let mut chosen = Vec::new();
    for spec in &a.snapshots {
        let s = pvsnap_engine::repo::resolve_for(&snaps, spec, None)?;
        if !chosen
            .iter()
            .any(|c: &&pvsnap_engine::snapshot::Snapshot| c.id == s.id)
        {
            chosen.push(s);
        }
    }
    for s in chosen {
        match changed(&s.tags, a) {
            None => {
                if !cli.quiet {
                    println!(
                        "snapshot {}: tags unchanged ({})",
                        s.short_id(),
                        s.tags.join(",")
                    );
                }
            }
            Some(tags) => {
                let new = repo.retag(s, tags)?;
                if !cli.quiet {
                    println!(
                        "snapshot {} is now {}: tags {}",
                        s.short_id(),
                        new.short_id(),
                        if new.tags.is_empty() {
                            "(none)".to_string()
                        } else {
                            new.tags.join(",")
                        }
                    );
                }
            }
        }
    }
    Ok(crate::exit::OK)
}
