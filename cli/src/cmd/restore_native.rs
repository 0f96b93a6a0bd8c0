//! `pvsnap restore SNAP --rollback | --clone-to PATH`, and `--target DIR`
//! of a native restore point: restores from the native snapshot a
//! repository snapshot keeps on the storage (the workflows are in
//! `pvsnap_ops::native`). A claim's rollback scales its workloads down and
//! back around the native rollback, as `--to-pvc` does around a restore
//! (`pvsnap_ops::rollback_in_place`).

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use pvsnap_engine::snapshot::{Snapshot, Source};
use pvsnap_ops::ScaleBack;

use super::restore::Args;
use crate::k8s;
use crate::{Cli, output};

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    let (repo, _lock) = super::locked(repo, false, "restore")?;
    let snap = repo.resolve_snapshot(&a.snapshot)?;
    if a.rollback
        && let Some(r) = pvsnap_ops::csi_record(&snap)
    {
        bail!(
            "snapshot {} of {} is a CSI VolumeSnapshot ({}), and the VolumeSnapshot API has no rollback, so it cannot be rolled back in place; make a new claim from it with `pvsnap restore {} --to-new-pvc {}/NEW-NAME` and point the workload at it",
            snap.short_id(),
            snap.source.key(),
            r.handle,
            snap.short_id(),
            r.snapshot.namespace
        );
    }
    super::restore::refuse_csi(
        &snap,
        if a.rollback {
            "--rollback"
        } else {
            "--clone-to"
        },
    )?;
    let Some(native) = snap.kept_native() else {
        bail!(
            "snapshot {} keeps no native snapshot (it was read from {}), so there is nothing to {}; restore it with --target DIR",
            snap.short_id(),
            match &snap.source_snapshot {
                Some(n) => format!("a {} snapshot removed after the read", n.kind),
                None => "the live folder".to_string(),
            },
            if a.rollback { "roll back to" } else { "clone" }
        );
    };
    if let Some(target) = &a.clone_to {
        let target = absolute(target)?;
        let made = pvsnap_ops::native::clone_to(&snap, &target).map_err(super::ops_error)?;
        return done(
            cli,
            a,
            &format!(
                "cloned the {} snapshot {} of snapshot {} to {}; the source's folder in it is {}",
                native.kind,
                native.name,
                snap.short_id(),
                target.display(),
                made.display()
            ),
            serde_json::json!({"snapshot": snap.id, "clone": target, "folder": made}),
        );
    }
    let live = match &snap.source {
        Source::Path { path } => PathBuf::from(path),
        Source::Pvc { .. } => return claim(cli, a, &snap),
    };
    let rollback = pvsnap_ops::native::Rollback::check(&snap, &live).map_err(super::ops_error)?;
    // The whole volume is swapped (btrfs: a subvolume's path), not only
    // the source folder in it.
    let swapped = rollback.swapped();
    let users = pvsnap_ops::native::open_under(swapped);
    if !users.is_empty() {
        bail!(
            "{} is in use by {}; stop them first: a rollback swaps the volume under them",
            swapped.display(),
            users.join(", ")
        );
    }
    if !a.yes {
        bail!(
            "--rollback replaces the whole {} volume {} with the snapshot of {}: {}; stop what writes to it (containers hold it open through their mounts), then add --yes",
            native.kind,
            native.volume,
            output::local_time(snap.time),
            set_aside(&native.kind)
        );
    }
    let aside = rollback.run().map_err(super::ops_error)?;
    done(
        cli,
        a,
        &format!(
            "rolled {} back to snapshot {} ({} snapshot {}){}; restart what uses it",
            native.volume,
            snap.short_id(),
            native.kind,
            native.name,
            kept(&aside)
        ),
        serde_json::json!({"snapshot": snap.id, "rollback": native.volume, "set_aside": aside}),
    )
}

/// What a rollback does with what was written since the snapshot.
fn set_aside(kind: &str) -> &'static str {
    match kind {
        "btrfs" => {
            "what was written since is set aside in a subvolume beside the snapshots, not in use any more"
        }
        "zfs" => "what was written since is discarded (`zfs rollback`)",
        "lvm" => {
            "what was written since is discarded, and the snapshot is merged into the volume and gone (`lvconvert --merge`; on a volume in use the merge happens at its next activation)"
        }
        _ => "what was written since is discarded",
    }
}

fn kept(aside: &Option<PathBuf>) -> String {
    match aside {
        Some(p) => format!(
            "; the content from before is kept at {} (remove it with `btrfs subvolume delete {}` when it is no longer needed)",
            p.display(),
            p.display()
        ),
        None => String::new(),
    }
}

/// What a claim's rollback says on the first Ctrl-C or SIGTERM.
const STOPPING: &[u8] = b"\npvsnap: stopping: the rollback does not start, the workloads are scaled back (press Ctrl-C again to stop at once)\n";

