//! The real kube client of pvsnap-k8s against an in-process fake API server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pvsnap_k8s::testing::fake::{self, ExecEnd, ExecScript, FakeCluster, Kind};
use pvsnap_k8s::testing::fixtures::*;
use pvsnap_k8s::{
    BodyOutcome, Capacity, ClaimRef, ConfigSource, ConfigSources, ConnectOptions, Error,
    HookOutcome, HookPhase, HostHook, OnError, ResolveOptions, Scope, VolumeKind, Workload,
    WorkloadKind, connect_with, parse_go_duration, parse_quantity, pod_hook, run_host_hook,
    with_hooks,
};

fn here() -> ResolveOptions {
    ResolveOptions {
        node_name: NODE.into(),
        host_root: None,
    }
}

fn claim(ns: &str, name: &str) -> ClaimRef {
    ClaimRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn json_array(parts: &[&str]) -> String {
    serde_json::to_string(parts).unwrap()
}

// ---------------------------------------------------------------- config

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn explicit_kubeconfig_connects_and_names_cluster_after_context() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    assert_eq!(cluster.name(), fake::CONTEXT);
    assert!(matches!(cluster.source(), ConfigSource::Explicit(_)));
    // The client really talks to the fake (with the kubeconfig's token).
    let claims = cluster
        .list_claims(Scope::Namespace("db".into()), None)
        .await
        .unwrap();
    assert_eq!(claims, vec![claim("db", "data-postgres-0")]);
}

#[tokio::test]
async fn explicit_kubeconfig_is_the_only_source_tried() {
    let fake = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A perfectly good ~/.kube/config exists, but --kubeconfig wins alone.
    write(
        &dir.path().join("home/.kube/config"),
        &fake::kubeconfig_yaml(fake.addr, "home"),
    );
    let mut sources = ConfigSources::empty_under(dir.path());
    sources.home = Some(dir.path().join("home"));
    let missing = dir.path().join("nope.yaml");
    let err = connect_with(
        ConnectOptions {
            kubeconfig: Some(missing.clone()),
            context: None,
        },
        &sources,
    )
    .await
    .unwrap_err();
    let Error::NoConfig { attempts } = &err else {
        panic!("unexpected {err}")
    };
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(
        attempts[0].source,
        format!("--kubeconfig {}", missing.display())
    );
    assert!(
        attempts[0].reason.contains("does not exist"),
        "{}",
        attempts[0].reason
    );
    assert!(err.to_string().contains("next step"), "{err}");
}

#[tokio::test]
async fn search_order_error_lists_every_source_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut sources = ConfigSources::empty_under(dir.path());
    let env_file = dir.path().join("env.yaml");
    write(&env_file, "this: [is not a kubeconfig");
    sources.kubeconfig_env = Some(env_file.clone().into_os_string());
    sources.home = Some(dir.path().join("home"));
    sources.service_host = Some("10.152.183.1".into());
    sources.service_port = Some("443".into());
    let err = connect_with(ConnectOptions::default(), &sources)
        .await
        .unwrap_err();
    let Error::NoConfig { attempts } = &err else {
        panic!("unexpected {err}")
    };
    let order: Vec<&str> = attempts.iter().map(|a| a.source.as_str()).collect();
    let home_cfg = dir.path().join("home/.kube/config");
    assert_eq!(
        order,
        vec![
            format!("KUBECONFIG={}", env_file.display()).as_str(),
            home_cfg.display().to_string().as_str(),
            format!(
                "MicroK8s config {}",
                dir.path().join("microk8s/client.config").display()
            )
            .as_str(),
            "in-cluster service account",
        ]
    );
    assert!(
        attempts[0].reason.contains("env.yaml"),
        "{}",
        attempts[0].reason
    );
    assert!(attempts[1].reason.contains("does not exist"));
    assert!(attempts[2].reason.contains("does not exist"));
    assert!(
        attempts[3].reason.contains("no service account token"),
        "{}",
        attempts[3].reason
    );
    let text = err.to_string();
    for a in attempts {
        assert!(
            text.contains(&a.source) && text.contains(&a.reason),
            "{text}"
        );
    }
}

#[tokio::test]
async fn unset_sources_are_reported_too() {
    let dir = tempfile::tempdir().unwrap();
    let err = connect_with(
        ConnectOptions::default(),
        &ConfigSources::empty_under(dir.path()),
    )
    .await
    .unwrap_err();
    let Error::NoConfig { attempts } = &err else {
        panic!("unexpected {err}")
    };
    assert_eq!(attempts[0].source, "KUBECONFIG");
    assert_eq!(attempts[0].reason, "not set");
    assert_eq!(attempts[1].reason, "HOME is not set");
    assert!(
        attempts[3].reason.contains("KUBERNETES_SERVICE_HOST"),
        "{:?}",
        attempts[3]
    );
}

