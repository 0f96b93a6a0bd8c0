//! `forget`, `prune`, `check`, `repair` and `policy`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use jiff::tz::TimeZone;
use pvsnap_engine::Repository;
use pvsnap_engine::maintenance::check::{self, CheckReport, ReadData};
use pvsnap_engine::maintenance::forget::{self, ForgetReport, Selection};
use pvsnap_engine::maintenance::prune::{self, PruneOptions, PruneReport};
use pvsnap_engine::maintenance::repair;
use pvsnap_engine::maintenance::retention::{GroupBy, KeepPolicy, KeepWithin};
use pvsnap_engine::maintenance::steps::Steps;
use pvsnap_engine::repo::lock::{Access, ExclusiveLock, LockGuard};
use pvsnap_engine::repo::policy::{self, NamedPolicy};
use pvsnap_engine::snapshot::Snapshot;

use crate::progress::Display;
use crate::{Cli, output};

/// The maintenance subcommands, flattened into the top-level command list.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Remove snapshots by a retention policy (or by id) into the trash; `--prune` frees the space
    Forget(ForgetArgs),
    /// Bring back a snapshot that `forget` moved to the trash (before prune expires it)
    Undelete(UndeleteArgs),
    /// Delete data that no snapshot needs and repack half-empty packs
    Prune(PruneArgs),
    /// Verify the repository; exit code 4 names damaged snapshots and files
    Check(CheckArgs),
    /// Rebuild the index from the packs, or save what is left of damaged snapshots
    Repair(RepairArgs),
    /// Named retention policies stored in the repository
    Policy(PolicyArgs),
}

pub fn run(cli: &Cli, c: &Command) -> Result<u8> {
    match c {
        Command::Forget(a) => forget(cli, a),
        Command::Undelete(a) => undelete(cli, a),
        Command::Prune(a) => prune(cli, a),
        Command::Check(a) => check(cli, a),
        Command::Repair(a) => repair(cli, a),
        Command::Policy(a) => policy(cli, a),
    }
}

/// The `--keep-*` options, shared by `forget` and `policy set`.
#[derive(clap::Args, Clone, Default)]
pub struct KeepArgs {
    /// Keep the N newest snapshots of each group
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot this close to the group's newest (e.g. 2d, 1y6m, 12h)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<KeepWithin>,
    /// Keep every snapshot carrying this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Judge snapshots in groups: a comma-separated list of source, host, tags
    #[arg(long, value_name = "CRITERIA")]
    pub group_by: Option<GroupBy>,
}

impl KeepArgs {
    fn policy(&self) -> KeepPolicy {
        KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
            tags: self.keep_tags.clone(),
        }
    }
}

/// Options of prune, shared by `prune` and `forget --prune`.
#[derive(clap::Args, Clone)]
pub struct PruneTuning {
    /// Repack a pack when more than this share of its bytes is unneeded
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = parse_percent)]
    pub max_unused: f64,
    /// Leave packs that no index names alone until they are this old (a snapshot may still be writing them)
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub grace: Duration,
    /// Keep the data of forgotten snapshots this long (`pvsnap undelete` brings them back until then); 0 empties the trash
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub keep_deleted: Duration,
}

