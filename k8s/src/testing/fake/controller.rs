//! The scale subresource, and the controller that makes pods follow it.

use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::*;

pub(super) fn scale_of(o: &Value) -> Value {
    let replicas = o["spec"]["replicas"].as_i64().unwrap_or(1);
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": o["metadata"]["name"],
            "namespace": o["metadata"]["namespace"],
            "resourceVersion": o["metadata"]["resourceVersion"],
            "uid": o["metadata"]["uid"],
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": o["status"]["replicas"].as_i64().unwrap_or(replicas)}
    })
}

pub(super) fn patch_scale(
    state: &Arc<Mutex<State>>,
    kind: Kind,
    ns: &str,
    name: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(400, "BadRequest", &format!("bad patch: {e}")),
    };
    let Some(replicas) = patch["spec"]["replicas"].as_i64() else {
        return error(422, "Invalid", "spec.replicas missing in scale patch");
    };
    let mut st = state.lock().unwrap();
    if st.fail_scale.contains(name) {
        return error(
            403,
            "Forbidden",
            &format!(
                "{}.apps \"{name}\" is forbidden: cannot patch resource \"{}/scale\"",
                kind.plural(),
                kind.plural()
            ),
        );
    }
    let key = (kind, ns.to_string(), name.to_string());
    let n = st.next();
    let Some(obj) = st.objects.get_mut(&key) else {
        return not_found(kind, name);
    };
    obj["spec"]["replicas"] = json!(replicas);
    obj["status"]["replicas"] = json!(replicas);
    obj["metadata"]["resourceVersion"] = json!(n.to_string());
    let obj = obj.clone();
    drop(st);
    reconcile(state, kind, &obj);
    respond(StatusCode::OK, &scale_of(&obj))
}

pub(super) fn controller_of(pod: &Value) -> Option<(String, String)> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == json!(true))
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or("").to_string(),
                o["name"].as_str().unwrap_or("").to_string(),
            )
        })
}

/// Make the pods owned by a workload match its replica count.
pub(super) fn reconcile(state: &Arc<Mutex<State>>, kind: Kind, workload: &Value) {
    let ns = workload["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let name = workload["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let want = workload["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
    let mut st = state.lock().unwrap();

    // Who owns the pods: the StatefulSet, or the Deployment's ReplicaSet.
    let (owner_kind, owner_name, owner_uid) = match kind {
        Kind::StatefulSet => (
            "StatefulSet".to_string(),
            name.clone(),
            workload["metadata"]["uid"].clone(),
        ),
        _ => {
            let rs = st
                .objects
                .iter()
                .find(|((k, n, _), o)| {
                    *k == Kind::ReplicaSet
                        && *n == ns
                        && controller_of(o) == Some(("Deployment".into(), name.clone()))
                })
                .map(|(_, o)| o.clone());
            match rs {
                Some(rs) => (
                    "ReplicaSet".to_string(),
                    rs["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    rs["metadata"]["uid"].clone(),
                ),
                None => return,
            }
        }
    };
    let mut owned: Vec<String> = st
        .objects
        .iter()
        .filter(|((k, n, _), o)| {
            *k == Kind::Pod
                && *n == ns
                && o["metadata"].get("deletionTimestamp").is_none()
                && controller_of(o) == Some((owner_kind.clone(), owner_name.clone()))
        })
        .map(|((_, _, n), _)| n.clone())
        .collect();
    owned.sort();

    let delay = st.termination_delay;
    if owned.len() > want {
        let extra: Vec<String> = if kind == Kind::StatefulSet {
            owned
                .iter()
                .filter(|n| {
                    n.rsplit('-')
                        .next()
                        .and_then(|o| o.parse::<usize>().ok())
                        .is_none_or(|o| o >= want)
                })
                .cloned()
                .collect()
        } else {
            owned[want..].to_vec()
        };
        for pod in extra {
            let key = (Kind::Pod, ns.clone(), pod);
            if let Some(p) = st.objects.get_mut(&key) {
                p["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:01Z");
            }
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                state.lock().unwrap().objects.remove(&key);
            });
        }
    } else if owned.len() < want {
        let template = &workload["spec"]["template"];
        let mut names = Vec::new();
        if kind == Kind::StatefulSet {
            for i in 0..want {
                let n = format!("{name}-{i}");
                if !owned.contains(&n) {
                    names.push((n, Some(i)));
                }
            }
        } else {
            for _ in owned.len()..want {
                let n = st.next();
                names.push((format!("{owner_name}-new{n}"), None));
            }
        }
        for (pod_name, ordinal) in names {
            let mut volumes = template["spec"]["volumes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(i) = ordinal {
                for t in workload["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let tname = t["metadata"]["name"].as_str().unwrap_or("");
                    volumes.push(json!({"name": tname, "persistentVolumeClaim": {"claimName": format!("{tname}-{name}-{i}")}}));
                }
            }
            let mut spec = template["spec"].clone();
            spec["volumes"] = Value::Array(volumes);
            let mut pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": ns,
                    "labels": template["metadata"]["labels"],
                    "annotations": template["metadata"]["annotations"],
                    "ownerReferences": [{
                        "apiVersion": "apps/v1",
                        "kind": owner_kind,
                        "name": owner_name,
                        "uid": owner_uid,
                        "controller": true
                    }]
                },
                "spec": spec,
                "status": {"phase": "Running"}
            });
            let n = st.next();
            fill_meta(&mut pod, n);
            st.objects.insert((Kind::Pod, ns.clone(), pod_name), pod);
        }
    }
}
