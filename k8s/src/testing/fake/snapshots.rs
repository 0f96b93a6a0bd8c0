//! CSI snapshots: `snapshot.storage.k8s.io/v1` VolumeSnapshot,
//! VolumeSnapshotClass and VolumeSnapshotContent, with a simulation of the
//! external snapshot controller, and claims provisioned from a snapshot
//! through `spec.dataSource`.
//!
//! A VolumeSnapshot posted here gets its content object at once (bound both
//! ways, `readyToUse: false`), then, per [`CsiBehaviour`], turns ready after
//! a delay (cut at once: `creationTime` set on creation), never, or fails with `status.error.message`. A snapshot without
//! `volumeSnapshotClassName` gets the driver's default class, as the real
//! controller does (none or several: an error status). Deleting a snapshot
//! deletes its content when the class said `Delete` and keeps it (unbound
//! from nothing, as the real one) when it said `Retain`. A claim posted with
//! a VolumeSnapshot as `dataSource` is provisioned a CSI volume when that
//! snapshot is ready (annotated with what it was restored from), and stays
//! Pending otherwise.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// The annotation marking a VolumeSnapshotClass as its driver's default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "snapshot.storage.kubernetes.io/is-default-class";
/// The annotation the fake puts on a volume provisioned from a snapshot:
/// `NAMESPACE/SNAPSHOT content CONTENT`.
pub const RESTORED_FROM_ANNOTATION: &str = "fake.pvsnap.test/restored-from";

/// How the simulated snapshot controller answers a new VolumeSnapshot.
#[derive(Debug, Clone)]
pub enum CsiBehaviour {
    /// `status.readyToUse` turns true this long after creation.
    ReadyAfter(Duration),
    /// Never ready and no error: a driver that hangs.
    Never,
    /// `status.error.message` is set this long after creation.
    Fail { after: Duration, message: String },
}

impl Default for CsiBehaviour {
    fn default() -> Self {
        CsiBehaviour::ReadyAfter(Duration::from_millis(300))
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Called after an object was created (stored, 201 sent).
pub(super) fn after_create(state: &Arc<Mutex<State>>, kind: Kind, ns: &str, body: &[u8]) {
    let Ok(obj) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let Some(name) = obj["metadata"]["name"].as_str() else {
        return;
    };
    match kind {
        Kind::VolumeSnapshot => snapshot_created(state, ns, name),
        Kind::PersistentVolumeClaim
            if obj["spec"]["dataSource"]["kind"] == "VolumeSnapshot"
                && obj["spec"]["dataSource"]["apiGroup"] == "snapshot.storage.k8s.io" =>
        {
            provision_from_snapshot(&mut state.lock().unwrap(), ns, name)
        }
        _ => {}
    }
}

/// Called with the lock held after an object was deleted.
pub(super) fn after_delete(st: &mut State, kind: Kind, obj: &Value) {
    if kind != Kind::VolumeSnapshot {
        return;
    }
    let Some(content) = obj["status"]["boundVolumeSnapshotContentName"].as_str() else {
        return;
    };
    let key = (
        Kind::VolumeSnapshotContent,
        String::new(),
        content.to_string(),
    );
    let policy = st
        .objects
        .get(&key)
        .and_then(|c| c["spec"]["deletionPolicy"].as_str().map(str::to_string));
    match policy.as_deref() {
        Some("Delete") => {
            st.objects.remove(&key);
            st.events.push(format!("csi delete content {content}"));
        }
        Some(_) => st.events.push(format!("csi retain content {content}")),
        None => {}
    }
}

fn set_error(st: &mut State, ns: &str, name: &str, message: &str) {
    let key = (Kind::VolumeSnapshot, ns.to_string(), name.to_string());
    if let Some(s) = st.objects.get_mut(&key) {
        s["status"]["readyToUse"] = json!(false);
        s["status"]["error"] = json!({"message": message, "time": now()});
    }
}

fn snapshot_created(state: &Arc<Mutex<State>>, ns: &str, name: &str) {
    let mut st = state.lock().unwrap();
    let key = (Kind::VolumeSnapshot, ns.to_string(), name.to_string());
    let Some(snap) = st.objects.get(&key).cloned() else {
        return;
    };
    let claim = snap["spec"]["source"]["persistentVolumeClaimName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let pvc = st
        .objects
        .get(&(Kind::PersistentVolumeClaim, ns.to_string(), claim.clone()))
        .cloned();
    let Some(pvc) = pvc else {
        let m = format!(
            "failed to get input parameters to create snapshot {name}: \"persistentvolumeclaims \\\"{claim}\\\" not found\""
        );
        return set_error(&mut st, ns, name, &m);
    };
    let pv_name = pvc["spec"]["volumeName"].as_str().unwrap_or("").to_string();
    let pv = st
        .objects
        .get(&(Kind::PersistentVolume, String::new(), pv_name.clone()))
        .cloned()
        .unwrap_or(Value::Null);
    let Some(driver) = pv["spec"]["csi"]["driver"].as_str().map(str::to_string) else {
        let m = format!(
            "failed to get input parameters to create snapshot {name}: volume {pv_name} is not a CSI volume"
        );
        return set_error(&mut st, ns, name, &m);
    };
    let class = match snap["spec"]["volumeSnapshotClassName"].as_str() {
        Some(c) => st
            .objects
            .get(&(Kind::VolumeSnapshotClass, String::new(), c.to_string()))
            .cloned()
            .ok_or_else(|| format!("failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"{c}\" not found")),
        None => {
            let defaults: Vec<Value> = st
                .objects
                .iter()
                .filter(|((k, _, _), c)| {
                    *k == Kind::VolumeSnapshotClass
                        && c["driver"] == driver.as_str()
                        && c["metadata"]["annotations"][DEFAULT_CLASS_ANNOTATION] == "true"
                })
                .map(|(_, c)| c.clone())
                .collect();
            match defaults.len() {
                1 => Ok(defaults[0].clone()),
                0 => Err(format!("cannot find default snapshot class for driver {driver}")),
                _ => Err(format!("default snapshot class: too many default classes for driver {driver}")),
            }
        }
    };
    let class = match class {
        Ok(c) => c,
        Err(m) => return set_error(&mut st, ns, name, &m),
    };
    let uid = snap["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let content_name = format!("snapcontent-{uid}");
    let class_name = class["metadata"]["name"].clone();
    let mut content = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": content_name},
        "spec": {
            "deletionPolicy": class["deletionPolicy"].clone(),
            "driver": driver,
            "source": {"volumeHandle": pv["spec"]["csi"]["volumeHandle"].clone()},
            "volumeSnapshotClassName": class_name,
            "volumeSnapshotRef": {
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "name": name,
                "namespace": ns,
                "uid": uid
            }
        },
        "status": {"readyToUse": false}
    });
    let n = st.next();
    fill_meta(&mut content, n);
    st.objects.insert(
        (
            Kind::VolumeSnapshotContent,
            String::new(),
            content_name.clone(),
        ),
        content,
    );
    let size = pvc["status"]["capacity"]["storage"].clone();
    if let Some(s) = st.objects.get_mut(&key) {
        s["spec"]["volumeSnapshotClassName"] = class_name;
        s["status"] = json!({
            "boundVolumeSnapshotContentName": content_name,
            "readyToUse": false
        });
    }
    let behaviour = st.csi.clone();
    if let (CsiBehaviour::ReadyAfter(_), Some(s)) = (&behaviour, st.objects.get_mut(&key)) {
        // The storage cuts the snapshot at once; uploading it takes longer.
        s["status"]["creationTime"] = json!(now());
    }
    drop(st);

    let (ns, name, state) = (ns.to_string(), name.to_string(), state.clone());
    let (delay, outcome) = match behaviour {
        CsiBehaviour::Never => return,
        CsiBehaviour::ReadyAfter(d) => (d, Ok(())),
        CsiBehaviour::Fail { after, message } => (after, Err(message)),
    };
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut st = state.lock().unwrap();
        if !st.objects.contains_key(&key) {
            return;
        }
        if let Err(m) = outcome {
            return set_error(&mut st, &ns, &name, &m);
        }
        let time = now();
        let ckey = (Kind::VolumeSnapshotContent, String::new(), content_name);
        if let Some(c) = st.objects.get_mut(&ckey) {
            c["status"] = json!({
                "readyToUse": true,
                "snapshotHandle": format!("snap-{uid}"),
                "restoreSize": crate::parse_quantity(size.as_str().unwrap_or("0")).unwrap_or(0),
                "creationTime": jiff::Timestamp::now().as_nanosecond() as i64
            });
        }
        if let Some(s) = st.objects.get_mut(&key) {
            s["status"]["readyToUse"] = json!(true);
            if s["status"]["creationTime"].is_null() {
                s["status"]["creationTime"] = json!(time);
            }
            s["status"]["restoreSize"] = size;
        }
    });
}

