//! The manifests and units in `deploy/`: every YAML document is a valid
//! object of its kind, the RBAC rules grant exactly what the commands send
//! to the API server (recorded by the fake API server), and the scheduled
//! commands use only flags the CLI accepts.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use pvsnap_k8s::testing::fixtures::{CEPH_DRIVER, PG_POST, PG_PRE, STORAGE_ROOT, snapshot_class};
use serde_json::Value;

use crate::k8s::Kube;
use crate::util;
use crate::util::stderr;

/// (API group, resource or resource/subresource, verb).
type Permission = (String, String, String);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML document under deploy/, with the file it came from.
fn documents() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for path in util::files_below(&deploy_dir()) {
        // Prometheus rules, not Kubernetes objects (tests: prometheus.rs).
        if path.starts_with(deploy_dir().join("prometheus")) {
            continue;
        }
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            let text = fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.extend(
                docs.into_iter()
                    .filter(|d| !d.is_null())
                    .map(|d| (path.clone(), d)),
            );
        }
    }
    out
}

struct Manifests {
    cronjobs: Vec<CronJob>,
    daemonsets: Vec<DaemonSet>,
    config_maps: Vec<ConfigMap>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
}

impl Manifests {
    /// The pod the (first) CronJob runs.
    fn cronjob_pod(&self) -> PodSpec {
        self.cronjobs[0]
            .spec
            .job_template
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .clone()
            .unwrap()
    }
}

impl Manifests {
    /// The pod the DaemonSet runs.
    fn daemonset_pod(&self) -> PodSpec {
        self.daemonsets[0].spec.template.spec.clone().unwrap()
    }
}

/// The jobs of the DaemonSet's schedule (its ConfigMap), as `pvsnap serve
/// --check` reads them: (name, args).
fn served_jobs(m: &Manifests) -> Vec<(String, Vec<String>)> {
    let cm = m
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("pvsnap-schedule"))
        .expect("ConfigMap pvsnap-schedule");
    let text = &cm.data.as_ref().unwrap()["schedule.toml"];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedule.toml");
    fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pvsnap"))
        .args(["serve", "--check", "--schedule"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (name, rest) = l
                .strip_prefix("job ")
                .unwrap()
                .split_once(": next ")
                .unwrap();
            let cmd = rest.split_once(": pvsnap ").unwrap().1;
            (
                name.to_string(),
                cmd.split(' ').map(str::to_string).collect(),
            )
        })
        .collect()
}

fn manifests() -> Manifests {
    let mut m = Manifests {
        cronjobs: vec![],
        daemonsets: vec![],
        config_maps: vec![],
        service_accounts: vec![],
        roles: vec![],
        bindings: vec![],
    };
    for (path, doc) in documents() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "CronJob" => m.cronjobs.push(typed(&path, doc)),
            "DaemonSet" => m.daemonsets.push(typed(&path, doc)),
            "ConfigMap" => m.config_maps.push(typed(&path, doc)),
            "ServiceAccount" => m.service_accounts.push(typed(&path, doc)),
            "ClusterRole" => m.roles.push(typed(&path, doc)),
            "ClusterRoleBinding" => m.bindings.push(typed(&path, doc)),
            "Namespace" => {
                let _: Namespace = typed(&path, doc);
            }
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
    }
    m
}

/// The document as its Kubernetes type: fields must have the right shape.
fn typed<T: serde::de::DeserializeOwned>(path: &Path, doc: Value) -> T {
    let kind = doc["kind"].clone();
    serde_json::from_value(doc)
        .unwrap_or_else(|e| panic!("{}: {kind} does not parse: {e}", path.display()))
}

fn role_permissions(m: &Manifests, name: &str) -> BTreeSet<Permission> {
    let role = m
        .roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no ClusterRole {name}"));
    let mut out = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{name}: {rule:?}"
        );
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    assert!(
                        g != "*" && r != "*" && v != "*",
                        "{name}: no wildcards in a least-privilege role"
                    );
                    out.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    out
}

