//! CSI claims through the binary: `default/ceph` (driver rbd.csi.ceph.com)
//! snapshotted as a VolumeSnapshot, restored through `dataSource`,
//! forgotten per the class's deletionPolicy, and a killed run's leftover
//! removed by the next run, against the fake API server's simulated
//! snapshot controller.

use std::process::Stdio;
use std::time::{Duration, Instant};

use pvsnap_k8s::testing::fake::{CsiBehaviour, Kind};
use pvsnap_k8s::testing::fixtures::{CEPH_DRIVER, NODE, snapshot_class};
use serde_json::{Value, json};

use crate::k8s::Kube;
use crate::util::{stderr, stdout};

fn with_class(policy: &str) -> Kube {
    let k = Kube::new();
    k.fake
        .insert(snapshot_class("ceph-snap", CEPH_DRIVER, policy, true));
    k.fake
        .set_csi(CsiBehaviour::ReadyAfter(Duration::from_millis(300)));
    k
}

/// Snapshots default/ceph; returns its JSON.
fn snapshot_ceph(k: &Kube, extra: &[&str]) -> Value {
    let mut args = vec!["pvc/default/ceph"];
    args.extend_from_slice(extra);
    let (code, snaps, err) = k.snapshot(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(snaps.len(), 1, "{err}");
    snaps[0].clone()
}

fn volume_snapshots(k: &Kube) -> Vec<String> {
    k.fake.names(Kind::VolumeSnapshot)
}

#[test]
fn a_csi_claim_becomes_a_recorded_volume_snapshot() {
    let k = with_class("Delete");
    let snap = snapshot_ceph(&k, &[]);
    let rec = &snap["source_snapshot"];
    assert_eq!(rec["kind"], "csi", "{snap}");
    assert_eq!(rec["volume"], "default/ceph");
    assert_eq!(rec["native_only"], true);
    assert_eq!(rec["deletion_policy"], "Delete");
    let name = rec["name"].as_str().unwrap();
    assert!(name.starts_with("pvsnap-keep-"), "{name}");
    assert_eq!(rec["handle"], format!("default/{name}"));
    assert_eq!(rec["snapshot"]["class"], "ceph-snap");
    assert_eq!(rec["snapshot"]["restore_size"], "5Gi");
    assert_eq!(rec["snapshot"]["ready"], true);
    assert!(
        rec["snapshot"]["content"]
            .as_str()
            .unwrap()
            .starts_with("snapcontent-")
    );
    assert!(rec["snapshot"]["created"].is_string());
    let (cut, ready) = (
        rec["create_s"].as_f64().unwrap(),
        rec["ready_s"].as_f64().unwrap(),
    );
    assert!(
        cut <= ready && ready >= 0.3,
        "cut in {cut}s, ready in {ready}s (ready 300 ms later)"
    );
    assert_eq!(rec["freeze_window_s"], rec["create_s"]);
    assert_eq!(snap["source"]["pvc"], "ceph");
    assert_eq!(volume_snapshots(&k), vec![format!("default/{name}")]);
    // Listed with the others; its tree holds nothing.
    let listed = k.snapshots(&[]);
    assert_eq!(listed.len(), 1);
    assert_eq!(snap["summary"]["files_new"], 0);

    // The human line says what was made.
    let out = k.ok(&[
        "snapshot",
        "pvc/default/ceph",
        "--snapshot-class",
        "ceph-snap",
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("of pvc/default/ceph: CSI VolumeSnapshot default/pvsnap-keep-")
            && text.contains("(class ceph-snap, content snapcontent-")
            && text.contains("nothing was read into the repository"),
        "{text}"
    );
    assert_eq!(volume_snapshots(&k).len(), 2);
    // A dry run checks the claim and class and makes nothing.
    let out = k.run(&["snapshot", "--dry-run", "pvc/default/ceph"]);
    assert!(
        stderr(&out).contains("dry run: pvc/default/ceph is provided by CSI driver rbd.csi.ceph.com; a real run makes a VolumeSnapshot of class ceph-snap (nothing was made)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(volume_snapshots(&k).len(), 2);

    // Its files are not in the repository: --target and --to-pvc say how
    // to restore it instead.
    let target = k.env.path("out");
    let out = k.run(&[
        "restore",
        snap["id"].as_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is a CSI VolumeSnapshot")
            && stderr(&out).contains("--to-new-pvc default/NEW-NAME"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists());
}

#[test]
fn csi_failures_name_the_driver_and_leave_nothing_behind() {
    // No class for the driver.
    let k = Kube::new();
    let (code, snaps, err) = k.snapshot(&["pvc/default/ceph"]);
    assert_eq!(code, 1);
    assert!(snaps.is_empty());
    assert!(
        err.contains(
            "pvc/default/ceph: CSI driver rbd.csi.ceph.com has no default VolumeSnapshotClass"
        ) && err.contains("snapshot.storage.kubernetes.io/is-default-class=true"),
        "{err}"
    );
    // Two defaults: ambiguous.
    k.fake
        .insert(snapshot_class("a", CEPH_DRIVER, "Delete", true));
    k.fake
        .insert(snapshot_class("b", CEPH_DRIVER, "Retain", true));
    let (code, _, err) = k.snapshot(&["pvc/default/ceph"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("more than one default VolumeSnapshotClass (a, b)"),
        "{err}"
    );

    // Never ready: the timeout deletes it.
    k.fake.set_csi(CsiBehaviour::Never);
    let started = Instant::now();
    let (code, snaps, err) = k.snapshot(&[
        "pvc/default/ceph",
        "--snapshot-class",
        "a",
        "--csi-timeout",
        "1s",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(snaps.is_empty());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        err.contains("was not cut (creationTime) after 1s") && err.contains("it was deleted"),
        "{err}"
    );
    assert!(volume_snapshots(&k).is_empty());
    // An error status: the driver's message.
    k.fake.set_csi(CsiBehaviour::Fail {
        after: Duration::from_millis(100),
        message: "rpc error: code = ResourceExhausted desc = snapshot quota".into(),
    });
    let (code, _, err) = k.snapshot(&["pvc/default/ceph", "--snapshot-class", "a"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("failed: rpc error: code = ResourceExhausted desc = snapshot quota"),
        "{err}"
    );
    assert!(volume_snapshots(&k).is_empty());
    assert!(k.snapshots(&[]).is_empty(), "nothing recorded");
    let out = k.run(&["snapshot", "pvc/default/ceph", "--csi-timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`soon` is not a duration"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn restore_to_a_new_claim_goes_through_data_source() {
    let k = with_class("Delete");
    let snap = snapshot_ceph(&k, &[]);
    let name = snap["source_snapshot"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = k.ok(&[
        "restore",
        "latest:pvc/default/ceph",
        "--to-new-pvc",
        "default/ceph-copy",
    ]);
    assert!(
        stdout(&out).contains("created pvc/default/ceph-copy (5Gi, storage class rook-ceph-block)"),
        "{}",
        stdout(&out)
    );
    let pvc = k
        .fake
        .get(Kind::PersistentVolumeClaim, "default", "ceph-copy")
        .unwrap();
    assert_eq!(
        pvc["spec"]["dataSource"],
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": name})
    );
    assert_eq!(pvc["status"]["phase"], "Bound");
    let pv = k
        .fake
        .get(
            Kind::PersistentVolume,
            "",
            pvc["spec"]["volumeName"].as_str().unwrap(),
        )
        .unwrap();
    assert!(
        pv["metadata"]["annotations"]["fake.pvsnap.test/restored-from"]
            .as_str()
            .unwrap()
            .starts_with(&format!("default/{name} content snapcontent-"))
    );
    // Another namespace cannot hold a claim from it.
    let out = k.run(&[
        "restore",
        "latest:pvc/default/ceph",
        "--to-new-pvc",
        "db/ceph-copy",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("must be in its namespace"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn forget_deletes_the_volume_snapshot_and_the_class_decides_the_content() {
    for (policy, content_stays) in [("Delete", false), ("Retain", true)] {
        let k = with_class(policy);
        let snap = snapshot_ceph(&k, &[]);
        let content = snap["source_snapshot"]["snapshot"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        let out = k.ok(&["forget", snap["id"].as_str().unwrap()]);
        let err = stderr(&out);
        assert!(
            err.contains("deleted volumesnapshot default/pvsnap-keep-"),
            "{policy}: {err}"
        );
        if content_stays {
            assert!(
                err.contains(&format!(
                    "retains the storage's snapshot (volumesnapshotcontent {content})"
                )),
                "{err}"
            );
        }
        assert!(volume_snapshots(&k).is_empty(), "{policy}");
        assert_eq!(
            k.fake
                .get(Kind::VolumeSnapshotContent, "", &content)
                .is_some(),
            content_stays,
            "{policy}"
        );
        assert!(k.snapshots(&[]).is_empty());
    }
}

/// A run killed after it made the VolumeSnapshot and before it recorded
/// it: the next run removes exactly that one, not a recorded one, not one
/// made by hand, not one with a pvsnap name but without the label.
#[test]
fn a_killed_runs_volume_snapshot_is_removed_by_the_next_run_and_only_it() {
    let k = with_class("Delete");
    let kept = snapshot_ceph(&k, &[]);
    let kept_name = kept["source_snapshot"]["handle"]
        .as_str()
        .unwrap()
        .to_string();
    let hand = |name: &str, labelled: bool| {
        let mut o = json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"source": {"persistentVolumeClaimName": "ceph"}}
        });
        if labelled {
            o["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "pvsnap"});
        }
        o
    };
    let unlabelled =
        pvsnap_native::naming::Name::new(pvsnap_native::naming::Purpose::Keep).to_dns_label();
    k.fake.insert(hand("nightly-ceph", true));
    k.fake.insert(hand(&unlabelled, false));

    k.fake.set_csi(CsiBehaviour::Never);
    let mut c = k.env.cmd();
    c.args([
        "snapshot",
        "pvc/default/ceph",
        "--csi-timeout",
        "10m",
        "--kubeconfig",
    ])
    .arg(k.fake.kubeconfig())
    .args(["--node", NODE, "--host-root"])
    .arg(k.host())
    .env_remove("KUBECONFIG")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while volume_snapshots(&k).len() < 4 {
        assert!(Instant::now() < deadline, "the run made no VolumeSnapshot");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let leftover: Vec<String> = volume_snapshots(&k)
        .into_iter()
        .filter(|n| n != &kept_name && n.contains("pvsnap-keep-") && !n.ends_with(&unlabelled))
        .collect();
    assert_eq!(leftover.len(), 1, "{:?}", volume_snapshots(&k));

    k.fake.set_csi(CsiBehaviour::ReadyAfter(Duration::ZERO));
    let (code, snaps, err) = k.snapshot(&["pvc/default/ceph"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("removed volumesnapshot {}", leftover[0])),
        "{err}"
    );
    let new = snaps[0]["source_snapshot"]["handle"]
        .as_str()
        .unwrap()
        .to_string();
    let mut want = vec![
        kept_name,
        new,
        "default/nightly-ceph".to_string(),
        format!("default/{unlabelled}"),
    ];
    want.sort();
    assert_eq!(volume_snapshots(&k), want);
}
