//! CSI claims: a VolumeSnapshot as a native restore point.
//!
//! pvsnap cannot read a CSI volume's files from the host, so `snapshot` of
//! such a claim makes a `snapshot.storage.k8s.io/v1` VolumeSnapshot between
//! the pods' backup hooks (the freeze window ends when the storage has cut
//! it, `status.creationTime`, not when it is ready), waits for `readyToUse`,
//! and records it in the repository: a snapshot of the claim whose tree is
//! an empty folder and whose `source_snapshot` is the record
//! ([`CsiRecord`]; snapshots written before kept it in `hooks`, which
//! [`csi_record`] still reads). `forget` of that snapshot deletes the
//! VolumeSnapshot ([`forget_csi`]); `restore --to-new-pvc` makes a claim
//! from it through `dataSource` ([`restore_csi_to_new_claim`]).
//!
//! A run killed after the VolumeSnapshot was made and before the record was
//! written leaves a pvsnap-made VolumeSnapshot no record names. The next
//! snapshot of a CSI claim in that namespace removes such leftovers: only
//! pvsnap's (label and name), only unrecorded, and only when the run that
//! made it is gone (same host, process no longer there) or, from another
//! host, when it is older than twice the timeout plus ten minutes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvsnap_engine::backup::{self, Progress};
use pvsnap_engine::snapshot::{Snapshot, Source, SourceSnapshot};
use pvsnap_k8s::{
    BodyOutcome, ClaimFromSnapshot, ClaimRef, Cluster, CsiClaim, CsiSnapshot, DEFAULT_CSI_TIMEOUT,
    HookOutcome, HostHook, RUN_ANNOTATION, Scope, SnapshotDeleted,
};
use pvsnap_native::Freezer;
use pvsnap_native::naming::{Name, Purpose};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::observe::Observer;
use crate::snapshot::{HostHooks, SnapshotRun, Taken};

/// How CSI claims are snapshotted.
#[derive(Debug, Clone)]
pub struct CsiOptions {
    /// The VolumeSnapshotClass (`--snapshot-class`); else the driver's
    /// default class.
    pub class: Option<String>,
    /// How long to wait for the snapshot to be cut and then ready
    /// (`--csi-timeout`).
    pub timeout: Duration,
    /// A dry run (`snapshot --dry-run`): the claim and class are checked,
    /// nothing is made in the cluster.
    pub dry_run: bool,
}

impl Default for CsiOptions {
    fn default() -> Self {
        CsiOptions {
            class: None,
            timeout: DEFAULT_CSI_TIMEOUT,
            dry_run: false,
        }
    }
}

/// The field of the snapshot's JSON output that carries the record, and
/// its key in `hooks` where snapshots taken before CSI records moved to
/// `Snapshot::source_snapshot` kept it.
pub const SOURCE_SNAPSHOT: &str = "source_snapshot";

/// A CSI VolumeSnapshot recorded as a native restore point: the fields
/// every native snapshot's `source_snapshot` has, plus the CSI details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CsiRecord {
    /// Always `csi`.
    pub kind: String,
    /// The claim, `NAMESPACE/NAME`.
    pub volume: String,
    /// The VolumeSnapshot's name (a lowercase pvsnap name).
    pub name: String,
    /// `NAMESPACE/NAME` of the VolumeSnapshot.
    pub handle: String,
    /// Always empty: the whole volume.
    pub within: String,
    /// Seconds from the request until the storage had cut it.
    pub create_s: f64,
    /// Seconds from the end of the pre hooks to the start of the post hooks.
    pub freeze_window_s: f64,
    /// Seconds until it was ready to use.
    pub ready_s: f64,
    /// Kept on the storage until `forget`: always true.
    pub kept: bool,
    /// Nothing was read into the repository: always true.
    pub native_only: bool,
    /// The CSI driver of the volume.
    pub driver: String,
    /// The class's `deletionPolicy` (`Delete`, `Retain`).
    pub deletion_policy: String,
    /// The VolumeSnapshot as it was when ready.
    pub snapshot: CsiSnapshot,
}

/// The CSI record of a repository snapshot, if it is one: its
/// `source_snapshot`, or (snapshots written before the record moved there)
/// a `{"source_snapshot": …}` entry of its `hooks`.
pub fn csi_record(s: &Snapshot) -> Option<CsiRecord> {
    let current = s
        .source_snapshot
        .as_ref()
        .filter(|n| n.kind == "csi")
        .and_then(|n| serde_json::to_value(n).ok());
    let legacy = || {
        s.hooks
            .iter()
            .filter_map(|h| h.get(SOURCE_SNAPSHOT))
            .find(|v| v.get("kind").and_then(|k| k.as_str()) == Some("csi"))
            .cloned()
    };
    current
        .or_else(legacy)
        .and_then(|v| serde_json::from_value::<CsiRecord>(v).ok())
}

