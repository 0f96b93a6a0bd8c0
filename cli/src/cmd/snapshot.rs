//! `pvsnap snapshot SOURCE...`: folders, and Kubernetes claims
//! (`pvc/NAMESPACE/NAME`, `--all-pvcs`).
//!
//! Each source is its own timeline. A claim is resolved to its volume's
//! directory on this node, its running pods' backup hooks run around the
//! read (see `pvsnap_k8s::with_hooks`), and the snapshot records the claim
//! and the hook outcomes. A claim that is refused or fails is reported and
//! the others still run; the exit code is 1 then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, anyhow, bail};
use pvsnap_engine::IndexedRepository;
use pvsnap_engine::backup::{self, BackupOptions, PendingSnapshot, Progress};
use pvsnap_engine::snapshot::{Snapshot, Source};
use pvsnap_k8s::{BodyOutcome, ClaimRef, HostHook, PodRef, Scope};

use crate::k8s::{self, Kube, KubeArgs};
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
    /// Run this shell command on the host before each source is read; when it fails, that source is skipped
    #[arg(long, value_name = "CMD")]
    pub pre_hook: Option<String>,
    /// Run this shell command on the host after each source is read, whenever the pre hook ran
    #[arg(long, value_name = "CMD")]
    pub post_hook: Option<String>,
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
    #[command(flatten)]
    pub kube: KubeArgs,
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
struct Run<'a> {
    cli: &'a Cli,
    args: &'a Args,
    repo: IndexedRepository,
    existing: Vec<Snapshot>,
    taken: Vec<Snapshot>,
    kube: Option<Kube>,
    pre: Option<HostHook>,
    post: Option<HostHook>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let mut folders: Vec<&Path> = Vec::new();
    let mut claims: Vec<ClaimRef> = Vec::new();
    for p in &a.paths {
        if let Some(claim) = k8s::claim_argument(p) {
            claims.push(claim?);
            continue;
        }
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => folders.push(p),
            Ok(_) => bail!("{}: not a folder; pvsnap snapshots folders", p.display()),
            Err(e) => bail!("{}: cannot snapshot: {e}; check the path", p.display()),
        }
    }
    let named_claims = claims.len();
    let pre = a.pre_hook.as_ref().map(HostHook::new);
    let post = a.post_hook.as_ref().map(HostHook::new);
    let kube = if !claims.is_empty() || a.all_pvcs {
        Some(Kube::connect(&a.kube)?)
    } else if pre.is_some() || post.is_some() {
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

    let repo = crate::repo::open(cli, true, a.dry_run)?;
    let (repo, _lock) = super::locked(repo, false, "snapshot")?;
    // A damaged snapshot object is no parent: warn and look past it.
    let (existing, bad) = repo.snapshots_lenient()?;
    pvsnap_engine::repo::warn_unreadable_snapshots(&bad);
    let mut run = Run {
        cli,
        args: a,
        repo,
        existing,
        taken: Vec::new(),
        kube,
        pre,
        post,
    };
    let sources = folders.len() + claims.len();
    let mut failed: Vec<String> = Vec::new();
    for path in folders {
        let abs = std::fs::canonicalize(path)
            .with_context(|| format!("{}: cannot resolve", path.display()))?;
        let source = Source::Path {
            path: abs.to_string_lossy().into_owned(),
        };
        if let Err(e) = run.one(&abs, source, &[]) {
            if run.kube.is_none() {
                return Err(e);
            }
            eprintln!("pvsnap: {}: {e:#}", abs.display());
            failed.push(abs.display().to_string());
        }
    }
    // Claims listed by --all-pvcs (after the named ones) that live on
    // another node are that node's to snapshot: a notice, not a failure.
    let mut elsewhere = 0;
    for (i, claim) in claims.iter().enumerate() {
        let Err(e) = run.claim(claim) else { continue };
        let other_node = matches!(
            e.downcast_ref::<pvsnap_k8s::Error>(),
            Some(pvsnap_k8s::Error::WrongNode { .. })
        );
        if i >= named_claims && other_node {
            elsewhere += 1;
            if !cli.quiet {
                eprintln!("pvsnap: {}: skipped: {e:#}", k8s::claim_key(claim));
            }
            continue;
        }
        eprintln!("pvsnap: {}: {e:#}", k8s::claim_key(claim));
        failed.push(k8s::claim_key(claim));
    }
    let sources = sources - elsewhere;

    if a.json {
        let v: Vec<serde_json::Value> = run.taken.iter().map(snapshot_json).collect();
        output::json(&v)?;
    }
    if !failed.is_empty() {
        eprintln!(
            "pvsnap: {} of {} source(s) failed: {} (exit code 1)",
            failed.len(),
            sources,
            failed.join(", ")
        );
        return Ok(crate::exit::ERROR);
    }
    let lost = run
        .taken
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

impl Run<'_> {
    /// Resolves a claim and snapshots its volume between its pods' hooks.
    fn claim(&mut self, claim: &ClaimRef) -> Result<()> {
        let kube = self.kube.as_ref().expect("connected for claims");
        let cluster = kube.connected();
        let resolved = kube.block_on(cluster.resolve_claim(
            &claim.namespace,
            &claim.name,
            &self.args.kube.resolve_options(),
        ))?;
        let dir = &resolved.host_path;
        if !dir.is_dir() {
            let mapped = match &self.args.kube.host_root {
                Some(root) => format!(
                    " (volume path {} below --host-root {})",
                    resolved.volume_path.display(),
                    root.display()
                ),
                None => String::new(),
            };
            bail!(
                "volume directory {}{mapped} of persistentvolume {} is not a folder on this host; is pvsnap running on node {} with the host's storage mounted?",
                dir.display(),
                resolved.pv,
                resolved.node.as_deref().unwrap_or("of the volume")
            );
        }
        let pods = kube.block_on(cluster.pods_mounting(&claim.namespace, &claim.name))?;
        let dir = dir.clone();
        self.one(&dir, k8s::source_of(&resolved), &pods)
    }

    /// Snapshots `dir` as `source`, between the host hooks and the pod
    /// hooks of `pods` when there are any.
    fn one(&mut self, dir: &Path, source: Source, pods: &[PodRef]) -> Result<()> {
        let a = self.args;
        let opts = BackupOptions {
            parent: backup::find_parent(&self.existing, &source)
                .or_else(|| backup::find_parent(&self.taken, &source)),
            source: Some(source),
            excludes: a.excludes.clone(),
            one_file_system: a.one_file_system,
            time: a.time,
            tags: a.tags.clone(),
            labels: a.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            hostname: a.host.clone(),
            hooks: vec![],
        };
        let show = !(self.cli.quiet || a.json);
        let store = || -> pvsnap_engine::Result<PendingSnapshot> {
            let progress = Arc::new(Progress::default());
            let _shown = {
                let p = progress.clone();
                crate::progress::Display::start(
                    !show,
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
            backup::store(&self.repo, dir, &opts, &progress)
        };
        let (pending, post_failure) = match &self.kube {
            None => (store()?, None),
            Some(kube) => {
                let cluster = if pods.is_empty() {
                    None
                } else {
                    kube.cluster()
                };
                let hooked = kube.block_on(pvsnap_k8s::with_hooks(
                    cluster,
                    pods,
                    self.pre.as_ref(),
                    self.post.as_ref(),
                    || async { store() },
                ));
                let outcomes: Vec<serde_json::Value> = hooked
                    .outcomes()
                    .map(|o| serde_json::to_value(o).expect("hook outcome serializes"))
                    .collect();
                let post_failure = hooked
                    .post
                    .iter()
                    .find(|o| o.is_fatal())
                    .map(|o| format!("the snapshot was saved, but the {}", k8s::hook_line(o)));
                let lines: Vec<String> = hooked.outcomes().map(k8s::hook_line).collect();
                match hooked.body {
                    BodyOutcome::Skipped { reason } => {
                        for l in lines {
                            eprintln!("  {l}");
                        }
                        return Err(anyhow!("skipped, no snapshot taken: {reason}"));
                    }
                    BodyOutcome::Ran(Err(e)) => return Err(e.into()),
                    BodyOutcome::Ran(Ok(mut pending)) => {
                        pending.add_hooks(outcomes);
                        (pending, post_failure)
                    }
                }
            }
        };
        let outcome = pending.commit(&mut self.repo)?;
        if show {
            print_human(&outcome.snapshot, a.dry_run);
        }
        self.taken.push(outcome.snapshot);
        match post_failure {
            Some(f) => Err(anyhow!(f)),
            None => Ok(()),
        }
    }
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
