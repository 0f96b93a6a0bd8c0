//! Stored objects: keys, metadata, list and create.

use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::*;

pub(super) fn key_of(kind: Kind, obj: &Value) -> Key {
    let ns = if kind.namespaced() {
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    (kind, ns, name)
}

pub(super) fn fill_meta(obj: &mut Value, n: u64) {
    let meta = &mut obj["metadata"];
    if meta.get("uid").is_none() {
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{n:012}"));
    }
    meta["resourceVersion"] = json!(n.to_string());
    if meta.get("creationTimestamp").is_none() {
        meta["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    }
}

pub(super) fn list(
    state: &Arc<Mutex<State>>,
    kind: Kind,
    ns: Option<&str>,
    pairs: &[(String, String)],
) -> Response<Full<Bytes>> {
    let selector = pairs
        .iter()
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.clone());
    let reqs = match selector.as_deref().map(parse_selector) {
        Some(Err(e)) => return error(400, "BadRequest", &e),
        Some(Ok(r)) => r,
        None => Vec::new(),
    };
    let st = state.lock().unwrap();
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((k, n, _), _)| *k == kind && ns.is_none_or(|ns| ns == n))
        .filter(|(_, o)| selector_matches(&reqs, &o["metadata"]["labels"]))
        .map(|(_, o)| {
            // Like the real server, items of a list carry no kind/apiVersion.
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    respond(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", kind.name()),
            "apiVersion": kind.group_version(),
            "metadata": {"resourceVersion": st.counter.to_string()},
            "items": items
        }),
    )
}

pub(super) fn create(
    state: &Arc<Mutex<State>>,
    kind: Kind,
    ns: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let mut obj: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(400, "BadRequest", &format!("bad json: {e}")),
    };
    if kind.namespaced() {
        obj["metadata"]["namespace"] = json!(ns.unwrap_or("default"));
    }
    obj["kind"] = json!(kind.name());
    obj["apiVersion"] = json!(kind.group_version());
    let mut st = state.lock().unwrap();
    let key = key_of(kind, &obj);
    if st.objects.contains_key(&key) {
        return error(
            409,
            "AlreadyExists",
            &format!("{} \"{}\" already exists", kind.plural(), key.2),
        );
    }
    let n = st.next();
    fill_meta(&mut obj, n);
    // Static binding: a claim naming an existing, unbound volume whose
    // claimRef points back at it is Bound at once.
    if kind == Kind::PersistentVolumeClaim
        && let Some(vol) = obj["spec"]["volumeName"].as_str().map(str::to_string)
    {
        let pv_key = (Kind::PersistentVolume, String::new(), vol);
        if let Some(pv) = st.objects.get_mut(&pv_key) {
            let cr = &pv["spec"]["claimRef"];
            if cr["name"] == obj["metadata"]["name"]
                && cr["namespace"] == obj["metadata"]["namespace"]
            {
                pv["spec"]["claimRef"]["uid"] = obj["metadata"]["uid"].clone();
                pv["status"] = json!({"phase": "Bound"});
                obj["status"] = json!({
                    "phase": "Bound",
                    "accessModes": obj["spec"]["accessModes"].clone(),
                    "capacity": pv["spec"]["capacity"].clone()
                });
            }
        }
    }
    if kind == Kind::PersistentVolumeClaim && obj.get("status").is_none() {
        obj["status"] = json!({"phase": "Pending"});
    }
    st.objects.insert(key, obj.clone());
    respond(StatusCode::CREATED, &obj)
}
