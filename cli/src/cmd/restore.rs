//! `pvsnap restore SNAP --target DIR`, and into Kubernetes claims
//! (`--to-pvc`, `--to-new-pvc`: see `restore_pvc`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use pvsnap_engine::restore::{
    self, Overwrite, Preview, RestoreOptions, RestoreProgress, RestoreSummary,
};
use pvsnap_engine::snapshot::Snapshot;
use pvsnap_ops::Observer;

use crate::progress::Bars;
use crate::{Cli, output};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: an id, a unique prefix, `latest` (of the --to-pvc claim, or of the only source) or `latest:SOURCE`
    pub snapshot: String,
    /// Folder to restore into; the snapshot's root content lands directly in it
    #[arg(long, required_unless_present_any = ["to_pvc", "to_new_pvc", "rollback", "clone_to"], conflicts_with_all = ["to_pvc", "to_new_pvc", "rollback", "clone_to"])]
    pub target: Option<PathBuf>,
    /// Return the source's volume to the native snapshot the snapshot keeps (btrfs: the live subvolume is set aside and replaced); stop what writes to the folder first (a claim's workloads are scaled down and back, as with --to-pvc), and confirm with --yes
    #[arg(long, conflicts_with_all = ["to_pvc", "to_new_pvc", "clone_to", "path", "includes", "excludes", "delete", "dry_run"])]
    pub rollback: bool,
    /// Make a writable copy of the native snapshot the snapshot keeps at PATH, sharing its data (btrfs: a snapshot; PATH on the same filesystem)
    #[arg(long, value_name = "PATH", conflicts_with_all = ["to_pvc", "to_new_pvc", "path", "includes", "excludes", "delete", "dry_run"])]
    pub clone_to: Option<PathBuf>,
    /// When --target is a symlink, restore into the folder it points to (refused otherwise)
    #[arg(long, requires = "target")]
    pub follow_target: bool,
    /// Restore only this path inside the snapshot
    #[arg(long)]
    pub path: Option<String>,
    /// Restore only entries matching a glob (repeatable)
    #[arg(long = "include")]
    pub includes: Vec<String>,
    /// Skip entries matching a glob (repeatable)
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Make --target exactly the snapshot: delete what the snapshot does not have (with --path, --include or --exclude: only inside what they select), writing only what differs
    #[arg(long, conflicts_with_all = ["to_pvc", "to_new_pvc"])]
    pub delete: bool,
    /// What to do with a file that already exists in --target: rewrite it (always), write only the parts that differ (if-changed), or keep it as it is (never)
    #[arg(long, value_enum, value_name = "WHEN", default_value = "if-changed", conflicts_with_all = ["to_pvc", "to_new_pvc"])]
    pub overwrite: OverwriteArg,
    /// Change nothing: print what would be written, deleted and kept
    #[arg(long, conflicts_with_all = ["to_pvc", "to_new_pvc"])]
    pub dry_run: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
    /// Restore into the volume of this claim, in place: its Deployments and StatefulSets are scaled to zero, the current content is kept in a `pre-restore` snapshot, only differing data is written, extra files are deleted, and the workloads are scaled back
    #[arg(long, value_name = "NS/NAME", conflicts_with_all = ["to_new_pvc", "path", "includes", "excludes"], help_heading = "Kubernetes")]
    pub to_pvc: Option<String>,
    /// Create this new claim holding the snapshot, on a new hostPath volume of the snapshot's capacity under --storage-dir
    #[arg(long, value_name = "NS/NAME", help_heading = "Kubernetes")]
    pub to_new_pvc: Option<String>,
    /// Storage class of the new claim (default: the snapshot's claim's)
    #[arg(
        long,
        value_name = "CLASS",
        requires = "to_new_pvc",
        help_heading = "Kubernetes"
    )]
    pub storage_class: Option<String>,
    /// Host folder in which the new claim's volume directory is created [default: /var/snap/microk8s/common/default-storage]
    #[arg(
        long,
        value_name = "DIR",
        requires = "to_new_pvc",
        help_heading = "Kubernetes"
    )]
    pub storage_dir: Option<PathBuf>,
    /// Do not ask before overwriting the claim's volume (needed when standard input is not a terminal)
    #[arg(long, short = 'y', help_heading = "Kubernetes")]
    pub yes: bool,
    /// How long to wait for the claim's pods to stop before giving up
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::k8s::parse_duration, help_heading = "Kubernetes")]
    pub wait_timeout: Duration,
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
}