#[tokio::test]
async fn broken_kubeconfig_env_falls_through_to_home() {
    let fake = FakeCluster::with_fixtures().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sources = ConfigSources::empty_under(dir.path());
    sources.kubeconfig_env = Some(dir.path().join("missing").into_os_string());
    sources.home = Some(dir.path().join("home"));
    write(
        &dir.path().join("home/.kube/config"),
        &fake::kubeconfig_yaml(fake.addr, "home-ctx"),
    );
    let cluster = connect_with(ConnectOptions::default(), &sources)
        .await
        .unwrap();
    assert_eq!(cluster.name(), "home-ctx");
    assert!(matches!(cluster.source(), ConfigSource::Home(_)));
    assert_eq!(
        cluster
            .list_claims(Scope::Namespace("db".into()), None)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn kubeconfig_env_comes_before_home_and_microk8s() {
    let fake = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sources = ConfigSources::empty_under(dir.path());
    let env_file = dir.path().join("env.yaml");
    write(&env_file, &fake::kubeconfig_yaml(fake.addr, "env-ctx"));
    sources.kubeconfig_env = Some(env_file.into_os_string());
    sources.home = Some(dir.path().join("home"));
    write(
        &dir.path().join("home/.kube/config"),
        &fake::kubeconfig_yaml(fake.addr, "home-ctx"),
    );
    write(
        &sources.microk8s_config,
        &fake::kubeconfig_yaml(fake.addr, "microk8s"),
    );
    let cluster = connect_with(ConnectOptions::default(), &sources)
        .await
        .unwrap();
    assert_eq!(cluster.name(), "env-ctx");
    assert!(matches!(cluster.source(), ConfigSource::KubeconfigEnv(p) if p.len() == 1));
}

#[tokio::test]
async fn microk8s_config_is_used_when_user_configs_are_absent() {
    let fake = FakeCluster::with_fixtures().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sources = ConfigSources::empty_under(dir.path());
    sources.home = Some(dir.path().join("home"));
    write(
        &sources.microk8s_config,
        &fake::kubeconfig_yaml(fake.addr, "microk8s"),
    );
    let cluster = connect_with(ConnectOptions::default(), &sources)
        .await
        .unwrap();
    assert_eq!(cluster.name(), "microk8s");
    assert_eq!(
        cluster.source(),
        &ConfigSource::MicroK8s(sources.microk8s_config.clone())
    );
    assert!(
        !cluster
            .list_claims(Scope::AllNamespaces, None)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn missing_context_is_named_with_the_known_ones() {
    let fake = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let err = connect_with(
        ConnectOptions {
            kubeconfig: Some(fake.kubeconfig()),
            context: Some("prod".into()),
        },
        &ConfigSources::empty_under(dir.path()),
    )
    .await
    .unwrap_err();
    let Error::NoConfig { attempts } = &err else {
        panic!("unexpected {err}")
    };
    assert_eq!(
        attempts[0].reason,
        format!("context \"prod\" not found (contexts: {})", fake::CONTEXT)
    );
}

#[tokio::test]
async fn in_cluster_service_account_is_the_last_resort() {
    let dir = tempfile::tempdir().unwrap();
    let mut sources = ConfigSources::empty_under(dir.path());
    let sa = &sources.service_account_dir;
    write(&sa.join("token"), "sa-token");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ca.crt"),
        sa.join("ca.crt"),
    )
    .unwrap();
    write(&sa.join("namespace"), "backup\n");
    sources.service_host = Some("10.152.183.1".into());
    sources.service_port = Some("443".into());
    let cluster = connect_with(ConnectOptions::default(), &sources)
        .await
        .unwrap();
    assert_eq!(cluster.name(), "in-cluster");
    assert_eq!(cluster.source(), &ConfigSource::InCluster);
    assert_eq!(cluster.client().default_namespace(), "backup");

    // A bad port is a reason, not a crash.
    sources.service_port = Some("https".into());
    let err = connect_with(ConnectOptions::default(), &sources)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("KUBERNETES_SERVICE_PORT \"https\" is not a port"),
        "{err}"
    );
}

#[test]
fn crypto_provider_install_is_idempotent() {
    pvsnap_k8s::install_crypto_provider();
    pvsnap_k8s::install_crypto_provider();
    let p = rustls::crypto::CryptoProvider::get_default().expect("a provider is installed");
    assert!(!p.cipher_suites.is_empty());
}

// ---------------------------------------------------------------- resolve

#[tokio::test]
async fn resolves_a_microk8s_hostpath_claim() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let r = cluster
        .resolve_claim("default", "data", &here())
        .await
        .unwrap();
    assert_eq!(r.cluster, fake::CONTEXT);
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
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
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
    let fake = FakeCluster::with_fixtures().await;
    let r = fake
        .connect()
        .await
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
            &["CSI driver rbd.csi.ceph.com", "later release"],
        ),
        (
            "shared",
            |e| matches!(e, Error::UnsupportedVolume { kind, pv, .. } if kind == "nfs" && pv == "nfs-share"),
            &[],
        ),
    ];
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
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
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
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

