//! Kubernetes claims through the binary, against the in-process fake API
//! server of `pvsnap_k8s::testing` holding MicroK8s-shaped objects. A temp
//! folder stands in for the host's root (`--host-root`), so volume
//! directories live at `<host>/var/snap/microk8s/common/default-storage/...`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use pvsnap_k8s::testing::fake::{FakeCluster, Kind};
use pvsnap_k8s::testing::fixtures::{
    self, DATA_UID, NODE, PG_POST, PG_PRE, PG_UID, STORAGE_ROOT, WEB_PODS,
};
use serde_json::{Value, json};

use crate::util::{self, Env};
use crate::util::{stderr, stdout};

/// A repository, a fake cluster and a fake host root.
pub struct Kube {
    // Dropped before the runtime that serves it.
    pub fake: FakeCluster,
    _rt: tokio::runtime::Runtime,
    pub env: Env,
}

impl Kube {
    pub fn new() -> Kube {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let fake = rt.block_on(FakeCluster::with_fixtures());
        let env = Env::new();
        env.init();
        let k = Kube { fake, _rt: rt, env };
        for dir in [k.data(), k.pg()] {
            fs::create_dir_all(dir).unwrap();
        }
        k
    }

    /// The fake host's root folder.
    pub fn host(&self) -> PathBuf {
        self.env.path("host")
    }

    /// Where a path of the node lives in the fake host.
    pub fn on_host(&self, node_path: &str) -> PathBuf {
        self.host().join(node_path.trim_start_matches('/'))
    }

    /// The volume directory of claim default/data.
    pub fn data(&self) -> PathBuf {
        self.on_host(&fixtures::hostpath_dir("default", "data", DATA_UID))
    }

    /// The volume directory of claim db/data-postgres-0.
    pub fn pg(&self) -> PathBuf {
        self.on_host(&fixtures::hostpath_dir("db", "data-postgres-0", PG_UID))
    }

    /// `pvsnap ARGS --kubeconfig .. --node node-a --host-root <host>`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run pvsnap")
    }

    /// The command [`Kube::run`] runs, to change or spawn.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.env.cmd();
        c.args(args)
            .arg("--kubeconfig")
            .arg(self.fake.kubeconfig())
            .args(["--node", NODE, "--host-root"])
            .arg(self.host())
            .env_remove("KUBECONFIG")
            .env_remove("PVSNAP_NODE")
            .stdin(Stdio::null());
        c
    }

    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "pvsnap {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            stderr(&out),
            stdout(&out)
        );
        out
    }

    /// `snapshot ARGS --json`, whatever the exit code: (code, snapshots, stderr).
    pub fn snapshot(&self, args: &[&str]) -> (i32, Vec<Value>, String) {
        let mut all = vec!["snapshot", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let snaps: Vec<Value> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}\n{}", stdout(&out), stderr(&out)));
        (out.status.code().expect("exit code"), snaps, stderr(&out))
    }

    /// Snapshots listed with `snapshots --json` and extra filter arguments.
    pub fn snapshots(&self, filter: &[&str]) -> Vec<Value> {
        let mut args = vec!["snapshots", "--json"];
        args.extend_from_slice(filter);
        serde_json::from_slice(&self.env.ok(&args).stdout).expect("JSON")
    }

    pub fn replicas(&self, kind: Kind, ns: &str, name: &str) -> i64 {
        self.fake.get(kind, ns, name).expect("workload exists")["spec"]["replicas"]
            .as_i64()
            .expect("replicas")
    }
}

/// Files of a database-like volume: a few chunks' worth and small files.
fn fill(dir: &Path) {
    fs::create_dir_all(dir.join("base/16384")).unwrap();
    fs::write(
        dir.join("base/16384/2619"),
        util::noise(11, 3 * 1024 * 1024 + 5),
    )
    .unwrap();
    fs::write(dir.join("base/16384/2620"), util::noise(12, 700_000)).unwrap();
    fs::write(dir.join("PG_VERSION"), b"16\n").unwrap();
    fs::write(
        dir.join("postgresql.conf"),
        "shared_buffers = 128MB\n".repeat(100),
    )
    .unwrap();
}

