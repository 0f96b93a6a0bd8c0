//! `pvsnap restore SNAP --to-pvc NS/NAME` (in place) and
//! `pvsnap restore SNAP --to-new-pvc NS/NAME` (a clone claim).
//!
//! In place (the workflow is `pvsnap_ops::restore_in_place`): the claim's
//! Deployments and StatefulSets are scaled to zero and their pods waited
//! for; the volume's current content is snapshotted (tag `pre-restore`) so
//! the restore can be undone; the snapshot is restored writing only chunks
//! that differ and deleting extra entries; and the workloads are scaled
//! back to their original replica counts on every path, failed restores
//! included, but one: stopped by a signal while it writes, the restore
//! leaves them scaled down (`ScaleBack::LeftDown`). This module asks before
//! it starts and renders what happened.
//!
//! Clone (the workflow is `pvsnap_ops::restore_to_new_claim`): this module
//! checks the arguments and renders what was created.

use std::sync::Arc;

use anyhow::{Result, bail};
use pvsnap_engine::restore::{RestoreOptions, RestoreProgress};
use pvsnap_engine::snapshot::Snapshot;
use pvsnap_k8s::Workload;
use pvsnap_ops::{CloneOptions, InPlaceOptions, Observer, PRE_RESTORE_TAG, ScaleBack, Watch};

use super::restore::{Args, bars, report};
use crate::Cli;
use crate::k8s::{self, Kube};
use crate::progress::Bars;

pub fn in_place(cli: &Cli, a: &Args, spec: &str) -> Result<u8> {
    let claim = k8s::parse_claim(spec)?;
    let key = k8s::claim_key(&claim);
    let repo = crate::repo::open(cli, false, false)?;
    let (mut repo, _lock) = super::locked(repo, false, "restore")?;
    let snap = repo.resolve_snapshot_near(&a.snapshot, &key)?;
    super::refuse_native_only(&snap, "--to-pvc")?;
    super::restore::refuse_csi(&snap, "--to-pvc")?;
    let (kube, target) = connect_in_place(a, &claim)?;
    let cluster = kube.connected();
    if !a.yes {
        let stops = if target.workloads.is_empty() {
            String::new()
        } else {
            format!(", stopping {} meanwhile", names(&target.workloads))
        };
        k8s::confirm(
            &format!(
                "Replace the content of {key} (volume {}, {}) with snapshot {} of {}{stops}?",
                target.resolved.pv,
                target.resolved.host_path.display(),
                snap.short_id(),
                snap.source.key()
            ),
            &format!("refusing to overwrite the volume of {key}"),
        )?;
    }

    let notices = Notices {
        quiet: cli.quiet,
        bars: bars(cli, a),
        key: &key,
        spec,
    };
    // Ctrl-C, SIGTERM from here on: stop cleanly (see `crate::interrupt`).
    let options = InPlaceOptions {
        wait_timeout: a.wait_timeout,
        stop: crate::interrupt::clean_stop(crate::interrupt::RESTORING),
    };
    let done = kube
        .block_on(pvsnap_ops::restore_in_place(
            &mut repo, cluster, &snap, &target, &options, &notices,
        ))
        .map_err(super::ops_error)?;
    if let Some(signal) = crate::interrupt::received()
        && done.restored.is_err()
    {
        let code = crate::interrupt::exit_code(signal);
        eprintln!(
            "pvsnap: interrupted: {} (exit code {code})",
            interrupted(&done, &snap, &key, spec)
        );
        return Ok(code);
    }
    let summary = match (done.restored, done.scaled_back) {
        (Ok(s), ScaleBack::Done | ScaleBack::LeftDown { .. }) => s,
        (Ok(s), ScaleBack::Failed(scale)) => {
            report(cli, a, &snap, &key, &s, &extra_json(&done.safety))?;
            return Err(anyhow::Error::from(scale)
                .context(format!("the restore into {key} succeeded, but")));
        }
        (Err(e), scale) => {
            let undo = match &done.safety {
                Some(s) => format!(
                    "; the volume may be partly restored: its content from before is in snapshot {} (`pvsnap restore {} --to-pvc {spec} --yes`)",
                    s.short_id(),
                    s.short_id()
                ),
                None => "; the volume was not changed".to_string(),
            };
            let scale = match scale {
                ScaleBack::Done => String::new(),
                ScaleBack::Failed(se) => format!("; also: {se}"),
                ScaleBack::LeftDown { commands } => format!(
                    "; its workloads were left scaled down: start them with {}",
                    commands.join(" && ")
                ),
            };
            return Err(
                super::ops_error(e).context(format!("restore into {key} failed{undo}{scale}"))
            );
        }
    };
    report(cli, a, &snap, &key, &summary, &extra_json(&done.safety))
}

/// Connects to the cluster and finds the claim's volume directory on this
/// node and the workloads that use it, changing nothing.
pub(super) fn connect_in_place(
    a: &Args,
    claim: &pvsnap_k8s::ClaimRef,
) -> Result<(Kube, pvsnap_ops::InPlaceTarget)> {
    let kube = Kube::connect(&a.kube)?;
    let target = kube
        .block_on(pvsnap_ops::prepare_in_place(
            kube.connected(),
            claim,
            &a.kube.resolve_options(),
        ))
        .map_err(super::ops_error)?;
    Ok((kube, target))
}