// ---------------------------------------------------------------- list

#[tokio::test]
async fn lists_claims_by_namespace_and_selector() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let all = cluster
        .list_claims(Scope::AllNamespaces, None)
        .await
        .unwrap();
    assert_eq!(all.len(), 8, "{all:?}");
    assert_eq!(all[0], claim("db", "data-postgres-0"));

    let daily = cluster
        .list_claims(Scope::AllNamespaces, Some("backup=daily"))
        .await
        .unwrap();
    assert_eq!(
        daily,
        vec![
            claim("db", "data-postgres-0"),
            claim("default", "ceph"),
            claim("default", "data")
        ]
    );

    let web_daily = cluster
        .list_claims(Scope::Namespace("default".into()), Some("app=web,backup"))
        .await
        .unwrap();
    assert_eq!(web_daily, vec![claim("default", "data")]);

    let set = cluster
        .list_claims(
            Scope::Namespace("default".into()),
            Some("app in (web,cache)"),
        )
        .await
        .unwrap();
    assert_eq!(
        set,
        vec![
            claim("default", "data"),
            claim("default", "pending"),
            claim("default", "remote")
        ]
    );

    let not_daily = cluster
        .list_claims(Scope::Namespace("db".into()), Some("!backup"))
        .await
        .unwrap();
    assert!(not_daily.is_empty());
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("labelSelector=app%3Dweb%2Cbackup")),
        "{:?}",
        fake.requests()
    );
}

// ---------------------------------------------------------------- hooks

#[tokio::test]
async fn pods_mounting_finds_running_pods_with_their_owner() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].name, "postgres-0");
    assert_eq!(pods[0].containers, argv(&["postgres", "metrics"]));
    assert_eq!(pods[0].owner.as_deref(), Some("StatefulSet/postgres"));
    // The Succeeded job is not hooked; the web pods are.
    let names: Vec<String> = cluster
        .pods_mounting("default", "data")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, argv(&WEB_PODS));
}

#[tokio::test]
async fn postgres_pre_hook_runs_over_exec_and_reports_output() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    fake.script(ExecScript {
        pod: "postgres-0".into(),
        container: "postgres".into(),
        command: argv(&PG_PRE),
        stdout: b"CHECKPOINT\n".to_vec(),
        stderr: b"notice: done\n".to_vec(),
        end: ExecEnd::Exit(0),
        delay: Duration::ZERO,
    });
    let pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let out = cluster.run_hooks(HookPhase::Pre, &pods).await;
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert!(o.ok, "{o:?}");
    assert_eq!(o.exit_code, Some(0));
    assert_eq!(o.command, argv(&PG_PRE));
    assert_eq!(o.container.as_deref(), Some("postgres"));
    assert_eq!(o.pod.as_deref(), Some("postgres-0"));
    assert_eq!(o.stdout_tail, "CHECKPOINT\n");
    assert_eq!(o.stderr_tail, "notice: done\n");
    assert_eq!(o.on_error, OnError::Fail);
    let execs = fake.execs();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].namespace, "db");
    assert_eq!(execs[0].protocol, "v5.channel.k8s.io");
}

#[tokio::test]
async fn non_zero_exit_code_comes_from_the_status_channel() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    fake.script(ExecScript {
        pod: "postgres-0".into(),
        container: "postgres".into(),
        command: argv(&PG_PRE),
        stdout: Vec::new(),
        stderr: b"psql: error: connection refused\n".to_vec(),
        end: ExecEnd::Exit(2),
        delay: Duration::ZERO,
    });
    let pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let o = &cluster.run_hooks(HookPhase::Pre, &pods).await[0];
    assert!(!o.ok);
    assert_eq!(o.exit_code, Some(2));
    assert_eq!(o.error.as_deref(), Some("command exited with code 2"));
    assert!(o.stderr_tail.contains("connection refused"));
    assert!(o.is_fatal());
}