/// `--overwrite`: what happens to an entry that exists in the target.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OverwriteArg {
    Always,
    IfChanged,
    Never,
}

impl From<OverwriteArg> for Overwrite {
    fn from(o: OverwriteArg) -> Overwrite {
        match o {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Never => Overwrite::Never,
        }
    }
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    if a.rollback || a.clone_to.is_some() {
        return super::restore_native::run(cli, a);
    }
    if let Some(claim) = &a.to_pvc {
        return super::restore_pvc::in_place(cli, a, claim);
    }
    if let Some(claim) = &a.to_new_pvc {
        return super::restore_pvc::to_new_claim(cli, a, claim);
    }
    if a.delete && a.overwrite == OverwriteArg::Never {
        anyhow::bail!(
            "--delete makes the target exactly the snapshot, --overwrite never keeps existing files as they are: use one of the two"
        );
    }
    let target = &checked_target(
        a.target.as_ref().expect("clap requires --target"),
        a.follow_target,
    )?;
    let repo = crate::repo::open(cli, false, false)?;
    let (repo, _lock) = super::locked(repo, false, "restore")?;
    let snap = repo.resolve_snapshot(&a.snapshot)?;
    refuse_csi(&snap, "--target")?;
    if snap.is_native_only() {
        return super::restore_native::copy_out(cli, a, &snap, target);
    }
    let opts = RestoreOptions {
        includes: a.includes.clone(),
        excludes: a.excludes.clone(),
        delete_extra: a.delete,
        overwrite: a.overwrite.into(),
        dry_run: a.dry_run,
        // Into a folder, Ctrl-C ends the restore where it is: running it
        // again finishes it, and nothing else depends on the folder.
        stop: Default::default(),
    };
    let summary = with_progress(cli, a, |p| {
        restore::restore(&repo, &snap, a.path.as_deref(), target, &opts, p)
    })?;
    if let Some(preview) = &summary.preview {
        return report_dry_run(cli, a, &snap, target, &summary, preview);
    }
    report(cli, a, &snap, &target.display().to_string(), &summary, &[])
}

/// A CSI restore point holds no files in the repository: only
/// `--to-new-pvc` can restore it (through the VolumeSnapshot).
pub fn refuse_csi(snap: &pvsnap_engine::snapshot::Snapshot, option: &str) -> Result<()> {
    if let Some(r) = pvsnap_ops::csi_record(snap) {
        anyhow::bail!(
            "snapshot {} of {} is a CSI VolumeSnapshot ({}) and holds no files in the repository, so {option} cannot restore it; make a new claim from it with `pvsnap restore {} --to-new-pvc {}/NEW-NAME`",
            snap.short_id(),
            snap.source.key(),
            r.handle,
            snap.short_id(),
            r.snapshot.namespace
        );
    }
    Ok(())
}

/// Prints what a dry run found: each path to write (with its bytes), to
/// delete and kept, then the counts. JSON: the summary with `dry_run: true`
/// and the lists under `preview`.
fn report_dry_run(
    cli: &Cli,
    a: &Args,
    snap: &Snapshot,
    target: &std::path::Path,
    summary: &RestoreSummary,
    p: &Preview,
) -> Result<u8> {
    let bytes: u64 = p.write.iter().map(|(_, b)| b).sum();
    if a.json {
        let mut v = serde_json::to_value(summary)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("dry_run".into(), true.into());
            o.insert("bytes_to_write".into(), bytes.into());
        }
        output::json(&v)?;
        return Ok(crate::exit::OK);
    }
    if cli.quiet {
        return Ok(crate::exit::OK);
    }
    for (path, b) in &p.write {
        println!("write   {path} ({})", output::bytes(*b));
    }
    for path in &p.delete {
        println!("delete  {path}");
    }
    for path in &p.kept {
        println!("keep    {path}");
    }
    let kept = if p.kept.is_empty() {
        String::new()
    } else {
        format!(", keep {} existing (--overwrite never)", p.kept.len())
    };
    println!(
        "dry run: restoring snapshot {} into {} would write {} entries ({}), delete {}{kept}; nothing was changed",
        snap.short_id(),
        target.display(),
        p.write.len(),
        output::bytes(bytes),
        p.delete.len(),
    );
    Ok(crate::exit::OK)
}

