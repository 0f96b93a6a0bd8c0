//! `restore SNAP --rollback` of a claim's native snapshot (issue #21), on a
//! real btrfs loop filesystem standing in for the node's root, against the
//! in-process fake API server: the claim's workloads are scaled to zero
//! before the swap and back after, the same way `--to-pvc` does.
//!
//! One case runs on a zfs-fuse dataset mounted at the claim's folder.
//!
//! A `btrfs` wrapper first on `PATH` tells the fake API server when the
//! swap runs (a request the fake records in order with the scale PATCHes),
//! and makes the swap fail on demand.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pvsnap_k8s::testing::fake::{CsiBehaviour, Kind};
use pvsnap_k8s::testing::fixtures::{self, DATA_UID, NODE, PG_UID};
use serde_json::Value;

use crate::btrfs::{Btrfs, btrfs, sh};
use crate::k8s::Kube;
use crate::util::{self, stderr, stdout};
use crate::zfs::{self, Pool};

/// The request the `btrfs` wrapper makes when the swap runs.
const SWAP: &str = "GET /pvsnap-test/swap";
const SCALE_WEB: &str = "PATCH /apis/apps/v1/namespaces/default/deployments/web/scale";

/// A fake cluster whose node's root is a btrfs filesystem.
struct Node {
    // Dropped before the filesystem it points into.
    k: Kube,
    fs: Btrfs,
    /// Holds the `btrfs` wrapper.
    bin: tempfile::TempDir,
}

impl Node {
    /// The claim default/data's folder a subvolume of its own, holding a
    /// few files, with the web Deployment (2 replicas) mounting it.
    fn new(test: &str) -> Option<Node> {
        let fs = btrfs(test)?;
        let k = Kube::new();
        fs::remove_dir_all(k.host()).unwrap();
        std::os::unix::fs::symlink(&fs.mnt, k.host()).unwrap();
        fs::create_dir_all(k.data().parent().unwrap()).unwrap();
        sh(&["btrfs", "subvolume", "create", k.data().to_str().unwrap()]).unwrap();
        fill(&k.data());
        let bin = tempfile::tempdir().unwrap();
        let n = Node { k, fs, bin };
        n.write_wrapper();
        Some(n)
    }

    /// `btrfs`: the real one, but a writable `subvolume snapshot` (the
    /// swap) first asks the fake for [`SWAP`], and fails when the file
    /// `fail-swap` exists beside the wrapper.
    fn write_wrapper(&self) {
        let real = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v btrfs"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let dir = self.bin.path();
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = subvolume ] && [ \"$2\" = snapshot ] && [ \"$3\" != -r ]; then\n  curl -s -o /dev/null http://{}/pvsnap-test/swap\n  if [ -e {fail} ]; then echo \"ERROR: cannot snapshot '$3': No space left on device\" >&2; exit 1; fi\nfi\nexec {} \"$@\"\n",
            self.k.fake.addr,
            real.trim(),
            fail = dir.join("fail-swap").display(),
        );
        let path = dir.join("btrfs");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn fail_swap(&self) {
        fs::write(self.bin.path().join("fail-swap"), b"").unwrap();
    }