#[tokio::test]
async fn failure_without_exit_code_keeps_the_server_message() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    // Nothing scripted: the fake answers like a missing executable.
    let pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let o = &cluster.run_hooks(HookPhase::Post, &pods).await[0];
    assert!(!o.ok);
    assert_eq!(o.exit_code, None);
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .contains("executable file not found"),
        "{o:?}"
    );
}

#[tokio::test]
async fn large_output_is_kept_bounded_to_its_tail() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let mut big = Vec::new();
    for i in 0..20_000 {
        big.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    fake.script(ExecScript {
        pod: "postgres-0".into(),
        container: "postgres".into(),
        command: argv(&PG_PRE),
        stdout: big,
        stderr: Vec::new(),
        end: ExecEnd::Exit(0),
        delay: Duration::ZERO,
    });
    let pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let o = &cluster.run_hooks(HookPhase::Pre, &pods).await[0];
    assert!(o.ok, "{o:?}");
    assert_eq!(o.stdout_tail.len(), pvsnap_k8s::OUTPUT_TAIL_BYTES);
    assert!(o.stdout_tail.ends_with("line 19999\n"));
}

fn web_hooks(fake: &FakeCluster, pod: &str, on_error: &str) {
    let pre = json_array(&["/bin/sh", "-c", &format!("echo pre {pod}")]);
    let post = json_array(&["/bin/sh", "-c", &format!("echo post {pod}")]);
    fake.set_annotations(
        "default",
        pod,
        &[
            ("pre.hook.backup.velero.io/command", &pre),
            ("pre.hook.backup.velero.io/on-error", on_error),
            ("post.hook.backup.velero.io/command", &post),
        ],
    );
}

fn script_web(fake: &FakeCluster, pod: &str, phase: &str, exit: i32) {
    fake.script_simple(
        pod,
        "nginx",
        &["/bin/sh", "-c", &format!("echo {phase} {pod}")],
        exit,
        &format!("{phase} ok\n"),
    );
}

#[tokio::test]
async fn with_hooks_runs_pre_on_all_pods_before_body_and_post_after() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    for p in WEB_PODS {
        web_hooks(&fake, p, "Fail");
        script_web(&fake, p, "pre", 0);
        script_web(&fake, p, "post", 0);
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let host_pre = HostHook::new(format!("echo host-pre >> {}", trace.display()));
    let host_post = HostHook::new(format!("echo host-post >> {}", trace.display()));
    let pods = cluster.pods_mounting("default", "data").await.unwrap();
    let run = with_hooks(
        Some(&cluster),
        &pods,
        Some(&host_pre),
        Some(&host_post),
        || async {
            fake.mark("body");
            // The host pre hook ran before the body, the host post hook not yet.
            Ok::<_, String>(std::fs::read_to_string(&trace).unwrap())
        },
    )
    .await;
    let BodyOutcome::Ran(Ok(seen)) = &run.body else {
        panic!("{:?}", run.body)
    };
    assert_eq!(seen, "host-pre\n");
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap(),
        "host-pre\nhost-post\n"
    );
    assert_eq!(
        fake.events(),
        vec![
            format!(
                "exec {}/nginx /bin/sh -c echo pre {}",
                WEB_PODS[0], WEB_PODS[0]
            ),
            format!(
                "exec {}/nginx /bin/sh -c echo pre {}",
                WEB_PODS[1], WEB_PODS[1]
            ),
            "mark body".to_string(),
            format!(
                "exec {}/nginx /bin/sh -c echo post {}",
                WEB_PODS[0], WEB_PODS[0]
            ),
            format!(
                "exec {}/nginx /bin/sh -c echo post {}",
                WEB_PODS[1], WEB_PODS[1]
            ),
        ]
    );
    let targets: Vec<String> = run
        .outcomes()
        .map(|o| format!("{} {}", o.phase, o.target()))
        .collect();
    assert_eq!(
        targets,
        vec![
            "pre host".to_string(),
            format!("pre pod default/{} container nginx", WEB_PODS[0]),
            format!("pre pod default/{} container nginx", WEB_PODS[1]),
            format!("post pod default/{} container nginx", WEB_PODS[0]),
            format!("post pod default/{} container nginx", WEB_PODS[1]),
            "post host".to_string(),
        ]
    );
    assert!(run.fatal_failures().is_empty());
}

