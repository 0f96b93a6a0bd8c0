//! `pvsnap snapshot SOURCE...`: folders, and Kubernetes claims
//! (`pvc/NAMESPACE/NAME`, `--all-pvcs`).
//!
//! Each source is its own timeline. A claim is resolved to its volume's
//! directory on this node, its running pods' backup hooks run around the
//! read, and the snapshot records the claim and the hook outcomes (the
//! workflow is `pvsnap_ops::SnapshotRun`). A claim that is refused or fails
//! is reported and the others still run; the exit code is 1 then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use pvsnap_engine::backup::Checkpoints;
use pvsnap_engine::snapshot::Snapshot;
use pvsnap_k8s::{ClaimRef, HostHook, Scope};
use pvsnap_ops::{
    HostHooks, NativeOptions, SnapshotOptions, SnapshotRun, SourceSnapshotMode, Taken,
};

use crate::k8s::{self, Kube, KubeArgs};
use crate::progress::Bars;
use crate::{Cli, output};

#[derive(clap::Args)]
pub struct Args {
    /// Folders, and claims written pvc/NAMESPACE/NAME; each is its own source with its own timeline
    #[arg(required_unless_present = "all_pvcs", value_name = "SOURCE")]
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
    /// Run this shell command on the host before each source is read; when it fails, that source is skipped. It finds PVSNAP_HOOK=pre, PVSNAP_SOURCE and PVSNAP_SNAPSHOT_PATH (the folder read) in its environment
    #[arg(long, value_name = "CMD")]
    pub pre_hook: Option<String>,
    /// Run this shell command on the host after each source is read, whenever the pre hook ran (PVSNAP_HOOK=post, PVSNAP_SOURCE, PVSNAP_SNAPSHOT_PATH)
    #[arg(long, value_name = "CMD")]
    pub post_hook: Option<String>,
    /// Read each source through a native snapshot of its storage (btrfs): auto (where the storage can, else the live folder), required (fail where it cannot), off (the live folder)
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub source_snapshot: SourceSnapshotArg,
    /// Keep only a native snapshot of each source as a restore point, read nothing (needs native snapshots; restore it with `restore SNAP --target`, `--rollback` or `--clone-to`)
    #[arg(long, conflicts_with_all = ["dry_run", "keep_native"])]
    pub native_only: bool,
    /// After reading through a native snapshot, keep it, and the last N kept ones of each source, for instant rollback
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "dry_run")]
    pub keep_native: Option<u32>,
    /// Room for a thick LVM snapshot: a share of the origin (`20%`, the default) or a size (`10G`); it must hold what changes while it is read
    #[arg(long, value_name = "SIZE", value_parser = pvsnap_native::lvm::SnapshotSize::parse)]
    pub lvm_snapshot_size: Option<pvsnap_native::lvm::SnapshotSize>,
    /// Freeze this database while the native snapshot is made: postgres, mysql or mongodb (for folders on this host; for claims in the pod that mounts the claim, over exec)
    #[arg(long, value_name = "DATABASE", value_parser = clap::builder::PossibleValuesParser::new(pvsnap_native::freeze::PRESETS))]
    pub freeze: Option<String>,
    /// Snapshot every claim of the namespace (--namespace, default: the kubeconfig's) or of all namespaces
    #[arg(long, help_heading = "Kubernetes")]
    pub all_pvcs: bool,
    /// Namespace for --all-pvcs
    #[arg(
        long,
        short = 'n',
        value_name = "NS",
        requires = "all_pvcs",
        conflicts_with = "all_namespaces",
        help_heading = "Kubernetes"
    )]
    pub namespace: Option<String>,
    /// With --all-pvcs: claims of every namespace
    #[arg(long, short = 'A', requires = "all_pvcs", help_heading = "Kubernetes")]
    pub all_namespaces: bool,
    /// With --all-pvcs: only claims whose labels match this selector (e.g. backup=daily)
    #[arg(
        long = "selector",
        short = 'l',
        value_name = "SELECTOR",
        requires = "all_pvcs",
        help_heading = "Kubernetes"
    )]
    pub selector: Option<String>,
    /// For claims a CSI driver provides: the VolumeSnapshotClass (default: the driver's default class)
    #[arg(long, value_name = "CLASS", help_heading = "Kubernetes")]
    pub snapshot_class: Option<String>,
    /// For claims a CSI driver provides: how long to wait for the VolumeSnapshot to be ready (e.g. 90s, 5m)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout, help_heading = "Kubernetes")]
    pub csi_timeout: std::time::Duration,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SourceSnapshotArg {
    Auto,
    Required,
    Off,
}

