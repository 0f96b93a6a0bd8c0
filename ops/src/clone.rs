//! A snapshot restored into a new claim: data first, then a volume and a
//! claim bound to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pvsnap_engine::IndexedRepository;
use pvsnap_engine::restore::{self, RestoreOptions, RestoreProgress, RestoreSummary};
use pvsnap_engine::snapshot::{Snapshot, Source};
use pvsnap_k8s::{ClaimRef, CloneTarget, Cluster, ResolveOptions};

use crate::claim::claim_key;
use crate::error::{Error, Result};
use crate::observe::Observer;

/// Where and how a clone claim is made.
#[derive(Debug, Clone)]
pub struct CloneOptions {
    /// The node's storage folder (MicroK8s's `default-storage`); absolute,
    /// as the node sees it.
    pub storage_dir: PathBuf,
    /// The storage class of the new claim; the snapshot's when `None`.
    pub storage_class: Option<String>,
    /// The node the new volume is pinned to.
    pub node: String,
    /// How the claim's name is checked against the cluster (and where the
    /// host's root is mounted).
    pub resolve: ResolveOptions,
    /// Only this folder of the snapshot.
    pub subpath: Option<String>,
    /// Includes and excludes of the restore.
    pub restore: RestoreOptions,
}

/// What a clone made.
#[derive(Debug)]
pub struct Cloned {
    /// The volume and claim created.
    pub target: CloneTarget,
    /// Where the data was restored, as this process sees it.
    pub local_dir: PathBuf,
    pub summary: RestoreSummary,
}

/// Restores `snap` into a new folder under the storage folder, then creates
/// a PersistentVolume pointing at it (hostPath, pinned to the node, reclaim
/// policy Retain) and the claim bound to it. No provisioner is involved, so
/// the data needs no copying; data is restored before the objects exist, so
/// no pod can mount a half-filled volume.
///
/// Refuses an invalid claim name, a claim that exists, and a non-empty
/// folder where the data would go, before writing anything.
pub async fn restore_to_new_claim(
    repo: &IndexedRepository,
    cluster: &Cluster,
    claim: &ClaimRef,
    snap: &Snapshot,
    options: &CloneOptions,
    observer: &dyn Observer,
) -> Result<Cloned> {
    let key = claim_key(claim);
    if !valid_name(&claim.name) {
        return Err(Error::InvalidClaimName {
            name: claim.name.clone(),
        });
    }
    match cluster
        .resolve_claim(&claim.namespace, &claim.name, &options.resolve)
        .await
    {
        Err(pvsnap_k8s::Error::ClaimNotFound { .. }) => {}
        Err(e @ pvsnap_k8s::Error::Api { .. }) => return Err(e.into()),
        _ => return Err(Error::ClaimExists { key }),
    }
    let (capacity, class) = match &snap.source {
        Source::Pvc {
            capacity,
            storage_class,
            ..
        } => (capacity.clone(), storage_class.clone()),
        Source::Path { .. } => (None, None),
    };
    let capacity = capacity.unwrap_or_else(|| whole_gib(snap.summary.total_bytes));
    let class = options.storage_class.clone().or(class);
    let pv = pvsnap_k8s::clone_volume_name(&claim.namespace, &claim.name);
    let host_dir = options
        .storage_dir
        .join(format!("{}-{}-{pv}", claim.namespace, claim.name));
    let local_dir = pvsnap_k8s::map_host_path(&host_dir, options.resolve.host_root.as_deref());
    if !is_empty_or_missing(&local_dir) {
        return Err(Error::CloneFolderNotEmpty { dir: local_dir });
    }
    let progress = Arc::new(RestoreProgress::default());
    let summary = {
        let _watch = observer.restoring(progress.clone());
        restore::restore(
            repo,
            snap,
            options.subpath.as_deref(),
            &local_dir,
            &options.restore,
            &progress,
        )?
    };
    let target = cluster
        .create_clone_claim(
            &claim.namespace,
            &claim.name,
            class.as_deref(),
            &capacity,
            &options.node,
            &host_dir,
        )
        .await
        .map_err(|source| Error::CloneClaimNotCreated {
            dir: local_dir.clone(),
            source: Box::new(source),
        })?;
    Ok(Cloned {
        target,
        local_dir,
        summary,
    })
}

fn is_empty_or_missing(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// A quantity of whole GiB holding `bytes` (at least 1Gi): the capacity of a
/// clone of a snapshot that does not record one.
fn whole_gib(bytes: u64) -> String {
    format!("{}Gi", bytes.div_ceil(1 << 30).max(1))
}

/// Whether `s` is a valid claim name (a DNS subdomain).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    #[test]
    fn clone_capacity_rounds_up_to_whole_gib() {
        assert_eq!(super::whole_gib(0), "1Gi");
        assert_eq!(super::whole_gib(1 << 30), "1Gi");
        assert_eq!(super::whole_gib((1 << 30) + 1), "2Gi");
    }

    #[test]
    fn claim_names_follow_dns_rules() {
        assert!(super::valid_name("restored-1"));
        assert!(!super::valid_name("Restored"));
        assert!(!super::valid_name("-x"));
        assert!(!super::valid_name(""));
    }

    #[test]
    fn a_folder_with_an_entry_is_not_empty() {
        let d = tempfile::tempdir().unwrap();
        assert!(super::is_empty_or_missing(&d.path().join("nope")));
        assert!(super::is_empty_or_missing(d.path()));
        std::fs::write(d.path().join("f"), b"x").unwrap();
        assert!(!super::is_empty_or_missing(d.path()));
    }
}
