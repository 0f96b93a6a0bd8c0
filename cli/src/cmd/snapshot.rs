//! `pvsnap snapshot PATH...`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use pvsnap_engine::archiver::{self, BackupOptions, Progress};
use pvsnap_engine::snapshot::{Snapshot, Source};

use crate::{Cli, output};

#[derive(clap::Args)]
pub struct Args {
    /// Folders to snapshot; each is its own source with its own timeline
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Attach a label key=value (repeatable)
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Leave out entries matching a glob (a name, or a path relative to the folder)
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Do not descend into other filesystems
    #[arg(long)]
    pub one_file_system: bool,
    /// Record this time instead of now (RFC 3339, e.g. 2026-11-21T10:00:00Z)
    #[arg(long, value_parser = parse_time)]
    pub time: Option<jiff::Timestamp>,
    /// Record this host name instead of the machine's
    #[arg(long)]
    pub host: Option<String>,
    /// Read and chunk everything, store nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the snapshot objects as JSON
    #[arg(long)]
    pub json: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

pub fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    s.parse::<jiff::Timestamp>()
        .map_err(|e| format!("`{s}` is not an RFC 3339 time such as 2026-11-21T10:00:00Z: {e}"))
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    for p in &a.paths {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("{}: not a folder; pvsnap snapshots folders", p.display()),
            Err(e) => bail!("{}: cannot snapshot: {e}; check the path", p.display()),
        }
    }
    let repo = crate::repo::open(cli, true, a.dry_run)?;
    let (mut repo, _lock) = super::locked(repo, false, "snapshot")?;
    let existing = repo.snapshots()?;
    let labels: BTreeMap<String, String> = a.labels.iter().cloned().collect();
    let mut taken: Vec<Snapshot> = Vec::new();
    for path in &a.paths {
        let abs = std::fs::canonicalize(path)
            .with_context(|| format!("{}: cannot resolve", path.display()))?;
        let source = Source::Path {
            path: abs.to_string_lossy().into_owned(),
        };
        let opts = BackupOptions {
            parent: archiver::find_parent(&existing, &source)
                .or_else(|| archiver::find_parent(&taken, &source)),
            source: Some(source),
            excludes: a.excludes.clone(),
            one_file_system: a.one_file_system,
            time: a.time,
            tags: a.tags.clone(),
            labels: labels.clone(),
            hostname: a.host.clone(),
            hooks: vec![],
        };
        let progress = Arc::new(Progress::default());
        let shown = {
            let p = progress.clone();
            crate::progress::Display::start(
                cli.quiet || a.json,
                "snapshot",
                Box::new(move || {
                    (
                        p.files.load(Ordering::Relaxed),
                        p.bytes.load(Ordering::Relaxed),
                        p.total_bytes_hint.load(Ordering::Relaxed),
                    )
                }),
            )
        };
        let outcome = archiver::backup(&repo, &abs, &opts, &progress)?;
        drop(shown);
        repo.index_mut().extend(&outcome.new_packs);
        if !a.json && !cli.quiet {
            print_human(&outcome.snapshot, a.dry_run);
        }
        taken.push(outcome.snapshot);
    }
    if a.json {
        let v: Vec<serde_json::Value> = taken.iter().map(snapshot_json).collect();
        output::json(&v)?;
    }
    let lost = taken
        .iter()
        .flat_map(|s| &s.errors)
        .filter(|e| e.is_loss())
        .count();
    if lost > 0 {
        eprintln!(
            "pvsnap: {lost} path(s) could not be read; the snapshot is incomplete (exit code 3)"
        );
        return Ok(crate::exit::INCOMPLETE);
    }
    Ok(crate::exit::OK)
}

/// A snapshot as JSON, with `short_id` added.
pub fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(s).expect("snapshot serializes");
    if let Some(o) = v.as_object_mut() {
        o.insert("short_id".into(), s.short_id().into());
    }
    v
}

fn print_human(s: &Snapshot, dry_run: bool) {
    let m = &s.summary;
    println!(
        "{} {} of {}: {} new, {} changed, {} unmodified files; read {}, added {} in {:.2}s",
        if dry_run {
            "would save snapshot"
        } else {
            "snapshot"
        },
        s.short_id(),
        s.source.key(),
        m.files_new,
        m.files_changed,
        m.files_unmodified,
        output::bytes(m.bytes_read),
        output::bytes(m.bytes_added),
        m.duration_s
    );
    for e in &s.errors {
        println!("  {}: {} ({})", e.kind, e.path, e.message);
    }
}