/// What RBAC checks for a request as the fake server logged it
/// (`METHOD /path?query`). Exec is a GET upgraded to a WebSocket, which API
/// servers authorize as `get` and, newer ones, also as `create`.
fn permissions_of(request: &str) -> Vec<Permission> {
    let (method, target) = request.split_once(' ').expect("METHOD path");
    let path = target.split('?').next().unwrap();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("unexpected request {request}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        r => r,
    };
    let (resource, name, sub) = (rest[0], rest.get(1), rest.get(2));
    let resource = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_string(),
    };
    let verbs: &[&str] = match (method, name, sub.copied()) {
        ("GET", _, Some("exec")) => &["get", "create"],
        ("GET", None, _) => &["list"],
        ("GET", Some(_), _) => &["get"],
        ("POST", _, _) => &["create"],
        ("PATCH", _, _) => &["patch"],
        ("DELETE", _, _) => &["delete"],
        _ => panic!("unexpected request {request}"),
    };
    verbs
        .iter()
        .map(|v| (group.to_string(), resource.clone(), v.to_string()))
        .collect()
}

fn used_since(k: &Kube, from: usize) -> BTreeSet<Permission> {
    k.fake.requests()[from..]
        .iter()
        .flat_map(|r| permissions_of(r))
        .collect()
}

fn fill(dir: &Path) {
    fs::write(dir.join("file"), b"content").unwrap();
}

#[test]
fn rbac_grants_exactly_what_the_commands_use() {
    let m = manifests();
    let k = Kube::new();
    fill(&k.data());
    fill(&k.pg());
    for _ in 0..2 {
        k.fake
            .script_simple("postgres-0", "postgres", &PG_PRE, 0, "");
        k.fake
            .script_simple("postgres-0", "postgres", &PG_POST, 0, "");
    }

    // Snapshots: by name and by --all-pvcs, with pod hooks; default/ceph
    // (CSI) as a VolumeSnapshot, then forgotten (the CronJob's account runs
    // `forget --policy default` too).
    k.fake
        .insert(snapshot_class("ceph-snap", CEPH_DRIVER, "Delete", true));
    let start = k.fake.requests().len();
    k.ok(&[
        "snapshot",
        "--all-pvcs",
        "--all-namespaces",
        "-l",
        "backup=daily",
    ]);
    k.ok(&["snapshot", "--all-pvcs", "-n", "db"]);
    k.ok(&["snapshot", "pvc/db/data-postgres-0"]);
    k.ok(&[
        "snapshot",
        "pvc/default/ceph",
        "--snapshot-class",
        "ceph-snap",
    ]);
    k.ok(&["forget", "latest:pvc/default/ceph"]);
    let snapshot_uses = used_since(&k, start);
    assert!(
        snapshot_uses.contains(&(
            "snapshot.storage.k8s.io".into(),
            "volumesnapshots".into(),
            "delete".into()
        )),
        "{snapshot_uses:?}"
    );
    assert!(
        snapshot_uses.contains(&("".into(), "pods/exec".into(), "create".into())),
        "hooks ran: {snapshot_uses:?}"
    );

    // Restores: in place (a Deployment and a StatefulSet) and a clone.
    let start = k.fake.requests().len();
    k.ok(&[
        "restore",
        "latest:pvc/default/data",
        "--to-pvc",
        "default/data",
        "--yes",
    ]);
    k.ok(&[
        "restore",
        "latest:pvc/db/data-postgres-0",
        "--to-pvc",
        "db/data-postgres-0",
        "--yes",
    ]);
    k.ok(&[
        "restore",
        "latest:pvc/default/data",
        "--to-new-pvc",
        "default/copy",
    ]);
    // A CSI record: a claim from its VolumeSnapshot through dataSource.
    k.ok(&[
        "restore",
        "latest:pvc/default/ceph",
        "--to-new-pvc",
        "default/ceph-copy",
    ]);
    let restore_uses = used_since(&k, start);
    assert!(
        restore_uses.contains(&("apps".into(), "statefulsets/scale".into(), "patch".into())),
        "{restore_uses:?}"
    );

    assert_eq!(
        role_permissions(&m, "pvsnap-snapshot"),
        snapshot_uses,
        "pvsnap-snapshot must grant exactly what `pvsnap snapshot` uses"
    );
    // Deleting a clone's volume happens only when its claim cannot be
    // created, a path the fake cannot take.
    let mut restore_needs = restore_uses;
    restore_needs.insert(("".into(), "persistentvolumes".into(), "delete".into()));
    assert_eq!(
        role_permissions(&m, "pvsnap-restore"),
        restore_needs,
        "pvsnap-restore must grant exactly what `pvsnap restore --to-pvc/--to-new-pvc` use"
    );

    // The CronJob's and the DaemonSet's service account is bound to the
    // snapshot role; the DaemonSet's jobs are the commands measured above.
    let sa = m.cronjob_pod().service_account_name.unwrap();
    let sa_ns = m.cronjobs[0].metadata.namespace.clone().unwrap();
    assert_eq!(m.daemonset_pod().service_account_name, Some(sa.clone()));
    assert_eq!(m.daemonsets[0].metadata.namespace, Some(sa_ns.clone()));
    for (_, args) in served_jobs(&m) {
        assert!(
            ["snapshot", "forget"].contains(&args[0].as_str()),
            "the DaemonSet's job `{}` sends requests this test did not measure against pvsnap-snapshot",
            args.join(" ")
        );
    }
    assert!(
        m.service_accounts
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(&sa)
                && s.metadata.namespace.as_deref() == Some(&sa_ns))
    );
    assert!(
        m.bindings
            .iter()
            .any(|b| b.role_ref.name == "pvsnap-snapshot"
                && b.subjects
                    .iter()
                    .flatten()
                    .any(|s| s.kind == "ServiceAccount"
                        && s.name == sa
                        && s.namespace.as_deref() == Some(&sa_ns))),
        "no ClusterRoleBinding of pvsnap-snapshot to {sa_ns}/{sa}"
    );
}