/// `restore SNAP --rollback` of a claim's native snapshot: the claim the
/// snapshot recorded, checked to be on the same volume still, its
/// workloads scaled down and back as `--to-pvc` does
/// (`pvsnap_ops::rollback_in_place`).
fn claim(cli: &Cli, a: &Args, snap: &Snapshot) -> Result<u8> {
    let Source::Pvc { namespace, pvc, .. } = &snap.source else {
        unreachable!("called for claims")
    };
    let native = snap.kept_native().expect("checked by the caller");
    let spec = format!("{namespace}/{pvc}");
    let claim = k8s::parse_claim(&spec)?;
    let key = k8s::claim_key(&claim);
    let (kube, target) = super::restore_pvc::connect_in_place(a, &claim)?;
    let cluster = kube.connected();
    let rollback = pvsnap_ops::check_claim_rollback(snap, &target).map_err(super::ops_error)?;
    if !a.yes {
        let stops = if target.workloads.is_empty() {
            "no workload mounts it".to_string()
        } else {
            format!(
                "{} will be scaled to 0 meanwhile and back after",
                super::restore_pvc::names(&target.workloads)
            )
        };
        bail!(
            "--rollback replaces the {} volume {} of {key} (persistentvolume {}) with the snapshot of {}: {}; {stops}. Add --yes",
            native.kind,
            native.volume,
            target.resolved.pv,
            output::local_time(snap.time),
            set_aside(&native.kind)
        );
    }
    let notices = super::restore_pvc::Notices {
        quiet: cli.quiet,
        bars: super::restore::bars(cli, a),
        key: &key,
        spec: &spec,
    };
    let options = pvsnap_ops::InPlaceOptions {
        wait_timeout: a.wait_timeout,
        stop: crate::interrupt::clean_stop(STOPPING),
    };
    let done = kube
        .block_on(pvsnap_ops::rollback_in_place(
            cluster, rollback, &target, &options, &notices,
        ))
        .map_err(super::ops_error)?;
    let scale_failed = match &done.scaled_back {
        ScaleBack::Failed(e) => Some(format!("scaling its workloads back failed: {e}")),
        ScaleBack::LeftDown { commands } => Some(format!(
            "its workloads were left scaled down: the LVM merge completes when the volume is next activated (unmount it on the node, `lvchange -an` then `-ay` it and mount it again, or reboot the node); then start them with {}",
            commands.join(" && ")
        )),
        ScaleBack::Done => None,
    };
    let aside = match done.rolled {
        Ok(aside) => aside,
        Err(e) => {
            let unchanged = match &e {
                // The btrfs swap says where the volume is when it could
                // not put it back.
                pvsnap_ops::Error::Native { error, .. }
                    if error.to_string().contains("move it back") =>
                {
                    ""
                }
                _ => "; the volume was not changed",
            };
            let after = match &scale_failed {
                Some(s) => format!("; {s}"),
                None => "; its workloads were scaled back".to_string(),
            };
            if let Some(signal) = crate::interrupt::received() {
                let code = crate::interrupt::exit_code(signal);
                eprintln!(
                    "pvsnap: interrupted: the rollback of {key} did not start{unchanged}{after}"
                );
                return Ok(code);
            }
            return Err(super::ops_error(e).context(format!(
                "rolling {key} back to snapshot {} failed{unchanged}{after}",
                snap.short_id()
            )));
        }
    };
    if let Some(s) = scale_failed {
        eprintln!("pvsnap: warning: {key} was rolled back, but {s}");
    }
    let back = done.scaled_back.is_done();
    let code = done_claim(cli, a, snap, &key, &aside, &done.scaled, back)?;
    Ok(if back { code } else { crate::exit::ERROR })
}

fn done_claim(
    cli: &Cli,
    a: &Args,
    snap: &Snapshot,
    key: &str,
    aside: &Option<PathBuf>,
    scaled: &[pvsnap_k8s::Workload],
    scaled_back: bool,
) -> Result<u8> {
    let native = snap.kept_native().expect("a kept native snapshot");
    done(
        cli,
        a,
        &format!(
            "rolled {key} ({} volume {}) back to snapshot {} ({} snapshot {}){}",
            native.kind,
            native.volume,
            snap.short_id(),
            native.kind,
            native.name,
            kept(aside)
        ),
        serde_json::json!({
            "snapshot": snap.id,
            "rollback": native.volume,
            "set_aside": aside,
            "claim": key,
            "workloads": scaled,
            "scaled_back": scaled_back,
        }),
    )
}

/// `restore SNAP --target DIR` of a native restore point.
pub fn copy_out(cli: &Cli, a: &Args, snap: &Snapshot, target: &Path) -> Result<u8> {
    if a.path.is_some() || !a.includes.is_empty() || !a.excludes.is_empty() || a.delete || a.dry_run
    {
        bail!(
            "snapshot {} is a native restore point, copied out whole: --path, --include, --exclude, --delete and --dry-run do not apply",
            snap.short_id()
        );
    }
    let started = std::time::Instant::now();
    pvsnap_ops::native::copy_out(snap, target).map_err(super::ops_error)?;
    let n = snap
        .source_snapshot
        .as_ref()
        .expect("a native restore point");
    done(
        cli,
        a,
        &format!(
            "restored native restore point {} into {}: copied out of the {} snapshot {} (cp -a) in {:.2}s",
            snap.short_id(),
            target.display(),
            n.kind,
            n.handle,
            started.elapsed().as_secs_f64()
        ),
        serde_json::json!({"snapshot": snap.id, "target": target, "native": n}),
    )
}

fn done(cli: &Cli, a: &Args, line: &str, json: serde_json::Value) -> Result<u8> {
    if a.json {
        output::json(&json)?;
    } else if !cli.quiet {
        println!("{line}");
    }
    Ok(crate::exit::OK)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    Ok(std::env::current_dir()
        .map_err(|e| anyhow!("cannot resolve {}: {e}", p.display()))?
        .join(p))
}
