//! From a claim to its volume directory: resolving, refusing, listing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pvsnap_k8s::testing::fixtures::*;
use pvsnap_k8s::{Capacity, ClaimRef, Error, ResolveOptions, Scope, VolumeKind, parse_quantity};

use crate::scenario::{Scenario, claim, here};

#[tokio::test]
async fn resolves_a_microk8s_hostpath_claim() {
    let s = Scenario::fixtures().await;
    let cluster = &s.cluster;
    let r = cluster
        .resolve_claim("default", "data", &here())
        .await
        .unwrap();
    assert_eq!(r.cluster, pvsnap_k8s::testing::fake::CONTEXT);
    assert_eq!((r.namespace.as_str(), r.pvc.as_str()), ("default", "data"));
    assert_eq!(r.pv, pv_name(DATA_UID));
    assert_eq!(r.storage_class.as_deref(), Some(CLASS));
    assert_eq!(
        r.capacity,
        Capacity {
            bytes: 1 << 30,
            quantity: "1Gi".into()
        }
    );
    assert_eq!(
        r.labels,
        BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("backup".to_string(), "daily".to_string())
        ])
    );
    assert_eq!(r.node.as_deref(), Some(NODE));
    assert_eq!(r.volume_kind, VolumeKind::HostPath);
    assert_eq!(
        r.host_path,
        PathBuf::from(hostpath_dir("default", "data", DATA_UID))
    );
    assert_eq!(r.volume_path, r.host_path);
    assert_eq!(r.uid, DATA_UID);
    // Serializable for the snapshot record.
    let back: pvsnap_k8s::ResolvedClaim =
        serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[tokio::test]
async fn host_root_maps_the_host_path() {
    let s = Scenario::fixtures().await;
    let cluster = &s.cluster;
    let opts = ResolveOptions {
        node_name: NODE.into(),
        host_root: Some("/host".into()),
    };
    let r = cluster
        .resolve_claim("db", "data-postgres-0", &opts)
        .await
        .unwrap();
    assert_eq!(
        r.volume_path,
        PathBuf::from(hostpath_dir("db", "data-postgres-0", PG_UID))
    );
    assert_eq!(
        r.host_path,
        Path::new("/host")
            .join(hostpath_dir("db", "data-postgres-0", PG_UID).trim_start_matches('/'))
    );
    assert_eq!(r.capacity.bytes, 10 << 30);
}

#[tokio::test]
async fn resolves_a_local_volume() {
    let r = Scenario::fixtures()
        .await
        .cluster
        .resolve_claim("default", "scratch", &here())
        .await
        .unwrap();
    assert_eq!(r.volume_kind, VolumeKind::Local);
    assert_eq!(r.host_path, PathBuf::from("/mnt/disks/scratch"));
    assert_eq!(
        r.capacity,
        Capacity {
            bytes: 500_000_000,
            quantity: "500M".into()
        }
    );
    assert_eq!(r.storage_class.as_deref(), Some("local-storage"));
}

/// Claims that cannot be snapshotted on this node: each is refused with an
/// error that names the reason and, where there is one, the next step.
#[tokio::test]
async fn claims_that_cannot_be_read_here_are_refused_with_the_reason() {
    type Expect = fn(&Error) -> bool;
    let cases: [(&str, Expect, &[&str]); 6] = [
        (
            "nosuch",
            |e| matches!(e, Error::ClaimNotFound { namespace, name } if namespace == "default" && name == "nosuch"),
            &["kubectl get pvc -n default"],
        ),
        (
            "pending",
            |e| matches!(e, Error::ClaimNotBound { phase, .. } if phase == "Pending"),
            &["default/pending is not bound (phase Pending)"],
        ),
        (
            "lost",
            |e| matches!(e, Error::VolumeNotFound { pv, .. } if pv == "pvc-gone"),
            &[],
        ),
        (
            "remote",
            |e| matches!(e, Error::WrongNode { volume_node, this_node, .. } if volume_node == OTHER_NODE && this_node == NODE),
            &["is on node node-b, but this is node node-a"],
        ),
        (
            "ceph",
            |e| matches!(e, Error::CsiVolume { driver, .. } if driver == "rbd.csi.ceph.com"),
            &["CSI driver rbd.csi.ceph.com", "makes a CSI VolumeSnapshot"],
        ),
        (
            "shared",
            |e| matches!(e, Error::UnsupportedVolume { kind, pv, .. } if kind == "nfs" && pv == "nfs-share"),
            &[],
        ),
    ];
    let s = Scenario::fixtures().await;
    let cluster = &s.cluster;
    for (name, expect, says) in cases {
        let err = cluster
            .resolve_claim("default", name, &here())
            .await
            .unwrap_err();
        assert!(expect(&err), "default/{name}: {err}");
        let text = err.to_string();
        for s in says {
            assert!(text.contains(s), "default/{name}: {text:?} lacks {s:?}");
        }
    }
}

#[tokio::test]
async fn api_errors_name_the_action() {
    let s = Scenario::fixtures().await;
    let cluster = &s.cluster;
    let err = cluster
        .list_claims(Scope::AllNamespaces, Some("app in web"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Api { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("listing persistentvolumeclaims in all namespaces"),
        "{err}"
    );
}

/// Claims by namespace and label selector (the selector grammar of
/// kubectl: equality, existence, negation and sets).
#[tokio::test]
async fn lists_claims_by_namespace_and_selector() {
    let default = || Scope::Namespace("default".into());
    let cases: [(Scope, Option<&str>, Vec<ClaimRef>); 5] = [
        (
            Scope::AllNamespaces,
            None,
            vec![
                claim("db", "data-postgres-0"),
                claim("default", "ceph"),
                claim("default", "data"),
                claim("default", "lost"),
                claim("default", "pending"),
                claim("default", "remote"),
                claim("default", "scratch"),
                claim("default", "shared"),
            ],
        ),
        (
            Scope::AllNamespaces,
            Some("backup=daily"),
            vec![
                claim("db", "data-postgres-0"),
                claim("default", "ceph"),
                claim("default", "data"),
            ],
        ),
        (
            default(),
            Some("app=web,backup"),
            vec![claim("default", "data")],
        ),
        (
            default(),
            Some("app in (web,cache)"),
            vec![
                claim("default", "data"),
                claim("default", "pending"),
                claim("default", "remote"),
            ],
        ),
        (Scope::Namespace("db".into()), Some("!backup"), vec![]),
    ];
    let s = Scenario::fixtures().await;
    for (scope, selector, want) in cases {
        let got = s
            .cluster
            .list_claims(scope.clone(), selector)
            .await
            .unwrap();
        assert_eq!(got, want, "{scope:?} {selector:?}");
    }
    assert!(
        s.fake
            .requests()
            .iter()
            .any(|r| r.contains("labelSelector=app%3Dweb%2Cbackup")),
        "{:?}",
        s.fake.requests()
    )
}

#[test]
fn quantities_parse() {
    for (text, bytes) in [
        ("1Gi", Some(1 << 30)),
        ("500M", Some(500_000_000)),
        ("1.5Gi", Some(3 << 29)),
        ("1e3", Some(1000)),
        ("1500m", Some(2)),
        ("12345", Some(12345)),
        ("10Gb", None),
        ("-1Gi", None),
        ("Gi", None),
    ] {
        assert_eq!(parse_quantity(text), bytes, "{text}");
    }
}