/// The record as the snapshot's `source_snapshot`.
fn as_source_snapshot(record: &CsiRecord) -> SourceSnapshot {
    let v = serde_json::to_value(record).expect("record serializes");
    serde_json::from_value(v).expect("a CSI record is a source_snapshot")
}

fn this_run() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{host} pid {}", std::process::id())
}

/// Whether the run named by a [`RUN_ANNOTATION`] is certainly gone.
fn run_gone(snap: &CsiSnapshot, timeout: Duration) -> bool {
    let me = this_run();
    let (my_host, _) = me.split_once(" pid ").unwrap_or((&me, ""));
    if let Some((host, pid)) = snap
        .annotations
        .get(RUN_ANNOTATION)
        .and_then(|r| r.split_once(" pid "))
        && host == my_host
        && let Ok(pid) = pid.parse::<u32>()
    {
        return pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists();
    }
    // Another host's run (or no annotation): gone when far past its waiting.
    let Some(name) = Name::parse_dns_label(&snap.name) else {
        return false;
    };
    let age = jiff::Timestamp::now().duration_since(name.time);
    age.as_secs_f64() > (2 * timeout + Duration::from_secs(600)).as_secs_f64()
}

/// Removes pvsnap-made VolumeSnapshots in `namespace` that no repository
/// snapshot in `recorded` names and whose run is gone. Returns what was
/// removed, as `NAMESPACE/NAME`.
pub async fn remove_csi_leftovers(
    cluster: &Cluster,
    namespace: &str,
    recorded: &[&Snapshot],
    timeout: Duration,
) -> Result<Vec<String>> {
    let known: std::collections::HashSet<String> = recorded
        .iter()
        .filter_map(|s| csi_record(s))
        .map(|r| r.handle)
        .collect();
    let mut removed = Vec::new();
    for snap in cluster
        .pvsnap_volume_snapshots(&Scope::Namespace(namespace.into()))
        .await?
    {
        if known.contains(&snap.key()) || !run_gone(&snap, timeout) {
            continue;
        }
        cluster
            .delete_volume_snapshot(&snap.namespace, &snap.name)
            .await?;
        removed.push(snap.key());
    }
    Ok(removed)
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

impl SnapshotRun<'_> {
    /// Snapshots a CSI claim as a VolumeSnapshot between the host hooks and
    /// its pods' hooks, waits until it is ready, and records it.
    pub(crate) async fn csi_claim(
        &mut self,
        cluster: &Cluster,
        claim: &ClaimRef,
        host: &HostHooks,
        observer: &dyn Observer,
    ) -> Result<Taken> {
        let opts = self.options().csi.clone();
        let csi = cluster.csi_claim(&claim.namespace, &claim.name).await?;
        let class = cluster
            .snapshot_class(&csi.driver, opts.class.as_deref())
            .await?;
        if opts.dry_run {
            return Err(Error::CsiDryRun {
                key: format!("pvc/{}/{}", csi.namespace, csi.pvc),
                driver: csi.driver,
                class: class.name,
            });
        }
        let recorded = self.all_snapshots();
        for gone in remove_csi_leftovers(cluster, &claim.namespace, &recorded, opts.timeout).await?
        {
            observer.csi_leftover_removed(&gone);
        }
        let pods = cluster.pods_mounting(&claim.namespace, &claim.name).await?;
        // `--freeze`: held in the pod from before the request until the
        // storage has cut the snapshot.
        let freezer = self.pod_freezer(cluster, claim, &pods)?;
        let source = csi_source(cluster, &csi);
        let name = Name::new(Purpose::Keep).to_dns_label();
        let told = |h: &HostHook| {
            h.clone()
                .with_env("PVSNAP_SOURCE", source.key())
                .with_env("PVSNAP_CSI_SNAPSHOT", format!("{}/{name}", csi.namespace))
        };
        let (pre, post) = (host.pre.as_ref().map(told), host.post.as_ref().map(told));
        let annotations = BTreeMap::from([(RUN_ANNOTATION.to_string(), this_run())]);
        let started = Instant::now();
        let hooked = pvsnap_k8s::with_hooks(
            Some(cluster),
            &pods,
            pre.as_ref(),
            post.as_ref(),
            || async {
                let (frozen, held_since) = crate::native::freeze(
                    freezer.as_ref().map(|f| f as &dyn pvsnap_native::Freezer),
                )?;
                let requested = Instant::now();
                cluster
                    .create_volume_snapshot(&csi, &class, &name, &annotations)
                    .await?;
                cluster
                    .wait_volume_snapshot_cut(&csi.namespace, &name, opts.timeout)
                    .await?;
                // Pre hooks done to post hooks starting: the request
                // until the storage had cut it (and the freeze around it).
                let cut = secs(requested);
                if let Some(f) = frozen
                    && let Err(error) = f.thaw()
                {
                    // Not frozen to the end: not kept, as for a folder.
                    let _ = cluster.delete_volume_snapshot(&csi.namespace, &name).await;
                    return Err(Error::Freeze {
                        freezer: freezer
                            .as_ref()
                            .map(|f| f.name().to_owned())
                            .unwrap_or_default(),
                        error,
                    });
                }
                let window = if freezer.is_some() {
                    secs(held_since)
                } else {
                    cut
                };
                Ok::<_, Error>((cut, window))
            },
        )
        .await;
        let outcomes: Vec<serde_json::Value> = hooked
            .outcomes()
            .map(|o| serde_json::to_value(o).expect("hook outcome serializes"))
            .collect();
        let post_failure: Option<HookOutcome> = hooked.post.iter().find(|o| o.is_fatal()).cloned();
        let (create_s, freeze_window_s) = match hooked.body {
            BodyOutcome::Skipped { reason } => {
                return Err(Error::Skipped {
                    reason,
                    hooks: hooked.pre.into_iter().chain(hooked.post).collect(),
                });
            }
            BodyOutcome::Ran(Err(e)) => return Err(e),
            BodyOutcome::Ran(Ok(t)) => t,
        };
        let left = opts.timeout.saturating_sub(started.elapsed());
        let ready = cluster
            .wait_volume_snapshot(&csi.namespace, &name, left)
            .await?;
        let record = CsiRecord {
            kind: "csi".into(),
            volume: format!("{}/{}", csi.namespace, csi.pvc),
            name: name.clone(),
            handle: ready.key(),
            within: String::new(),
            create_s,
            freeze_window_s,
            ready_s: secs(started),
            kept: true,
            native_only: true,
            driver: csi.driver.clone(),
            deletion_policy: class.deletion_policy.clone(),
            snapshot: ready,
        };
        match self.record_csi(source, outcomes, &record, observer) {
            Ok(mut taken) => {
                taken.post_hook_failure = post_failure;
                Ok(taken)
            }
            Err(e) => {
                // Not recorded, so not kept: nothing would ever remove it.
                if let Err(d) = cluster.delete_volume_snapshot(&csi.namespace, &name).await {
                    tracing::warn!(
                        "deleting the unrecorded volumesnapshot {}: {d}",
                        record.handle
                    );
                }
                Err(e)
            }
        }
    }

    /// Commits a snapshot of an empty folder that carries the record.
    fn record_csi(
        &mut self,
        source: Source,
        outcomes: Vec<serde_json::Value>,
        record: &CsiRecord,
        observer: &dyn Observer,
    ) -> Result<Taken> {
        let empty = tempfile::tempdir().map_err(Error::CsiTempFolder)?;
        self.catch_up_index();
        let mut opts = self.backup_options(source);
        opts.parent = None;
        opts.excludes.clear();
        let progress = Arc::new(Progress::default());
        let pending = {
            let _watch = observer.storing(progress.clone());
            backup::store(self.repo(), empty.path(), &opts, &progress)?
        };
        let mut pending = pending;
        pending.add_hooks(outcomes);
        pending.record_source_snapshot(as_source_snapshot(record));
        self.commit(pending, None)
    }
}

