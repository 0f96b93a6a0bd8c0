//! The workloads that use a claim: finding them, scaling them down and
//! back, waiting for their pods.

use std::path::Path;
use std::time::{Duration, Instant};

use pvsnap_k8s::testing::fake::{FakeCluster, Kind};
use pvsnap_k8s::testing::fixtures::*;
use pvsnap_k8s::{Error, Workload, WorkloadKind};

use crate::scenario::{Scenario, argv, replicas};

fn workload(kind: WorkloadKind, ns: &str, name: &str, replicas: i32) -> Workload {
    Workload {
        kind,
        namespace: ns.into(),
        name: name.into(),
        replicas,
    }
}

fn patch_count(fake: &FakeCluster) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.starts_with("PATCH"))
        .count()
}

/// A StatefulSet through its claim template, a Deployment through its pod
/// template; a bare pod is no workload.
#[tokio::test]
async fn finds_workloads_through_templates_and_owners() {
    let s = Scenario::fixtures().await;
    let cases = [
        (
            "db",
            "data-postgres-0",
            vec![workload(WorkloadKind::StatefulSet, "db", "postgres", 1)],
        ),
        (
            "default",
            "data",
            vec![workload(WorkloadKind::Deployment, "default", "web", 2)],
        ),
        ("default", "scratch", vec![]),
    ];
    for (ns, claim, want) in cases {
        let found = s.cluster.workloads_mounting(ns, claim).await.unwrap();
        assert_eq!(found, want, "{ns}/{claim}");
    }
    // The replica set was read to follow the owner chain.
    assert!(
        s.fake
            .requests()
            .iter()
            .any(|r| r.ends_with(&format!("/replicasets/{WEB_RS}")))
    );
}

#[tokio::test]
async fn finds_deployment_by_owner_chain_alone() {
    let s = Scenario::fixtures().await;
    let (fake, cluster) = (&s.fake, &s.cluster);
    // A deployment whose template no longer names the claim (e.g. mid
    // rollout): only the pod → replica set → deployment chain finds it.
    let mut web = fake.get(Kind::Deployment, "default", "web").unwrap();
    web["spec"]["template"]["spec"]["volumes"] = serde_json::json!([]);
    fake.insert(web);
    let found = cluster.workloads_mounting("default", "data").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, "web");
}

#[tokio::test]
async fn scale_down_wait_and_scale_back() {
    let s = Scenario::fixtures().await;
    let (fake, cluster) = (&s.fake, &s.cluster);
    let mut guard = s.scale_down("db", "data-postgres-0").await;
    assert_eq!(guard.originals()[0].replicas, 1);
    assert_eq!(replicas(fake, Kind::StatefulSet, "db", "postgres"), 0);
    // The pod is terminating, not gone yet.
    assert!(fake.get(Kind::Pod, "db", "postgres-0").is_some());
    let started = Instant::now();
    cluster
        .wait_pods_gone("db", "data-postgres-0", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited {:?}",
        started.elapsed()
    );
    assert!(fake.get(Kind::Pod, "db", "postgres-0").is_none());

    guard.restore_scale().await.unwrap();
    assert_eq!(replicas(fake, Kind::StatefulSet, "db", "postgres"), 1);
    let pod = fake
        .get(Kind::Pod, "db", "postgres-0")
        .expect("pod recreated");
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-postgres-0"
    );
    assert_eq!(
        cluster
            .pods_mounting("db", "data-postgres-0")
            .await
            .unwrap()
            .len(),
        1
    );
    // A second call is a no-op.
    let patches = patch_count(fake);
    guard.restore_scale().await.unwrap();
    assert_eq!(patch_count(fake), patches);
    assert_eq!(patches, 2);
}

async fn restore_that_fails(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("partial")).unwrap();
    Err("restore failed half way".into())
}

#[tokio::test]
async fn scale_back_after_a_failed_restore() {
    let s = Scenario::fixtures().await;
    let (fake, cluster) = (&s.fake, &s.cluster);
    let mut guard = s.scale_down("default", "data").await;
    let result = async {
        cluster
            .wait_pods_gone("default", "data", Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        assert!(
            fake.pod_names("default")
                .iter()
                .all(|p| !p.starts_with("web-"))
        );
        let dir = tempfile::tempdir().unwrap();
        restore_that_fails(dir.path()).await
    }
    .await;
    // The failure path restores the scale just like the success path.
    guard.restore_scale().await.unwrap();
    assert_eq!(result.unwrap_err(), "restore failed half way");
    assert_eq!(replicas(fake, Kind::Deployment, "default", "web"), 2);
    let web_pods = fake
        .pod_names("default")
        .into_iter()
        .filter(|p| p.starts_with(WEB_RS))
        .count();
    assert_eq!(web_pods, 2);
    assert_eq!(
        guard.manual_restore_commands(),
        vec!["kubectl scale -n default deployment/web --replicas=2".to_string()]
    );
}

#[tokio::test]
async fn failed_scale_down_restores_what_was_already_scaled() {
    let s = Scenario::fixtures().await;
    let (fake, cluster) = (&s.fake, &s.cluster);
    let mut workloads = cluster.workloads_mounting("default", "data").await.unwrap();
    workloads.extend(
        cluster
            .workloads_mounting("db", "data-postgres-0")
            .await
            .unwrap(),
    );
    fake.fail_scale_of("postgres");
    let err = cluster.scale_down(&workloads).await.unwrap_err();
    assert!(
        matches!(&err, Error::Scale { workload, replicas: 0, .. } if workload == "StatefulSet db/postgres"),
        "{err}"
    );
    assert!(err.to_string().contains("forbidden"), "{err}");
    assert_eq!(replicas(fake, Kind::Deployment, "default", "web"), 2);
    assert_eq!(replicas(fake, Kind::StatefulSet, "db", "postgres"), 1);
}

#[tokio::test]
async fn failed_scale_back_names_the_kubectl_commands() {
    let s = Scenario::fixtures().await;
    let fake = &s.fake;
    let mut guard = s.scale_down("db", "data-postgres-0").await;
    fake.fail_scale_of("postgres");
    let err = guard.restore_scale().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("kubectl scale -n db statefulset/postgres --replicas=1"),
        "{err}"
    );
    fake.allow_scale_of("postgres");
    guard.restore_scale().await.unwrap();
    assert_eq!(replicas(fake, Kind::StatefulSet, "db", "postgres"), 1);
}

#[tokio::test]
async fn wait_pods_gone_times_out_naming_the_pods() {
    let s = Scenario::fixtures().await;
    let cluster = &s.cluster;
    let started = Instant::now();
    let err = cluster
        .wait_pods_gone("default", "scratch", Duration::from_millis(600))
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(
        matches!(&err, Error::PodsStillPresent { pods, .. } if pods == &argv(&["debug-shell"])),
        "{err}"
    );
    assert!(err.to_string().contains("debug-shell"), "{err}");
}

#[tokio::test]
async fn finds_a_stopped_statefulset_through_its_claim_template() {
    let s = Scenario::fixtures().await;
    s.delete("/api/v1/namespaces/db/pods/postgres-0").await;
    let found = s
        .cluster
        .workloads_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].kind, found[0].name.as_str()),
        (WorkloadKind::StatefulSet, "postgres")
    );
    // Ordinal suffixes must be numeric.
    assert!(
        s.cluster
            .workloads_mounting("db", "data-postgres-x")
            .await
            .unwrap()
            .is_empty()
    );
}