#[tokio::test]
async fn failed_pre_hook_with_fail_skips_body_and_runs_post_of_reached_pods() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    for p in WEB_PODS {
        web_hooks(&fake, p, "Fail");
        script_web(&fake, p, "post", 0);
    }
    script_web(&fake, WEB_PODS[0], "pre", 1);
    script_web(&fake, WEB_PODS[1], "pre", 0);
    let pods = cluster.pods_mounting("default", "data").await.unwrap();
    let mut body_ran = false;
    let run = with_hooks(Some(&cluster), &pods, None, None, || async {
        body_ran = true;
        Ok::<_, String>(())
    })
    .await;
    assert!(!body_ran);
    assert!(run.skipped());
    let BodyOutcome::Skipped { reason } = &run.body else {
        unreachable!()
    };
    assert!(
        reason.contains(WEB_PODS[0]) && reason.contains("exited with code 1"),
        "{reason}"
    );
    // The second pod's pre hook never ran, and neither does its post hook.
    assert_eq!(
        fake.events(),
        vec![
            format!(
                "exec {}/nginx /bin/sh -c echo pre {}",
                WEB_PODS[0], WEB_PODS[0]
            ),
            format!(
                "exec {}/nginx /bin/sh -c echo post {}",
                WEB_PODS[0], WEB_PODS[0]
            ),
        ]
    );
    assert_eq!(run.pre.len(), 1);
    assert_eq!(run.post.len(), 1);
    assert!(run.post[0].ok);
    assert_eq!(run.fatal_failures().len(), 1);
}

#[tokio::test]
async fn failed_pre_hook_with_continue_lets_the_body_run() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    for p in WEB_PODS {
        web_hooks(&fake, p, "Continue");
        script_web(&fake, p, "post", 0);
    }
    script_web(&fake, WEB_PODS[0], "pre", 1);
    script_web(&fake, WEB_PODS[1], "pre", 0);
    let pods = cluster.pods_mounting("default", "data").await.unwrap();
    let run = with_hooks(Some(&cluster), &pods, None, None, || async {
        fake.mark("body");
        Err::<(), _>("body failed")
    })
    .await;
    assert!(matches!(run.body, BodyOutcome::Ran(Err("body failed"))));
    assert_eq!(run.pre.len(), 2);
    assert!(!run.pre[0].ok && run.pre[0].on_error == OnError::Continue);
    assert!(run.fatal_failures().is_empty());
    // Post hooks run although the body failed.
    let events = fake.events();
    assert_eq!(events.len(), 5, "{events:?}");
    assert_eq!(events[2], "mark body");
    assert!(events[3].contains("echo post") && events[4].contains("echo post"));
}

#[tokio::test]
async fn failed_host_pre_hook_skips_pods_and_body_but_runs_host_post() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let run = with_hooks(
        Some(&cluster),
        &pods,
        Some(&HostHook::new("echo nope >&2; exit 4")),
        Some(&HostHook::new("echo cleanup")),
        || async { Ok::<_, String>(()) },
    )
    .await;
    assert!(run.skipped());
    assert!(fake.execs().is_empty());
    assert_eq!(run.pre[0].exit_code, Some(4));
    assert_eq!(run.pre[0].stderr_tail, "nope\n");
    assert_eq!(run.post.len(), 1);
    assert_eq!(run.post[0].stdout_tail, "cleanup\n");
}

#[tokio::test]
async fn hook_timeout_from_annotation_abandons_the_exec() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    fake.set_annotations(
        "db",
        "postgres-0",
        &[
            ("pre.hook.backup.velero.io/command", &json_array(&PG_PRE)),
            ("pre.hook.backup.velero.io/timeout", "300ms"),
        ],
    );
    fake.script(ExecScript {
        pod: "postgres-0".into(),
        container: "postgres".into(),
        command: argv(&PG_PRE),
        stdout: b"late\n".to_vec(),
        stderr: Vec::new(),
        end: ExecEnd::Exit(0),
        delay: Duration::from_secs(5),
    });
    let pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let started = Instant::now();
    let o = &cluster.run_hooks(HookPhase::Pre, &pods).await[0];
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!o.ok);
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .contains("timed out after 300ms"),
        "{o:?}"
    );
    assert!(o.duration_ms >= 300, "{o:?}");
    // Default container when none is annotated: the first one.
    assert_eq!(o.container.as_deref(), Some("postgres"));
}

#[tokio::test]
async fn plain_string_and_legacy_annotations_follow_velero() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    fake.set_annotations(
        "db",
        "postgres-0",
        &[
            ("hook.backup.velero.io/command", "/usr/local/bin/freeze"),
            ("hook.backup.velero.io/container", "metrics"),
        ],
    );
    fake.script_simple(
        "postgres-0",
        "metrics",
        &["/usr/local/bin/freeze"],
        0,
        "frozen",
    );
    let pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let out = cluster.run_hooks(HookPhase::Pre, &pods).await;
    assert_eq!(out.len(), 1);
    assert!(out[0].ok, "{:?}", out[0]);
    assert_eq!(out[0].container.as_deref(), Some("metrics"));
    assert_eq!(out[0].command, argv(&["/usr/local/bin/freeze"]));
    // The legacy form is a pre hook only.
    assert!(cluster.run_hooks(HookPhase::Post, &pods).await.is_empty());
}

