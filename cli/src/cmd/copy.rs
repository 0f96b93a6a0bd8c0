//! `pvsnap copy`: snapshots into another repository.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use pvsnap_engine::backend::{DynBackend, Throttled};
use pvsnap_engine::maintenance::copy::{CopyProgress, CopyReport, Selection, copy};
use pvsnap_engine::repo::audit::CopiedEntries;
use serde::Serialize;

use crate::repo::{Location, PasswordSource};
use crate::{Cli, output};

#[derive(clap::Args)]
pub struct Args {
    /// The repository to copy into (created beforehand with `pvsnap init`;
    /// it has its own password, keys and retention)
    #[arg(long, value_name = "REPO", env = "PVSNAP_TO_REPO")]
    pub to: PathBuf,
    /// Read the target repository's password from this file (else
    /// PVSNAP_TO_PASSWORD, else a prompt)
    #[arg(long, value_name = "FILE", env = "PVSNAP_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Snapshots to copy (id, id prefix, latest, latest:SOURCE); default:
    /// every snapshot the target lacks
    #[arg(value_name = "SNAP", conflicts_with_all = ["source", "pvc"])]
    pub snapshots: Vec<String>,
    /// Only snapshots of this source (a path, relative ones from the current folder, or pvc/NS/NAME)
    #[arg(long)]
    pub source: Option<String>,
    /// Only snapshots of this Kubernetes claim (same as --source pvc/NS/NAME)
    #[arg(long, value_name = "NS/NAME", conflicts_with = "source")]
    pub pvc: Option<String>,
    /// Upload at most this many bytes per second on average (K, M, G are
    /// KiB, MiB, GiB: 10M is 10 MiB/s); default: no limit
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_upload: Option<u64>,
    /// Print a JSON summary
    #[arg(long)]
    pub json: bool,
}

/// `10M`, `512k`, `1.5G`, `2MiB`, `800000`: bytes per second.
fn parse_rate(s: &str) -> Result<u64, String> {
    crate::repo::parse_bytes(s).ok_or_else(|| {
        format!(
            "`{s}` is not a rate in bytes per second such as 800k, 10M or 1G (K, M, G = KiB, MiB, GiB), at least 1"
        )
    })
}

/// The target's backend (a folder or a bucket, with the global
/// `--connections`), paced when asked.
fn target_backend(cli: &Cli, to: &Location, limit: Option<u64>) -> Result<DynBackend> {
    let be = crate::repo::backend(cli, to)?;
    Ok(match limit {
        Some(rate) => Arc::new(Throttled::new(be, rate)),
        None => be,
    })
}

#[derive(Serialize)]
struct Summary<'a> {
    snapshots_copied: usize,
    blobs_copied: u64,
    bytes_sent: u64,
    duration_s: f64,
    target: String,
    snapshots_already_there: usize,
    blobs_present: u64,
    packs_written: u64,
    packs_adopted: u64,
    index_files_written: u64,
    reencoded: bool,
    copies: Vec<Copied<'a>>,
    audit_entries: CopiedEntries,
}

#[derive(Serialize)]
struct Copied<'a> {
    source_id: String,
    target_id: String,
    source: String,
    time: &'a jiff::Timestamp,
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let selection = if let Some(claim) = &a.pvc {
        let claim = crate::k8s::parse_claim(claim)?;
        Selection::Source(crate::k8s::claim_key(&claim))
    } else if let Some(s) = &a.source {
        Selection::Source(pvsnap_engine::repo::source_key(s))
    } else if !a.snapshots.is_empty() {
        Selection::Specs(a.snapshots.clone())
    } else {
        Selection::All
    };
    let src = crate::repo::open(cli, false, false)?;
    let to = crate::repo::location_of(&a.to)?;
    let dst = crate::repo::open_other(
        &to,
        target_backend(cli, &to, a.limit_upload)?,
        PasswordSource {
            file: a.to_password_file.as_deref(),
            file_flag: "--to-password-file",
            env: "PVSNAP_TO_PASSWORD",
            prompt: "target repository password: ",
        },
        "--to",
    )?;
    let (src, _src_lock) = super::locked(src, false, "copy")?;
    let (dst, _dst_lock) = super::locked(dst, false, "copy")?;
    let progress = Arc::new(CopyProgress::default());
    let report = {
        let p = progress.clone();
        let _bar = crate::progress::Display::start(
            cli.quiet || a.json,
            "copy",
            Box::new(move || {
                let total = p.content_total.load(Ordering::Relaxed);
                crate::progress::Frame {
                    done: p.content_done.load(Ordering::Relaxed),
                    total: (total > 0).then_some(total),
                    extra: format!("{} snapshot(s) copied", p.snapshots.load(Ordering::Relaxed)),
                    ..Default::default()
                }
            }),
        );
        copy(&src, &dst, &selection, &progress)?
    };
    // The audit trail travels with the snapshots (all of it that the
    // target lacks, whatever the selection).
    let entries = pvsnap_engine::repo::audit::copy_to(&src, &dst).map_err(|e| {
        anyhow::anyhow!(
            "the snapshots were copied, but not the audit trail: {e}; run the same copy again"
        )
    })?;
    let snaps = src.snapshots_lenient()?.0;
    render(cli, a, &report, &entries, &snaps, &dst.backend().location())?;
    Ok(crate::exit::OK)
}

