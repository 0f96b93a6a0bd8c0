//! CSI VolumeSnapshots of a claim a CSI driver provides (`default/ceph`),
//! against the fake's simulated snapshot controller.

use std::time::Duration;

use pvsnap_k8s::testing::fake::{CsiBehaviour, FakeCluster, Kind};
use pvsnap_k8s::testing::fixtures::{CEPH_DRIVER, snapshot_class};
use pvsnap_k8s::{Cluster, CsiSnapshot, Error, MANAGED_BY_LABEL, Scope};
use pvsnap_native::naming::{Name, Purpose};
use serde_json::json;

async fn fake_with(classes: &[(&str, &str, &str, bool)]) -> (FakeCluster, Cluster) {
    let fake = FakeCluster::with_fixtures().await;
    for (name, driver, policy, default) in classes {
        fake.insert(snapshot_class(name, driver, policy, *default));
    }
    let cluster = fake.connect().await;
    (fake, cluster)
}

fn new_name() -> String {
    Name::new(Purpose::Keep).to_dns_label()
}

/// Creates a snapshot of default/ceph with the default class and waits.
async fn snapshot(
    cluster: &Cluster,
    timeout: Duration,
) -> (String, pvsnap_k8s::Result<CsiSnapshot>) {
    let claim = cluster.csi_claim("default", "ceph").await.unwrap();
    let class = cluster.snapshot_class(&claim.driver, None).await.unwrap();
    let name = new_name();
    cluster
        .create_volume_snapshot(&claim, &class, &name, &Default::default())
        .await
        .unwrap();
    let r = cluster
        .wait_volume_snapshot("default", &name, timeout)
        .await;
    (name, r)
}

#[tokio::test]
async fn a_snapshot_turns_ready_later_and_is_recorded() {
    let (fake, cluster) = fake_with(&[("ceph-snap", CEPH_DRIVER, "Delete", true)]).await;
    fake.set_csi(CsiBehaviour::ReadyAfter(Duration::from_millis(600)));
    let claim = cluster.csi_claim("default", "ceph").await.unwrap();
    assert_eq!(claim.driver, CEPH_DRIVER);
    assert_eq!(claim.capacity, "5Gi");
    assert_eq!(claim.storage_class.as_deref(), Some("rook-ceph-block"));
    let started = std::time::Instant::now();
    let (name, r) = snapshot(&cluster, Duration::from_secs(10)).await;
    let snap = r.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "waited for readyToUse"
    );
    assert!(snap.ready);
    assert_eq!(snap.name, name);
    assert_eq!(snap.claim, "ceph");
    assert_eq!(snap.class.as_deref(), Some("ceph-snap"));
    assert_eq!(snap.restore_size.as_deref(), Some("5Gi"));
    assert!(snap.created.is_some());
    let content = snap.content.clone().unwrap();
    assert!(
        fake.get(Kind::VolumeSnapshotContent, "", &content)
            .is_some()
    );
    let obj = fake.get(Kind::VolumeSnapshot, "default", &name).unwrap();
    assert_eq!(obj["metadata"]["labels"][MANAGED_BY_LABEL], "pvsnap");
    assert_eq!(obj["spec"]["source"]["persistentVolumeClaimName"], "ceph");
}

#[tokio::test]
async fn never_ready_times_out_and_deletes_what_it_made() {
    let (fake, cluster) = fake_with(&[("ceph-snap", CEPH_DRIVER, "Delete", true)]).await;
    fake.set_csi(CsiBehaviour::Never);
    let (name, r) = snapshot(&cluster, Duration::from_millis(700)).await;
    let err = r.unwrap_err();
    assert!(matches!(err, Error::SnapshotTimeout { .. }), "{err}");
    let text = err.to_string();
    for s in [
        name.as_str(),
        "default/ceph",
        "700ms",
        "it was deleted",
        "--csi-timeout",
    ] {
        assert!(text.contains(s), "{text:?} lacks {s:?}");
    }
    assert!(fake.names(Kind::VolumeSnapshot).is_empty());
    assert!(
        fake.names(Kind::VolumeSnapshotContent).is_empty(),
        "Delete policy took the content"
    );
}

