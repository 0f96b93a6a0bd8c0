//! Stopping the workloads that use a claim, for in-place restores.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Volume};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use crate::config::Cluster;
use crate::error::{Error, Result, is_not_found};

/// How often [`Cluster::wait_pods_gone`] looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Kinds of workload that can be scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        })
    }
}

/// A scalable workload and its replica count when it was read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.replicas` (1 when unset).
    pub replicas: i32,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl Workload {
    /// The `kubectl` command that sets this workload back to `replicas`.
    pub fn kubectl_scale_command(&self) -> String {
        format!(
            "kubectl scale -n {} {}/{} --replicas={}",
            self.namespace,
            self.kind.to_string().to_lowercase(),
            self.name,
            self.replicas
        )
    }
}

fn template_mounts(template: &PodTemplateSpec, pvc: &str) -> bool {
    template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs: &Vec<Volume>| {
            vs.iter().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == pvc)
            })
        })
}

/// True when `pvc` is `<template>-<sts>-<ordinal>` of one of the
/// StatefulSet's volume claim templates.
fn sts_claim_template_matches(sts: &StatefulSet, pvc: &str) -> bool {
    let Some(sts_name) = sts.metadata.name.as_deref() else {
        return false;
    };
    sts.spec.volume_claim_templates.as_ref().is_some_and(|ts| {
        ts.iter().any(|t| {
            let Some(tname) = t.metadata.name.as_deref() else {
                return false;
            };
            pvc.strip_prefix(&format!("{tname}-{sts_name}-"))
                .is_some_and(|ord| !ord.is_empty() && ord.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

impl Cluster {
    /// Deployments and StatefulSets in `namespace` whose pods use claim
    /// `pvc`: through a pod template volume, a StatefulSet volume claim
    /// template (`<template>-<set>-<ordinal>`), or the owner chain of a pod
    /// that mounts it (Pod → ReplicaSet → Deployment, Pod → StatefulSet).
    /// Sorted by kind and name.
    pub async fn workloads_mounting(&self, namespace: &str, pvc: &str) -> Result<Vec<Workload>> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
        let lp = ListParams::default();
        let deployments = deployments
            .list(&lp)
            .await
            .map_err(|e| Error::api(format!("listing deployments in namespace {namespace}"), e))?
            .items;
        let sets = sets
            .list(&lp)
            .await
            .map_err(|e| Error::api(format!("listing statefulsets in namespace {namespace}"), e))?
            .items;

        let mut names: BTreeSet<(WorkloadKind, String)> = BTreeSet::new();
        for d in &deployments {
            if let Some(name) = &d.metadata.name
                && template_mounts(&d.spec.template, pvc)
            {
                names.insert((WorkloadKind::Deployment, name.clone()));
            }
        }
        for s in &sets {
            if let Some(name) = &s.metadata.name
                && (template_mounts(&s.spec.template, pvc) || sts_claim_template_matches(s, pvc))
            {
                names.insert((WorkloadKind::StatefulSet, name.clone()));
            }
        }

        // Owner chains of the pods that mount the claim.
        let replica_sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        for pod in self.pods_using(namespace, pvc).await? {
            for owner in pod.metadata.owner_references.iter().flatten() {
                if owner.controller != Some(true) {
                    continue;
                }
                match owner.kind.as_str() {
                    "StatefulSet" => {
                        names.insert((WorkloadKind::StatefulSet, owner.name.clone()));
                    }
                    "Deployment" => {
                        names.insert((WorkloadKind::Deployment, owner.name.clone()));
                    }
                    "ReplicaSet" => match replica_sets.get(&owner.name).await {
                        Ok(rs) => {
                            for o in rs.metadata.owner_references.iter().flatten() {
                                if o.controller == Some(true) && o.kind == "Deployment" {
                                    names.insert((WorkloadKind::Deployment, o.name.clone()));
                                }
                            }
                        }
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => {
                            return Err(Error::api(
                                format!("reading replicaset {namespace}/{}", owner.name),
                                e,
                            ));
                        }
                    },
                    _ => {}
                }
            }
        }

        let mut out = Vec::new();
        for (kind, name) in names {
            let replicas = match kind {
                WorkloadKind::Deployment => deployments
                    .iter()
                    .find(|d| d.metadata.name.as_deref() == Some(&name))
                    .map(|d| d.spec.replicas.unwrap_or(1)),
                WorkloadKind::StatefulSet => sets
                    .iter()
                    .find(|s| s.metadata.name.as_deref() == Some(&name))
                    .map(|s| s.spec.replicas.unwrap_or(1)),
            };
            match replicas {
                Some(replicas) => out.push(Workload {
                    kind,
                    namespace: namespace.to_string(),
                    name,
                    replicas,
                }),
                None => {
                    tracing::warn!(%kind, %name, "owner of a pod using the claim is gone; ignoring it")
                }
            }
        }
        Ok(out)
    }

    /// Current replica count from the scale subresource.
    pub async fn get_replicas(&self, workload: &Workload) -> Result<i32> {
        let ns = &workload.namespace;
        let scale = match workload.kind {
            WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(self.client.clone(), ns)
                    .get_scale(&workload.name)
                    .await
            }
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(self.client.clone(), ns)
                    .get_scale(&workload.name)
                    .await
            }
        }
        .map_err(|e| Error::api(format!("reading the scale of {workload}"), e))?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    /// Set the replica count through the scale subresource (a merge PATCH).
    pub async fn scale(&self, workload: &Workload, replicas: i32) -> Result<()> {
        tracing::info!(%workload, replicas, "scaling");
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
        let pp = PatchParams::default();
        let ns = &workload.namespace;
        match workload.kind {
            WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(self.client.clone(), ns)
                    .patch_scale(&workload.name, &pp, &patch)
                    .await
            }
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(self.client.clone(), ns)
                    .patch_scale(&workload.name, &pp, &patch)
                    .await
            }
        }
        .map(|_| ())
        .map_err(|source| Error::Scale {
            workload: workload.to_string(),
            replicas,
            source,
        })
    }

    /// Wait until no pod references claim `namespace/pvc` (pods that
    /// Succeeded or Failed do not count). Polls every [`POLL_INTERVAL`].
    pub async fn wait_pods_gone(
        &self,
        namespace: &str,
        pvc: &str,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let pods: Vec<String> = self
                .pods_using(namespace, pvc)
                .await?
                .into_iter()
                .filter(|p| {
                    !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
                .filter_map(|p| p.metadata.name)
                .collect();
            if pods.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::PodsStillPresent {
                    namespace: namespace.into(),
                    claim: pvc.into(),
                    pods,
                    timeout,
                });
            }
            tracing::debug!(?pods, "waiting for pods to go");
            tokio::time::sleep(
                POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }

    /// Scale `workloads` to 0, remembering their replica counts (read from
    /// the scale subresource, not from `Workload::replicas`). If one fails,
    /// those already scaled down are scaled back before the error returns.
    ///
    /// The caller must call [`ScaledDown::restore_scale`] on every path,
    /// success and failure alike: an async Drop does not exist, so dropping
    /// the guard only logs the `kubectl` commands that would restore them.
    pub async fn scale_down(&self, workloads: &[Workload]) -> Result<ScaledDown> {
        let mut guard = ScaledDown {
            cluster: self.clone(),
            originals: Vec::new(),
            restored: false,
        };
        for w in workloads {
            let step = async {
                let replicas = self.get_replicas(w).await?;
                let original = Workload {
                    replicas,
                    ..w.clone()
                };
                if replicas != 0 {
                    self.scale(w, 0).await?;
                }
                Ok::<_, Error>(original)
            }
            .await;
            match step {
                Ok(original) => guard.originals.push(original),
                Err(e) => {
                    if let Err(re) = guard.restore_scale().await {
                        tracing::error!(error = %re, "could not restore after a failed scale-down");
                    }
                    return Err(e);
                }
            }
        }
        Ok(guard)
    }
}

/// Workloads scaled to zero, with their original replica counts.
///
/// Call [`ScaledDown::restore_scale`] on both the success and the failure
/// path of the work done while they are down. Dropping the guard without
/// doing so cannot scale anything back (Drop cannot be async); it logs an
/// error with the `kubectl scale` commands that would.
#[must_use = "call restore_scale() on every path, or the workloads stay at zero replicas"]
pub struct ScaledDown {
    cluster: Cluster,
    originals: Vec<Workload>,
    restored: bool,
}

impl std::fmt::Debug for ScaledDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScaledDown")
            .field("originals", &self.originals)
            .field("restored", &self.restored)
            .finish()
    }
}

impl ScaledDown {
    /// The workloads with the replica counts they had before.
    pub fn originals(&self) -> &[Workload] {
        &self.originals
    }

    /// `kubectl scale` commands that restore the original counts by hand.
    pub fn manual_restore_commands(&self) -> Vec<String> {
        self.originals
            .iter()
            .map(Workload::kubectl_scale_command)
            .collect()
    }

    /// Scale every workload back to its original count. Tries all of them
    /// even when some fail; calling it again after success does nothing.
    pub async fn restore_scale(&mut self) -> Result<()> {
        if self.restored {
            return Ok(());
        }
        let mut failed = Vec::new();
        let mut commands = Vec::new();
        for w in &self.originals {
            if w.replicas == 0 {
                continue;
            }
            if let Err(e) = self.cluster.scale(w, w.replicas).await {
                failed.push(format!("{w} ({e})"));
                commands.push(w.kubectl_scale_command());
            }
        }
        if failed.is_empty() {
            self.restored = true;
            Ok(())
        } else {
            Err(Error::RestoreScale {
                workloads: failed,
                commands,
            })
        }
    }
}

impl Drop for ScaledDown {
    fn drop(&mut self) {
        if !self.restored && self.originals.iter().any(|w| w.replicas != 0) {
            tracing::error!(
                commands = ?self.manual_restore_commands(),
                "workloads were left scaled down; restore them with these commands"
            );
        }
    }
}