#[tokio::test]
async fn invalid_annotations_and_unknown_containers_fail_without_exec() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    fake.set_annotations(
        "db",
        "postgres-0",
        &[
            ("pre.hook.backup.velero.io/command", "[\"/bin/true\""),
            ("pre.hook.backup.velero.io/on-error", "Continue"),
            ("pre.hook.backup.velero.io/timeout", "soon"),
            ("post.hook.backup.velero.io/command", "[\"/bin/true\"]"),
            ("post.hook.backup.velero.io/container", "sidecar"),
        ],
    );
    let pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let pre = &cluster.run_hooks(HookPhase::Pre, &pods).await[0];
    let err = pre.error.as_deref().unwrap();
    assert!(
        err.contains("not a JSON string array") && err.contains("\"soon\""),
        "{err}"
    );
    assert_eq!(pre.on_error, OnError::Continue);
    let post = &cluster.run_hooks(HookPhase::Post, &pods).await[0];
    assert!(
        post.error
            .as_deref()
            .unwrap()
            .contains("has no container \"sidecar\" (containers: postgres, metrics)"),
        "{post:?}"
    );
    assert!(fake.execs().is_empty());
}

#[test]
fn hook_annotations_parse_like_velero() {
    let ann: BTreeMap<String, String> =
        serde_json::from_value(postgres_hook_annotations()).unwrap();
    let pre = pod_hook(&ann, HookPhase::Pre).unwrap().unwrap();
    assert_eq!(pre.command, argv(&PG_PRE));
    assert_eq!(pre.container.as_deref(), Some("postgres"));
    assert_eq!(pre.timeout, Duration::from_secs(60));
    let post = pod_hook(&ann, HookPhase::Post).unwrap().unwrap();
    assert_eq!(post.timeout, pvsnap_k8s::DEFAULT_HOOK_TIMEOUT);
    assert_eq!(post.on_error, OnError::Fail);
    assert!(pod_hook(&BTreeMap::new(), HookPhase::Pre).is_none());
    let odd: BTreeMap<String, String> = [
        (
            "post.hook.backup.velero.io/command".to_string(),
            "x".to_string(),
        ),
        (
            "post.hook.backup.velero.io/on-error".to_string(),
            "sometimes".to_string(),
        ),
    ]
    .into();
    let bad = pod_hook(&odd, HookPhase::Post).unwrap().unwrap_err();
    assert!(
        bad.reason.contains("neither Fail nor Continue"),
        "{}",
        bad.reason
    );
}

#[test]
fn go_durations_parse() {
    assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_go_duration("1m"), Some(Duration::from_secs(60)));
    assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
    assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_go_duration("-1s"), None);
    assert_eq!(parse_go_duration("30"), None);
    assert_eq!(parse_go_duration("1d"), None);
    assert_eq!(parse_go_duration(""), None);
}

#[test]
fn quantities_parse() {
    assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
    assert_eq!(parse_quantity("500M"), Some(500_000_000));
    assert_eq!(parse_quantity("1.5Gi"), Some(3 << 29));
    assert_eq!(parse_quantity("1e3"), Some(1000));
    assert_eq!(parse_quantity("1500m"), Some(2));
    assert_eq!(parse_quantity("12345"), Some(12345));
    assert_eq!(parse_quantity("10Gb"), None);
    assert_eq!(parse_quantity("-1Gi"), None);
    assert_eq!(parse_quantity("Gi"), None);
}

#[tokio::test]
async fn host_hooks_report_output_exit_code_and_timeout() {
    let ok = run_host_hook(
        HookPhase::Pre,
        "echo out; echo err >&2",
        Duration::from_secs(10),
    )
    .await;
    assert!(ok.ok && ok.exit_code == Some(0), "{ok:?}");
    assert_eq!(
        (ok.stdout_tail.as_str(), ok.stderr_tail.as_str()),
        ("out\n", "err\n")
    );
    assert_eq!(ok.command, argv(&["sh", "-c", "echo out; echo err >&2"]));
    assert!(ok.pod.is_none());

    let bad = run_host_hook(HookPhase::Post, "exit 7", Duration::from_secs(10)).await;
    assert_eq!(bad.exit_code, Some(7));
    assert_eq!(
        bad.error.as_deref(),
        Some("host post hook exited with code 7")
    );

    let started = Instant::now();
    // The child of sh keeps the pipes open; the group kill must end it too.
    let slow = run_host_hook(
        HookPhase::Pre,
        "sleep 30 & sleep 30",
        Duration::from_millis(200),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !slow.ok && slow.error.as_deref().unwrap().contains("timed out"),
        "{slow:?}"
    );

    let big = run_host_hook(HookPhase::Pre, "seq 1 100000", Duration::from_secs(10)).await;
    assert_eq!(big.stdout_tail.len(), pvsnap_k8s::OUTPUT_TAIL_BYTES);
    assert!(big.stdout_tail.ends_with("99999\n100000\n"));
}