fn hooks(snap: &Value) -> Vec<(String, String, bool)> {
    snap["hooks"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h["phase"].as_str().unwrap().to_string(),
                        h["pod"].as_str().unwrap_or("host").to_string(),
                        h["ok"].as_bool().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A fresh [`Kube`] whose claims default/data and db/data-postgres-0 are
/// both [`fill`]ed.
fn both_claims_filled() -> Kube {
    let k = Kube::new();
    fill(&k.data());
    fill(&k.pg());
    k
}

/// The commands the fake cluster was asked to exec, in order.
fn execs(k: &Kube) -> Vec<String> {
    k.fake
        .events()
        .into_iter()
        .filter(|e| e.starts_with("exec"))
        .collect()
}

/// Scripts postgres-0's pre hook (`PG_PRE`, exiting with `pre_code`) and
/// post hook (`PG_POST`, printing `post_out`).
fn script_pg_hooks(k: &Kube, pre_code: i32, pre_out: &str, post_out: &str) {
    k.fake
        .script_simple("postgres-0", "postgres", &PG_PRE, pre_code, pre_out);
    k.fake
        .script_simple("postgres-0", "postgres", &PG_POST, 0, post_out);
}

const WEB_PRE: [&str; 3] = ["/bin/sh", "-c", "sync"];
const WEB_POST: [&str; 3] = ["/bin/sh", "-c", "echo thawed"];

/// Gives the web pods (users of default/data) pre and post hooks.
fn hook_web_pods(k: &Kube) {
    let pre = serde_json::to_string(&WEB_PRE).unwrap();
    let post = serde_json::to_string(&WEB_POST).unwrap();
    for pod in WEB_PODS {
        k.fake.set_annotations(
            "default",
            pod,
            &[
                ("pre.hook.backup.velero.io/command", &pre),
                ("pre.hook.backup.velero.io/container", "nginx"),
                ("post.hook.backup.velero.io/command", &post),
            ],
        );
        k.fake.script_simple(pod, "nginx", &WEB_PRE, 0, "");
        k.fake.script_simple(pod, "nginx", &WEB_POST, 0, "thawed\n");
    }
}

#[test]
fn snapshot_of_a_claim_records_the_claim_and_runs_hooks_in_order() {
    let k = Kube::new();
    fill(&k.data());
    hook_web_pods(&k);
    let marker = k.data().join("frozen");
    let pre = format!("echo yes > {}", marker.display());
    let post = format!("rm {}", marker.display());
    let (code, snaps, err) =
        k.snapshot(&["pvc/default/data", "--pre-hook", &pre, "--post-hook", &post]);
    assert_eq!(code, 0, "{err}");
    let s = &snaps[0];
    assert_eq!(
        s["source"],
        json!({
            "kind": "pvc",
            "cluster": pvsnap_k8s::testing::fake::CONTEXT,
            "namespace": "default",
            "pvc": "data",
            "pv": fixtures::pv_name(DATA_UID),
            "storage_class": fixtures::CLASS,
            "capacity": "1Gi",
            "labels": {"app": "web", "backup": "daily"},
            "node": NODE,
            "host_path": fixtures::hostpath_dir("default", "data", DATA_UID),
        })
    );
    assert_eq!(
        s["summary"]["total_files"], 5,
        "the volume's 4 files and the host pre hook's marker"
    );

    // Host pre, pods' pre in pod order, pods' post, host post.
    let h = |phase: &str, pod: &str| (phase.to_string(), pod.to_string(), true);
    assert_eq!(
        hooks(s),
        vec![
            h("pre", "host"),
            h("pre", WEB_PODS[0]),
            h("pre", WEB_PODS[1]),
            h("post", WEB_PODS[0]),
            h("post", WEB_PODS[1]),
            h("post", "host")
        ]
    );
    assert_eq!(s["hooks"][3]["stdout_tail"], "thawed\n");
    assert_eq!(
        execs(&k),
        vec![
            format!("exec {}/nginx /bin/sh -c sync", WEB_PODS[0]),
            format!("exec {}/nginx /bin/sh -c sync", WEB_PODS[1]),
            format!("exec {}/nginx /bin/sh -c echo thawed", WEB_PODS[0]),
            format!("exec {}/nginx /bin/sh -c echo thawed", WEB_PODS[1]),
        ]
    );
    // The pre hook ran before the volume was read, the post hook after.
    let ls = stdout(&k.env.ok(&["ls", &s["id"].as_str().unwrap()[..12]]));
    assert!(ls.lines().any(|l| l == "/frozen"), "{ls}");
    assert!(!marker.exists(), "post hook removed the marker");

    // The human output names the claim and the hooks.
    let out = k.ok(&["snapshot", "pvc/default/data"]);
    let text = stdout(&out);
    assert!(text.contains("of pvc/default/data:"), "{text}");
    assert!(
        text.contains(&format!(
            "pre hook on pod default/{} container nginx `/bin/sh -c sync`: ok",
            WEB_PODS[0]
        )),
        "{text}"
    );
}

#[test]
fn a_failing_pre_hook_skips_that_claim_and_the_others_still_run() {
    let k = both_claims_filled();
    // postgres-0 carries pre and post hook annotations (on-error Fail);
    // its pre hook command fails, its post hook works.
    script_pg_hooks(&k, 3, "", "resumed\n");
    let (code, snaps, err) = k.snapshot(&["pvc/db/data-postgres-0", "pvc/default/data"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("pvsnap: pvc/db/data-postgres-0: skipped, no snapshot taken: pre hook in pod db/postgres-0 container postgres failed: command exited with code 3"),
        "{err}"
    );
    assert!(
        err.contains("1 of 2 source(s) failed: pvc/db/data-postgres-0"),
        "{err}"
    );
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["source"]["pvc"], "data");
    assert!(k.snapshots(&["--pvc", "db/data-postgres-0"]).is_empty());
    // The post hook still ran for the pod whose pre hook failed.
    assert_eq!(
        execs(&k),
        vec![
            "exec postgres-0/postgres /bin/bash -c psql -U postgres -c CHECKPOINT".to_string(),
            "exec postgres-0/postgres /bin/bash -c echo resumed".to_string()
        ]
    );

    // With a working pre hook the claim is snapshotted and both recorded
    // (a fresh fake: scripts are matched first come, first served).
    let k2 = Kube::new();
    fill(&k2.pg());
    script_pg_hooks(&k2, 0, "CHECKPOINT\n", "resumed\n");
    let (code, snaps, err) = k2.snapshot(&["pvc/db/data-postgres-0"]);
    assert_eq!(code, 0, "{err}");
    let h = |phase: &str| (phase.to_string(), "postgres-0".to_string(), true);
    assert_eq!(hooks(&snaps[0]), vec![h("pre"), h("post")]);
}

#[test]
fn a_failing_host_pre_hook_skips_the_claim_and_still_runs_the_post_hook() {
    let k = Kube::new();
    fill(&k.data());
    let post_ran = k.env.path("post-ran");
    let post = format!("touch {}", post_ran.display());
    let (code, snaps, err) = k.snapshot(&[
        "pvc/default/data",
        "--pre-hook",
        "exit 7",
        "--post-hook",
        &post,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(snaps.is_empty());
    assert!(
        err.contains("host pre hook `exit 7` failed: exited with code 7"),
        "{err}"
    );
    assert!(post_ran.exists());
}

#[test]
fn refused_claims_are_reported_with_their_reason_and_the_others_still_run() {
    let k = Kube::new();
    fill(&k.data());
    let (code, snaps, err) = k.snapshot(&[
        "pvc/default/nope",
        "pvc/default/pending",
        "pvc/default/remote",
        "pvc/default/ceph",
        "pvc/default/shared",
        "pvc/default/lost",
        "pvc/default/scratch",
        "pvc/default/data",
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(snaps.len(), 1, "{err}");
    assert_eq!(snaps[0]["source"]["pvc"], "data");
    let want = [
        "pvsnap: pvc/default/nope: persistentvolumeclaim default/nope not found",
        "pvsnap: pvc/default/pending: persistentvolumeclaim default/pending is not bound (phase Pending)",
        "pvsnap: pvc/default/remote: persistentvolume pvc-9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c32 of claim default/remote is on node node-b, but this is node node-a; run pvsnap on node node-b",
        "pvsnap: pvc/default/ceph: CSI driver rbd.csi.ceph.com has no default VolumeSnapshotClass (its classes: none)",
        "pvsnap: pvc/default/shared: persistentvolume nfs-share of claim default/shared has unsupported volume type nfs",
        "pvsnap: pvc/default/lost: persistentvolume pvc-gone (bound to claim default/lost) not found",
        "is not a folder on this host",
        "7 of 8 source(s) failed",
    ];
    for w in want {
        assert!(err.contains(w), "missing {w:?} in:\n{err}");
    }
    // A claim name that is not NS/NAME is a usage problem, reported before anything runs.
    let out = k.run(&["snapshot", "pvc/default"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pvc/default: claims are written pvc/NAMESPACE/NAME"),
        "{}",
        stderr(&out)
    );
    assert_eq!(k.snapshots(&[]).len(), 1);
}

#[test]
fn all_pvcs_by_namespace_selector_and_all_namespaces() {
    let k = both_claims_filled();
    script_pg_hooks(&k, 0, "", "");

    let (code, snaps, err) = k.snapshot(&["--all-pvcs", "--namespace", "db"]);
    assert_eq!(code, 0, "{err}");
    let keys = |snaps: &[Value]| -> Vec<String> {
        snaps
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s["source"]["namespace"].as_str().unwrap(),
                    s["source"]["pvc"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(keys(&snaps), ["db/data-postgres-0"]);

    // backup=daily: db/data-postgres-0, default/ceph (CSI, no snapshot class: refused), default/data.
    let (code, snaps, err) = k.snapshot(&["--all-pvcs", "--all-namespaces", "-l", "backup=daily"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(keys(&snaps), ["db/data-postgres-0", "default/data"]);
    assert!(
        err.contains(
            "pvc/default/ceph: CSI driver rbd.csi.ceph.com has no default VolumeSnapshotClass"
        ),
        "{err}"
    );
    assert!(!err.contains("pvc/default/pending"), "not selected: {err}");

    // Without --namespace: the kubeconfig's namespace (default).
    let (code, snaps, err) = k.snapshot(&["--all-pvcs", "-l", "app=web"]);
    assert_eq!(code, 1, "pending is refused: {err}");
    assert_eq!(keys(&snaps), ["default/data"]);
    assert!(
        err.contains("pvc/default/pending: persistentvolumeclaim default/pending is not bound"),
        "{err}"
    );

    // A listed claim on another node is that node's job: a notice, exit 0.
    // Named explicitly, it is refused (see the refusals test).
    let (code, snaps, err) = k.snapshot(&["--all-pvcs", "-l", "app in (cache,web)"]);
    assert!(
        err.contains("pvc/default/remote: skipped: persistentvolume"),
        "{err}"
    );
    assert!(
        err.contains("is on node node-b, but this is node node-a"),
        "{err}"
    );
    assert_eq!(keys(&snaps), ["default/data"]);
    assert_eq!(code, 1, "pending is still a failure: {err}");
    let (code, snaps, err) = k.snapshot(&["--all-pvcs", "-l", "app=cache"]);
    assert_eq!((code, snaps.len()), (0, 0), "{err}");

    // --namespace without --all-pvcs is a usage error.
    let out = k.run(&["snapshot", "pvc/default/data", "--namespace", "db"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn the_parent_follows_the_claim_not_the_host_path() {
    let k = Kube::new();
    fill(&k.data());
    // The same directory snapshotted as a plain folder: another timeline.
    let folder = k.env.snapshot(&k.data(), &[]);
    let (_, first, err) = k.snapshot(&["pvc/default/data"]);
    assert!(err.is_empty(), "{err}");
    assert_eq!(
        first[0]["parent"],
        Value::Null,
        "a claim's first snapshot has no parent, not the folder's {}",
        folder["id"]
    );
    fs::write(k.data().join("PG_VERSION"), b"17\n").unwrap();
    let (_, second, _) = k.snapshot(&["pvc/default/data"]);
    assert_eq!(second[0]["parent"], first[0]["id"]);
    let sum = &second[0]["summary"];
    assert_eq!(
        (
            sum["files_changed"].as_u64(),
            sum["files_unmodified"].as_u64()
        ),
        (Some(1), Some(3)),
        "{sum}"
    );

    // Filtering and listing by claim.
    let by_claim = k.snapshots(&["--pvc", "default/data"]);
    assert_eq!(by_claim.len(), 2);
    assert_eq!(k.snapshots(&["--source", "pvc/default/data"]).len(), 2);
    let table = stdout(&k.env.ok(&["snapshots"]));
    assert_eq!(
        table
            .lines()
            .filter(|l| l.ends_with(" pvc/default/data"))
            .count(),
        2,
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.ends_with(&fs::canonicalize(k.data()).unwrap().display().to_string())),
        "{table}"
    );
    assert!(k.env.run(&["snapshots", "--pvc", "default"]).status.code() == Some(1));
}

/// A fresh [`Kube`] whose claim default/data is [`fill`]ed and snapshotted;
/// returns it with the snapshot's id.
fn snapshotted_data() -> (Kube, String) {
    let k = Kube::new();
    fill(&k.data());
    let (code, snaps, err) = k.snapshot(&["pvc/default/data"]);
    assert_eq!(code, 0, "{err}");
    let id = snaps[0]["id"].as_str().unwrap().to_string();
    (k, id)
}

/// Asserts that `err` says the web Deployment was scaled back and that it was.
fn assert_scaled_back(k: &Kube, err: &str) {
    assert!(
        err.contains("scaled Deployment default/web back to 2 replicas"),
        "{err}"
    );
    assert_eq!(k.replicas(Kind::Deployment, "default", "web"), 2);
}

fn restore_target(k: &Kube, snap: &str, name: &str) -> PathBuf {
    let t = k.env.path(name);
    k.env
        .ok(&["restore", snap, "--target", t.to_str().unwrap()]);
    t
}

#[test]
fn in_place_restore_stops_the_workload_restores_exactly_and_scales_back() {
    let (k, id) = snapshotted_data();
    let expected = util::manifest(&restore_target(&k, &id, "expected"));

    // The workload changes the volume after the snapshot.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(k.data().join("base/16384/2619"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"dirty page", 2_000_000).unwrap();
    drop(f);
    fs::remove_file(k.data().join("PG_VERSION")).unwrap();
    fs::create_dir_all(k.data().join("pg_wal")).unwrap();
    fs::write(
        k.data().join("pg_wal/000000010000000000000001"),
        util::noise(13, 100_000),
    )
    .unwrap();
    let before = util::manifest(&k.data());
    assert_eq!(k.replicas(Kind::Deployment, "default", "web"), 2);

    let out = k.ok(&[
        "restore",
        &id[..10],
        "--to-pvc",
        "default/data",
        "--yes",
        "--json",
    ]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = stderr(&out);
    assert_eq!(util::manifest(&k.data()), expected);
    assert_eq!(summary["deleted"], 1, "pg_wal: {summary}");
    assert_eq!(summary["files"], 4);
    assert_eq!(
        summary["files_skipped"], 2,
        "all but the dirty file and the deleted one: {summary}"
    );
    // Chunk boundaries depend on the repository's random chunker seed, so
    // how much of the large file is rewritten varies; the untouched files
    // and some of the large file are never written.
    let (written, skipped) = (
        summary["bytes_written"].as_u64().unwrap(),
        summary["bytes_skipped"].as_u64().unwrap(),
    );
    let total: u64 = (3 * 1024 * 1024 + 5) + 700_000 + 3 + 2300;
    assert_eq!(written + skipped, total, "{summary}");
    assert!(written >= 3 && skipped >= 700_000 + 2300, "{summary}");

    // Scaled to zero, pods gone, then back to two replicas.
    assert!(
        err.contains("scaled Deployment default/web from 2 to 0 replicas"),
        "{err}"
    );
    assert_scaled_back(&k, &err);
    let scale_patches = k
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH /apis/apps/v1/namespaces/default/deployments/web/scale"))
        .count();
    assert_eq!(scale_patches, 2);
    let pods = k.fake.pod_names("default");
    assert!(
        WEB_PODS.iter().all(|p| !pods.contains(&p.to_string())),
        "the old pods were stopped: {pods:?}"
    );

    // The safety snapshot holds the content from before, tagged and printed.
    let safety = summary["safety_snapshot"].as_str().unwrap();
    let tagged = k.snapshots(&["--tag", "pre-restore"]);
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0]["id"], safety);
    assert_eq!(tagged[0]["source"]["pvc"], "data");
    assert!(
        err.contains(&format!(
            "undo with `pvsnap restore {} --to-pvc default/data --yes`",
            &safety[..8]
        )),
        "{err}"
    );
    let undo = restore_target(&k, safety, "undo");
    assert_eq!(util::manifest(&undo).len(), before.len());
    assert!(undo.join("pg_wal/000000010000000000000001").exists());
}

#[test]
fn in_place_restore_of_an_unchanged_volume_writes_nothing() {
    let (k, id) = snapshotted_data();
    let id = id.as_str();
    let full: Value = serde_json::from_slice(
        &k.env
            .ok(&[
                "restore",
                id,
                "--target",
                k.env.path("full").to_str().unwrap(),
                "--json",
            ])
            .stdout,
    )
    .unwrap();
    let out = k.ok(&["restore", id, "--to-pvc", "default/data", "--yes", "--json"]);
    let inplace: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "full restore wrote {}, in-place restore over the same content wrote {}",
        full["bytes_written"], inplace["bytes_written"]
    );
    assert_eq!(inplace["bytes_written"], 0, "{inplace}");
    assert_eq!(inplace["bytes_skipped"], full["bytes_written"]);
    assert_eq!(inplace["files_skipped"], 4);
    assert!(full["bytes_written"].as_u64().unwrap() > 3 * 1024 * 1024);
}

#[test]
fn a_failed_in_place_restore_still_scales_the_workload_back() {
    let (k, id) = snapshotted_data();
    let id = id.as_str();
    fs::write(k.data().join("PG_VERSION"), b"17\n").unwrap();
    // Lose every pack of the repository: the snapshot's trees cannot be read.
    let data = k.env.repo().join("data");
    for sub in fs::read_dir(&data).unwrap() {
        for pack in fs::read_dir(sub.unwrap().path()).unwrap() {
            fs::remove_file(pack.unwrap().path()).unwrap();
        }
    }
    let out = k.run(&["restore", id, "--to-pvc", "default/data", "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("restore into pvc/default/data failed; the volume may be partly restored: its content from before is in snapshot"), "{err}");
    assert!(err.contains("the pack is missing"), "{err}");
    assert_scaled_back(&k, &err);
}

/// Ctrl-C while an in-place restore writes: it stops after the data in
/// hand, exits 130, and leaves the workload scaled down (the volume holds
/// part of the snapshot), printing how to finish, how to undo and how to
/// start the workload. Running the restore again finishes it exactly.
#[test]
fn ctrl_c_during_an_in_place_restore_leaves_the_workload_down_and_says_how_on() {
    use std::os::unix::fs::MetadataExt;

    let k = Kube::new();
    util::write_noise_files(&k.data(), 40, 32, 4 << 20);
    let (code, snaps, err) = k.snapshot(&["pvc/default/data"]);
    assert_eq!(code, 0, "{err}");
    let id = snaps[0]["id"].as_str().unwrap().to_string();
    let expected = util::manifest(&k.data());
    // The workload lost its data: the restore writes all of it back.
    fs::remove_dir_all(k.data()).unwrap();
    fs::create_dir_all(k.data()).unwrap();

    let mut child = k
        .env
        .cmd()
        .args(["restore", &id, "--to-pvc", "default/data", "--yes"])
        .arg("--kubeconfig")
        .arg(k.fake.kubeconfig())
        .args(["--node", NODE, "--host-root"])
        .arg(k.host())
        .env_remove("KUBECONFIG")
        .env_remove("PVSNAP_NODE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pvsnap");
    // Signalled once data is on disk (the files get their sizes up front,
    // so allocated blocks tell that writing began).
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the restore ended ({status}) before it wrote anything the test saw");
        }
        let blocks: u64 = util::files_below(&k.data())
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.blocks())
            .sum();
        if blocks > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // SAFETY: kill on the pid of our own child, which has not been reaped.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("pvsnap: stopping after the data in hand"),
        "{err}"
    );
    assert!(
        err.contains("holds part of snapshot") && err.contains("stay scaled down"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "Finish the restore with `pvsnap restore {} --to-pvc default/data --yes`",
            &id[..8]
        )),
        "{err}"
    );
    assert!(
        err.contains("or put back what was there with `pvsnap restore "),
        "{err}"
    );
    assert!(
        err.contains("kubectl scale -n default deployment/web --replicas=2"),
        "{err}"
    );
    assert_eq!(k.replicas(Kind::Deployment, "default", "web"), 0);
    assert_ne!(
        util::manifest(&k.data()),
        expected,
        "the stop came too late"
    );
    let locks = k.env.repo().join("locks");
    assert!(
        !locks.exists() || fs::read_dir(&locks).unwrap().next().is_none(),
        "the lock is released"
    );

    // Run again: finished exactly. The workload was at zero when it began,
    // so it stays there until started as the first run said.
    k.ok(&["restore", &id, "--to-pvc", "default/data", "--yes"]);
    assert_eq!(util::manifest(&k.data()), expected);
    assert_eq!(k.replicas(Kind::Deployment, "default", "web"), 0);
}

#[test]
fn waiting_for_pods_gives_up_after_the_timeout_and_scales_back() {
    let (k, id) = snapshotted_data();
    let id = id.as_str();
    fs::write(k.data().join("PG_VERSION"), b"17\n").unwrap();
    // A bare pod nobody can scale away keeps using the claim.
    k.fake.insert(fixtures::pod(
        "default",
        "stray",
        "Running",
        &["sh"],
        json!([fixtures::claim_volume("v", "data")]),
        None,
    ));
    let out = k.run(&[
        "restore",
        id,
        "--to-pvc",
        "default/data",
        "--yes",
        "--wait-timeout",
        "1s",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pods still using persistentvolumeclaim default/data after 1s: stray"),
        "{err}"
    );
    assert!(err.contains("the volume was not changed"), "{err}");
    assert_eq!(k.replicas(Kind::Deployment, "default", "web"), 2);
    assert_eq!(fs::read(k.data().join("PG_VERSION")).unwrap(), b"17\n");
    assert!(k.snapshots(&["--tag", "pre-restore"]).is_empty());
}

#[test]
fn in_place_restore_asks_first_and_refuses_without_a_terminal() {
    let (k, id) = snapshotted_data();
    let id = id.as_str();
    fs::write(k.data().join("PG_VERSION"), b"17\n").unwrap();
    let out = k.run(&["restore", id, "--to-pvc", "default/data"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing to overwrite the volume of pvc/default/data: standard input is not a terminal to ask on; pass --yes to go ahead"),
        "{err}"
    );
    assert!(
        !k.fake.requests().iter().any(|r| r.starts_with("PATCH")),
        "nothing scaled"
    );
    assert_eq!(fs::read(k.data().join("PG_VERSION")).unwrap(), b"17\n");
    // Restoring into a refused claim says why.
    let out = k.run(&["restore", id, "--to-pvc", "default/ceph", "--yes"]);
    assert!(
        stderr(&out).contains("cannot restore into pvc/default/ceph: persistentvolume"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_clone_is_a_new_claim_bound_to_a_volume_on_the_restored_directory() {
    let (k, id) = snapshotted_data();
    let id = id.as_str();
    let out = k.ok(&["restore", id, "--to-new-pvc", "default/data-copy", "--json"]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pv_name = "pvsnap-default-data-copy";
    let dir = format!("{STORAGE_ROOT}/default-data-copy-{pv_name}");
    assert_eq!(summary["claim"]["host_dir"], dir.as_str());
    assert_eq!(
        util::manifest(&k.on_host(&dir)),
        util::manifest(&restore_target(&k, id, "expected"))
    );

    let pv = k
        .fake
        .get(Kind::PersistentVolume, "", pv_name)
        .expect("volume created");
    assert_eq!(pv["spec"]["hostPath"]["path"], dir.as_str());
    assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
    assert_eq!(pv["spec"]["storageClassName"], fixtures::CLASS);
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data-copy");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!([NODE])
    );
    let pvc = k
        .fake
        .get(Kind::PersistentVolumeClaim, "default", "data-copy")
        .expect("claim created");
    assert_eq!(pvc["spec"]["volumeName"], pv_name);
    assert_eq!(pvc["status"]["phase"], "Bound");

    // The new claim is a claim like any other: it can be snapshotted.
    let (code, snaps, err) = k.snapshot(&["pvc/default/data-copy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(snaps[0]["summary"]["total_files"], 4);

    // An existing claim is refused; --storage-dir and --storage-class are used.
    let out = k.run(&["restore", id, "--to-new-pvc", "default/data-copy"]);
    assert!(
        stderr(&out).contains("pvc/default/data-copy already exists"),
        "{}",
        stderr(&out)
    );
    k.ok(&[
        "restore",
        id,
        "--to-new-pvc",
        "db/other",
        "--storage-dir",
        "/srv/volumes",
        "--storage-class",
        "manual",
    ]);
    let pv = k
        .fake
        .get(Kind::PersistentVolume, "", "pvsnap-db-other")
        .expect("volume created");
    assert_eq!(
        pv["spec"]["hostPath"]["path"],
        "/srv/volumes/db-other-pvsnap-db-other"
    );
    assert_eq!(pv["spec"]["storageClassName"], "manual");
    assert!(
        k.on_host("/srv/volumes/db-other-pvsnap-db-other/PG_VERSION")
            .is_file()
    );
}
