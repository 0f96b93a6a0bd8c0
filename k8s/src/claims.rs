//! From a PersistentVolumeClaim to the host directory that holds its data.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec};
use kube::Api;
use kube::api::ListParams;
use serde::{Deserialize, Serialize};

use crate::config::Cluster;
use crate::error::{Error, Result, is_not_found};

/// The node label that the hostpath provisioner pins volumes with.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// How to resolve a claim on this machine.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// The Kubernetes node this process runs on. A volume pinned to another
    /// node is refused.
    pub node_name: String,
    /// Where the host's root file system is mounted, when running inside a
    /// pod (e.g. `/host`). Host paths are mapped below it.
    pub host_root: Option<PathBuf>,
}

/// A storage size: bytes, and the quantity text it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Size in bytes (rounded up).
    pub bytes: u64,
    /// The quantity as the API server wrote it, e.g. `10Gi`.
    pub quantity: String,
}

impl Capacity {
    /// Parse a Kubernetes quantity such as `10Gi`, `500M` or `1.5e9`.
    pub fn parse(quantity: &str) -> Option<Capacity> {
        parse_quantity(quantity).map(|bytes| Capacity {
            bytes,
            quantity: quantity.to_string(),
        })
    }
}

/// Which kind of host-directory volume backs the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeKind {
    /// `spec.hostPath` (what `microk8s-hostpath` creates).
    HostPath,
    /// `spec.local`.
    Local,
}

/// A claim resolved to its data directory on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedClaim {
    /// Cluster name (kubeconfig context, or `in-cluster`).
    pub cluster: String,
    /// Namespace of the claim.
    pub namespace: String,
    /// Name of the claim.
    pub pvc: String,
    /// Name of the bound PersistentVolume.
    pub pv: String,
    /// Storage class of the claim (or of the volume when the claim has none).
    pub storage_class: Option<String>,
    /// Capacity of the claim.
    pub capacity: Capacity,
    /// Labels of the claim.
    pub labels: BTreeMap<String, String>,
    /// Node the volume is pinned to, when it is pinned to exactly one.
    pub node: Option<String>,
    /// The volume type.
    pub volume_kind: VolumeKind,
    /// Path of the volume as the node sees it (`spec.hostPath.path`).
    pub volume_path: PathBuf,
    /// Where to read the data from this process: `volume_path` below
    /// `host_root` when one is given.
    pub host_path: PathBuf,
    /// UID of the claim.
    pub uid: String,
}

/// Which namespaces to list claims in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One namespace.
    Namespace(String),
    /// Every namespace.
    AllNamespaces,
}