#[tokio::test]
async fn an_error_status_fails_with_the_drivers_message_and_is_cleaned_up() {
    let (fake, cluster) = fake_with(&[("ceph-snap", CEPH_DRIVER, "Delete", true)]).await;
    fake.set_csi(CsiBehaviour::Fail {
        after: Duration::from_millis(200),
        message: "rpc error: code = Internal desc = quota exceeded".into(),
    });
    let (_, r) = snapshot(&cluster, Duration::from_secs(10)).await;
    let err = r.unwrap_err();
    assert!(matches!(err, Error::SnapshotFailed { .. }), "{err}");
    assert!(err.to_string().contains("quota exceeded"), "{err}");
    assert!(err.to_string().contains("it was deleted"), "{err}");
    assert!(fake.names(Kind::VolumeSnapshot).is_empty());
}

#[tokio::test]
async fn the_class_is_the_requested_one_or_the_one_default_of_the_driver() {
    type Expect = fn(&pvsnap_k8s::Result<pvsnap_k8s::SnapshotClass>) -> bool;
    type Classes<'a> = Vec<(&'a str, &'a str, &'a str, bool)>;
    type Case<'a> = (&'a str, Classes<'a>, Option<&'a str>, Expect, &'a [&'a str]);
    let other = "hostpath.csi.k8s.io";
    let cases: [Case; 6] = [
        (
            "no class at all",
            vec![("other-default", other, "Delete", true)],
            None,
            |r| matches!(r, Err(Error::NoDefaultSnapshotClass { .. })),
            &[
                "rbd.csi.ceph.com has no default",
                "(its classes: none)",
                "is-default-class=true",
                "--snapshot-class",
            ],
        ),
        (
            "a class but no default",
            vec![("ceph-plain", CEPH_DRIVER, "Delete", false)],
            None,
            |r| matches!(r, Err(Error::NoDefaultSnapshotClass { .. })),
            &[
                "its classes: ceph-plain",
                "kubectl annotate volumesnapshotclass NAME",
            ],
        ),
        (
            "two defaults",
            vec![
                ("ceph-a", CEPH_DRIVER, "Delete", true),
                ("ceph-b", CEPH_DRIVER, "Retain", true),
            ],
            None,
            |r| matches!(r, Err(Error::AmbiguousDefaultSnapshotClass { .. })),
            &["more than one default", "ceph-a, ceph-b", "ambiguous"],
        ),
        (
            "one default among others",
            vec![
                ("ceph-a", CEPH_DRIVER, "Delete", false),
                ("ceph-b", CEPH_DRIVER, "Retain", true),
                ("x", other, "Delete", true),
            ],
            None,
            |r| matches!(r, Ok(c) if c.name == "ceph-b" && c.deletion_policy == "Retain"),
            &[],
        ),
        (
            "requested class of another driver",
            vec![("x", other, "Delete", true)],
            Some("x"),
            |r| matches!(r, Err(Error::SnapshotClassDriver { .. })),
            &["volumesnapshotclass x is for CSI driver hostpath.csi.k8s.io"],
        ),
        (
            "requested class missing",
            vec![],
            Some("nosuch"),
            |r| matches!(r, Err(Error::SnapshotClassNotFound { .. })),
            &["volumesnapshotclass nosuch not found"],
        ),
    ];
    for (what, classes, requested, expect, says) in cases {
        let (_fake, cluster) = fake_with(&classes).await;
        let r = cluster.snapshot_class(CEPH_DRIVER, requested).await;
        assert!(expect(&r), "{what}: {r:?}");
        if let Err(e) = r {
            for s in says {
                assert!(e.to_string().contains(s), "{what}: {e} lacks {s:?}");
            }
        }
    }
}

#[tokio::test]
async fn deletion_honours_the_class_policy() {
    for (policy, content_stays) in [("Delete", false), ("Retain", true)] {
        let (fake, cluster) = fake_with(&[("ceph-snap", CEPH_DRIVER, policy, true)]).await;
        fake.set_csi(CsiBehaviour::ReadyAfter(Duration::ZERO));
        let (name, r) = snapshot(&cluster, Duration::from_secs(10)).await;
        let content = r.unwrap().content.unwrap();
        let deleted = cluster
            .delete_volume_snapshot("default", &name)
            .await
            .unwrap();
        assert!(deleted.existed, "{policy}");
        assert_eq!(deleted.deletion_policy.as_deref(), Some(policy));
        assert_eq!(deleted.content.as_deref(), Some(content.as_str()));
        assert!(fake.get(Kind::VolumeSnapshot, "default", &name).is_none());
        assert_eq!(
            fake.get(Kind::VolumeSnapshotContent, "", &content)
                .is_some(),
            content_stays,
            "{policy}"
        );
        // Deleting again is no error: it is gone.
        let again = cluster
            .delete_volume_snapshot("default", &name)
            .await
            .unwrap();
        assert!(!again.existed);
    }
}

