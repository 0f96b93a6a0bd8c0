//! `pvsnap audit`: list, verify and trim the audit trail.

use std::time::Duration;

use anyhow::Result;
use jiff::Timestamp;
use pvsnap_engine::repo::audit::{self, Entry};

use crate::{Cli, output};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub what: Option<AuditWhat>,
    /// Only entries at or after this RFC 3339 time (2026-11-21T10:00:00Z)
    #[arg(long, value_name = "TIME", value_parser = crate::cmd::snapshot::parse_time)]
    pub since: Option<Timestamp>,
    /// Only entries of this operation (snapshot, restore, forget, key add, ...)
    #[arg(long, value_name = "OP")]
    pub operation: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand)]
pub enum AuditWhat {
    /// Check the trail: altered entries and gaps; exit 0 intact, 4 not
    Verify {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove entries older than a duration (such as 365d), recording that it did
    Forget {
        #[arg(long, value_name = "DURATION", value_parser = crate::cmd::maintenance::parse_duration)]
        older_than: Duration,
    },
}

pub fn run(cli: &Cli, a: &AuditArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    match &a.what {
        None => list(&repo, a),
        Some(AuditWhat::Verify { json }) => verify(&repo, *json),
        Some(AuditWhat::Forget { older_than }) => {
            let cutoff = Timestamp::now()
                .checked_sub(jiff::SignedDuration::try_from(*older_than)?)
                .map_err(|e| anyhow::anyhow!("--older-than is too long: {e}"))?;
            let gone = audit::forget_older_than(
                &repo,
                cutoff,
                Entry::new(audit::FORGET_OPERATION, audit::Outcome::Ok),
            )?;
            crate::audit::recorded();
            if !cli.quiet {
                eprintln!(
                    "pvsnap: removed {} audit entr{} older than {cutoff}; the removal is recorded",
                    gone.len(),
                    if gone.len() == 1 { "y" } else { "ies" }
                );
            }
            Ok(crate::exit::OK)
        }
    }
}

fn list(repo: &pvsnap_engine::Repository, a: &AuditArgs) -> Result<u8> {
    let trail = audit::read(repo)?;
    for (id, e) in &trail.damaged {
        eprintln!("pvsnap: warning: audit/{id} cannot be read: {e}; see `pvsnap audit verify`");
    }
    let shown: Vec<_> = trail
        .sorted()
        .into_iter()
        .filter(|(_, e)| a.since.is_none_or(|t| e.time >= t))
        .filter(|(_, e)| a.operation.as_ref().is_none_or(|o| &e.operation == o))
        .collect();
    if a.json {
        let v: Vec<serde_json::Value> = shown
            .iter()
            .map(|(id, e)| {
                let mut v = serde_json::to_value(e).expect("entry serializes");
                v["id"] = id.as_str().into();
                v
            })
            .collect();
        output::json(&v)?;
        return Ok(crate::exit::OK);
    }
    for (id, e) in shown {
        let who = format!(
            "{}@{}",
            e.user.clone().unwrap_or_else(|| format!("uid {}", e.uid)),
            e.host
        );
        let what = e
            .source
            .iter()
            .cloned()
            .chain(e.snapshots.iter().map(|s| s.chars().take(8).collect()))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{}  {}  {:<14} {:<11} {:<20} {}{}",
            &id[..8],
            e.time.strftime("%Y-%m-%d %H:%M:%S"),
            e.operation,
            e.outcome.to_string(),
            who,
            what,
            e.error
                .as_ref()
                .map(|x| format!("  error: {x}"))
                .unwrap_or_default()
        );
    }
    Ok(crate::exit::OK)
}

fn verify(repo: &pvsnap_engine::Repository, json: bool) -> Result<u8> {
    let trail = audit::read(repo)?;
    let problems = audit::verify(&trail);
    let heads = trail.heads().len();
    if json {
        output::json(&serde_json::json!({
            "entries": trail.entries.len(),
            "heads": heads,
            "problems": problems,
            "ok": problems.is_empty(),
        }))?;
    } else {
        for p in &problems {
            println!("{}: audit/{}: {}", p.kind, p.id, p.detail);
        }
        println!(
            "audit trail: {} entries, {} head(s){}: {}",
            trail.entries.len(),
            heads,
            if heads > 1 {
                " (commands ran at the same time)"
            } else {
                ""
            },
            if problems.is_empty() {
                "intact".to_string()
            } else {
                format!("{} problem(s) found", problems.len())
            }
        );
    }
    Ok(if problems.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::DAMAGED
    })
}
