//! Creating a new claim bound to a restored host directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeSpec,
    VolumeNodeAffinity, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde::{Deserialize, Serialize};

use crate::claims::{HOSTNAME_LABEL, parse_quantity};
use crate::config::Cluster;
use crate::error::{Error, Result, is_already_exists, is_not_found};

/// Label put on objects this crate creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "pvsnap";

/// The claim and volume created by [`Cluster::create_clone_claim`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneTarget {
    /// Namespace of the new claim.
    pub namespace: String,
    /// Name of the new claim.
    pub pvc: String,
    /// Name of the new volume.
    pub pv: String,
    /// Storage class written on both (empty string: none).
    pub storage_class: String,
    /// Capacity quantity written on both.
    pub capacity: String,
    /// Node the volume is pinned to.
    pub node: String,
    /// The host directory the volume points at.
    pub host_dir: PathBuf,
}

/// Name of the volume created for clone claim `namespace/name`: a
/// DNS-1123 subdomain of at most 253 characters.
pub fn clone_volume_name(namespace: &str, name: &str) -> String {
    let full = format!("pvsnap-{namespace}-{name}");
    if full.len() <= 253 {
        return full;
    }
    // FNV-1a keeps long names unique after truncation.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in full.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut cut = full[..236].trim_end_matches(['-', '.']).to_string();
    cut.push_str(&format!("-{h:016x}"));
    cut
}

fn valid_dns_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

impl Cluster {
    /// Create claim `namespace/name` bound to a new hostPath volume on
    /// `host_dir` of `node`, without any provisioner.
    ///
    /// The volume gets `hostPath.path = host_dir` (type `Directory`, so a
    /// missing directory fails the pod instead of silently starting empty),
    /// the capacity and storage class, a `claimRef` to the new claim, node
    /// affinity on `kubernetes.io/hostname`, and reclaim policy Retain (so
    /// deleting the claim never deletes restored data). The claim names the
    /// volume in `volumeName`, which makes the binding immediate. With no
    /// storage class, both get `""` so the default class is not applied.
    ///
    /// Refuses when the claim (or the volume) already exists. If creating the
    /// claim fails, the volume just created is deleted again.
    pub async fn create_clone_claim(
        &self,
        namespace: &str,
        name: &str,
        storage_class: Option<&str>,
        capacity: &str,
        node: &str,
        host_dir: &Path,
    ) -> Result<CloneTarget> {
        if !valid_dns_name(name, 253) {
            return Err(Error::InvalidName {
                what: "claim name",
                name: name.into(),
            });
        }
        if !host_dir.is_absolute() {
            return Err(Error::RelativeHostDir(host_dir.to_path_buf()));
        }
        if parse_quantity(capacity).is_none() {
            return Err(Error::InvalidQuantity {
                quantity: capacity.into(),
                object: format!("clone claim {namespace}/{name}"),
            });
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        match claims.get_opt(name).await {
            Ok(Some(_)) => {
                return Err(Error::ClaimExists {
                    namespace: namespace.into(),
                    name: name.into(),
                });
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Error::api(
                    format!("checking for persistentvolumeclaim {namespace}/{name}"),
                    e,
                ));
            }
        }
        let pv_name = clone_volume_name(namespace, name);
        let class = storage_class.unwrap_or("").to_string();
        let host_dir_text = host_dir
            .to_str()
            .ok_or_else(|| Error::RelativeHostDir(host_dir.to_path_buf()))?
            .to_string();
        let labels = BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())]);
        let storage = BTreeMap::from([("storage".to_string(), Quantity(capacity.to_string()))]);

        let pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(pv_name.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                capacity: Some(storage.clone()),
                host_path: Some(HostPathVolumeSource {
                    path: host_dir_text,
                    type_: Some("Directory".into()),
                }),
                claim_ref: Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: Some(namespace.into()),
                    name: Some(name.into()),
                    ..Default::default()
                }),
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: HOSTNAME_LABEL.into(),
                                operator: "In".into(),
                                values: Some(vec![node.into()]),
                            }]),
                            match_fields: None,
                        }],
                    }),
                }),
                persistent_volume_reclaim_policy: Some("Retain".into()),
                storage_class_name: Some(class.clone()),
                volume_mode: Some("Filesystem".into()),
                ..Default::default()
            }),
            status: None,
        };
        match volumes.create(&PostParams::default(), &pv).await {
            Ok(_) => {}
            Err(e) if is_already_exists(&e) => return Err(Error::VolumeExists { pv: pv_name }),
            Err(e) => {
                return Err(Error::api(
                    format!("creating persistentvolume {pv_name}"),
                    e,
                ));
            }
        }
        tracing::info!(pv = %pv_name, dir = %host_dir.display(), %node, "created clone volume");

        let pvc = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(storage),
                    ..Default::default()
                }),
                storage_class_name: Some(class.clone()),
                volume_name: Some(pv_name.clone()),
                volume_mode: Some("Filesystem".into()),
                ..Default::default()
            }),
            status: None,
        };
        if let Err(e) = claims.create(&PostParams::default(), &pvc).await {
            // Do not leave a volume reserved for a claim we did not create.
            match volumes.delete(&pv_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(de) if is_not_found(&de) => {}
                Err(de) => {
                    tracing::error!(pv = %pv_name, error = %de, "could not delete the clone volume after the claim failed; delete it by hand")
                }
            }
            return Err(if is_already_exists(&e) {
                Error::ClaimExists {
                    namespace: namespace.into(),
                    name: name.into(),
                }
            } else {
                Error::api(
                    format!("creating persistentvolumeclaim {namespace}/{name}"),
                    e,
                )
            });
        }
        tracing::info!(claim = %format!("{namespace}/{name}"), pv = %pv_name, "created clone claim");
        Ok(CloneTarget {
            namespace: namespace.into(),
            pvc: name.into(),
            pv: pv_name,
            storage_class: class,
            capacity: capacity.into(),
            node: node.into(),
            host_dir: host_dir.to_path_buf(),
        })
    }
}
