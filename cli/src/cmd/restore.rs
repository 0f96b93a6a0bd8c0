//! `pvsnap restore SNAP --target DIR`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use pvsnap_engine::restore::{self, RestoreOptions, RestoreProgress};

use crate::{Cli, output};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: an id, a unique prefix, `latest` or `latest:SOURCE`
    pub snapshot: String,
    /// Folder to restore into; the snapshot's root content lands directly in it
    #[arg(long)]
    pub target: PathBuf,
    /// Restore only this path inside the snapshot
    #[arg(long)]
    pub path: Option<String>,
    /// Restore only entries matching a glob (repeatable)
    #[arg(long = "include")]
    pub includes: Vec<String>,
    /// Skip entries matching a glob (repeatable)
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    let (repo, _lock) = super::locked(repo, false, "restore")?;
    let snap = repo.resolve_snapshot(&a.snapshot)?;
    let progress = Arc::new(RestoreProgress::default());
    let shown = {
        let p = progress.clone();
        crate::progress::Display::start(
            cli.quiet || a.json,
            "restore",
            Box::new(move || {
                (
                    0,
                    p.bytes.load(Ordering::Relaxed),
                    p.total_bytes.load(Ordering::Relaxed),
                )
            }),
        )
    };
    let opts = RestoreOptions {
        includes: a.includes.clone(),
        excludes: a.excludes.clone(),
    };
    let summary = restore::restore(&repo, &snap, a.path.as_deref(), &a.target, &opts, &progress)?;
    drop(shown);
    if a.json {
        output::json(&summary)?;
    } else if !cli.quiet {
        println!(
            "restored snapshot {} into {}: {} files, {} folders, {} links, {} special, {} written in {:.2}s",
            snap.short_id(),
            a.target.display(),
            summary.files,
            summary.dirs,
            summary.links,
            summary.specials,
            output::bytes(summary.bytes_written),
            summary.duration_s
        );
    }
    if !summary.damaged.is_empty() {
        for (path, why) in &summary.damaged {
            eprintln!("pvsnap: damaged: {path}: {why}");
        }
        eprintln!(
            "pvsnap: {} file(s) could not be restored intact; run `pvsnap check --read-data` (exit code 4)",
            summary.damaged.len()
        );
        return Ok(crate::exit::DAMAGED);
    }
    Ok(crate::exit::OK)
}
