//! An in-process stand-in for the Kubernetes API server, speaking the part
//! of the API that pvsnap-k8s uses, over plain HTTP on 127.0.0.1.
//!
//! Supported: GET/LIST (namespaced and cluster-wide, with labelSelector) of
//! persistentvolumes, persistentvolumeclaims, pods, deployments,
//! statefulsets and replicasets; POST and DELETE of any of them (409
//! AlreadyExists, 404 NotFound as Status objects); GET/PATCH of the `scale`
//! subresource of deployments and statefulsets, where a PATCH reconciles the
//! owned pods (deleting extra ones after a termination delay, creating
//! missing ones from the template); a static binder that binds a claim
//! posted with `volumeName`; and the `exec` subresource over WebSocket with
//! the channel protocol (`v5.channel.k8s.io`, falling back to
//! `v4.channel.k8s.io`), answering from scripts per (pod, container,
//! command) and logging every call in order.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    UPGRADE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

pub const TOKEN: &str = "fake-token";
pub const CONTEXT: &str = "fake-ctx";

/// Resource kinds the fake knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    Deployment,
    StatefulSet,
    ReplicaSet,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::PersistentVolume,
        Kind::PersistentVolumeClaim,
        Kind::Pod,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::ReplicaSet,
    ];

    fn plural(self) -> &'static str {
        match self {
            Kind::PersistentVolume => "persistentvolumes",
            Kind::PersistentVolumeClaim => "persistentvolumeclaims",
            Kind::Pod => "pods",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::ReplicaSet => "replicasets",
        }
    }

    fn group_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::StatefulSet | Kind::ReplicaSet => "apps/v1",
            _ => "v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::PersistentVolume => "PersistentVolume",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::ReplicaSet => "ReplicaSet",
        }
    }

    fn namespaced(self) -> bool {
        self != Kind::PersistentVolume
    }

    fn from_plural(group_version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.plural() == plural && k.group_version() == group_version)
    }
}

/// How a scripted exec ends.
#[derive(Debug, Clone)]
pub enum ExecEnd {
    /// Status Success (exit 0) or Failure with an ExitCode cause.
    Exit(i32),
    /// Status Failure without an exit code (e.g. executable not found).
    Failure(String),
}

#[derive(Debug, Clone)]
pub struct ExecScript {
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub end: ExecEnd,
    /// Wait this long before answering.
    pub delay: Duration,
}

/// One exec call as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCall {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub protocol: String,
}

type Key = (Kind, String, String);

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    scripts: Vec<ExecScript>,
    /// Ordered log: `exec <pod>/<container> <argv...>` and `mark <text>`.
    events: Vec<String>,
    execs: Vec<ExecCall>,
    requests: Vec<String>,
    termination_delay: Duration,
    fail_scale: HashSet<String>,
    /// Channel protocols the exec endpoint accepts, in preference order.
    exec_protocols: Vec<&'static str>,
    counter: u64,
}