fn provision_from_snapshot(st: &mut State, ns: &str, claim: &str) {
    let key = (
        Kind::PersistentVolumeClaim,
        ns.to_string(),
        claim.to_string(),
    );
    let Some(pvc) = st.objects.get(&key).cloned() else {
        return;
    };
    let source = pvc["spec"]["dataSource"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let Some(snap) = st
        .objects
        .get(&(Kind::VolumeSnapshot, ns.to_string(), source.clone()))
        .cloned()
    else {
        st.events.push(format!(
            "csi claim {ns}/{claim} pending: no snapshot {source}"
        ));
        return;
    };
    if snap["status"]["readyToUse"] != true {
        st.events.push(format!(
            "csi claim {ns}/{claim} pending: {source} not ready"
        ));
        return;
    }
    let content_name = snap["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let driver = st
        .objects
        .get(&(
            Kind::VolumeSnapshotContent,
            String::new(),
            content_name.clone(),
        ))
        .map(|c| c["spec"]["driver"].clone())
        .unwrap_or(Value::Null);
    let uid = pvc["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let pv_name = format!("pvc-{uid}");
    let size = pvc["spec"]["resources"]["requests"]["storage"].clone();
    let mut pv = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": pv_name,
            "annotations": {
                "pv.kubernetes.io/provisioned-by": driver,
                RESTORED_FROM_ANNOTATION: format!("{ns}/{source} content {content_name}")
            }
        },
        "spec": {
            "accessModes": pvc["spec"]["accessModes"].clone(),
            "capacity": {"storage": size},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": claim, "uid": uid},
            "csi": {"driver": driver, "volumeHandle": format!("vol-{uid}")},
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": pvc["spec"]["storageClassName"].clone(),
            "volumeMode": "Filesystem"
        },
        "status": {"phase": "Bound"}
    });
    let n = st.next();
    fill_meta(&mut pv, n);
    st.objects
        .insert((Kind::PersistentVolume, String::new(), pv_name.clone()), pv);
    if let Some(p) = st.objects.get_mut(&key) {
        p["spec"]["volumeName"] = json!(pv_name);
        p["status"] = json!({
            "phase": "Bound",
            "accessModes": p["spec"]["accessModes"].clone(),
            "capacity": {"storage": size}
        });
    }
    st.events.push(format!(
        "csi claim {ns}/{claim} provisioned from {source} content {content_name}"
    ));
}