#[test]
fn hook_outcomes_serialize_for_the_snapshot_record() {
    let o = HookOutcome {
        phase: HookPhase::Pre,
        namespace: Some("db".into()),
        pod: Some("postgres-0".into()),
        container: Some("postgres".into()),
        command: argv(&PG_PRE),
        ok: false,
        exit_code: Some(3),
        stdout_tail: String::new(),
        stderr_tail: "boom".into(),
        duration_ms: 12,
        error: Some("command exited with code 3".into()),
        on_error: OnError::Continue,
    };
    let v = serde_json::to_value(&o).unwrap();
    assert_eq!(v["phase"], "pre");
    assert_eq!(v["on_error"], "Continue");
    assert_eq!(v["exit_code"], 3);
    let back: HookOutcome = serde_json::from_value(v).unwrap();
    assert_eq!(back, o);
    let host = HookOutcome {
        namespace: None,
        pod: None,
        container: None,
        ..o
    };
    let v = serde_json::to_value(&host).unwrap();
    assert!(v.get("pod").is_none());
    assert_eq!(host.target(), "host");
}

// ---------------------------------------------------------------- workloads

#[tokio::test]
async fn finds_workloads_through_templates_and_owners() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let pg = cluster
        .workloads_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    assert_eq!(
        pg,
        vec![Workload {
            kind: WorkloadKind::StatefulSet,
            namespace: "db".into(),
            name: "postgres".into(),
            replicas: 1
        }]
    );
    let web = cluster.workloads_mounting("default", "data").await.unwrap();
    assert_eq!(
        web,
        vec![Workload {
            kind: WorkloadKind::Deployment,
            namespace: "default".into(),
            name: "web".into(),
            replicas: 2
        }]
    );
    // The replica set was read to follow the owner chain.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.ends_with(&format!("/replicasets/{WEB_RS}")))
    );
    assert!(
        cluster
            .workloads_mounting("default", "scratch")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn finds_deployment_by_owner_chain_alone() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
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
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let workloads = cluster
        .workloads_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let mut guard = cluster.scale_down(&workloads).await.unwrap();
    assert_eq!(guard.originals()[0].replicas, 1);
    assert_eq!(
        fake.get(Kind::StatefulSet, "db", "postgres").unwrap()["spec"]["replicas"],
        0
    );
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
    assert_eq!(
        fake.get(Kind::StatefulSet, "db", "postgres").unwrap()["spec"]["replicas"],
        1
    );
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
    let patches = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH"))
        .count();
    guard.restore_scale().await.unwrap();
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.starts_with("PATCH"))
            .count(),
        patches
    );
    assert_eq!(patches, 2);
}

async fn restore_that_fails(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("partial")).unwrap();
    Err("restore failed half way".into())
}

#[tokio::test]
async fn scale_back_after_a_failed_restore() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let workloads = cluster.workloads_mounting("default", "data").await.unwrap();
    let mut guard = cluster.scale_down(&workloads).await.unwrap();
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
    assert_eq!(
        fake.get(Kind::Deployment, "default", "web").unwrap()["spec"]["replicas"],
        2
    );
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
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
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
    assert_eq!(
        fake.get(Kind::Deployment, "default", "web").unwrap()["spec"]["replicas"],
        2
    );
    assert_eq!(
        fake.get(Kind::StatefulSet, "db", "postgres").unwrap()["spec"]["replicas"],
        1
    );
}

#[tokio::test]
async fn failed_scale_back_names_the_kubectl_commands() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let workloads = cluster
        .workloads_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let mut guard = cluster.scale_down(&workloads).await.unwrap();
    fake.fail_scale_of("postgres");
    let err = guard.restore_scale().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("kubectl scale -n db statefulset/postgres --replicas=1"),
        "{err}"
    );
    fake.allow_scale_of("postgres");
    guard.restore_scale().await.unwrap();
    assert_eq!(
        fake.get(Kind::StatefulSet, "db", "postgres").unwrap()["spec"]["replicas"],
        1
    );
}

#[tokio::test]
async fn wait_pods_gone_times_out_naming_the_pods() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
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

