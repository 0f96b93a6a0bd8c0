//! CSI VolumeSnapshots (`snapshot.storage.k8s.io/v1`) of claims whose
//! volume a CSI driver provides: pvsnap cannot read their files from the
//! host, but the driver can snapshot them.
//!
//! pvsnap makes a VolumeSnapshot in the claim's namespace, named by
//! [`pvsnap_native::naming`] in lowercase (`pvsnap-keep-20261204t120000z-
//! 0123abcd`) and labelled [`MANAGED_BY_LABEL`]`=`[`MANAGED_BY`]; only
//! objects with both are ever listed as pvsnap's or removed as leftovers.
//! The class is `--snapshot-class` or the driver's default class (the
//! annotation [`DEFAULT_SNAPSHOT_CLASS_ANNOTATION`]` = "true"`); deleting the
//! VolumeSnapshot leaves the class's `deletionPolicy` to decide whether the
//! storage's snapshot (its VolumeSnapshotContent) goes too.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::claims::Scope;
use crate::clone::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::config::Cluster;
use crate::error::{Error, Result, is_already_exists, is_not_found};
use crate::workloads::POLL_INTERVAL;

/// The API group of VolumeSnapshots and their classes and contents.
pub const SNAPSHOT_API_GROUP: &str = "snapshot.storage.k8s.io";
/// The annotation that makes a VolumeSnapshotClass its driver's default.
pub const DEFAULT_SNAPSHOT_CLASS_ANNOTATION: &str =
    "snapshot.storage.kubernetes.io/is-default-class";
/// The annotation naming the run that made a VolumeSnapshot,
/// `HOST pid PID`: a later run on the same host can tell a killed run's
/// leftover from a snapshot still being made.
pub const RUN_ANNOTATION: &str = "pvsnap.io/run";
/// How long to wait for `readyToUse` unless told (`--csi-timeout`).
pub const DEFAULT_CSI_TIMEOUT: Duration = Duration::from_secs(300);

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(SNAPSHOT_API_GROUP, "v1", kind),
        plural,
    )
}

fn snapshots() -> ApiResource {
    resource("VolumeSnapshot", "volumesnapshots")
}

fn classes() -> ApiResource {
    resource("VolumeSnapshotClass", "volumesnapshotclasses")
}

fn contents() -> ApiResource {
    resource("VolumeSnapshotContent", "volumesnapshotcontents")
}

/// A bound claim whose volume a CSI driver provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsiClaim {
    pub namespace: String,
    pub pvc: String,
    pub pv: String,
    /// `spec.csi.driver` of the volume.
    pub driver: String,
    /// The claim's storage class (a claim made from a snapshot gets it).
    pub storage_class: Option<String>,
    /// The claim's capacity quantity (`10Gi`).
    pub capacity: String,
}

/// A VolumeSnapshotClass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotClass {
    pub name: String,
    pub driver: String,
    /// `Delete` or `Retain`: what deleting a snapshot of this class does to
    /// the storage's snapshot.
    pub deletion_policy: String,
}

/// A VolumeSnapshot as pvsnap records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsiSnapshot {
    pub namespace: String,
    pub name: String,
    /// The claim it is a snapshot of.
    pub claim: String,
    /// Its VolumeSnapshotClass.
    pub class: Option<String>,
    /// The VolumeSnapshotContent bound to it.
    pub content: Option<String>,
    /// `status.restoreSize` (a quantity): the smallest claim made from it.
    pub restore_size: Option<String>,
    /// `status.creationTime`: when the storage took it.
    pub created: Option<String>,
    /// `status.readyToUse`.
    pub ready: bool,
    /// `status.error.message`, when the driver reported one.
    pub error: Option<String>,
    /// The object's annotations (who made it: [`RUN_ANNOTATION`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl CsiSnapshot {
    fn from_object(obj: &DynamicObject) -> CsiSnapshot {
        let s = |v: &Value| v.as_str().map(str::to_string);
        let spec = &obj.data["spec"];
        let status = &obj.data["status"];
        CsiSnapshot {
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            claim: s(&spec["source"]["persistentVolumeClaimName"]).unwrap_or_default(),
            class: s(&spec["volumeSnapshotClassName"]),
            content: s(&status["boundVolumeSnapshotContentName"]),
            restore_size: s(&status["restoreSize"]),
            created: s(&status["creationTime"]),
            ready: status["readyToUse"] == true,
            error: s(&status["error"]["message"]),
            annotations: obj.metadata.annotations.clone().unwrap_or_default(),
        }
    }

    /// `NAMESPACE/NAME`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What deleting a VolumeSnapshot did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDeleted {
    /// False when it was gone already.
    pub existed: bool,
    /// The VolumeSnapshotContent it was bound to.
    pub content: Option<String>,
    /// The content's `deletionPolicy`: `Delete` (the storage's snapshot
    /// goes too) or `Retain` (it stays, with its content object).
    pub deletion_policy: Option<String>,
}