impl State {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

pub struct FakeCluster {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeCluster {
    /// Start an empty fake on an ephemeral port.
    pub async fn start() -> FakeCluster {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            termination_delay: Duration::from_millis(300),
            exec_protocols: vec!["v5.channel.k8s.io", "v4.channel.k8s.io"],
            ..Default::default()
        }));
        let st = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeCluster {
            addr,
            state,
            dir: tempfile::tempdir().expect("tempdir"),
            server,
        }
    }

    /// Start a fake holding the MicroK8s-shaped fixtures.
    pub async fn with_fixtures() -> FakeCluster {
        let fake = FakeCluster::start().await;
        for obj in super::fixtures::all() {
            fake.insert(obj);
        }
        fake
    }

    /// A kubeconfig for this fake, written to a temp file.
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig_yaml(self.addr, CONTEXT)).expect("write kubeconfig");
        path
    }

    /// Connect the crate under test to this fake.
    pub async fn connect(&self) -> crate::Cluster {
        let sources = crate::ConfigSources::empty_under(self.dir.path());
        crate::connect_with(
            crate::ConnectOptions {
                kubeconfig: Some(self.kubeconfig()),
                context: None,
            },
            &sources,
        )
        .await
        .expect("connect to fake")
    }

    pub fn insert(&self, mut obj: Value) {
        let kind = Kind::ALL
            .into_iter()
            .find(|k| obj["kind"] == k.name())
            .unwrap_or_else(|| panic!("unknown kind in {obj}"));
        let mut st = self.state.lock().unwrap();
        let n = st.next();
        fill_meta(&mut obj, n);
        let key = key_of(kind, &obj);
        st.objects.insert(key, obj);
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(&(kind, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Names of the pods in `namespace`.
    pub fn pod_names(&self, namespace: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.objects
            .keys()
            .filter(|(k, ns, _)| *k == Kind::Pod && ns == namespace)
            .map(|(_, _, n)| n.clone())
            .collect()
    }

    pub fn set_annotations(&self, namespace: &str, pod: &str, annotations: &[(&str, &str)]) {
        let mut st = self.state.lock().unwrap();
        let obj = st
            .objects
            .get_mut(&(Kind::Pod, namespace.to_string(), pod.to_string()))
            .expect("pod exists");
        let map: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        obj["metadata"]["annotations"] = Value::Object(map);
    }

    pub fn script(&self, script: ExecScript) {
        self.state.lock().unwrap().scripts.push(script);
    }

    /// Script a command with exit code and stdout.
    pub fn script_simple(
        &self,
        pod: &str,
        container: &str,
        command: &[&str],
        exit: i32,
        stdout: &str,
    ) {
        self.script(ExecScript {
            pod: pod.into(),
            container: container.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
            end: ExecEnd::Exit(exit),
            delay: Duration::ZERO,
        });
    }

    /// Put a marker into the event log (e.g. when a test body runs).
    pub fn mark(&self, text: &str) {
        self.state
            .lock()
            .unwrap()
            .events
            .push(format!("mark {text}"));
    }

    pub fn events(&self) -> Vec<String> {
        self.state.lock().unwrap().events.clone()
    }

    pub fn execs(&self) -> Vec<ExecCall> {
        self.state.lock().unwrap().execs.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn set_termination_delay(&self, d: Duration) {
        self.state.lock().unwrap().termination_delay = d;
    }

    /// Make PATCHes of this workload's scale fail with 403.
    pub fn fail_scale_of(&self, name: &str) {
        self.state
            .lock()
            .unwrap()
            .fail_scale
            .insert(name.to_string());
    }

    /// Accept only these exec channel protocols (like an older server).
    pub fn set_exec_protocols(&self, protocols: &[&'static str]) {
        self.state.lock().unwrap().exec_protocols = protocols.to_vec();
    }

    pub fn allow_scale_of(&self, name: &str) {
        self.state.lock().unwrap().fail_scale.remove(name);
    }
}

pub fn kubeconfig_yaml(addr: SocketAddr, context: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake-cluster
  cluster:
    server: http://{addr}
contexts:
- name: {context}
  context:
    cluster: fake-cluster
    user: fake-user
    namespace: default
current-context: {context}
users:
- name: fake-user
  user:
    token: {TOKEN}
"
    )
}

fn key_of(kind: Kind, obj: &Value) -> Key {
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

fn fill_meta(obj: &mut Value, n: u64) {
    let meta = &mut obj["metadata"];
    if meta.get("uid").is_none() {
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{n:012}"));
    }
    meta["resourceVersion"] = json!(n.to_string());
    if meta.get("creationTimestamp").is_none() {
        meta["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}

fn respond(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn error(code: u16, reason: &str, message: &str) -> Response<Full<Bytes>> {
    respond(
        StatusCode::from_u16(code).expect("code"),
        &status_body(code, reason, message),
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

// ---------- label selectors ----------

enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Split on commas that are not inside parentheses.
fn split_requirements(sel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in sel.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_selector(sel: &str) -> Result<Vec<Req>, String> {
    let mut reqs = Vec::new();
    for r in split_requirements(sel) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|x| x.strip_suffix(')'))
                .ok_or_else(|| format!("bad set in {r:?}"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        if let Some(k) = r.strip_prefix('!') {
            reqs.push(Req::NotExists(k.trim().to_string()));
        } else if let Some((k, v)) = r.split_once("!=") {
            reqs.push(Req::Ne(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = r.split_once("==") {
            reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = r.split_once('=') {
            reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
        } else if let Some((k, rest)) = r.split_once(" notin ") {
            reqs.push(Req::NotIn(k.trim().into(), set(rest)?));
        } else if let Some((k, rest)) = r.split_once(" in ") {
            reqs.push(Req::In(k.trim().into(), set(rest)?));
        } else if r
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            reqs.push(Req::Exists(r.clone()));
        } else {
            return Err(format!("unable to parse requirement {r:?}"));
        }
    }
    Ok(reqs)
}

fn selector_matches(reqs: &[Req], labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k) == Some(v.as_str()),
        Req::Ne(k, v) => get(k) != Some(v.as_str()),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Req::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    })
}

// ---------- request handling ----------

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    state.lock().unwrap().requests.push(format!(
        "{method} {path}{}",
        query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    ));

    let auth = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {TOKEN}") {
        return Ok(error(401, "Unauthorized", "Unauthorized"));
    }

    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest): (&str, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("v1", rest),
        ["apis", "apps", "v1", rest @ ..] => ("apps/v1", rest),
        _ => {
            return Ok(error(
                404,
                "NotFound",
                &format!("the server could not find {path}"),
            ));
        }
    };
    let (ns, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let Some((plural, rest)) = rest.split_first() else {
        return Ok(error(404, "NotFound", "no resource"));
    };
    let Some(kind) = Kind::from_plural(gv, plural) else {
        return Ok(error(
            404,
            "NotFound",
            &format!("unknown resource {plural}"),
        ));
    };
    if !kind.namespaced() && ns.is_some() {
        return Ok(error(
            404,
            "NotFound",
            "cluster-scoped resource under a namespace",
        ));
    }
    let name = rest.first().map(|s| s.to_string());
    let sub = rest.get(1).map(|s| s.to_string());
    let pairs = query_pairs(query.as_deref());

    if sub.as_deref() == Some("exec") && kind == Kind::Pod {
        return Ok(handle_exec(
            state,
            req,
            ns.unwrap_or_default(),
            name.unwrap_or_default(),
            pairs,
        ));
    }

    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let ns_key = if kind.namespaced() {
        ns.clone().unwrap_or_default()
    } else {
        String::new()
    };

    let resp = match (method, name, sub.as_deref()) {
        (Method::GET, None, None) => list(&state, kind, ns.as_deref(), &pairs),
        (Method::GET, Some(name), None) => {
            let st = state.lock().unwrap();
            match st.objects.get(&(kind, ns_key, name.clone())) {
                Some(o) => respond(StatusCode::OK, o),
                None => not_found(kind, &name),
            }
        }
        (Method::POST, None, None) => create(&state, kind, ns.as_deref(), &body),
        (Method::DELETE, Some(name), None) => {
            let mut st = state.lock().unwrap();
            match st.objects.remove(&(kind, ns_key, name.clone())) {
                Some(o) => respond(StatusCode::OK, &o),
                None => not_found(kind, &name),
            }
        }
        (Method::GET, Some(name), Some("scale"))
            if matches!(kind, Kind::Deployment | Kind::StatefulSet) =>
        {
            let st = state.lock().unwrap();
            match st.objects.get(&(kind, ns_key, name.clone())) {
                Some(o) => respond(StatusCode::OK, &scale_of(o)),
                None => not_found(kind, &name),
            }
        }
        (Method::PATCH, Some(name), Some("scale"))
            if matches!(kind, Kind::Deployment | Kind::StatefulSet) =>
        {
            patch_scale(&state, kind, &ns_key, &name, &body)
        }
        (m, _, _) => error(
            405,
            "MethodNotAllowed",
            &format!("{m} {path} is not supported by the fake"),
        ),
    };
    Ok(resp)
}

fn not_found(kind: Kind, name: &str) -> Response<Full<Bytes>> {
    error(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.plural()),
    )
}

fn list(
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

fn create(
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

fn scale_of(o: &Value) -> Value {
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

fn patch_scale(
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

fn controller_of(pod: &Value) -> Option<(String, String)> {
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
fn reconcile(state: &Arc<Mutex<State>>, kind: Kind, workload: &Value) {
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

// ---------- exec over WebSocket ----------

fn handle_exec(
    state: Arc<Mutex<State>>,
    mut req: Request<Incoming>,
    ns: String,
    pod: String,
    pairs: Vec<(String, String)>,
) -> Response<Full<Bytes>> {
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let container_param = pairs
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone());

    let pod_obj = state
        .lock()
        .unwrap()
        .objects
        .get(&(Kind::Pod, ns.clone(), pod.clone()))
        .cloned();
    let Some(pod_obj) = pod_obj else {
        return not_found(Kind::Pod, &pod);
    };
    let containers: Vec<String> = pod_obj["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match container_param {
        Some(c) => c,
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return error(
                400,
                "BadRequest",
                &format!("a container name must be specified for pod {pod}"),
            );
        }
    };
    if !containers.contains(&container) {
        return error(
            400,
            "BadRequest",
            &format!("container {container} is not valid for pod {pod}"),
        );
    }

    let headers = req.headers();
    let is_upgrade = headers
        .get(UPGRADE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers
        .get(SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
    else {
        return error(400, "BadRequest", "exec needs a websocket upgrade");
    };
    if !is_upgrade {
        return error(400, "BadRequest", "exec needs a websocket upgrade");
    }
    let offered: Vec<String> = headers
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let accepted = state.lock().unwrap().exec_protocols.clone();
    let protocol = accepted
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p));
    let Some(protocol) = protocol else {
        return error(
            400,
            "BadRequest",
            &format!("no supported channel protocol in {offered:?}"),
        );
    };

    let script = {
        let mut st = state.lock().unwrap();
        st.events
            .push(format!("exec {pod}/{container} {}", command.join(" ")));
        st.execs.push(ExecCall {
            namespace: ns.clone(),
            pod: pod.clone(),
            container: container.clone(),
            command: command.clone(),
            protocol: protocol.to_string(),
        });
        st.scripts
            .iter()
            .find(|s| s.pod == pod && s.container == container && s.command == command)
            .cloned()
    };
    let script = script.unwrap_or(ExecScript {
        pod: pod.clone(),
        container: container.clone(),
        command: command.clone(),
        stdout: Vec::new(),
        stderr: Vec::new(),
        end: ExecEnd::Failure(format!(
            "exec: \"{}\": executable file not found in $PATH",
            command.first().cloned().unwrap_or_default()
        )),
        delay: Duration::ZERO,
    });

    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // The real server opens each channel with a one-byte frame.
        for ch in [1u8, 2, 3] {
            if ws.send(Message::binary(vec![ch])).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(script.delay).await;
        for (ch, data) in [(1u8, &script.stdout), (2u8, &script.stderr)] {
            for chunk in data.chunks(1000) {
                let mut frame = vec![ch];
                frame.extend_from_slice(chunk);
                if ws.send(Message::binary(frame)).await.is_err() {
                    return;
                }
            }
        }
        let status = match &script.end {
            ExecEnd::Exit(0) => json!({"metadata": {}, "status": "Success"}),
            ExecEnd::Exit(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command {:?}, exit code {code}", script.command),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
            }),
            ExecEnd::Failure(msg) => json!({
                "metadata": {},
                "status": "Failure",
                "message": msg,
                "reason": "InternalError",
                "code": 500
            }),
        };
        let mut frame = vec![3u8];
        frame.extend_from_slice(status.to_string().as_bytes());
        let _ = ws.send(Message::binary(frame)).await;
        let _ = ws.close(None).await;
        // Drain until the client goes away.
        while let Some(Ok(_)) = ws.next().await {}
    });

    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .body(Full::new(Bytes::new()))
        .expect("response");
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(&key)).expect("accept"),
    );
    h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    resp
}