/// Runs pvsnap with `args` against nothing: a usage error exits 2; flags
/// that parse get as far as looking for the cluster (snapshot) or the
/// repository (forget).
fn parses(args: &[String]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pvsnap"));
    c.args(args)
        .arg("--repo")
        .arg(dir.path().join("no-repo"))
        .env_remove("PVSNAP_REPO");
    let expect = if args[0] == "snapshot" {
        c.arg("--kubeconfig").arg(dir.path().join("no-kubeconfig"));
        "no usable Kubernetes configuration"
    } else {
        "not a pvsnap repository"
    };
    let out = c.output().unwrap();
    assert_ne!(
        out.status.code(),
        Some(2),
        "pvsnap {args:?} is a usage error:\n{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(expect),
        "pvsnap {args:?}:\n{}",
        stderr(&out)
    );
    out
}

#[test]
fn the_cronjob_runs_a_command_the_cli_accepts_on_the_mounted_storage() {
    let m = manifests();
    assert_eq!(m.cronjobs.len(), 1);
    let pod = m.cronjob_pod();
    let argv = |c: &k8s_openapi::api::core::v1::Container| -> Vec<String> {
        let command = c.command.clone().unwrap();
        assert_eq!(command[0], "pvsnap");
        command[1..]
            .iter()
            .chain(c.args.iter().flatten())
            .cloned()
            .collect()
    };
    // Snapshot first (an init container), then retention.
    let c = &pod.init_containers.as_ref().expect("init container")[0];
    let args = argv(c);
    assert_eq!(args[..3], ["snapshot", "--all-pvcs", "--all-namespaces"]);
    parses(&args);
    let retention = argv(&pod.containers[0]);
    assert_eq!(retention, ["forget", "--policy", "default", "--prune"]);
    parses(&retention);

    // The storage folder is mounted where --host-root puts it.
    let host_root = &args[args
        .iter()
        .position(|a| a == "--host-root")
        .expect("--host-root")
        + 1];
    let storage = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == STORAGE_ROOT))
        .expect("a hostPath volume of the storage folder");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| vm.name == storage.name)
        .expect("storage mounted");
    assert_eq!(mount.mount_path, format!("{host_root}{STORAGE_ROOT}"));
    assert_eq!(mount.read_only, Some(true), "snapshots only read volumes");
    // The repository is pvsnap's default for root, on the host.
    let repo = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            v.host_path
                .as_ref()
                .is_some_and(|h| h.path == "/var/lib/pvsnap/repo")
        })
        .expect("repository volume");
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .any(|vm| vm.name == repo.name && vm.mount_path == "/var/lib/pvsnap/repo")
    );
    assert_eq!(
        c.security_context.as_ref().and_then(|s| s.run_as_user),
        Some(0)
    );
    // The node name comes from the pod's node, not its host name.
    let node = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PVSNAP_NODE")
        .expect("PVSNAP_NODE");
    assert_eq!(
        node.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    assert!(
        pod.node_selector
            .unwrap()
            .contains_key("kubernetes.io/hostname")
    );
}