/// The native snapshot options of a run, or why they do not go together.
fn native_options(a: &Args) -> Result<(NativeOptions, Option<Box<dyn pvsnap_native::Freezer>>)> {
    let mode = match a.source_snapshot {
        SourceSnapshotArg::Auto => SourceSnapshotMode::Auto,
        SourceSnapshotArg::Required => SourceSnapshotMode::Required,
        SourceSnapshotArg::Off => SourceSnapshotMode::Off,
    };
    if mode == SourceSnapshotMode::Off
        && (a.native_only || a.keep_native.is_some() || a.freeze.is_some())
    {
        return Err(anyhow!(
            "--source-snapshot off reads the live folder, so --native-only, --keep-native and --freeze have nothing to act on; drop one or the other"
        ));
    }
    let freezer = match &a.freeze {
        Some(name) => Some(pvsnap_native::freeze::preset(
            name,
            pvsnap_native::freeze::Options::default(),
        )?),
        None => None,
    };
    Ok((
        NativeOptions {
            // A restore point with no native snapshot would be nothing.
            mode: if a.native_only {
                SourceSnapshotMode::Required
            } else {
                mode
            },
            native_only: a.native_only,
            keep_native: a.keep_native.map(|n| n as usize),
            lvm_snapshot_size: a.lvm_snapshot_size,
            freeze: a.freeze.as_deref().map(str::parse).transpose()?,
        },
        freezer,
    ))
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    pvsnap_k8s::parse_go_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not a duration such as 90s, 5m or 1h30m"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

/// An RFC 3339 time with `Z` or an offset of at most ±24:00 (jiff alone
/// takes up to ±25:59:59, which no place on earth uses).
pub fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    use jiff::fmt::temporal::{Pieces, PiecesOffset};
    let example = "such as 2026-11-21T10:00:00Z or 2026-11-21T11:00:00+01:00";
    let t = s
        .parse::<jiff::Timestamp>()
        .map_err(|e| format!("`{s}` is not an RFC 3339 time {example}: {e}"))?;
    if let Ok(Some(PiecesOffset::Numeric(n))) = Pieces::parse(s).map(|p| p.offset())
        && n.offset().seconds().unsigned_abs() > 24 * 3600
    {
        return Err(format!(
            "`{s}`: the offset {} is beyond ±24:00; give the time {example}",
            n.offset()
        ));
    }
    Ok(t)
}

/// What one run shares between its sources.
struct Run<'a, 'r> {
    cli: &'a Cli,
    args: &'a Args,
    session: SnapshotRun<'r>,
    kube: Option<Kube>,
    host: HostHooks,
    bars: Bars,
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    // Ctrl-C, SIGTERM: stop cleanly from here on (see `crate::interrupt`).
    let stop = crate::interrupt::clean_stop(crate::interrupt::STORING);
    let mut folders: Vec<PathBuf> = Vec::new();
    let mut claims: Vec<ClaimRef> = Vec::new();
    // A source that cannot be snapshotted is reported, and the others still
    // run; the exit code is 1 then.
    let mut failed: Vec<String> = Vec::new();
    for p in &a.paths {
        if let Some(claim) = k8s::claim_argument(p) {
            claims.push(claim?);
            continue;
        }
        match folder_source(p, cli.quiet) {
            Ok(abs) => folders.push(abs),
            Err(why) => {
                eprintln!("pvsnap: {}: {why}", p.display());
                failed.push(p.display().to_string());
            }
        }
    }
    if folders.is_empty() && claims.is_empty() && !a.all_pvcs {
        // Nothing is left to snapshot: the repository is not created. An
        // existing one records the failed runs in its audit trail, so that
        // `status` and `metrics` count them (a source that never worked).
        if !a.dry_run && crate::repo::open(cli, false, false).is_ok() {
            for f in &failed {
                audit_note(
                    f,
                    &[],
                    Some("cannot snapshot it; see the message above"),
                    false,
                );
            }
        }
        eprintln!(
            "pvsnap: {} of {} source(s) failed: {}; nothing was saved (exit code 1)",
            failed.len(),
            failed.len(),
            failed.join(", ")
        );
        return Ok(crate::exit::ERROR);
    }
    if claims.is_empty() && !a.all_pvcs {
        warn_excludes_outside(&a.excludes, &folders);
    }
    let named_claims = claims.len();
    let host = HostHooks {
        pre: a.pre_hook.as_ref().map(HostHook::new),
        post: a.post_hook.as_ref().map(HostHook::new),
    };
    let kube = if !claims.is_empty() || a.all_pvcs {
        Some(Kube::connect(&a.kube)?)
    } else if host.pre.is_some() || host.post.is_some() {
        Some(Kube::runtime_only()?)
    } else {
        None
    };
    if a.all_pvcs {
        let k = kube.as_ref().expect("connected for --all-pvcs");
        let cluster = k.connected();
        let scope = match (&a.namespace, a.all_namespaces) {
            (_, true) => Scope::AllNamespaces,
            (Some(ns), false) => Scope::Namespace(ns.clone()),
            (None, false) => Scope::Namespace(cluster.client().default_namespace().to_string()),
        };
        let listed = k.block_on(cluster.list_claims(scope.clone(), a.selector.as_deref()))?;
        if listed.is_empty() && !cli.quiet {
            eprintln!(
                "pvsnap: no persistentvolumeclaims in {scope:?} match{}",
                a.selector
                    .as_ref()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default()
            );
        }
        for c in listed {
            if !claims.contains(&c) {
                claims.push(c);
            }
        }
    }