/// The folder to restore into: a symlink is refused unless `follow` (then
/// its destination is used, and said so), and so is anything that is not a
/// folder. A missing target is created by the restore.
fn checked_target(target: &std::path::Path, follow: bool) -> Result<PathBuf> {
    let meta = match std::fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(target.to_path_buf()),
        Err(e) => anyhow::bail!(
            "{}: cannot inspect the restore target: {e}",
            target.display()
        ),
    };
    if meta.file_type().is_symlink() {
        let to = std::fs::read_link(target)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        if !follow {
            anyhow::bail!(
                "{}: the restore target is a symlink to {to}; pass the folder itself, or add --follow-target to restore into {to}",
                target.display()
            );
        }
        let real = std::fs::canonicalize(target).map_err(|e| {
            anyhow::anyhow!(
                "{}: the restore target is a symlink to {to}, which cannot be resolved: {e}",
                target.display()
            )
        })?;
        if !real.is_dir() {
            anyhow::bail!(
                "{}: the restore target is a symlink to {}, which is not a folder; pass a folder",
                target.display(),
                real.display()
            );
        }
        eprintln!(
            "pvsnap: {} is a symlink; restoring into {} (--follow-target)",
            target.display(),
            real.display()
        );
        return Ok(real);
    }
    if !meta.is_dir() {
        anyhow::bail!(
            "{}: the restore target exists and is not a folder; pass a folder (new or existing)",
            target.display()
        );
    }
    Ok(target.to_path_buf())
}

/// Runs a restore with a progress display.
pub fn with_progress<T>(cli: &Cli, a: &Args, f: impl FnOnce(&RestoreProgress) -> T) -> T {
    let progress = Arc::new(RestoreProgress::default());
    let _shown = bars(cli, a).restoring(progress.clone());
    f(&progress)
}

/// The progress bars of a restore: none with `--quiet` or `--json`.
pub fn bars(cli: &Cli, a: &Args) -> Bars {
    Bars {
        hidden: cli.quiet || a.json,
    }
}

/// Prints the summary (with `extra` fields in JSON); exit code 4 when files
/// could not be restored intact.
pub fn report(
    cli: &Cli,
    a: &Args,
    snap: &Snapshot,
    target: &str,
    summary: &RestoreSummary,
    extra: &[(&str, serde_json::Value)],
) -> Result<u8> {
    if a.json {
        let mut v = serde_json::to_value(summary)?;
        if let Some(o) = v.as_object_mut() {
            for (k, x) in extra {
                o.insert(k.to_string(), x.clone());
            }
        }
        output::json(&v)?;
    } else if !cli.quiet {
        let mut kept = if summary.bytes_skipped > 0 || summary.deleted > 0 {
            format!(
                " ({} files and {} already in place, {} extra entries deleted)",
                summary.files_skipped,
                output::bytes(summary.bytes_skipped),
                summary.deleted
            )
        } else {
            String::new()
        };
        if summary.kept > 0 {
            kept.push_str(&format!(
                " ({} existing entries kept as they were: --overwrite never)",
                summary.kept
            ));
        }
        println!(
            "restored snapshot {} into {}: {} files, {} folders, {} links, {} special, {} written{kept} in {:.2}s",
            snap.short_id(),
            target,
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
            "pvsnap: {} file(s) or folder(s) could not be restored intact; run `pvsnap check --read-data` (exit code 4)",
            summary.damaged.len()
        );
        return Ok(crate::exit::DAMAGED);
    }
    Ok(crate::exit::OK)
}