#[test]
fn the_systemd_unit_runs_a_command_the_cli_accepts() {
    let unit = fs::read_to_string(deploy_dir().join("systemd/pvsnap-snapshot.service")).unwrap();
    let execs: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .collect();
    assert!(!execs.is_empty());
    let mut subcommands = Vec::new();
    for exec in execs {
        let words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
        assert!(words[0].ends_with("/pvsnap"), "{exec}");
        parses(&words[1..]);
        subcommands.push(words[1].clone());
    }
    assert_eq!(subcommands, ["snapshot", "forget"]);
    let timer = fs::read_to_string(deploy_dir().join("systemd/pvsnap-snapshot.timer")).unwrap();
    assert!(
        timer.lines().any(|l| l.starts_with("OnCalendar=")),
        "{timer}"
    );
}

#[test]
fn the_daemonset_serves_a_schedule_of_commands_the_cli_accepts() {
    let m = manifests();
    assert_eq!(m.daemonsets.len(), 1);
    let ds = &m.daemonsets[0];
    let annotations = ds
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9934");
    let pod = m.daemonset_pod();
    let c = &pod.containers[0];
    let command = c.command.clone().unwrap();
    assert_eq!(command[..2], ["pvsnap", "serve"]);
    let after =
        |flag: &str| command[command.iter().position(|a| a == flag).expect(flag) + 1].clone();
    assert_eq!(after("--listen"), ":9934");
    let schedule = after("--schedule");
    // The ConfigMap is mounted where --schedule reads it.
    let cm_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|c| c.name == "pvsnap-schedule")
        })
        .expect("the schedule ConfigMap as a volume");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| vm.name == cm_volume.name)
        .expect("schedule mounted");
    assert_eq!(format!("{}/schedule.toml", mount.mount_path), schedule);
    // Each job parses; the snapshot's --host-root has the storage below it.
    let jobs = served_jobs(&m);
    assert!(jobs.iter().any(|(_, a)| a[0] == "snapshot"));
    for (_, args) in &jobs {
        parses(args);
        if let Some(i) = args.iter().position(|a| a == "--host-root") {
            let storage = pod
                .volumes
                .iter()
                .flatten()
                .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == STORAGE_ROOT))
                .expect("a hostPath volume of the storage folder");
            assert!(
                c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|vm| vm.name == storage.name
                        && vm.mount_path == format!("{}{STORAGE_ROOT}", args[i + 1])
                        && vm.read_only == Some(true))
            );
        }
    }
    // The repository and the state folder are the host's (pvsnap's
    // defaults for root), so state and outbox survive the pod.
    for path in ["/var/lib/pvsnap/repo", "/var/lib/pvsnap/serve"] {
        let v = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == path))
            .unwrap_or_else(|| panic!("hostPath {path}"));
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|vm| vm.name == v.name && vm.mount_path == path),
            "{path} mounted"
        );
    }
    let node = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PVSNAP_NODE")
        .expect("PVSNAP_NODE");
    assert_eq!(
        node.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
}

#[test]
fn the_systemd_serve_unit_runs_a_command_the_cli_accepts() {
    let unit = fs::read_to_string(deploy_dir().join("systemd/pvsnap.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(
        words[0].ends_with("/pvsnap") && words[1] == "serve",
        "{exec}"
    );
    // The flags parse: with --check, serve only reads the schedule, which
    // is missing here, and says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pvsnap"))
        .args(&words[1..])
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("schedule /etc/pvsnap/schedule.toml"),
        "{}",
        stderr(&out)
    );
}