/// The source recorded for a CSI claim: the claim, with no host path.
fn csi_source(cluster: &Cluster, c: &CsiClaim) -> Source {
    Source::Pvc {
        cluster: cluster.name().to_string(),
        namespace: c.namespace.clone(),
        pvc: c.pvc.clone(),
        pv: c.pv.clone(),
        storage_class: c.storage_class.clone(),
        capacity: Some(c.capacity.clone()),
        labels: BTreeMap::new(),
        node: None,
        host_path: String::new(),
    }
}

/// Deletes the VolumeSnapshot a forgotten record kept. The class's
/// `deletionPolicy` (on the content) decides whether the storage's
/// snapshot goes too; the answer says which.
pub async fn forget_csi(cluster: &Cluster, record: &CsiRecord) -> Result<SnapshotDeleted> {
    let (ns, name) = record
        .handle
        .split_once('/')
        .unwrap_or(("", record.handle.as_str()));
    Ok(cluster.delete_volume_snapshot(ns, name).await?)
}

/// Makes claim `namespace/name` from the VolumeSnapshot a record kept,
/// through `dataSource`, of the original claim's class and size.
pub async fn restore_csi_to_new_claim(
    cluster: &Cluster,
    snap: &Snapshot,
    record: &CsiRecord,
    namespace: &str,
    name: &str,
) -> Result<ClaimFromSnapshot> {
    let (class, capacity) = match &snap.source {
        Source::Pvc {
            storage_class,
            capacity,
            ..
        } => (storage_class.clone(), capacity.clone()),
        _ => (None, None),
    };
    let capacity = capacity
        .or_else(|| record.snapshot.restore_size.clone())
        .unwrap_or_else(|| "1Gi".into());
    Ok(cluster
        .create_claim_from_snapshot(
            &record.snapshot,
            namespace,
            name,
            class.as_deref(),
            &capacity,
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvsnap_engine::repo::id::{Id, SnapshotId, TreeId};
    use pvsnap_engine::snapshot::Summary;
    use pvsnap_engine::tree::{Node, NodeKind};

    fn record() -> CsiRecord {
        CsiRecord {
            kind: "csi".into(),
            volume: "ns/data".into(),
            name: "pvsnap-keep-x".into(),
            handle: "ns/pvsnap-keep-x".into(),
            within: String::new(),
            create_s: 0.5,
            freeze_window_s: 0.25,
            ready_s: 2.0,
            kept: true,
            native_only: true,
            driver: "rbd.csi.ceph.com".into(),
            deletion_policy: "Delete".into(),
            snapshot: serde_json::from_value(serde_json::json!({
                "namespace": "ns", "name": "pvsnap-keep-x", "claim": "data",
                "class": "c", "content": "snapcontent-1", "restore_size": "1Gi",
                "created": null, "ready": true, "error": null
            }))
            .expect("a VolumeSnapshot"),
        }
    }

    fn empty_snapshot() -> Snapshot {
        let tree = TreeId(Id([0; 32]));
        let root: Node = serde_json::from_value(serde_json::json!({
            "name": [], "kind": {"Dir": {"subtree": tree}}, "mode": 0o40755,
            "uid": 0, "gid": 0, "user": null, "group": null, "size": 0,
            "mtime_ns": 0, "ctime_ns": 0, "inode": 0, "device": 0, "links": 1,
            "xattrs": []
        }))
        .expect("a root");
        assert!(matches!(root.kind, NodeKind::Dir { .. }));
        Snapshot {
            id: SnapshotId(Id([1; 32])),
            time: "2026-01-01T00:00:00Z".parse().expect("time"),
            hostname: "h".into(),
            source: Source::Path { path: "/x".into() },
            tags: vec![],
            labels: BTreeMap::new(),
            parent: None,
            root,
            tree,
            summary: Summary::default(),
            errors: vec![],
            hooks: vec![serde_json::json!({"phase": "pre", "ok": true})],
            program_version: "t".into(),
            original: None,
            source_snapshot: None,
        }
    }

    #[test]
    fn the_record_is_the_source_snapshot_and_reads_back_whole() {
        let mut s = empty_snapshot();
        s.source_snapshot = Some(as_source_snapshot(&record()));
        assert_eq!(csi_record(&s), Some(record()));
        assert!(s.is_native_only());
        // Not a storage snapshot for the btrfs/ZFS/LVM code to destroy.
        assert!(s.kept_native().is_none());
    }

    #[test]
    fn a_record_written_before_in_hooks_still_reads() {
        let mut s = empty_snapshot();
        assert_eq!(csi_record(&s), None);
        s.hooks
            .push(serde_json::json!({ SOURCE_SNAPSHOT: record() }));
        assert_eq!(csi_record(&s), Some(record()));
        // A native snapshot of another kind is not a CSI record.
        let mut r = as_source_snapshot(&record());
        r.kind = "zfs".into();
        let mut z = empty_snapshot();
        z.source_snapshot = Some(r);
        assert_eq!(csi_record(&z), None);
    }
}