    let (native, freezer) = native_options(a)?;
    let repo = crate::repo::open(cli, true, a.dry_run)?;
    let (mut repo, _lock) = super::locked(repo, false, "snapshot")?;
    let options = SnapshotOptions {
        csi: pvsnap_ops::CsiOptions {
            class: a.snapshot_class.clone(),
            timeout: a.csi_timeout,
            dry_run: a.dry_run,
        },
        excludes: a.excludes.clone(),
        one_file_system: a.one_file_system,
        time: a.time,
        tags: a.tags.clone(),
        labels: a.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        hostname: a.host.clone(),
        checkpoints: checkpoints()?,
        stop,
    };
    let mut run = Run {
        cli,
        args: a,
        session: SnapshotRun::new(&mut repo, options)
            .map_err(super::ops_error)?
            .with_native(native, freezer),
        kube,
        host,
        bars: Bars {
            hidden: cli.quiet || a.json,
        },
    };
    let sources = failed.len() + folders.len() + claims.len();
    let mut stopped = Stopped::default();
    // One audit entry per source, also for those that failed early.
    for f in &failed {
        audit_note(
            f,
            &[],
            Some("cannot snapshot it; see the message above"),
            false,
        );
    }
    for abs in &folders {
        if stopped.skip(abs.display()) {
            audit_note(
                &abs.display(),
                &[],
                Some("not started: stopped by a signal"),
                true,
            );
            continue;
        }
        let before = run.session.taken().len();
        let r = run.folder(abs);
        let new = &run.session.taken()[before..];
        match r {
            Ok(_) => audit_note(&abs.display(), new, None, false),
            Err(e) if stopped.kept(&e, abs.display()) => {
                audit_note(&abs.display(), new, Some("stopped by a signal"), true)
            }
            Err(e) => {
                eprintln!("pvsnap: {}: {}", abs.display(), output::error_text(&e));
                audit_note(&abs.display(), new, Some(&output::error_text(&e)), false);
                failed.push(abs.display().to_string());
            }
        }
    }
    // Claims listed by --all-pvcs (after the named ones) that live on
    // another node are that node's to snapshot: a notice, not a failure.
    let mut elsewhere = 0;
    for (i, claim) in claims.iter().enumerate() {
        let key = k8s::claim_key(claim);
        if stopped.skip(&key) {
            audit_note(&key, &[], Some("not started: stopped by a signal"), true);
            continue;
        }
        let before = run.session.taken().len();
        let r = run.claim(claim);
        let new = &run.session.taken()[before..];
        let Err(e) = r else {
            audit_note(&key, new, None, false);
            continue;
        };
        if stopped.kept(&e, &key) {
            audit_note(&key, new, Some("stopped by a signal"), true);
            continue;
        }
        let other_node = matches!(
            e.downcast_ref::<pvsnap_k8s::Error>(),
            Some(pvsnap_k8s::Error::WrongNode { .. })
        );
        if i >= named_claims && other_node {
            elsewhere += 1;
            if !cli.quiet {
                eprintln!(
                    "pvsnap: {}: skipped: {}",
                    k8s::claim_key(claim),
                    output::error_text(&e)
                );
            }
            continue;
        }
        eprintln!("pvsnap: {key}: {}", output::error_text(&e));
        audit_note(&key, new, Some(&output::error_text(&e)), false);
        failed.push(key);
    }
    let sources = sources - elsewhere;
    for f in run.session.release_native() {
        eprintln!("pvsnap: warning: releasing a native snapshot: {f}");
    }
    let taken = run.session.taken();