#[tokio::test]
async fn a_new_claim_is_provisioned_from_the_snapshot_through_data_source() {
    let (fake, cluster) = fake_with(&[("ceph-snap", CEPH_DRIVER, "Delete", true)]).await;
    fake.set_csi(CsiBehaviour::ReadyAfter(Duration::ZERO));
    let (_, r) = snapshot(&cluster, Duration::from_secs(10)).await;
    let snap = r.unwrap();
    let made = cluster
        .create_claim_from_snapshot(
            &snap,
            "default",
            "ceph-copy",
            Some("rook-ceph-block"),
            "5Gi",
        )
        .await
        .unwrap();
    // The driver provisions after the claim is made, as a real one does.
    assert_eq!(made.phase, "Pending");
    assert_eq!(made.capacity, "5Gi");
    let pvc = fake
        .get(Kind::PersistentVolumeClaim, "default", "ceph-copy")
        .unwrap();
    assert_eq!(pvc["status"]["phase"], "Bound");
    assert_eq!(
        pvc["spec"]["dataSource"],
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snap.name})
    );
    assert_eq!(pvc["spec"]["storageClassName"], "rook-ceph-block");
    let pv = fake
        .get(
            Kind::PersistentVolume,
            "",
            pvc["spec"]["volumeName"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(
        pv["metadata"]["annotations"]["fake.pvsnap.test/restored-from"],
        format!(
            "default/{} content {}",
            snap.name,
            snap.content.clone().unwrap()
        )
    );
    // The new claim is itself a CSI claim.
    assert_eq!(
        cluster
            .csi_claim("default", "ceph-copy")
            .await
            .unwrap()
            .driver,
        CEPH_DRIVER
    );

    let err = cluster
        .create_claim_from_snapshot(&snap, "default", "ceph-copy", None, "5Gi")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ClaimExists { .. }), "{err}");
    let err = cluster
        .create_claim_from_snapshot(&snap, "other", "ceph-copy", None, "5Gi")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("--to-new-pvc default/ceph-copy"),
        "{err}"
    );
}

#[tokio::test]
async fn only_snapshots_pvsnap_made_are_listed_as_its_own() {
    let (fake, cluster) = fake_with(&[("ceph-snap", CEPH_DRIVER, "Delete", true)]).await;
    fake.set_csi(CsiBehaviour::ReadyAfter(Duration::ZERO));
    let (ours, r) = snapshot(&cluster, Duration::from_secs(10)).await;
    r.unwrap();
    let hand = |name: &str, labelled: bool| {
        let mut o = json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"source": {"persistentVolumeClaimName": "ceph"}}
        });
        if labelled {
            o["metadata"]["labels"] = json!({MANAGED_BY_LABEL: "pvsnap"});
        }
        o
    };
    // Labelled but not a pvsnap name; a pvsnap name without the label.
    fake.insert(hand("nightly-ceph", true));
    fake.insert(hand(&new_name(), false));
    let listed: Vec<String> = cluster
        .pvsnap_volume_snapshots(&Scope::AllNamespaces)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, vec![ours.clone()]);
    let listed = cluster
        .pvsnap_volume_snapshots(&Scope::Namespace("db".into()))
        .await
        .unwrap();
    assert!(listed.is_empty());
}

#[tokio::test]
async fn a_host_directory_claim_is_no_csi_claim() {
    let (_fake, cluster) = fake_with(&[]).await;
    let err = cluster.csi_claim("default", "data").await.unwrap_err();
    assert!(matches!(err, Error::NotCsi { .. }), "{err}");
    let err = cluster.csi_claim("default", "pending").await.unwrap_err();
    assert!(matches!(err, Error::ClaimNotBound { .. }), "{err}");
}
