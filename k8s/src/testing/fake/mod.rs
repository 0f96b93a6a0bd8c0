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
//! command) and logging every call in order; CSI snapshots
//! (`snapshot.storage.k8s.io/v1` VolumeSnapshot, VolumeSnapshotClass,
//! VolumeSnapshotContent) with a simulated snapshot controller, and claims
//! provisioned from a snapshot through `dataSource` ([`snapshots`]).
//!
//! The parts: [`store`] (objects, list and create), [`selector`] (label
//! selectors), [`controller`] (the scale subresource and the pods it
//! reconciles), [`exec`] (exec over WebSocket) and [`http`] (Status bodies
//! and query strings); this module holds the server, its state and the
//! routing of requests.

mod controller;
mod exec;
mod http;
mod selector;
mod snapshots;
mod store;

use controller::*;
use exec::*;
use http::*;
use selector::*;
use snapshots::*;
use store::*;

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

pub use exec::{ExecCall, ExecEnd, ExecScript};
pub use snapshots::CsiBehaviour;

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
    VolumeSnapshot,
    VolumeSnapshotClass,
    VolumeSnapshotContent,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::PersistentVolume,
        Kind::PersistentVolumeClaim,
        Kind::Pod,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::ReplicaSet,
        Kind::VolumeSnapshot,
        Kind::VolumeSnapshotClass,
        Kind::VolumeSnapshotContent,
    ];

    fn plural(self) -> &'static str {
        match self {
            Kind::PersistentVolume => "persistentvolumes",
            Kind::PersistentVolumeClaim => "persistentvolumeclaims",
            Kind::Pod => "pods",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::ReplicaSet => "replicasets",
            Kind::VolumeSnapshot => "volumesnapshots",
            Kind::VolumeSnapshotClass => "volumesnapshotclasses",
            Kind::VolumeSnapshotContent => "volumesnapshotcontents",
        }
    }

    fn group_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::StatefulSet | Kind::ReplicaSet => "apps/v1",
            Kind::VolumeSnapshot | Kind::VolumeSnapshotClass | Kind::VolumeSnapshotContent => {
                "snapshot.storage.k8s.io/v1"
            }
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
            Kind::VolumeSnapshot => "VolumeSnapshot",
            Kind::VolumeSnapshotClass => "VolumeSnapshotClass",
            Kind::VolumeSnapshotContent => "VolumeSnapshotContent",
        }
    }

    fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::PersistentVolume | Kind::VolumeSnapshotClass | Kind::VolumeSnapshotContent
        )
    }

    fn from_plural(group_version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.plural() == plural && k.group_version() == group_version)
    }
}

pub(super) type Key = (Kind, String, String);

#[derive(Default)]
pub(super) struct State {
    objects: BTreeMap<Key, Value>,
    scripts: Vec<ExecScript>,
    /// Containers whose execs run a real local process: (pod, container)
    /// and the environment the process gets (the container's).
    real_exec: Vec<RealExec>,
    /// Ordered log: `exec <pod>/<container> <argv...>` and `mark <text>`.
    events: Vec<String>,
    execs: Vec<ExecCall>,
    requests: Vec<String>,
    termination_delay: Duration,
    fail_scale: HashSet<String>,
    /// Channel protocols the exec endpoint accepts, in preference order.
    exec_protocols: Vec<&'static str>,
    /// How the simulated snapshot controller answers new VolumeSnapshots.
    csi: CsiBehaviour,
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

    /// Execs into `pod`/`container` that no script answers run the
    /// command's argv as a real process on this machine, bridged to the
    /// WebSocket (stdin frames in, stdout and stderr frames out, the exit
    /// status at the end), with only `PATH` and `env` in its environment,
    /// as a container's own environment. When the client goes away the
    /// process gets the end of its stdin, as in a container; it is not
    /// killed. A program that does not exist answers as the kubelet does
    /// (`executable file not found in $PATH`).
    pub fn exec_real(&self, pod: &str, container: &str, env: &[(&str, &str)]) {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut st = self.state.lock().unwrap();
        st.real_exec
            .retain(|r| !(r.pod == pod && r.container == container));
        st.real_exec.push(RealExec {
            pod: pod.into(),
            container: container.into(),
            env,
        });
    }

    /// Deletes an object at once (a pod gone between listing and exec).
    pub fn remove(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let mut st = self.state.lock().unwrap();
        st.objects
            .remove(&(kind, namespace.to_string(), name.to_string()))
            .is_some()
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

    /// How the simulated snapshot controller answers VolumeSnapshots
    /// created from now on.
    pub fn set_csi(&self, csi: CsiBehaviour) {
        self.state.lock().unwrap().csi = csi;
    }

    /// Names of the objects of `kind` (`namespace/name`, or `name` for a
    /// cluster-scoped kind), sorted.
    pub fn names(&self, kind: Kind) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.objects
            .keys()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, ns, n)| {
                if ns.is_empty() {
                    n.clone()
                } else {
                    format!("{ns}/{n}")
                }
            })
            .collect()
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
        ["apis", "snapshot.storage.k8s.io", "v1", rest @ ..] => {
            ("snapshot.storage.k8s.io/v1", rest)
        }
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
        (Method::POST, None, None) => {
            let resp = create(&state, kind, ns.as_deref(), &body);
            if resp.status() == StatusCode::CREATED {
                after_create(&state, kind, &ns_key, &body);
            }
            resp
        }
        (Method::DELETE, Some(name), None) => {
            let mut st = state.lock().unwrap();
            match st.objects.remove(&(kind, ns_key, name.clone())) {
                Some(o) => {
                    after_delete(&mut st, kind, &o);
                    respond(StatusCode::OK, &o)
                }
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

pub(super) fn not_found(kind: Kind, name: &str) -> Response<Full<Bytes>> {
    error(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.plural()),
    )
}