/// What a stopped in-place restore left, and the ways on from there.
fn interrupted(done: &pvsnap_ops::InPlace, snap: &Snapshot, key: &str, spec: &str) -> String {
    match &done.scaled_back {
        ScaleBack::LeftDown { commands } => {
            let undo = match &done.safety {
                Some(s) => format!(
                    ", or put back what was there with `pvsnap restore {} --to-pvc {spec} --yes`",
                    s.short_id()
                ),
                None => String::new(),
            };
            let start = if commands.is_empty() {
                String::new()
            } else {
                format!("; then start its workloads: {}", commands.join(" && "))
            };
            format!(
                "the volume of {key} holds part of snapshot {id}, so its workloads stay scaled down (starting them on a half-restored volume could harm their data). Finish the restore with `pvsnap restore {id} --to-pvc {spec} --yes`{undo}{start}",
                id = snap.short_id(),
            )
        }
        ScaleBack::Done => {
            format!("the volume of {key} was not changed; its workloads were scaled back")
        }
        ScaleBack::Failed(e) => format!(
            "the volume of {key} was not changed, but scaling its workloads back failed: {e}"
        ),
    }
}

/// What an in-place restore says on standard error while it runs.
pub(super) struct Notices<'a> {
    pub(super) quiet: bool,
    pub(super) bars: Bars,
    pub(super) key: &'a str,
    pub(super) spec: &'a str,
}

impl Observer for Notices<'_> {
    /// The safety snapshot taken before the volume is overwritten.
    fn storing(&self, progress: Arc<pvsnap_engine::backup::Progress>) -> Watch {
        self.bars.storing(progress)
    }

    fn restoring(&self, progress: Arc<RestoreProgress>) -> Watch {
        self.bars.restoring(progress)
    }

    fn scaled_down(&self, originals: &[Workload]) {
        if !self.quiet {
            for w in originals {
                eprintln!("pvsnap: scaled {w} from {} to 0 replicas", w.replicas);
            }
        }
    }

    fn kept(&self, taken: &Snapshot) {
        if !self.quiet {
            eprintln!(
                "pvsnap: kept the current content of {} as snapshot {} (tag {PRE_RESTORE_TAG}); undo with `pvsnap restore {} --to-pvc {} --yes`",
                self.key,
                taken.short_id(),
                taken.short_id(),
                self.spec
            );
        }
    }

    fn scaled_back(&self, originals: &[Workload]) {
        if !self.quiet {
            for w in originals.iter().filter(|w| w.replicas != 0) {
                eprintln!("pvsnap: scaled {w} back to {} replicas", w.replicas);
            }
        }
    }
}

fn extra_json(safety: &Option<Snapshot>) -> Vec<(&'static str, serde_json::Value)> {
    safety
        .iter()
        .map(|s| ("safety_snapshot", serde_json::Value::from(s.id.to_hex())))
        .collect()
}

pub(super) fn names(ws: &[Workload]) -> String {
    ws.iter()
        .map(|w| format!("{w} ({} replicas)", w.replicas))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn to_new_claim(cli: &Cli, a: &Args, spec: &str) -> Result<u8> {
    let claim = k8s::parse_claim(spec)?;
    let key = k8s::claim_key(&claim);
    let storage_dir = a
        .storage_dir
        .clone()
        .unwrap_or_else(|| k8s::DEFAULT_STORAGE_DIR.into());
    if !storage_dir.is_absolute() {
        bail!(
            "--storage-dir {} must be an absolute path on the node",
            storage_dir.display()
        );
    }
    let repo = crate::repo::open(cli, false, false)?;
    let (repo, _lock) = super::locked(repo, false, "restore")?;
    let snap = repo.resolve_snapshot(&a.snapshot)?;
    let csi = pvsnap_ops::csi_record(&snap);
    if csi.is_none() {
        super::refuse_native_only(&snap, "--to-new-pvc")?;
    }
    let kube = Kube::connect(&a.kube)?;
    if let Some(record) = csi {
        let made = kube
            .block_on(pvsnap_ops::restore_csi_to_new_claim(
                kube.connected(),
                &snap,
                &record,
                &claim.namespace,
                &claim.name,
            ))
            .map_err(super::ops_error)?;
        if a.json {
            crate::output::json(&serde_json::json!({
                "snapshot": snap.id.to_string(),
                "short_id": snap.short_id(),
                "source": snap.source.key(),
                "claim": made,
            }))?;
        } else if !cli.quiet {
            println!(
                "created {key} ({}, storage class {}) from volumesnapshot {} through dataSource; it is {} (the CSI driver copies the data when it provisions the volume)",
                made.capacity,
                made.storage_class
                    .as_deref()
                    .unwrap_or("the cluster's default"),
                made.snapshot,
                made.phase
            );
        }
        return Ok(crate::exit::OK);
    }
    let options = CloneOptions {
        storage_dir,
        storage_class: a.storage_class.clone(),
        node: a.kube.node_name(),
        resolve: a.kube.resolve_options(),
        subpath: a.path.clone(),
        restore: RestoreOptions {
            includes: a.includes.clone(),
            excludes: a.excludes.clone(),
            ..RestoreOptions::default()
        },
    };
    let observer = Notices {
        quiet: cli.quiet,
        bars: bars(cli, a),
        key: &key,
        spec,
    };
    let cloned = kube
        .block_on(pvsnap_ops::restore_to_new_claim(
            &repo,
            kube.connected(),
            &claim,
            &snap,
            &options,
            &observer,
        ))
        .map_err(super::ops_error)?;
    let made = &cloned.target;
    if !cli.quiet && !a.json {
        eprintln!(
            "pvsnap: created {key} ({} on node {}, storage class {:?}) bound to persistentvolume {} at {}",
            made.capacity,
            made.node,
            made.storage_class,
            made.pv,
            made.host_dir.display()
        );
    }
    let extra = [(
        "claim",
        serde_json::to_value(made).expect("clone target serializes"),
    )];
    report(
        cli,
        a,
        &snap,
        &format!("{key} ({})", cloned.local_dir.display()),
        &cloned.summary,
        &extra,
    )
}