/// A claim made from a VolumeSnapshot through `spec.dataSource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimFromSnapshot {
    pub namespace: String,
    pub pvc: String,
    /// The VolumeSnapshot it is provisioned from.
    pub snapshot: String,
    pub storage_class: Option<String>,
    pub capacity: String,
    /// Its phase right after creation: `Bound`, or `Pending` until the
    /// driver has provisioned it (or, with `WaitForFirstConsumer`, until a
    /// pod uses it).
    pub phase: String,
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Cluster {
    /// Claim `namespace/name`, bound to a CSI volume. Refuses claims that
    /// are missing or unbound, and volumes that are missing or not CSI.
    pub async fn csi_claim(&self, namespace: &str, name: &str) -> Result<CsiClaim> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let pvc = claims
            .get_opt(name)
            .await
            .map_err(|e| {
                Error::api(
                    format!("reading persistentvolumeclaim {namespace}/{name}"),
                    e,
                )
            })?
            .ok_or_else(|| Error::ClaimNotFound {
                namespace: namespace.into(),
                name: name.into(),
            })?;
        let spec = pvc.spec.clone().unwrap_or_default();
        let pv_name = crate::claims::bound_volume(&pvc, namespace, name)?;
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = volumes
            .get_opt(&pv_name)
            .await
            .map_err(|e| Error::api(format!("reading persistentvolume {pv_name}"), e))?
            .ok_or_else(|| Error::VolumeNotFound {
                pv: pv_name.clone(),
                namespace: namespace.into(),
                claim: name.into(),
            })?;
        let pv_spec = pv.spec.unwrap_or_default();
        let Some(csi) = pv_spec.csi else {
            return Err(Error::NotCsi {
                pv: pv_name,
                namespace: namespace.into(),
                claim: name.into(),
            });
        };
        let capacity = pvc
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .or_else(|| pv_spec.capacity.as_ref().and_then(|c| c.get("storage")))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "0".into());
        Ok(CsiClaim {
            namespace: namespace.into(),
            pvc: name.into(),
            pv: pv_name,
            driver: csi.driver,
            storage_class: spec
                .storage_class_name
                .filter(|s| !s.is_empty())
                .or(pv_spec.storage_class_name.filter(|s| !s.is_empty())),
            capacity,
        })
    }

    /// The VolumeSnapshotClass to snapshot a volume of `driver` with:
    /// `requested` (which must be of that driver), else the driver's one
    /// default class. None, or several defaults, is an error naming the
    /// classes there are and how to mark one default.
    pub async fn snapshot_class(
        &self,
        driver: &str,
        requested: Option<&str>,
    ) -> Result<SnapshotClass> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &classes());
        let parse = |o: &DynamicObject| SnapshotClass {
            name: o.metadata.name.clone().unwrap_or_default(),
            driver: o.data["driver"].as_str().unwrap_or("").to_string(),
            deletion_policy: o.data["deletionPolicy"].as_str().unwrap_or("").to_string(),
        };
        if let Some(name) = requested {
            let o = api
                .get_opt(name)
                .await
                .map_err(|e| Error::api(format!("reading volumesnapshotclass {name}"), e))?
                .ok_or_else(|| Error::SnapshotClassNotFound { class: name.into() })?;
            let class = parse(&o);
            if class.driver != driver {
                return Err(Error::SnapshotClassDriver {
                    class: class.name,
                    class_driver: class.driver,
                    driver: driver.into(),
                });
            }
            return Ok(class);
        }
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::api("listing volumesnapshotclasses", e))?;
        let of_driver: Vec<(&DynamicObject, SnapshotClass)> = list
            .items
            .iter()
            .map(|o| (o, parse(o)))
            .filter(|(_, c)| c.driver == driver)
            .collect();
        let mut defaults: Vec<SnapshotClass> = of_driver
            .iter()
            .filter(|(o, _)| {
                o.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_SNAPSHOT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true")
            })
            .map(|(_, c)| c.clone())
            .collect();
        match defaults.len() {
            1 => Ok(defaults.remove(0)),
            0 => Err(Error::NoDefaultSnapshotClass {
                driver: driver.into(),
                classes: list_or_none(
                    &of_driver
                        .iter()
                        .map(|(_, c)| c.name.clone())
                        .collect::<Vec<_>>(),
                ),
            }),
            _ => Err(Error::AmbiguousDefaultSnapshotClass {
                driver: driver.into(),
                classes: defaults
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Creates VolumeSnapshot `name` of `claim` with `class`, labelled as
    /// pvsnap's. Returns at once; see [`Cluster::wait_volume_snapshot`].
    pub async fn create_volume_snapshot(
        &self,
        claim: &CsiClaim,
        class: &SnapshotClass,
        name: &str,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<CsiSnapshot> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &claim.namespace, &snapshots());
        let mut obj = DynamicObject::new(name, &snapshots()).within(&claim.namespace);
        obj.metadata.labels = Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())].into());
        if !annotations.is_empty() {
            obj.metadata.annotations = Some(annotations.clone());
        }
        obj.data = json!({
            "spec": {
                "volumeSnapshotClassName": class.name,
                "source": {"persistentVolumeClaimName": claim.pvc}
            }
        });
        let made = api
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| {
                if is_already_exists(&e) {
                    Error::SnapshotExists {
                        namespace: claim.namespace.clone(),
                        name: name.into(),
                    }
                } else {
                    Error::api(
                        format!(
                            "creating volumesnapshot {}/{name} of claim {}",
                            claim.namespace, claim.pvc
                        ),
                        e,
                    )
                }
            })?;
        Ok(CsiSnapshot::from_object(&made))
    }

    /// VolumeSnapshot `namespace/name`, or `None` when there is none.
    pub async fn volume_snapshot(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<CsiSnapshot>> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &snapshots());
        let o = api
            .get_opt(name)
            .await
            .map_err(|e| Error::api(format!("reading volumesnapshot {namespace}/{name}"), e))?;
        Ok(o.as_ref().map(CsiSnapshot::from_object))
    }

    /// Waits until VolumeSnapshot `namespace/name` is `readyToUse`, polling
    /// every [`POLL_INTERVAL`]. When the driver reports an error, or
    /// `timeout` passes, the snapshot is deleted (so nothing half-made stays
    /// behind) and the error says what the driver said.
    pub async fn wait_volume_snapshot(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<CsiSnapshot> {
        self.wait_until(namespace, name, timeout, "ready to use", |s| s.ready)
            .await
    }

    /// Waits until the storage has cut VolumeSnapshot `namespace/name`: its
    /// `status.creationTime` is set (or it is ready). The data is fixed from
    /// then on, though the driver may still be uploading it, so this ends a
    /// freeze window. Errors and timeout as [`Cluster::wait_volume_snapshot`].
    pub async fn wait_volume_snapshot_cut(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<CsiSnapshot> {
        self.wait_until(namespace, name, timeout, "cut (creationTime)", |s| {
            s.ready || s.created.is_some()
        })
        .await
    }

    async fn wait_until(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        stage: &'static str,
        done: fn(&CsiSnapshot) -> bool,
    ) -> Result<CsiSnapshot> {
        let deadline = Instant::now() + timeout;
        let last = loop {
            let snap = self
                .volume_snapshot(namespace, name)
                .await?
                .ok_or_else(|| Error::SnapshotVanished {
                    namespace: namespace.into(),
                    name: name.into(),
                })?;
            if done(&snap) {
                return Ok(snap);
            }
            if let Some(message) = snap.error.clone() {
                let cleanup = self.cleanup_note(namespace, name).await;
                return Err(Error::SnapshotFailed {
                    snapshot: format!("{namespace}/{name}"),
                    claim: format!("{namespace}/{}", snap.claim),
                    message,
                    cleanup,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                break snap;
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        };
        let cleanup = self.cleanup_note(namespace, name).await;
        Err(Error::SnapshotTimeout {
            snapshot: format!("{namespace}/{name}"),
            claim: format!("{namespace}/{}", last.claim),
            stage,
            timeout,
            detail: format!(
                "content: {}; {cleanup}",
                last.content.as_deref().unwrap_or("none yet")
            ),
        })
    }

    /// Deletes a snapshot that failed and says how that went, for the error.
    async fn cleanup_note(&self, namespace: &str, name: &str) -> String {
        match self.delete_volume_snapshot(namespace, name).await {
            Ok(_) => "it was deleted".into(),
            Err(e) => format!(
                "deleting it failed too ({e}); delete it with `kubectl delete volumesnapshot -n {namespace} {name}`"
            ),
        }
    }

    /// Deletes VolumeSnapshot `namespace/name`; the class's `deletionPolicy`
    /// (kept on its content) decides whether the storage's snapshot goes
    /// too. A snapshot already gone is no error (`existed: false`).
    pub async fn delete_volume_snapshot(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<SnapshotDeleted> {
        let Some(snap) = self.volume_snapshot(namespace, name).await? else {
            return Ok(SnapshotDeleted {
                existed: false,
                content: None,
                deletion_policy: None,
            });
        };
        let mut deletion_policy = None;
        if let Some(content) = &snap.content {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &contents());
            deletion_policy = api
                .get_opt(content)
                .await
                .map_err(|e| Error::api(format!("reading volumesnapshotcontent {content}"), e))?
                .and_then(|c| {
                    c.data["spec"]["deletionPolicy"]
                        .as_str()
                        .map(str::to_string)
                });
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &snapshots());
        let existed = match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => {
                return Err(Error::api(
                    format!("deleting volumesnapshot {namespace}/{name}"),
                    e,
                ));
            }
        };
        Ok(SnapshotDeleted {
            existed,
            content: snap.content,
            deletion_policy,
        })
    }

    /// The VolumeSnapshots pvsnap made: labelled [`MANAGED_BY_LABEL`]
    /// `=pvsnap` and named by [`pvsnap_native::naming`]. Anything else, a
    /// hand-made snapshot with the label included, is never listed.
    /// Sorted by namespace and name (so oldest first within a namespace).
    pub async fn pvsnap_volume_snapshots(&self, scope: &Scope) -> Result<Vec<CsiSnapshot>> {
        let (api, where_): (Api<DynamicObject>, String) = match scope {
            Scope::Namespace(ns) => (
                Api::namespaced_with(self.client.clone(), ns, &snapshots()),
                format!("namespace {ns}"),
            ),
            Scope::AllNamespaces => (
                Api::all_with(self.client.clone(), &snapshots()),
                "all namespaces".into(),
            ),
        };
        let lp = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        let list = api
            .list(&lp)
            .await
            .map_err(|e| Error::api(format!("listing volumesnapshots in {where_}"), e))?;
        let mut out: Vec<CsiSnapshot> = list
            .items
            .iter()
            .map(CsiSnapshot::from_object)
            .filter(|s| pvsnap_native::naming::Name::parse_dns_label(&s.name).is_some())
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(out)
    }

    /// Creates claim `namespace/name` provisioned from `snapshot` through
    /// `spec.dataSource` (the driver copies or clones the data). The claim
    /// is in the snapshot's namespace (the API allows no other), of
    /// `storage_class` (the original claim's) and at least the snapshot's
    /// `restoreSize`. Refuses an existing claim and a snapshot not ready.
    pub async fn create_claim_from_snapshot(
        &self,
        snapshot: &CsiSnapshot,
        namespace: &str,
        name: &str,
        storage_class: Option<&str>,
        capacity: &str,
    ) -> Result<ClaimFromSnapshot> {
        if namespace != snapshot.namespace {
            return Err(Error::SnapshotOtherNamespace {
                snapshot: snapshot.key(),
                namespace: namespace.into(),
                name: name.into(),
            });
        }
        let current = self
            .volume_snapshot(&snapshot.namespace, &snapshot.name)
            .await?
            .ok_or_else(|| Error::SnapshotVanished {
                namespace: snapshot.namespace.clone(),
                name: snapshot.name.clone(),
            })?;
        if !current.ready {
            return Err(Error::SnapshotNotReady {
                snapshot: snapshot.key(),
                error: current.error.unwrap_or_else(|| "none".into()),
            });
        }
        let size = current
            .restore_size
            .clone()
            .filter(|r| {
                crate::parse_quantity(r).unwrap_or(0) > crate::parse_quantity(capacity).unwrap_or(0)
            })
            .unwrap_or_else(|| capacity.to_string());
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let mut spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
            "dataSource": {
                "apiGroup": SNAPSHOT_API_GROUP,
                "kind": "VolumeSnapshot",
                "name": snapshot.name
            }
        });
        if let Some(class) = storage_class {
            spec["storageClassName"] = json!(class);
        }
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY}
            },
            "spec": spec
        }))
        .expect("a claim from a snapshot is a valid claim");
        let made = claims
            .create(&PostParams::default(), &pvc)
            .await
            .map_err(|e| {
                if is_already_exists(&e) {
                    Error::ClaimExists {
                        namespace: namespace.into(),
                        name: name.into(),
                    }
                } else {
                    Error::api(
                        format!("creating persistentvolumeclaim {namespace}/{name}"),
                        e,
                    )
                }
            })?;
        Ok(ClaimFromSnapshot {
            namespace: namespace.into(),
            pvc: name.into(),
            snapshot: snapshot.key(),
            storage_class: storage_class.map(str::to_string),
            capacity: size,
            phase: made
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "Pending".into()),
        })
    }
}