    if a.json {
        let v: Vec<serde_json::Value> = taken.iter().map(snapshot_json).collect();
        output::json(&v)?;
    }
    if let Some(code) = stopped.report(taken.len(), a.dry_run) {
        return Ok(code);
    }
    if !failed.is_empty() {
        eprintln!(
            "pvsnap: {} of {} source(s) failed: {}; {} snapshot(s) {} (exit code 1)",
            failed.len(),
            sources,
            failed.join(", "),
            taken.len(),
            if a.dry_run { "would be saved" } else { "saved" }
        );
        return Ok(crate::exit::ERROR);
    }
    let lost: usize = taken.iter().map(missing_paths).sum();
    if lost > 0 {
        eprintln!(
            "pvsnap: {lost} path(s) could not be read; the snapshot is incomplete (exit code 3)"
        );
        return Ok(crate::exit::INCOMPLETE);
    }
    Ok(crate::exit::OK)
}

/// Adds the audit entry of one source: ok without `error`, else failed
/// or (`stopped`) interrupted.
fn audit_note(
    source: &dyn std::fmt::Display,
    taken: &[pvsnap_engine::snapshot::Snapshot],
    error: Option<&str>,
    stopped: bool,
) {
    use pvsnap_engine::repo::audit::Outcome;
    let outcome = match (error, stopped) {
        (None, _) => Outcome::Ok,
        (Some(_), true) => Outcome::Interrupted,
        (Some(_), false) => Outcome::Failed,
    };
    crate::audit::note(
        Some(source.to_string()),
        taken.iter().map(|s| s.id.to_hex()).collect(),
        outcome,
        error.map(str::to_string),
    );
}

/// When index checkpoints are written. `PVSNAP_CHECKPOINT_BYTES` (a test
/// knob, not a setting: tests of kill -9 make checkpoints frequent) replaces
/// the bytes between two.
fn checkpoints() -> Result<Checkpoints> {
    let mut c = Checkpoints::default();
    if let Some(v) = std::env::var_os("PVSNAP_CHECKPOINT_BYTES") {
        c.bytes = v
            .to_str()
            .and_then(|v| v.parse().ok())
            .filter(|&b| b > 0)
            .ok_or_else(|| {
                anyhow!("PVSNAP_CHECKPOINT_BYTES={v:?} is not a positive number of bytes; unset it")
            })?;
    }
    Ok(c)
}

/// What a stop by SIGINT or SIGTERM left: the source it interrupted, what
/// that source kept, and the sources it never started.
#[derive(Default)]
struct Stopped {
    /// The interrupted source, packs and bytes kept.
    interrupted: Option<(String, usize, u64)>,
    not_started: Vec<String>,
}

impl Stopped {
    /// True (and the source is noted) once a stop was asked for.
    fn skip(&mut self, source: impl std::fmt::Display) -> bool {
        let stop = crate::interrupt::received().is_some();
        if stop {
            self.not_started.push(source.to_string());
        }
        stop
    }

    /// True when `e` is the stop of `source` (noted); false for a failure.
    fn kept(&mut self, e: &anyhow::Error, source: impl std::fmt::Display) -> bool {
        match e.downcast_ref::<pvsnap_engine::Error>() {
            Some(pvsnap_engine::Error::Interrupted { packs, bytes }) => {
                self.interrupted = Some((source.to_string(), *packs, *bytes));
                true
            }
            _ => false,
        }
    }

    /// Says what a stop kept; the exit code (130, 143) when there was one.
    fn report(&self, saved: usize, dry_run: bool) -> Option<u8> {
        let signal = crate::interrupt::received()?;
        let mut said = vec![];
        if let Some((source, _, _)) = &self.interrupted
            && dry_run
        {
            said.push(format!("{source} was stopped; a dry run stores nothing"));
        } else if let Some((source, packs, bytes)) = &self.interrupted {
            said.push(format!(
                "kept {} in {packs} pack(s); the next snapshot of {source} stores only what is missing",
                output::bytes(*bytes)
            ));
        }
        if saved > 0 {
            said.push(format!("{saved} snapshot(s) saved before"));
        }
        if !self.not_started.is_empty() {
            said.push(format!("not started: {}", self.not_started.join(", ")));
        }
        if said.is_empty() {
            said.push("every snapshot was saved".into());
        }
        eprintln!(
            "pvsnap: interrupted: {} (exit code {})",
            said.join("; "),
            crate::interrupt::exit_code(signal)
        );
        Some(crate::interrupt::exit_code(signal))
    }
}