// ---------------------------------------------------------------- clone

#[tokio::test]
async fn creates_a_statically_bound_clone_claim() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
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
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let t = cluster
        .create_clone_claim(
            "db",
            "restored",
            None,
            "10Gi",
            NODE,
            Path::new("/srv/restored"),
        )
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
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let err = cluster
        .create_clone_claim(
            "default",
            "data",
            Some(CLASS),
            "1Gi",
            NODE,
            Path::new("/srv/x"),
        )
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
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    cluster
        .create_clone_claim("default", "copy", None, "1Gi", NODE, Path::new("/srv/a"))
        .await
        .unwrap();
    // The claim is deleted but the retained volume stays behind.
    cluster
        .client()
        .request_text(http_delete(
            "/api/v1/namespaces/default/persistentvolumeclaims/copy",
        ))
        .await
        .unwrap();
    let err = cluster
        .create_clone_claim("default", "copy", None, "1Gi", NODE, Path::new("/srv/b"))
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

#[tokio::test]
async fn clone_rejects_bad_input_before_any_request() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let e1 = cluster
        .create_clone_claim(
            "default",
            "Bad_Name",
            None,
            "1Gi",
            NODE,
            Path::new("/srv/a"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e1, Error::InvalidName { .. }), "{e1}");
    let e2 = cluster
        .create_clone_claim("default", "ok", None, "1Gi", NODE, Path::new("srv/a"))
        .await
        .unwrap_err();
    assert!(matches!(e2, Error::RelativeHostDir(_)), "{e2}");
    let e3 = cluster
        .create_clone_claim("default", "ok", None, "lots", NODE, Path::new("/srv/a"))
        .await
        .unwrap_err();
    assert!(matches!(e3, Error::InvalidQuantity { .. }), "{e3}");
    assert!(fake.requests().is_empty());
}

fn http_delete(path: &str) -> http::Request<Vec<u8>> {
    http::Request::delete(path).body(Vec::new()).unwrap()
}

#[tokio::test]
async fn run_hooks_stops_the_pre_phase_at_a_fatal_failure() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    for p in WEB_PODS {
        web_hooks(&fake, p, "Fail");
        script_web(&fake, p, "pre", 1);
        script_web(&fake, p, "post", 1);
    }
    let pods = cluster.pods_mounting("default", "data").await.unwrap();
    let pre = cluster.run_hooks(HookPhase::Pre, &pods).await;
    assert_eq!(pre.len(), 1);
    assert_eq!(fake.execs().len(), 1);
    // Post hooks are all attempted even when they fail.
    let post = cluster.run_hooks(HookPhase::Post, &pods).await;
    assert_eq!(post.len(), 2);
    assert!(post.iter().all(|o| o.exit_code == Some(1)));
}

#[tokio::test]
async fn finds_a_stopped_statefulset_through_its_claim_template() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    cluster
        .client()
        .request_text(http_delete("/api/v1/namespaces/db/pods/postgres-0"))
        .await
        .unwrap();
    let found = cluster
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
        cluster
            .workloads_mounting("db", "data-postgres-x")
            .await
            .unwrap()
            .is_empty()
    );
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for its reaper is dead too.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn host_hook_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let cmd = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    let o = run_host_hook(HookPhase::Pre, &cmd, Duration::from_millis(300)).await;
    assert!(!o.ok);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !process_gone(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        process_gone(pid),
        "background child {pid} of the hook survived"
    );
}

#[tokio::test]
async fn exec_works_with_the_older_v4_channel_protocol() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    fake.set_exec_protocols(&["v4.channel.k8s.io"]);
    fake.script_simple("postgres-0", "postgres", &PG_POST, 5, "resumed\n");
    let pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    let o = &cluster.run_hooks(HookPhase::Post, &pods).await[0];
    assert_eq!(o.exit_code, Some(5), "{o:?}");
    assert_eq!(o.stdout_tail, "resumed\n");
    assert_eq!(fake.execs()[0].protocol, "v4.channel.k8s.io");
}

#[tokio::test]
async fn exec_into_a_vanished_pod_is_a_hook_failure() {
    let fake = FakeCluster::with_fixtures().await;
    let cluster = fake.connect().await;
    let mut pods = cluster
        .pods_mounting("db", "data-postgres-0")
        .await
        .unwrap();
    pods[0].name = "postgres-9".into();
    let o = &cluster.run_hooks(HookPhase::Pre, &pods).await[0];
    assert!(!o.ok);
    let err = o.error.as_deref().unwrap();
    assert!(
        err.contains("exec into pod db/postgres-9 container postgres failed")
            && err.contains("not found"),
        "{err}"
    );
}
