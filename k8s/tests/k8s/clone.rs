//! Clone claims: a new claim statically bound to a restored directory.

use std::path::Path;

use pvsnap_k8s::Error;
use pvsnap_k8s::testing::fake::Kind;
use pvsnap_k8s::testing::fixtures::*;

use crate::scenario::{Scenario, here};

#[tokio::test]
async fn creates_a_statically_bound_clone_claim() {
    let Scenario { fake, cluster } = Scenario::fixtures().await;
    let dir = Path::new("/var/snap/microk8s/common/pvsnap-clones/default-data-copy");
    let t = cluster
        .create_clone_claim("default", "data-copy", Some(CLASS), "1Gi", NODE, dir)
        .await
        .unwrap();
    assert_eq!(t.pv, "pvsnap-default-data-copy");
    let pv = fake.get(Kind::PersistentVolume, "", &t.pv).unwrap();
    assert_eq!(pv["spec"]["hostPath"]["path"], dir.to_str().unwrap());
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["storageClassName"], CLASS);
    assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data-copy");
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "default");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        serde_json::json!({"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]})
    );
    let pvc = fake
        .get(Kind::PersistentVolumeClaim, "default", "data-copy")
        .unwrap();
    assert_eq!(pvc["spec"]["volumeName"], t.pv);
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert_eq!(
        pvc["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "pvsnap"
    );
    // Once bound, the clone resolves to the directory like any claim.
    let r = cluster
        .resolve_claim("default", "data-copy", &here())
        .await
        .unwrap();
    assert_eq!(r.host_path, dir);
    assert_eq!(r.node.as_deref(), Some(NODE));
}

#[tokio::test]
async fn clone_without_class_sets_empty_class() {
    let s = Scenario::fixtures().await;
    let fake = &s.fake;
    let t = s
        .clone_claim("db", "restored", None, "10Gi", "/srv/restored")
        .await
        .unwrap();
    let pvc = fake
        .get(Kind::PersistentVolumeClaim, "db", "restored")
        .unwrap();
    assert_eq!(pvc["spec"]["storageClassName"], "");
    assert_eq!(
        fake.get(Kind::PersistentVolume, "", &t.pv).unwrap()["spec"]["storageClassName"],
        ""
    );
}

#[tokio::test]
async fn clone_is_refused_when_the_claim_exists() {
    let s = Scenario::fixtures().await;
    let fake = &s.fake;
    let err = s
        .clone_claim("default", "data", Some(CLASS), "1Gi", "/srv/x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ClaimExists { name, .. } if name == "data"),
        "{err}"
    );
    assert!(
        fake.get(Kind::PersistentVolume, "", "pvsnap-default-data")
            .is_none()
    );
    assert!(!fake.requests().iter().any(|r| r.starts_with("POST")));
}

#[tokio::test]
async fn clone_is_refused_when_the_volume_exists() {
    let s = Scenario::fixtures().await;
    let fake = &s.fake;
    s.clone_claim("default", "copy", None, "1Gi", "/srv/a")
        .await
        .unwrap();
    // The claim is deleted but the retained volume stays behind.
    s.delete("/api/v1/namespaces/default/persistentvolumeclaims/copy")
        .await;
    let err = s
        .clone_claim("default", "copy", None, "1Gi", "/srv/b")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::VolumeExists { pv } if pv == "pvsnap-default-copy"),
        "{err}"
    );
    // The old volume was not touched.
    assert_eq!(
        fake.get(Kind::PersistentVolume, "", "pvsnap-default-copy")
            .unwrap()["spec"]["hostPath"]["path"],
        "/srv/a"
    );
}

/// Input the API server would refuse, or that names no host folder, is
/// refused before any request.
#[tokio::test]
async fn clone_rejects_bad_input_before_any_request() {
    type Expect = fn(&Error) -> bool;
    let cases: [(&str, &str, &str, Expect); 3] = [
        ("Bad_Name", "1Gi", "/srv/a", |e| {
            matches!(e, Error::InvalidName { .. })
        }),
        ("ok", "1Gi", "srv/a", |e| {
            matches!(e, Error::RelativeHostDir(_))
        }),
        ("ok", "lots", "/srv/a", |e| {
            matches!(e, Error::InvalidQuantity { .. })
        }),
    ];
    for (name, size, dir, expect) in cases {
        let s = Scenario::fixtures().await;
        let err = s
            .clone_claim("default", name, None, size, dir)
            .await
            .unwrap_err();
        assert!(expect(&err), "{name} {size} {dir}: {err}");
        assert!(s.fake.requests().is_empty(), "{name} {size} {dir}");
    }
}