/// Warns about a host path given to `--exclude` that lies in no source
/// folder: it would silently exclude nothing (a full host path inside a
/// source is taken as the pattern anchored there, see
/// `pvsnap_engine::tree::filter::Excludes::for_root`).
fn warn_excludes_outside(excludes: &[String], folders: &[PathBuf]) {
    let roots: Vec<PathBuf> = folders
        .iter()
        .filter_map(|f| std::fs::canonicalize(f).ok())
        .collect();
    for p in excludes {
        let Some(rel) = p.strip_prefix('/') else {
            continue;
        };
        let literal = !p.contains(['*', '?', '[', '{', '\\']);
        let inside = |r: &PathBuf| Path::new(p).starts_with(r) || r.join(rel).exists();
        if literal && Path::new(p).exists() && !roots.iter().any(inside) {
            eprintln!(
                "pvsnap: warning: --exclude {p} is not inside the source folder(s) {}, so it excludes nothing. A pattern with a leading / is anchored at each source folder; give a path inside the source, as a full host path or relative to the source",
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

/// The folder a source argument names, as the absolute path recorded as
/// the source, or why it cannot be snapshotted. A symbolic link to a folder
/// is followed: the folder it resolves to is the source (said on standard
/// error, so the next run may name that folder directly).
fn folder_source(p: &Path, quiet: bool) -> Result<PathBuf, String> {
    let link = std::fs::symlink_metadata(p)
        .map_err(|e| format!("cannot snapshot: {e}; check the path"))?
        .is_symlink();
    let target = || {
        std::fs::read_link(p)
            .map(|t| t.display().to_string())
            .unwrap_or_default()
    };
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if link => {
            return Err(format!(
                "a symbolic link to {}, which cannot be reached: {e}; check the link",
                target()
            ));
        }
        Err(e) => return Err(format!("cannot snapshot: {e}; check the path")),
    };
    if !meta.is_dir() {
        return Err(if link {
            format!(
                "a symbolic link to {}, which is not a folder; pvsnap snapshots folders",
                target()
            )
        } else {
            "not a folder; pvsnap snapshots folders".to_string()
        });
    }
    let abs = std::fs::canonicalize(p).map_err(|e| format!("cannot resolve: {e}"))?;
    if link && !quiet {
        eprintln!(
            "pvsnap: {} is a symbolic link: snapshotting the folder it resolves to, {}, recorded as the source",
            p.display(),
            abs.display()
        );
    }
    Ok(abs)
}

impl Run<'_, '_> {
    /// Snapshots a folder, between the host hooks when there are any.
    fn folder(&mut self, dir: &Path) -> Result<()> {
        let taken = match &self.kube {
            None => self.session.folder(dir, &self.bars),
            Some(kube) => kube.block_on(self.session.hooked_folder(dir, &self.host, &self.bars)),
        };
        self.show(taken)
    }

    /// Resolves a claim and snapshots its volume between its pods' hooks.
    fn claim(&mut self, claim: &ClaimRef) -> Result<()> {
        let kube = self.kube.as_ref().expect("connected for claims");
        let taken = kube.block_on(self.session.claim(
            kube.connected(),
            claim,
            &self.args.kube.resolve_options(),
            &self.host,
            &self.bars,
        ));
        self.show(taken)
    }

    /// Prints a committed snapshot; a post hook that failed after it was
    /// read still fails its source. A source skipped by a pre hook lists
    /// the hooks that ran.
    fn show(&self, taken: pvsnap_ops::Result<Taken>) -> Result<()> {
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                // The failed pre hook is the error's reason; the other
                // hooks that ran are listed.
                if let pvsnap_ops::Error::Skipped { hooks, .. } = &e {
                    for h in hooks {
                        if !(h.phase == pvsnap_k8s::HookPhase::Pre && h.is_fatal()) {
                            eprintln!("  {}", k8s::hook_line(h));
                        }
                    }
                }
                return Err(super::ops_error(e));
            }
        };
        for line in &taken.native_pruned {
            if !self.cli.quiet {
                eprintln!("pvsnap: --keep-native: {line}");
            }
        }
        if !(self.cli.quiet || self.args.json) {
            print_human(&taken.snapshot, self.args.dry_run);
        } else {
            // Hooks that failed without stopping the snapshot are said
            // once, here, when the summary with its hook lines is not shown.
            for h in k8s::recorded_hooks(&taken.snapshot.hooks) {
                if !h.ok && taken.post_hook_failure.as_ref() != Some(&h) {
                    eprintln!(
                        "pvsnap: {}: {}",
                        taken.snapshot.source.key(),
                        k8s::hook_line(&h)
                    );
                }
            }
        }
        match taken.post_hook_failure {
            Some(o) => Err(anyhow!(
                "the snapshot was saved, but the {}",
                k8s::hook_line(&o)
            )),
            None => Ok(()),
        }
    }
}

/// A snapshot as JSON, with `short_id`, `incomplete` and `missing_paths`
/// added.
pub fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(s).expect("snapshot serializes");
    if let Some(o) = v.as_object_mut() {
        o.insert("short_id".into(), s.short_id().into());
        let missing = missing_paths(s);
        o.insert("incomplete".into(), (missing > 0).into());
        o.insert("missing_paths".into(), missing.into());
        if let Some(r) = pvsnap_ops::csi_record(s) {
            o.insert(
                pvsnap_ops::SOURCE_SNAPSHOT.into(),
                serde_json::to_value(r).expect("record serializes"),
            );
        }
    }
    v
}