    /// `pvsnap ARGS` against the fake, with the wrapper first on `PATH`.
    fn cmd(&self, args: &[&str]) -> Command {
        let path = format!(
            "{}:{}",
            self.bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = self.k.env.cmd();
        c.args(args)
            .arg("--kubeconfig")
            .arg(self.k.fake.kubeconfig())
            .args(["--node", NODE, "--host-root"])
            .arg(self.k.host())
            .env_remove("KUBECONFIG")
            .env_remove("PVSNAP_NODE")
            .env("PATH", path)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run pvsnap")
    }

    /// `snapshot pvc/default/data --native-only`: the snapshot's id.
    fn native_point(&self) -> String {
        let (code, snaps, err) = self.k.snapshot(&["pvc/default/data", "--native-only"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(snaps[0]["source_snapshot"]["kind"], "btrfs", "{}", snaps[0]);
        assert_eq!(snaps[0]["source_snapshot"]["within"], "", "{}", snaps[0]);
        snaps[0]["id"].as_str().unwrap().to_string()
    }

    /// A native restore point of the claim, then the workload's writes:
    /// the point's id, the folder's manifest at the point and after.
    fn point_then_spoil(&self) -> (String, Vec<String>, Vec<String>) {
        let before = util::manifest(&self.k.data());
        let id = self.native_point();
        spoil(&self.k.data());
        (id, before, util::manifest(&self.k.data()))
    }

    /// The scale PATCHes of the web Deployment and the swap, in order.
    fn order(&self) -> Vec<&'static str> {
        self.k
            .fake
            .requests()
            .iter()
            .filter_map(|r| {
                if r.starts_with(SCALE_WEB) {
                    Some("scale")
                } else if r.starts_with(SWAP) {
                    Some("swap")
                } else {
                    None
                }
            })
            .collect()
    }

    /// Where pvsnap keeps the claim subvolume's snapshots: beside it.
    fn snapshots_dir(&self) -> PathBuf {
        let data = fs::canonicalize(self.k.data()).unwrap();
        assert!(data.starts_with(&self.fs.mnt));
        data.parent()
            .unwrap()
            .join(".pvsnap-snapshots")
            .join(data.file_name().unwrap())
    }

    fn replicas(&self) -> i64 {
        self.k.replicas(Kind::Deployment, "default", "web")
    }
}

fn fill(dir: &Path) {
    fs::create_dir_all(dir.join("base")).unwrap();
    fs::write(dir.join("base/1259"), util::noise(3, 700_000)).unwrap();
    fs::write(dir.join("PG_VERSION"), b"16\n").unwrap();
}

/// What the workload writes after the snapshot.
fn spoil(dir: &Path) {
    fs::write(dir.join("PG_VERSION"), b"17\n").unwrap();
    fs::write(dir.join("base/new"), b"written since").unwrap();
    fs::remove_file(dir.join("base/1259")).unwrap();
}

fn assert_refused(n: &Node, out: &Output, says: &str, data: &[String]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(says), "{err}");
    assert!(n.order().is_empty(), "nothing scaled: {:?}", n.order());
    assert_eq!(n.replicas(), 2);
    assert_eq!(util::manifest(&n.k.data()), data, "the volume is unchanged");
}

#[test]
fn a_claim_rolls_back_between_scale_down_and_scale_back() {
    let Some(n) = Node::new("a_claim_rolls_back_between_scale_down_and_scale_back") else {
        return;
    };
    let (id, before, spoiled) = n.point_then_spoil();

    // Without --yes: it says what happens and changes nothing.
    let out = n.run(&["restore", &id, "--rollback"]);
    assert_refused(
        &n,
        &out,
        "Deployment default/web (2 replicas) will be scaled to 0 meanwhile and back after. Add --yes",
        &spoiled,
    );
    assert!(
        stderr(&out).contains("set aside in a subvolume"),
        "{}",
        stderr(&out)
    );

    let out = n.run(&["restore", &id, "--rollback", "--yes", "--json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", stdout(&out));
    assert_eq!(util::manifest(&n.k.data()), before, "bit-exact");
    assert_eq!(n.order(), ["scale", "swap", "scale"], "down, swap, back");
    assert_eq!(n.replicas(), 2);
    assert!(
        err.contains("scaled Deployment default/web from 2 to 0 replicas")
            && err.contains("scaled Deployment default/web back to 2 replicas"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["claim"], "pvc/default/data", "{v}");
    assert_eq!(v["workloads"][0]["name"], "web", "{v}");
    assert_eq!(v["workloads"][0]["replicas"], 2, "{v}");
    assert_eq!(v["scaled_back"], true, "{v}");
    let aside = PathBuf::from(v["set_aside"].as_str().expect("named"));
    assert!(aside.starts_with(n.snapshots_dir()), "{}", aside.display());
    assert_eq!(util::manifest(&aside), spoiled, "what was written since");

    // The human line names the set-aside copy.
    spoil(&n.k.data());
    let out = n.run(&["restore", &id, "--rollback", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("rolled pvc/default/data (btrfs volume ")
            && stdout(&out).contains("the content from before is kept at "),
        "{}",
        stdout(&out)
    );
    assert_eq!(util::manifest(&n.k.data()), before);
    assert_eq!(n.replicas(), 2);
}

#[test]
fn a_failed_swap_scales_back_and_says_the_volume_is_unchanged() {
    let Some(n) = Node::new("a_failed_swap_scales_back_and_says_the_volume_is_unchanged") else {
        return;
    };
    let (id, _, spoiled) = n.point_then_spoil();
    n.fail_swap();
    let out = n.run(&["restore", &id, "--rollback", "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "rolling pvc/default/data back to snapshot {} failed; the volume was not changed; its workloads were scaled back",
            &id[..8]
        )),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(n.order(), ["scale", "swap", "scale"]);
    assert_eq!(n.replicas(), 2);
    assert_eq!(util::manifest(&n.k.data()), spoiled);
    let names: Vec<String> = fs::read_dir(n.snapshots_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "only the native snapshot: {names:?}");
    assert!(names[0].starts_with("pvsnap-keep-"), "{names:?}");
}

#[test]
fn a_recreated_or_moved_claim_is_refused_before_anything_is_scaled() {
    let Some(n) = Node::new("a_recreated_or_moved_claim_is_refused_before_anything_is_scaled")
    else {
        return;
    };
    let (id, _, spoiled) = n.point_then_spoil();

    // The volume's folder was changed to another claim's (its own subvolume).
    sh(&["btrfs", "subvolume", "create", n.k.pg().to_str().unwrap()]).unwrap();
    let mut pv = fixtures::hostpath_pv("default", "data", DATA_UID, NODE, "1Gi");
    pv["spec"]["hostPath"]["path"] =
        Value::from(fixtures::hostpath_dir("db", "data-postgres-0", PG_UID));
    n.k.fake.insert(pv);
    let out = n.run(&["restore", &id, "--rollback", "--yes"]);
    assert_refused(
        &n,
        &out,
        "that the snapshot was made of; nothing was changed",
        &spoiled,
    );

    // The claim was deleted and made again: a new volume.
    let uid = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";
    n.k.fake
        .insert(fixtures::hostpath_pv("default", "data", uid, NODE, "1Gi"));
    n.k.fake.insert(fixtures::bound_pvc(
        "default",
        "data",
        uid,
        &fixtures::pv_name(uid),
        "1Gi",
        serde_json::json!({}),
    ));
    fs::create_dir_all(n.k.on_host(&fixtures::hostpath_dir("default", "data", uid))).unwrap();
    let out = n.run(&["restore", &id, "--rollback", "--yes"]);
    assert_refused(
        &n,
        &out,
        &format!(
            "pvc/default/data is now bound to persistentvolume {}, not to {} that snapshot {} was taken of (the claim was recreated on another volume)",
            fixtures::pv_name(uid),
            fixtures::pv_name(DATA_UID),
            &id[..8]
        ),
        &spoiled,
    );
}

#[test]
fn a_claim_sharing_its_volume_with_others_is_refused() {
    let Some(fs) = btrfs("a_claim_sharing_its_volume_with_others_is_refused") else {
        return;
    };
    let k = Kube::new();
    fs::remove_dir_all(k.host()).unwrap();
    std::os::unix::fs::symlink(&fs.mnt, k.host()).unwrap();
    // The whole storage folder is one subvolume, the claims' folders in it.
    let storage = k.data().parent().unwrap().to_owned();
    fs::create_dir_all(storage.parent().unwrap()).unwrap();
    sh(&["btrfs", "subvolume", "create", storage.to_str().unwrap()]).unwrap();
    fill(&k.data());
    fill(&k.pg());
    let (code, snaps, err) = k.snapshot(&["pvc/default/data", "--native-only"]);
    assert_eq!(code, 0, "{err}");
    let id = snaps[0]["id"].as_str().unwrap();
    spoil(&k.pg());
    let pg = util::manifest(&k.pg());
    let out = k.run(&["restore", id, "--rollback", "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "which a rollback would return to the snapshot whole, other folders in it included"
        ),
        "{err}"
    );
    assert!(!k.fake.requests().iter().any(|r| r.starts_with("PATCH")));
    assert_eq!(util::manifest(&k.pg()), pg, "the other claim is untouched");
    drop(k);
}

#[test]
fn ctrl_c_while_the_pods_stop_scales_back_and_leaves_the_volume() {
    let Some(n) = Node::new("ctrl_c_while_the_pods_stop_scales_back_and_leaves_the_volume") else {
        return;
    };
    let (id, _, spoiled) = n.point_then_spoil();
    n.k.fake.set_termination_delay(Duration::from_secs(3));
    let child = n
        .cmd(&["restore", &id, "--rollback", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pvsnap");
    while n.order().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("pvsnap: interrupted: the rollback of pvc/default/data did not start; the volume was not changed; its workloads were scaled back"),
        "{err}"
    );
    assert_eq!(n.order(), ["scale", "scale"], "no swap");
    assert_eq!(n.replicas(), 2);
    assert_eq!(util::manifest(&n.k.data()), spoiled);
}

#[test]
fn a_csi_claims_snapshot_is_refused_naming_to_new_pvc() {
    // Needs no btrfs: the refusal comes from the record.
    let k = Kube::new();
    k.fake.insert(fixtures::snapshot_class(
        "ceph-snap",
        fixtures::CEPH_DRIVER,
        "Delete",
        true,
    ));
    k.fake
        .set_csi(CsiBehaviour::ReadyAfter(Duration::from_millis(100)));
    let (code, snaps, err) = k.snapshot(&["pvc/default/ceph"]);
    assert_eq!(code, 0, "{err}");
    let id = snaps[0]["id"].as_str().unwrap();
    let out = k.run(&["restore", id, "--rollback", "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the VolumeSnapshot API has no rollback")
            && err.contains(&format!(
                "`pvsnap restore {} --to-new-pvc default/NEW-NAME`",
                &id[..8]
            )),
        "{err}"
    );
}

#[test]
fn a_claim_on_a_zfs_dataset_rolls_back_between_scale_down_and_scale_back() {
    let test = "a_claim_on_a_zfs_dataset_rolls_back_between_scale_down_and_scale_back";
    let Some(pool) = Pool::named(test, format!("pvti{}x1", std::process::id()), 128) else {
        return;
    };
    let k = Kube::new();
    let data = k.data();
    let dataset = format!("{}/data", pool.name);
    let mountpoint = format!("mountpoint={}", data.display());
    zfs::sh("zfs", &["create", "-o", &mountpoint, &dataset]).unwrap();
    fill(&data);
    let before = util::manifest(&data);
    let (code, snaps, err) = k.snapshot(&["pvc/default/data", "--native-only"]);
    assert_eq!(code, 0, "{err}");
    let n = &snaps[0]["source_snapshot"];
    assert_eq!(n["kind"], "zfs", "{}", snaps[0]);
    assert_eq!(n["volume"], dataset.as_str(), "{}", snaps[0]);
    let id = snaps[0]["id"].as_str().unwrap();
    spoil(&data);

    let out = k.run(&["restore", id, "--rollback", "--yes", "--json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", stdout(&out));
    assert_eq!(util::manifest(&data), before, "bit-exact");
    let scales = k
        .fake
        .requests()
        .iter()
        .filter(|r| r.starts_with(SCALE_WEB))
        .count();
    assert_eq!(scales, 2, "down and back");
    assert_eq!(k.replicas(Kind::Deployment, "default", "web"), 2);
    assert!(
        err.contains("scaled Deployment default/web from 2 to 0 replicas"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rollback"], dataset.as_str(), "{v}");
    assert!(v["set_aside"].is_null(), "zfs rollback keeps nothing: {v}");
    assert_eq!(v["workloads"][0]["replicas"], 2, "{v}");
    // The dataset goes before the folder it is mounted on.
    drop(pool);
}
