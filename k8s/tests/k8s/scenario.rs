//! The scenario harness: a fake API server holding the MicroK8s-shaped
//! fixtures, changed the way one scenario needs (annotations, scripted exec
//! answers, failing scale requests), and a client connected to it.

use std::path::Path;
use std::time::Duration;

use pvsnap_k8s::testing::fake::{ExecEnd, ExecScript, FakeCluster, Kind};
use pvsnap_k8s::testing::fixtures::NODE;
use pvsnap_k8s::{
    ClaimRef, CloneTarget, Cluster, HookOutcome, HookPhase, PodRef, ResolveOptions, ScaledDown,
};

/// A fake cluster and a client of it.
pub struct Scenario {
    pub fake: FakeCluster,
    pub cluster: Cluster,
}

impl Scenario {
    /// The fixtures as they are.
    pub async fn fixtures() -> Scenario {
        let fake = FakeCluster::with_fixtures().await;
        let cluster = fake.connect().await;
        Scenario { fake, cluster }
    }

    /// Replaces a pod's annotations (hook definitions live there).
    pub fn annotate(self, ns: &str, pod: &str, annotations: &[(&str, &str)]) -> Scenario {
        self.fake.set_annotations(ns, pod, annotations);
        self
    }

    /// Scripts what `command` in `pod`/`container` answers.
    pub fn answer(self, pod: &str, container: &str, command: &[&str], answer: Answer) -> Scenario {
        self.fake.script(ExecScript {
            pod: pod.into(),
            container: container.into(),
            command: argv(command),
            stdout: answer.stdout,
            stderr: answer.stderr,
            end: answer.end,
            delay: answer.delay,
        });
        self
    }

    /// The running pods that mount `ns/claim`.
    pub async fn pods(&self, ns: &str, claim: &str) -> Vec<PodRef> {
        self.cluster.pods_mounting(ns, claim).await.unwrap()
    }

    /// Runs the `phase` hooks of the pods that mount `ns/claim`.
    pub async fn run_hooks(&self, phase: HookPhase, ns: &str, claim: &str) -> Vec<HookOutcome> {
        let pods = self.pods(ns, claim).await;
        self.cluster.run_hooks(phase, &pods).await
    }

    /// Scales down the workloads that use `ns/claim`.
    pub async fn scale_down(&self, ns: &str, claim: &str) -> ScaledDown {
        let workloads = self.cluster.workloads_mounting(ns, claim).await.unwrap();
        self.cluster.scale_down(&workloads).await.unwrap()
    }

    /// Creates a clone claim `ns/name` of `size` on `dir`, pinned to node-a.
    pub async fn clone_claim(
        &self,
        ns: &str,
        name: &str,
        class: Option<&str>,
        size: &str,
        dir: &str,
    ) -> pvsnap_k8s::Result<CloneTarget> {
        self.cluster
            .create_clone_claim(ns, name, class, size, NODE, Path::new(dir))
            .await
    }

    /// Deletes an object through the API, as `kubectl delete` would.
    pub async fn delete(&self, path: &str) {
        self.cluster
            .client()
            .request_text(http::Request::delete(path).body(Vec::new()).unwrap())
            .await
            .unwrap();
    }
}

/// `spec.replicas` of a workload.
pub fn replicas(fake: &FakeCluster, kind: Kind, ns: &str, name: &str) -> serde_json::Value {
    fake.get(kind, ns, name).expect("workload exists")["spec"]["replicas"].clone()
}

/// What a scripted command answers.
pub struct Answer {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    end: ExecEnd,
    delay: Duration,
}

impl Answer {
    /// Exits with `code`, printing nothing.
    pub fn exit(code: i32) -> Answer {
        Answer {
            stdout: Vec::new(),
            stderr: Vec::new(),
            end: ExecEnd::Exit(code),
            delay: Duration::ZERO,
        }
    }

    pub fn stdout(self, bytes: impl Into<Vec<u8>>) -> Answer {
        Answer {
            stdout: bytes.into(),
            ..self
        }
    }

    pub fn stderr(self, bytes: impl Into<Vec<u8>>) -> Answer {
        Answer {
            stderr: bytes.into(),
            ..self
        }
    }

    /// Answers only after `delay`.
    pub fn after(self, delay: Duration) -> Answer {
        Answer { delay, ..self }
    }
}

/// Resolving as node-a without a host root.
pub fn here() -> ResolveOptions {
    ResolveOptions {
        node_name: NODE.into(),
        host_root: None,
    }
}

pub fn claim(ns: &str, name: &str) -> ClaimRef {
    ClaimRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

pub fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

pub fn json_array(parts: &[&str]) -> String {
    serde_json::to_string(parts).unwrap()
}

/// Writes a file, making its folder.
pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}