#[derive(clap::Args)]
pub struct UndeleteArgs {
    /// The id (or a unique prefix) of a snapshot in the trash (`pvsnap snapshots --deleted` lists them)
    pub snapshot: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ForgetArgs {
    /// Remove exactly these snapshots (ids or unique prefixes) instead of applying a policy
    #[arg(conflicts_with_all = ["policy", "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within", "keep_tags"])]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Apply the named policy stored in the repository (`default` always exists)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within", "keep_tags"])]
    pub policy: Option<String>,
    /// List every snapshot as keep or remove, with the rules that keep it; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub tuning: PruneTuning,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// The cluster of forgotten CSI VolumeSnapshot records (their VolumeSnapshots are deleted)
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub tuning: PruneTuning,
    /// Report what would be deleted and repacked; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Also read every blob: decrypt, decompress and hash it
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read part of the data: a random `10%` of the packs, or part `n/k` (k nights cover everything)
    #[arg(long, value_name = "SUBSET")]
    pub read_data_subset: Option<ReadData>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct RepairArgs {
    #[command(subcommand)]
    pub what: RepairWhat,
}

#[derive(clap::Subcommand)]
pub enum RepairWhat {
    /// Rebuild the index from the pack trailers, superseding every old index file
    Index {
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write copies of damaged snapshots without their lost files (originals stay)
    Snapshots {
        /// Read every blob first, so damaged content counts as lost too
        #[arg(long)]
        read_data: bool,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub what: PolicyWhat,
}

#[derive(clap::Subcommand)]
pub enum PolicyWhat {
    /// Store (or replace) a named policy
    Set {
        name: String,
        #[command(flatten)]
        keep: KeepArgs,
    },
    /// List the policies, with the built-in `default`
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one policy
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a stored policy
    Remove { name: String },
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage such as 10%"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("`{s}`: give a percentage from 0% to 100%"));
    }
    Ok(v)
}

/// `90s`, `30m`, `24h`, `7d`, combinations such as `1d12h`, or `0`
/// (`pvsnap_engine::maintenance::duration`, shared with `--wait-timeout` and keep-within).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    pvsnap_engine::maintenance::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn lock(repo: &Repository, exclusive: bool, operation: &str) -> Result<LockGuard> {
    let host = pvsnap_engine::repo::hostname_public();
    Ok(LockGuard::acquire(
        repo.backend().clone(),
        exclusive,
        operation,
        &host,
    )?)
}

/// The lock of an operation that deletes: exclusive, or shared for a dry run.
enum Held {
    /// Held only to be released on drop.
    Shared(#[allow(dead_code)] LockGuard),
    Exclusive(ExclusiveLock),
}

impl Held {
    fn take(repo: &Repository, dry_run: bool, operation: &str) -> Result<Held> {
        if dry_run {
            return Ok(Held::Shared(lock(repo, false, operation)?));
        }
        Ok(Held::Exclusive(exclusive(repo, operation)?))
    }

    fn access(&self) -> Access<'_> {
        match self {
            Held::Shared(_) => Access::DryRun,
            Held::Exclusive(l) => Access::Write(l),
        }
    }
}

fn exclusive(repo: &Repository, operation: &str) -> Result<ExclusiveLock> {
    let host = pvsnap_engine::repo::hostname_public();
    Ok(ExclusiveLock::acquire(
        repo.backend().clone(),
        operation,
        &host,
    )?)
}

fn prune_options(t: &PruneTuning) -> PruneOptions {
    PruneOptions {
        max_unused_percent: t.max_unused,
        grace: t.grace,
        keep_deleted: t.keep_deleted,
        ..PruneOptions::default()
    }
}

pub fn forget(cli: &Cli, a: &ForgetArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    let held = Held::take(&repo, a.dry_run, "forget")?;
    let selection = if !a.snapshots.is_empty() {
        Selection::Ids(forget::resolve_ids(&repo, &a.snapshots)?)
    } else if let Some(name) = &a.policy {
        let p = policy::get(&repo, name)?;
        Selection::Policy {
            keep: p.keep,
            group_by: a.keep.group_by.unwrap_or(p.group_by),
        }
    } else {
        Selection::Policy {
            keep: a.keep.policy(),
            group_by: a.keep.group_by.unwrap_or_default(),
        }
    };
    // Native snapshots kept by forgotten records go with them; CSI
    // restore points live in the cluster: their records are read first.
    let (before, _) = repo.snapshots_lenient()?;
    let csi: std::collections::HashMap<_, _> = before
        .iter()
        .filter_map(|s| pvsnap_ops::csi_record(s).map(|r| (s.id, r)))
        .collect();
    let report = forget::forget(&repo, held.access(), &selection, &TimeZone::system())?;
    let native = forget_native(&report, &before);
    let csi_failed = if a.dry_run {
        0
    } else {
        forget_volume_snapshots(cli, a, &report, &csi)
    };
    let pruned = if a.prune {
        let mut opts = prune_options(&a.tuning);
        if a.dry_run {
            opts.assume_removed = report
                .snapshots
                .iter()
                .filter(|v| !v.keep)
                .map(|v| v.id)
                .chain(report.unreadable_removed.iter().copied())
                .collect();
        }
        let steps = Arc::new(Steps::default());
        let _shown = Display::steps(cli.quiet || a.json, "prune", steps.clone());
        Some(prune::prune_with(&repo, held.access(), &opts, &steps)?)
    } else {
        None
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["prune"] = serde_json::to_value(&pruned)?;
        v["native"] = native
            .iter()
            .map(|(ok, line)| serde_json::json!({"ok": ok, "message": line}))
            .collect();
        output::json(&v)?;
    } else if !cli.quiet {
        print_forget(&report)?;
        if let Some(p) = &pruned {
            print_prune(p);
        }
    }
    let mut code = crate::exit::OK;
    for (ok, line) in &native {
        if !ok {
            code = crate::exit::ERROR;
            eprintln!(
                "pvsnap: the record is forgotten, but its native snapshot could not be destroyed: {line}; destroy it with the storage's tools"
            );
        } else if line.starts_with("warning: ") || !(cli.quiet || a.json) {
            eprintln!("pvsnap: {line}");
        }
    }
    if csi_failed > 0 {
        code = crate::exit::ERROR;
    }
    Ok(code)
}

/// Destroys the native snapshots kept by the records `report` removed
/// (none in a dry run: what would be destroyed is said), unless a record
/// that stays still keeps them. `(ok, what happened)` per native snapshot.
fn forget_native(report: &ForgetReport, before: &[Snapshot]) -> Vec<(bool, String)> {
    let gone: std::collections::HashSet<_> = report
        .snapshots
        .iter()
        .filter(|v| !v.keep)
        .map(|v| v.id)
        .collect();
    let (forgotten, remaining): (Vec<Snapshot>, Vec<Snapshot>) =
        before.iter().cloned().partition(|s| gone.contains(&s.id));
    if report.dry_run {
        return forgotten
            .iter()
            .filter_map(|s| s.kept_native())
            .map(|n| {
                (
                    true,
                    format!("would destroy the {} snapshot {}", n.kind, n.handle),
                )
            })
            .collect();
    }
    pvsnap_ops::native::destroy_forgotten(&forgotten, &remaining)
}

/// Deletes the VolumeSnapshots of the forgotten CSI records that no kept
/// snapshot (a copy, say) records too; returns how many could not be.
fn forget_volume_snapshots(
    cli: &Cli,
    a: &ForgetArgs,
    report: &ForgetReport,
    records: &std::collections::HashMap<pvsnap_engine::repo::id::SnapshotId, pvsnap_ops::CsiRecord>,
) -> usize {
    let kept: std::collections::HashSet<&str> = report
        .snapshots
        .iter()
        .filter(|v| v.keep)
        .filter_map(|v| records.get(&v.id))
        .map(|r| r.handle.as_str())
        .collect();
    let mut gone: Vec<&pvsnap_ops::CsiRecord> = report
        .snapshots
        .iter()
        .filter(|v| !v.keep)
        .filter_map(|v| records.get(&v.id))
        .filter(|r| !kept.contains(r.handle.as_str()))
        .collect();
    gone.dedup_by(|x, y| x.handle == y.handle);
    if gone.is_empty() {
        return 0;
    }
    let kube = match crate::k8s::Kube::connect(&a.kube) {
        Ok(k) => k,
        Err(e) => {
            eprintln!(
                "pvsnap: the records are forgotten, but their VolumeSnapshots stay: {}; delete them with {}",
                output::error_text(&e),
                gone.iter()
                    .map(|r| kubectl_delete(&r.handle))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            return gone.len();
        }
    };
    let mut failed = 0;
    for r in gone {
        match kube.block_on(pvsnap_ops::forget_csi(kube.connected(), r)) {
            Ok(d) if !cli.quiet && !a.json => eprintln!(
                "pvsnap: {} volumesnapshot {}{}",
                if d.existed {
                    "deleted"
                } else {
                    "already gone:"
                },
                r.handle,
                match (d.deletion_policy.as_deref(), d.content.as_deref()) {
                    (Some("Retain"), Some(c)) => format!(
                        "; its class retains the storage's snapshot (volumesnapshotcontent {c}): delete that by hand when it is no longer needed"
                    ),
                    (Some(p), Some(c)) => format!(" (deletionPolicy {p}: content {c} goes too)"),
                    _ => String::new(),
                }
            ),
            Ok(_) => {}
            Err(e) => {
                failed += 1;
                eprintln!(
                    "pvsnap: the record is forgotten, but deleting volumesnapshot {} failed: {}; delete it with {}",
                    r.handle,
                    output::error_text(&super::ops_error(e)),
                    kubectl_delete(&r.handle)
                );
            }
        }
    }
    failed
}

fn kubectl_delete(handle: &str) -> String {
    let (ns, name) = handle.split_once('/').unwrap_or(("default", handle));
    format!("`kubectl delete volumesnapshot -n {ns} {name}`")
}

fn print_forget(r: &ForgetReport) -> Result<()> {
    // Buffered (a line per snapshot; standard output flushes each line).
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut group = None;
    for v in &r.snapshots {
        if group.as_ref() != Some(&v.group) {
            writeln!(out, "{}:", v.group)?;
            group = Some(v.group.clone());
        }
        let verdict = match (v.keep, r.dry_run) {
            (true, _) => "keep",
            (false, true) => "would remove",
            (false, false) => "removed",
        };
        writeln!(
            out,
            "  {verdict:<12} {}  {}  {}",
            v.short_id,
            output::local_time(v.time),
            v.reasons.join(", ")
        )?;
    }
    for id in &r.unreadable_removed {
        let verdict = if r.dry_run { "would remove" } else { "removed" };
        writeln!(
            out,
            "  {verdict:<12} {}  (unreadable snapshot object)",
            id.short()
        )?;
    }
    for u in &r.unreadable_skipped {
        writeln!(
            out,
            "  {:<12} {}  unreadable, left alone: remove it with `pvsnap forget {}`",
            "skipped",
            u.id.short(),
            u.id
        )?;
    }
    writeln!(
        out,
        "{} snapshot(s) kept, {} {}",
        r.kept,
        r.removed,
        if r.dry_run {
            "would be removed"
        } else {
            "removed"
        }
    )?;
    let trashed = r.removed - r.unreadable_removed.len();
    if trashed > 0 && !r.dry_run {
        writeln!(
            out,
            "{trashed} moved to the trash: `pvsnap undelete ID` brings one back until prune removes it (--keep-deleted, 7 days by default); `pvsnap snapshots --deleted` lists them"
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `pvsnap undelete SNAP`: writes the trashed snapshot back under the
/// shared lock (prune, which removes trash entries and data, takes the
/// exclusive one, so it cannot run meanwhile).
pub fn undelete(cli: &Cli, a: &UndeleteArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    let _lock = lock(&repo, false, "undelete")?;
    let snap = repo.undelete(&a.snapshot)?;
    crate::audit::note(
        Some(snap.source.key()),
        vec![snap.id.to_hex()],
        pvsnap_engine::repo::audit::Outcome::Ok,
        None,
    );
    if a.json {
        output::json(&super::snapshot::snapshot_json(&snap))?;
    } else if !cli.quiet {
        println!(
            "undeleted snapshot {} of {} at {}",
            snap.short_id(),
            snap.source.key(),
            output::local_time(snap.time)
        );
    }
    Ok(crate::exit::OK)
}

pub fn prune(cli: &Cli, a: &PruneArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    let held = Held::take(&repo, a.dry_run, "prune")?;
    let steps = Arc::new(Steps::default());
    let shown = Display::steps(cli.quiet || a.json, "prune", steps.clone());
    let r = prune::prune_with(&repo, held.access(), &prune_options(&a.tuning), &steps)?;
    drop(shown);
    if a.json {
        output::json(&r)?;
    } else if !cli.quiet {
        print_prune(&r);
    }
    Ok(crate::exit::OK)
}

fn print_prune(r: &PruneReport) {
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "prune: {} pack(s) {would}deleted, {} {would}repacked ({} blobs, {} copied), {} written; {} {would}freed ({} -> {}) in {:.2}s",
        r.packs_deleted,
        r.packs_repacked,
        r.blobs_repacked,
        output::bytes(r.bytes_repacked),
        r.packs_written,
        output::bytes(r.bytes_freed),
        output::bytes(r.bytes_before),
        output::bytes(r.bytes_after),
        r.duration_s
    );
    if r.leftovers_removed > 0 {
        println!(
            "prune: {} temporary file(s) of interrupted writes {would}removed ({})",
            r.leftovers_removed,
            output::bytes(r.leftover_bytes_removed)
        );
    }
    if r.leftovers_kept > 0 {
        println!(
            "prune: {} temporary file(s) younger than the grace period were left alone",
            r.leftovers_kept
        );
    }
    if r.unreferenced_packs_kept > 0 {
        println!(
            "prune: {} pack(s) that no index names are younger than the grace period and were left alone",
            r.unreferenced_packs_kept
        );
    }
}

pub fn check(cli: &Cli, a: &CheckArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    let _guard = lock(&repo, false, "check")?;
    let read = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => s,
        (false, None) => ReadData::None,
    };
    let steps = Arc::new(Steps::default());
    let shown = Display::steps(cli.quiet || a.json, "check", steps.clone());
    let r = check::check_with(&repo, read, &steps)?;
    drop(shown);
    if a.json {
        output::json(&r)?;
    } else {
        print_check(&r, cli.quiet)?;
    }
    Ok(if r.ok {
        crate::exit::OK
    } else {
        crate::exit::DAMAGED
    })
}

fn print_check(r: &CheckReport, quiet: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if !quiet {
        writeln!(
            out,
            "checked {} snapshot(s), {} index file(s), {} pack(s) ({} read in full), {} blob(s), {} tree(s)",
            r.snapshots, r.index_files, r.packs, r.packs_read, r.blobs, r.trees_checked
        )?;
        for w in &r.warnings {
            writeln!(out, "warning: {}", w.detail)?;
        }
    }
    for e in &r.errors {
        writeln!(out, "error: {}", e.detail)?;
    }
    for d in &r.damaged_snapshots {
        writeln!(
            out,
            "damaged snapshot {} of {} at {}:",
            d.id,
            d.source,
            output::local_time(d.time)
        )?;
        for p in &d.paths {
            writeln!(out, "  {}: {}", p.path, p.reason)?;
        }
        if let Some(copy) = d.repaired_as {
            writeln!(
                out,
                "  repaired as {}: this damaged original stays until it is forgotten; once the copy holds what you need, run `pvsnap forget {}`",
                copy.short(),
                d.id
            )?;
        }
    }
    if r.ok {
        if !quiet {
            writeln!(out, "no errors found")?;
        }
    } else {
        let repaired: Vec<String> = r
            .damaged_snapshots
            .iter()
            .filter(|d| d.repaired_as.is_some())
            .map(|d| d.id.to_string())
            .collect();
        let unrepaired = r.damaged_snapshots.len() - repaired.len();
        let mut next = Vec::new();
        if !r.errors.is_empty() {
            next.push("`pvsnap repair index` rebuilds a damaged index".to_string());
        }
        if unrepaired > 0 {
            next.push("`pvsnap repair snapshots` saves what is left".to_string());
        }
        if !repaired.is_empty() {
            next.push(format!(
                "{} damaged snapshot(s) have repaired copies: `pvsnap forget {}` removes the originals",
                repaired.len(),
                repaired.join(" ")
            ));
        }
        eprintln!(
            "pvsnap: {} error(s), {} damaged snapshot(s); {} (exit code 4)",
            r.errors.len(),
            r.damaged_snapshots.len(),
            next.join("; ")
        );
    }
    Ok(())
}

pub fn repair(cli: &Cli, a: &RepairArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    // The exclusive lock, for a dry run too.
    let guard = exclusive(&repo, "repair")?;
    let access = |dry_run: bool| {
        if dry_run {
            Access::DryRun
        } else {
            Access::Write(&guard)
        }
    };
    match &a.what {
        RepairWhat::Index { dry_run, json } => {
            let steps = Arc::new(Steps::default());
            let shown = Display::steps(cli.quiet || *json, "repair", steps.clone());
            let r = repair::repair_index_with(&repo, access(*dry_run), &steps)?;
            drop(shown);
            if *json {
                output::json(&r)?;
            } else if !cli.quiet {
                for p in &r.packs_salvaged {
                    println!(
                        "pack {}: trailer unreadable ({}); kept {} whole blob(s) the old index placed in it, left out {} lost or damaged one(s)",
                        p.pack, p.error, p.kept, p.dropped
                    );
                }
                for p in &r.packs_unreadable {
                    println!(
                        "pack {}: unreadable and in no old index, so it is left out: {}",
                        p.pack, p.error
                    );
                }
                for p in &r.packs_missing {
                    println!("pack {p}: named by the old index but missing");
                }
                println!(
                    "{}index of {} pack(s), {} blob(s): {} file(s) written, {} old file(s) deleted",
                    if *dry_run { "would write an " } else { "" },
                    r.packs,
                    r.blobs,
                    r.index_files_written,
                    r.index_files_deleted
                );
                if r.blobs_dropped > 0 {
                    println!(
                        "{} blob(s) are lost and no longer indexed: the next snapshot stores them again if their source still has them; `pvsnap check` names the snapshots that need them, `pvsnap repair snapshots` saves the rest of those",
                        r.blobs_dropped
                    );
                }
            }
        }
        RepairWhat::Snapshots {
            read_data,
            dry_run,
            json,
        } => {
            let steps = Arc::new(Steps::default());
            let shown = Display::steps(cli.quiet || *json, "repair", steps.clone());
            let r = repair::repair_snapshots_with(&repo, access(*dry_run), *read_data, &steps)?;
            drop(shown);
            if *json {
                output::json(&r)?;
            } else if !cli.quiet {
                for s in &r.repaired {
                    match s.repaired {
                        Some(new) => println!(
                            "snapshot {} of {}: repaired as {}, holding {} file(s), {}; lost:",
                            s.original.short(),
                            s.source,
                            new.short(),
                            s.files,
                            output::bytes(s.bytes)
                        ),
                        None => println!(
                            "snapshot {} of {}: would be repaired, holding {} file(s), {}; lost:",
                            s.original.short(),
                            s.source,
                            s.files,
                            output::bytes(s.bytes)
                        ),
                    }
                    for d in &s.lost {
                        println!("  {}: {}", d.path, d.reason);
                    }
                }
                for id in &r.already_repaired {
                    println!("snapshot {}: already has a repaired copy", id.short());
                }
                for u in &r.unreadable {
                    println!("cannot repair: {u}");
                }
                println!(
                    "{} snapshot(s) checked, {} repaired",
                    r.snapshots_checked,
                    r.repaired.len()
                );
                let originals: Vec<String> = r
                    .repaired
                    .iter()
                    .filter(|s| s.repaired.is_some())
                    .map(|s| s.original.to_string())
                    .collect();
                if !originals.is_empty() {
                    println!(
                        "the damaged originals stay, and `pvsnap check` reports them, until they are forgotten: once the copies hold what you need, run `pvsnap forget {}`",
                        originals.join(" ")
                    );
                }
            }
        }
    }
    Ok(crate::exit::OK)
}

pub fn policy(cli: &Cli, a: &PolicyArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    match &a.what {
        PolicyWhat::Set { name, keep } => {
            let _guard = lock(&repo, false, "policy set")?;
            let p = policy::set(
                &repo,
                name,
                keep.policy(),
                keep.group_by.unwrap_or_default(),
            )?;
            if !cli.quiet {
                println!("policy {}: {}", p.name, describe(&p));
            }
        }
        PolicyWhat::List { json } => {
            let all = policy::list(&repo)?;
            if *json {
                output::json(&all)?;
            } else {
                for p in &all {
                    println!(
                        "{:<16} {}{}",
                        p.name,
                        describe(p),
                        if p.builtin { " (built in)" } else { "" }
                    );
                }
            }
        }
        PolicyWhat::Show { name, json } => {
            let p = policy::get(&repo, name)?;
            if *json {
                output::json(&p)?;
            } else {
                println!("{}: {}", p.name, describe(&p));
                if !p.builtin {
                    println!("set {}", output::local_time(p.time));
                }
            }
        }
        PolicyWhat::Remove { name } => {
            let _guard = lock(&repo, false, "policy remove")?;
            if !policy::remove(&repo, name)? {
                bail!("no stored policy named `{name}`; list them with `pvsnap policy list`");
            }
        }
    }
    Ok(crate::exit::OK)
}

/// `--keep-hourly 24 --keep-daily 7 (group by source)`.
fn describe(p: &NamedPolicy) -> String {
    let k = &p.keep;
    let mut parts = Vec::new();
    for (flag, n) in [
        ("last", k.last),
        ("hourly", k.hourly),
        ("daily", k.daily),
        ("weekly", k.weekly),
        ("monthly", k.monthly),
        ("yearly", k.yearly),
    ] {
        if let Some(n) = n.filter(|n| *n > 0) {
            parts.push(format!("--keep-{flag} {n}"));
        }
    }
    if let Some(w) = k.within.filter(|w| !w.is_zero()) {
        parts.push(format!("--keep-within {w}"));
    }
    for t in &k.tags {
        parts.push(format!("--keep-tag {t}"));
    }
    format!(
        "{} (group by {})",
        parts.join(" "),
        if p.group_by == GroupBy::NONE {
            "nothing".to_string()
        } else {
            p.group_by.to_string()
        }
    )
}
