//! How a claim is named and recorded.

use pvsnap_engine::snapshot::Source;
use pvsnap_k8s::{ClaimRef, ResolvedClaim};

/// `pvc/NAMESPACE/NAME`, as the claim's timeline key reads.
pub fn claim_key(c: &ClaimRef) -> String {
    format!("pvc/{}/{}", c.namespace, c.name)
}

/// The snapshot source recorded for a resolved claim. `host_path` is the
/// volume's path as the node sees it, wherever the host's root is mounted.
pub fn source_of(r: &ResolvedClaim) -> Source {
    Source::Pvc {
        cluster: r.cluster.clone(),
        namespace: r.namespace.clone(),
        pvc: r.pvc.clone(),
        pv: r.pv.clone(),
        storage_class: r.storage_class.clone(),
        capacity: Some(r.capacity.quantity.clone()),
        labels: r.labels.clone(),
        node: r.node.clone(),
        host_path: r.volume_path.to_string_lossy().into_owned(),
    }
}