/// How many paths of the source the snapshot lacks: unreadable or vanished
/// while it was taken, or removed by `repair snapshots` (its `errors`).
pub fn missing_paths(s: &Snapshot) -> usize {
    s.errors.iter().filter(|e| e.is_loss()).count()
}

fn print_human(s: &Snapshot, dry_run: bool) {
    let m = &s.summary;
    // A CSI record says more than the native line: the class, the content.
    if let Some(r) = pvsnap_ops::csi_record(s) {
        let c = &r.snapshot;
        println!(
            "snapshot {} of {}: CSI VolumeSnapshot {} (class {}, content {}, restore size {}), cut in {:.2}s, ready in {:.2}s; nothing was read into the repository",
            s.short_id(),
            s.source.key(),
            r.handle,
            c.class.as_deref().unwrap_or("?"),
            c.content.as_deref().unwrap_or("?"),
            c.restore_size.as_deref().unwrap_or("?"),
            r.create_s,
            r.ready_s
        );
        for h in k8s::recorded_hooks(&s.hooks) {
            println!("  {}", k8s::hook_line(&h));
        }
        return;
    }
    if let Some(n) = s.source_snapshot.as_ref().filter(|n| n.native_only) {
        println!(
            "native restore point {} of {}: {} snapshot {} of {}, made in {:.3}s",
            s.short_id(),
            s.source.key(),
            n.kind,
            n.handle,
            n.volume,
            n.create_s
        );
        return;
    }
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
    if let Some(n) = &s.source_snapshot {
        println!(
            "  read from the {} snapshot {} of {}, made in {:.3}s, frozen {:.3}s; {}",
            n.kind,
            n.name,
            n.volume,
            n.create_s,
            n.freeze_window_s,
            if n.kept {
                format!("kept at {}", n.handle)
            } else {
                "removed after the read".to_string()
            }
        );
    }
    for h in k8s::recorded_hooks(&s.hooks) {
        println!("  {}", k8s::hook_line(&h));
    }
    for e in &s.errors {
        println!("  {}: {} ({})", e.kind, e.path, e.message);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_with_offsets_beyond_a_day_are_refused() {
        for ok in [
            "2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00+01:00",
            "2026-11-21T10:00:00-24:00",
            "2026-11-21T10:00:00+24:00",
        ] {
            assert!(super::parse_time(ok).is_ok(), "{ok}");
        }
        for bad in [
            "2026-11-21T10:00:00+25:00",
            "2026-11-21T10:00:00-24:01",
            "2026-11-21T10:00:00+24:00:01",
            "2026-02-30T10:00:00Z",
            "2026-11-21T24:00:01Z",
            "2026-11-21T10:00:00",
            "",
        ] {
            assert!(super::parse_time(bad).is_err(), "{bad}");
        }
        assert!(
            super::parse_time("2026-11-21T10:00:00+25:00")
                .unwrap_err()
                .contains("beyond ±24:00")
        );
    }
}