/// A claim's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClaimRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Cluster {
    /// Resolve claim `namespace/name` to the host directory of its volume.
    ///
    /// Refuses claims that are missing or not bound, volumes that are
    /// missing, pinned to another node, provided by CSI, or of any type but
    /// hostPath and local.
    pub async fn resolve_claim(
        &self,
        namespace: &str,
        name: &str,
        opts: &ResolveOptions,
    ) -> Result<ResolvedClaim> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let pvc = match claims.get(name).await {
            Ok(p) => p,
            Err(e) if is_not_found(&e) => {
                return Err(Error::ClaimNotFound {
                    namespace: namespace.into(),
                    name: name.into(),
                });
            }
            Err(e) => {
                return Err(Error::api(
                    format!("reading persistentvolumeclaim {namespace}/{name}"),
                    e,
                ));
            }
        };
        let spec = pvc.spec.clone().unwrap_or_default();
        let pv_name = bound_volume(&pvc, namespace, name)?;

        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = match volumes.get(&pv_name).await {
            Ok(p) => p,
            Err(e) if is_not_found(&e) => {
                return Err(Error::VolumeNotFound {
                    pv: pv_name,
                    namespace: namespace.into(),
                    claim: name.into(),
                });
            }
            Err(e) => {
                return Err(Error::api(format!("reading persistentvolume {pv_name}"), e));
            }
        };
        let pv_spec = pv.spec.clone().unwrap_or_default();

        let (volume_kind, volume_path) =
            volume_source(&pv_spec).map_err(|refusal| match refusal {
                Refusal::Csi(driver) => Error::CsiVolume {
                    pv: pv_name.clone(),
                    namespace: namespace.into(),
                    claim: name.into(),
                    driver,
                },
                Refusal::Other(kind) => Error::UnsupportedVolume {
                    pv: pv_name.clone(),
                    namespace: namespace.into(),
                    claim: name.into(),
                    kind,
                },
            })?;

        let nodes = pinned_nodes(&pv_spec);
        if !nodes.is_empty() && !nodes.iter().any(|n| n == &opts.node_name) {
            return Err(Error::WrongNode {
                pv: pv_name,
                namespace: namespace.into(),
                claim: name.into(),
                volume_node: nodes.join(" or "),
                this_node: opts.node_name.clone(),
            });
        }
        if nodes.is_empty() {
            tracing::warn!(pv = %pv_name, "volume has no node affinity on {HOSTNAME_LABEL}; assuming it is on this node");
        }
        let node = if nodes.len() == 1 {
            nodes.into_iter().next()
        } else {
            None
        };

        let quantity = pvc
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .or_else(|| pv_spec.capacity.as_ref().and_then(|c| c.get("storage")))
            .or_else(|| {
                spec.resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
            })
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "0".into());
        let capacity = Capacity::parse(&quantity).ok_or_else(|| Error::InvalidQuantity {
            quantity: quantity.clone(),
            object: format!("persistentvolumeclaim {namespace}/{name}"),
        })?;

        let host_path = map_host_path(&volume_path, opts.host_root.as_deref());
        let meta = pvc.metadata;
        let resolved = ResolvedClaim {
            cluster: self.name().to_string(),
            namespace: namespace.into(),
            pvc: name.into(),
            pv: pv_name,
            storage_class: spec
                .storage_class_name
                .filter(|s| !s.is_empty())
                .or(pv_spec.storage_class_name.filter(|s| !s.is_empty())),
            capacity,
            labels: meta.labels.unwrap_or_default(),
            node,
            volume_kind,
            volume_path,
            host_path,
            uid: meta.uid.unwrap_or_default(),
        };
        tracing::debug!(claim = %format!("{namespace}/{name}"), pv = %resolved.pv, path = %resolved.host_path.display(), "resolved claim");
        Ok(resolved)
    }

    /// List claims in a namespace or in all namespaces, optionally filtered by
    /// a label selector (`app=db,tier!=cache`). Sorted by namespace and name.
    pub async fn list_claims(
        &self,
        scope: Scope,
        label_selector: Option<&str>,
    ) -> Result<Vec<ClaimRef>> {
        let (api, where_): (Api<PersistentVolumeClaim>, String) = match &scope {
            Scope::Namespace(ns) => (
                Api::namespaced(self.client.clone(), ns),
                format!("namespace {ns}"),
            ),
            Scope::AllNamespaces => (Api::all(self.client.clone()), "all namespaces".into()),
        };
        let mut lp = ListParams::default();
        if let Some(sel) = label_selector {
            lp = lp.labels(sel);
        }
        let list = api
            .list(&lp)
            .await
            .map_err(|e| Error::api(format!("listing persistentvolumeclaims in {where_}"), e))?;
        let mut out: Vec<ClaimRef> = list
            .items
            .into_iter()
            .filter_map(|p| {
                let name = p.metadata.name?;
                let namespace = p.metadata.namespace.or(match &scope {
                    Scope::Namespace(ns) => Some(ns.clone()),
                    Scope::AllNamespaces => None,
                })?;
                Some(ClaimRef { namespace, name })
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

enum Refusal {
    Csi(String),
    Other(String),
}

/// The host-directory source of a volume, or why there is none.
fn volume_source(
    spec: &PersistentVolumeSpec,
) -> std::result::Result<(VolumeKind, PathBuf), Refusal> {
    if let Some(hp) = &spec.host_path {
        return Ok((VolumeKind::HostPath, PathBuf::from(&hp.path)));
    }
    if let Some(local) = &spec.local {
        return Ok((VolumeKind::Local, PathBuf::from(&local.path)));
    }
    if let Some(csi) = &spec.csi {
        return Err(Refusal::Csi(csi.driver.clone()));
    }
    // Name whichever volume source the spec carries.
    const NOT_SOURCES: &[&str] = &[
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeAttributesClassName",
        "volumeMode",
    ];
    let kind = serde_json::to_value(spec)
        .ok()
        .and_then(|v| {
            v.as_object().and_then(|o| {
                o.keys()
                    .find(|k| !NOT_SOURCES.contains(&k.as_str()))
                    .cloned()
            })
        })
        .unwrap_or_else(|| "none".into());
    Err(Refusal::Other(kind))
}

/// Node names from required node affinity terms on `kubernetes.io/hostname`.
fn pinned_nodes(spec: &PersistentVolumeSpec) -> Vec<String> {
    let mut nodes = Vec::new();
    let terms = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    for term in terms {
        for expr in term.match_expressions.iter().flatten() {
            if expr.key == HOSTNAME_LABEL && expr.operator == "In" {
                for v in expr.values.iter().flatten() {
                    if !nodes.contains(v) {
                        nodes.push(v.clone());
                    }
                }
            }
        }
    }
    nodes
}

/// Put an absolute host path below `host_root`.
pub fn map_host_path(path: &Path, host_root: Option<&Path>) -> PathBuf {
    match host_root {
        None => path.to_path_buf(),
        Some(root) => {
            let mut out = root.to_path_buf();
            for c in path.components() {
                if let Component::Normal(part) = c {
                    out.push(part);
                }
            }
            out
        }
    }
}

/// Parse a Kubernetes quantity into bytes, rounding up fractions.
pub fn parse_quantity(text: &str) -> Option<u64> {
    let s = text.trim();
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    // value = digits * 10^-frac_len * multiplier
    let digits: u128 = format!("{int_part}{frac_part}").parse().ok()?;
    let frac_len = frac_part.len() as u32;
    let (mul_num, mul_den): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        exp if exp.starts_with('e') || exp.starts_with('E') => {
            let e: i32 = exp[1..].parse().ok()?;
            if e >= 0 {
                (10u128.checked_pow(e as u32)?, 1)
            } else {
                (1, 10u128.checked_pow((-e) as u32)?)
            }
        }
        _ => return None,
    };
    let num = digits.checked_mul(mul_num)?;
    let den = 10u128.checked_pow(frac_len)?.checked_mul(mul_den)?;
    let bytes = num.div_ceil(den);
    u64::try_from(bytes).ok()
}

/// The volume claim `namespace/name` is bound to; an error naming its phase
/// when it is not bound.
pub(crate) fn bound_volume(
    pvc: &PersistentVolumeClaim,
    namespace: &str,
    name: &str,
) -> Result<String> {
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "unknown".into());
    match pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
        Some(v) if phase == "Bound" && !v.is_empty() => Ok(v.to_string()),
        _ => Err(Error::ClaimNotBound {
            namespace: namespace.into(),
            name: name.into(),
            phase,
        }),
    }
}