fn render(
    cli: &Cli,
    a: &Args,
    r: &CopyReport,
    entries: &CopiedEntries,
    snaps: &[pvsnap_engine::snapshot::Snapshot],
    target: &str,
) -> Result<()> {
    let find = |id| snaps.iter().find(|s| s.id == id);
    let copies: Vec<Copied> = r
        .copied
        .iter()
        .filter_map(|(from, to)| {
            find(*from).map(|s| Copied {
                source_id: from.to_hex(),
                target_id: to.to_hex(),
                source: s.source.key(),
                time: &s.time,
            })
        })
        .collect();
    for id in &r.native_only_skipped {
        eprintln!(
            "pvsnap: snapshot {} is a native restore point (its content is a native snapshot on this host's storage) and is not copied",
            id.short()
        );
    }
    if a.json {
        return output::json(&Summary {
            snapshots_copied: r.copied.len(),
            blobs_copied: r.blobs_copied,
            bytes_sent: r.bytes_sent,
            duration_s: r.duration_s,
            target: target.to_string(),
            snapshots_already_there: r.already_there.len(),
            blobs_present: r.blobs_present,
            packs_written: r.packs_written,
            packs_adopted: r.packs_adopted,
            index_files_written: r.index_files_written,
            reencoded: r.reencoded,
            copies,
            audit_entries: *entries,
        });
    }
    if cli.quiet {
        return Ok(());
    }
    for c in &copies {
        println!(
            "copied {} -> {}  {}  {}",
            &c.source_id[..8],
            &c.target_id[..8],
            output::local_time(*c.time),
            c.source
        );
    }
    println!(
        "{} snapshot(s) copied to {target}, {} already there; {} blob(s) sent ({} re-encoded for the target's key), {} in {:.1} s",
        r.copied.len(),
        r.already_there.len(),
        r.blobs_copied,
        if r.reencoded { "all" } else { "none" },
        output::bytes(r.bytes_sent),
        r.duration_s
    );
    let n = entries.verbatim + entries.resealed;
    if n > 0 {
        println!(
            "{n} audit entr{} copied{}",
            if n == 1 { "y" } else { "ies" },
            if entries.resealed > 0 {
                format!(
                    " ({} re-sealed for the target's key: `audit verify` there checks their chain, not their original bytes)",
                    entries.resealed
                )
            } else {
                String::new()
            }
        );
    }
    if entries.damaged > 0 {
        eprintln!(
            "pvsnap: warning: {} audit entr{} of the source cannot be read and stayed behind; see `pvsnap audit verify` there",
            entries.damaged,
            if entries.damaged == 1 { "y" } else { "ies" }
        );
    }
    if r.packs_adopted > 0 {
        println!(
            "{} pack(s) an interrupted copy had stored were indexed and not sent again",
            r.packs_adopted
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_take_binary_suffixes() {
        assert_eq!(parse_rate("10M"), Ok(10 << 20));
        assert_eq!(parse_rate("512k"), Ok(512 << 10));
        assert_eq!(parse_rate("2MiB"), Ok(2 << 20));
        assert_eq!(parse_rate("1.5G"), Ok(3 << 29));
        assert_eq!(parse_rate("800000"), Ok(800_000));
        for bad in ["", "M", "-1M", "0", "ten", "1e30", "NaN"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
