//! `pvsnap drill [SNAP | --source S | --pvc NS/NAME]`: a restore drill
//! (the workflow is `pvsnap_ops::drill`). Exit code 0 when the copy came
//! back whole (and the verify command passed), 1 when it did not.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::progress::Bars;
use crate::{Cli, exit, output};

#[derive(clap::Args)]
pub struct Args {
    /// The snapshot: an id, a unique prefix, `latest` or `latest:SOURCE` (default: latest of --source or --pvc)
    pub snapshot: Option<String>,
    /// Drill the latest snapshot of this source (a path, relative ones from the current folder)
    #[arg(long, conflicts_with_all = ["snapshot", "pvc"])]
    pub source: Option<String>,
    /// Drill the latest snapshot of this claim
    #[arg(long, value_name = "NS/NAME", conflicts_with = "snapshot")]
    pub pvc: Option<String>,
    /// Restore into this folder (new or empty) instead of a new one under the temporary folder
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Run this with `sh -c` in the restored copy once it is verified (it gets PVSNAP_DRILL_DIR, PVSNAP_SNAPSHOT, PVSNAP_SOURCE); the drill fails when it fails
    #[arg(long, value_name = "CMD")]
    pub verify_cmd: Option<String>,
    /// How long the verify command may run
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = super::maintenance::parse_duration)]
    pub verify_timeout: Duration,
    /// Leave the restored copy in place
    #[arg(long)]
    pub keep: bool,
    /// Print the report as JSON (`ok`, `rto_seconds`, `files_verified`, `bytes`, …)
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let spec = match (&a.snapshot, &a.source, &a.pvc) {
        (Some(s), _, _) => s.clone(),
        (None, Some(src), _) => format!("latest:{src}"),
        (None, None, Some(pvc)) => {
            let claim = crate::k8s::parse_claim(pvc)?;
            format!("latest:{}", crate::k8s::claim_key(&claim))
        }
        (None, None, None) => bail!(
            "name the snapshot to drill: an id, `latest`, `latest:SOURCE`, or --source S / --pvc NS/NAME"
        ),
    };
    let repo = crate::repo::open(cli, false, false)?;
    let (repo, _lock) = super::locked(repo, false, "drill")?;
    let snap = repo.resolve_snapshot(&spec)?;
    let opts = pvsnap_ops::DrillOptions {
        target: a.target.clone(),
        verify_cmd: a.verify_cmd.clone(),
        verify_timeout: Some(a.verify_timeout),
        keep: a.keep,
    };
    let bars = Bars {
        hidden: cli.quiet || a.json,
    };
    let report = pvsnap_ops::drill(&repo, &snap, &opts, &bars).map_err(super::ops_error)?;
    // The audit trail records the drill with its snapshot and verdict.
    crate::audit::note(
        Some(report.source.clone()),
        vec![report.snapshot.clone()],
        if report.ok {
            pvsnap_engine::repo::audit::Outcome::Ok
        } else {
            pvsnap_engine::repo::audit::Outcome::Failed
        },
        report.error.clone().map(|e| {
            format!(
                "{e} (recovery time {:.2} s, {} file(s) verified)",
                report.rto_seconds, report.files_verified
            )
        }),
    );
    crate::audit::note_rto(report.rto_seconds);
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if !cli.quiet || !report.ok {
        print_report(&report, snap.short_id());
    }
    Ok(if report.ok { exit::OK } else { exit::ERROR })
}

fn print_report(r: &pvsnap_ops::DrillReport, short: String) {
    let verdict = if r.ok { "passed" } else { "FAILED" };
    println!("drill of snapshot {short} of {}: {verdict}", r.source);
    println!(
        "  restored {} file(s), {} in {:.2} s (recovery time), {}/s",
        r.files_verified + r.problems.len() as u64,
        output::bytes(r.bytes),
        r.rto_seconds,
        output::bytes(r.throughput_bytes_per_s as u64)
    );
    if r.problems.is_empty() {
        println!(
            "  every file matches the snapshot (read back and compared in {:.2} s)",
            r.verify_seconds
        );
    } else {
        println!("  {} entr(ies) differ from the snapshot:", r.problems.len());
        for (path, why) in r.problems.iter().take(20) {
            println!("    {path}: {why}");
        }
        if r.problems.len() > 20 {
            println!(
                "    … and {} more (--json lists them all)",
                r.problems.len() - 20
            );
        }
    }
    if let Some(c) = &r.verify_cmd {
        let how = match c.exit_code {
            Some(code) => format!("exited {code}"),
            None => "was stopped at its timeout".into(),
        };
        println!("  verify command {how} after {:.2} s", c.seconds);
        if c.exit_code != Some(0) && !c.output.trim().is_empty() {
            for line in c
                .output
                .trim_end()
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                println!("    | {line}");
            }
        }
    }
    if let Some(e) = &r.error {
        println!("  {e}");
    }
    if r.kept {
        println!("  the copy is kept in {}", r.target.display());
    }
}
