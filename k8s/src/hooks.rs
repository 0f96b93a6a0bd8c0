//! Backup hooks: Velero-compatible pod annotations run through the exec
//! subresource, and commands run on the host.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::{AttachParams, ListParams};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::Cluster;
use crate::error::{Error, Result};

/// Timeout of a hook whose annotation sets none (Velero's default).
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// How many bytes of stdout and of stderr a hook outcome keeps (the end).
pub const OUTPUT_TAIL_BYTES: usize = 4096;

/// Before or after the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookPhase {
    /// Before the body (e.g. flush and freeze a database).
    Pre,
    /// After the body (e.g. thaw).
    Post,
}

impl HookPhase {
    /// Annotation prefix of the phase, e.g. `pre.hook.backup.velero.io`.
    pub fn annotation_prefix(self) -> &'static str {
        match self {
            HookPhase::Pre => "pre.hook.backup.velero.io",
            HookPhase::Post => "post.hook.backup.velero.io",
        }
    }
}

impl std::fmt::Display for HookPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookPhase::Pre => "pre",
            HookPhase::Post => "post",
        })
    }
}

/// What a failing hook does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OnError {
    /// A failing pre hook stops the run: the body is skipped.
    #[default]
    Fail,
    /// A failing hook is recorded and the run goes on.
    Continue,
}

/// A running pod that mounts a claim, with what hooks need from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Container names in spec order.
    pub containers: Vec<String>,
    /// Pod annotations (hook definitions live here).
    pub annotations: BTreeMap<String, String>,
    /// The controlling owner, e.g. `StatefulSet/postgres`.
    pub owner: Option<String>,
}

impl PodRef {
    /// Build from a pod object.
    pub fn from_pod(pod: &Pod) -> PodRef {
        let meta = &pod.metadata;
        PodRef {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            containers: pod
                .spec
                .as_ref()
                .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            owner: meta.owner_references.as_ref().and_then(|os| {
                os.iter()
                    .find(|o| o.controller == Some(true))
                    .map(|o| format!("{}/{}", o.kind, o.name))
            }),
        }
    }
}

/// A hook read from a pod's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHook {
    /// Container to run in (`None`: the pod's first container).
    pub container: Option<String>,
    /// The command, as argv.
    pub command: Vec<String>,
    /// What a failure does.
    pub on_error: OnError,
    /// How long the command may run.
    pub timeout: Duration,
}

/// Why a hook annotation could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHook {
    /// Best-effort parsed command text.
    pub command: Vec<String>,
    /// Parsed (or default) failure mode.
    pub on_error: OnError,
    /// What is wrong.
    pub reason: String,
}

/// Read the hook of `phase` from pod annotations, the way Velero does:
/// `<phase>.hook.backup.velero.io/{command,container,on-error,timeout}`;
/// pre hooks also accept the older unprefixed `hook.backup.velero.io/...`.
///
/// The command is a JSON array of strings (`["/bin/sh","-c","sync"]`); any
/// other text is taken as a single argv element, without shell splitting,
/// as Velero does. Returns `None` when the pod has no such hook.
pub fn pod_hook(
    annotations: &BTreeMap<String, String>,
    phase: HookPhase,
) -> Option<std::result::Result<PodHook, InvalidHook>> {
    let prefix = phase.annotation_prefix();
    let mut get_prefix = prefix;
    let mut command = annotations.get(&format!("{prefix}/command"));
    if command.is_none() && phase == HookPhase::Pre {
        get_prefix = "hook.backup.velero.io";
        command = annotations.get(&format!("{get_prefix}/command"));
    }
    let command = command?;
    let get = |key: &str| {
        annotations
            .get(&format!("{get_prefix}/{key}"))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    };
    let mut problems = Vec::new();
    let on_error = match get("on-error") {
        None => OnError::Fail,
        Some(v) if v.eq_ignore_ascii_case("fail") => OnError::Fail,
        Some(v) if v.eq_ignore_ascii_case("continue") => OnError::Continue,
        Some(v) => {
            problems.push(format!(
                "{get_prefix}/on-error {v:?} is neither Fail nor Continue"
            ));
            OnError::Fail
        }
    };
    let argv = parse_command(command).unwrap_or_else(|e| {
        problems.push(format!(
            "{get_prefix}/command is not a JSON string array: {e}"
        ));
        vec![command.clone()]
    });
    if argv.is_empty() || argv[0].is_empty() {
        problems.push(format!("{get_prefix}/command is empty"));
    }
    let timeout = match get("timeout") {
        None => DEFAULT_HOOK_TIMEOUT,
        Some(t) => parse_go_duration(t).unwrap_or_else(|| {
            problems.push(format!(
                "{get_prefix}/timeout {t:?} is not a duration like 30s or 1m"
            ));
            DEFAULT_HOOK_TIMEOUT
        }),
    };
    if !problems.is_empty() {
        return Some(Err(InvalidHook {
            command: argv,
            on_error,
            reason: problems.join("; "),
        }));
    }
    Some(Ok(PodHook {
        container: get("container").map(str::to_string),
        command: argv,
        on_error,
        timeout,
    }))
}

fn parse_command(text: &str) -> std::result::Result<Vec<String>, serde_json::Error> {
    let t = text.trim();
    if t.starts_with('[') {
        serde_json::from_str(t)
    } else {
        Ok(vec![text.to_string()])
    }
}

/// Parse a Go duration (`300ms`, `30s`, `1m30s`, `1.5h`). Negative values
/// are refused.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n_end == 0 {
            return None;
        }
        let value: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u_end..];
        total += value * unit;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// What running one hook gave. Recorded in snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOutcome {
    /// Pre or post.
    pub phase: HookPhase,
    /// Namespace of the pod (`None` for host hooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod (`None` for host hooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The container (`None` for host hooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command as argv (host hooks: `["sh", "-c", CMD]`).
    pub command: Vec<String>,
    /// True when the command ran and exited 0.
    pub ok: bool,
    /// Exit code, when the command ran to its end.
    pub exit_code: Option<i32>,
    /// The end of standard output.
    pub stdout_tail: String,
    /// The end of standard error.
    pub stderr_tail: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// What a failure does to the run.
    pub on_error: OnError,
}

impl HookOutcome {
    /// The outcome of a hook of `phase` running `command` before it runs:
    /// not ok, no output, on the host. Every outcome starts from it.
    fn not_run(phase: HookPhase, command: Vec<String>) -> HookOutcome {
        HookOutcome {
            phase,
            namespace: None,
            pod: None,
            container: None,
            command,
            ok: false,
            exit_code: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            duration_ms: 0,
            error: None,
            on_error: OnError::Fail,
        }
    }

    /// True when this outcome stops the run: it failed and its mode is Fail.
    pub fn is_fatal(&self) -> bool {
        !self.ok && self.on_error == OnError::Fail
    }

    /// `pod ns/name container c` or `host`.
    pub fn target(&self) -> String {
        match (&self.namespace, &self.pod, &self.container) {
            (Some(ns), Some(p), Some(c)) => format!("pod {ns}/{p} container {c}"),
            (Some(ns), Some(p), None) => format!("pod {ns}/{p}"),
            _ => "host".to_string(),
        }
    }
}

fn claim_of(vol: &k8s_openapi::api::core::v1::Volume) -> Option<&str> {
    vol.persistent_volume_claim
        .as_ref()
        .map(|c| c.claim_name.as_str())
}

/// True when the pod's volumes reference claim `pvc`.
pub(crate) fn pod_mounts(pod: &Pod, pvc: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| vs.iter().any(|v| claim_of(v) == Some(pvc)))
}

impl Cluster {
    /// Running pods (not being deleted) whose volumes reference claim
    /// `namespace/pvc`, sorted by name.
    pub async fn pods_mounting(&self, namespace: &str, pvc: &str) -> Result<Vec<PodRef>> {
        let pods = self.pods_using(namespace, pvc).await?;
        Ok(pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .map(PodRef::from_pod)
            .collect())
    }

    /// All pods referencing the claim, whatever their phase, sorted by name.
    pub(crate) async fn pods_using(&self, namespace: &str, pvc: &str) -> Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::api(format!("listing pods in namespace {namespace}"), e))?;
        let mut pods: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| pod_mounts(p, pvc))
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// Run the `phase` hooks of `pods` in order. In the pre phase the first
    /// failing hook with on-error Fail stops the run (later pods are not
    /// touched); post hooks are all attempted. Pods without a hook for the
    /// phase give no outcome.
    pub async fn run_hooks(&self, phase: HookPhase, pods: &[PodRef]) -> Vec<HookOutcome> {
        let mut out = Vec::new();
        for pod in pods {
            if let Some(o) = self.run_pod_hook(phase, pod).await {
                let stop = phase == HookPhase::Pre && o.is_fatal();
                out.push(o);
                if stop {
                    break;
                }
            }
        }
        out
    }

    /// Run the `phase` hook of one pod, if it has one.
    pub async fn run_pod_hook(&self, phase: HookPhase, pod: &PodRef) -> Option<HookOutcome> {
        let hook = pod_hook(&pod.annotations, phase)?;
        let mut outcome = HookOutcome {
            namespace: Some(pod.namespace.clone()),
            pod: Some(pod.name.clone()),
            ..HookOutcome::not_run(phase, Vec::new())
        };
        let hook = match hook {
            Ok(h) => h,
            Err(bad) => {
                outcome.command = bad.command;
                outcome.on_error = bad.on_error;
                outcome.error = Some(format!(
                    "invalid hook annotation on pod {}/{}: {}",
                    pod.namespace, pod.name, bad.reason
                ));
                tracing::info!(pod = %pod.name, phase = %phase, error = %outcome.error.as_deref().unwrap_or_default(), "hook not run");
                return Some(outcome);
            }
        };
        outcome.command = hook.command.clone();
        outcome.on_error = hook.on_error;
        let container = match &hook.container {
            Some(c) if pod.containers.contains(c) => c.clone(),
            Some(c) => {
                outcome.container = Some(c.clone());
                outcome.error = Some(format!(
                    "pod {}/{} has no container {c:?} (containers: {}); fix the {}/container annotation",
                    pod.namespace,
                    pod.name,
                    pod.containers.join(", "),
                    phase.annotation_prefix()
                ));
                return Some(outcome);
            }
            None => match pod.containers.first() {
                Some(c) => c.clone(),
                None => {
                    outcome.error = Some(format!(
                        "pod {}/{} has no containers",
                        pod.namespace, pod.name
                    ));
                    return Some(outcome);
                }
            },
        };
        outcome.container = Some(container.clone());
        tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), %container, phase = %phase, command = ?hook.command, "running hook");
        let started = Instant::now();
        let res = tokio::time::timeout(
            hook.timeout,
            self.exec_capture(&pod.namespace, &pod.name, &container, &hook.command),
        )
        .await;
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        match res {
            Err(_) => {
                outcome.error = Some(format!(
                    "timed out after {:?} (set the {}/timeout annotation to allow longer); the command may still be running in the container",
                    hook.timeout,
                    phase.annotation_prefix()
                ));
            }
            Ok(Err(e)) => outcome.error = Some(e),
            Ok(Ok(done)) => {
                outcome.stdout_tail = done.stdout;
                outcome.stderr_tail = done.stderr;
                outcome.exit_code = done.exit_code;
                outcome.ok = done.exit_code == Some(0);
                if !outcome.ok {
                    outcome.error = Some(match (done.exit_code, done.message) {
                        (Some(c), _) => format!("command exited with code {c}"),
                        (None, Some(m)) => m,
                        (None, None) => "command ended without an exit status".to_string(),
                    });
                }
            }
        }
        if outcome.ok {
            tracing::info!(pod = %pod.name, phase = %phase, ms = outcome.duration_ms, "hook succeeded");
        } else {
            tracing::info!(pod = %pod.name, phase = %phase, error = %outcome.error.as_deref().unwrap_or_default(), stderr = %outcome.stderr_tail.trim_end(), "hook failed");
        }
        Some(outcome)
    }

    async fn exec_capture(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[String],
    ) -> std::result::Result<ExecDone, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let ap = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(true)
            .max_stdout_buf_size(64 * 1024)
            .max_stderr_buf_size(64 * 1024);
        let mut proc = api
            .exec(pod, command.to_vec(), &ap)
            .await
            .map_err(|e| format!("exec into pod {namespace}/{pod} container {container} failed: {e}; check that the pod runs and that you may create pods/exec"))?;
        let stdout = proc.stdout();
        let stderr = proc.stderr();
        let status = proc.take_status();
        // All three must be drained together: the exec task blocks when a
        // pipe is full, and the status only comes after the output.
        let (stdout, stderr, status) = tokio::join!(read_tail(stdout), read_tail(stderr), async {
            match status {
                Some(s) => s.await,
                None => None,
            }
        });
        if let Err(e) = proc.join().await {
            tracing::debug!(error = %e, "exec stream ended with an error");
        }
        let (exit_code, message) = match status {
            None => (
                None,
                Some("the exec stream closed without a status".to_string()),
            ),
            Some(s) => interpret_status(&s),
        };
        Ok(ExecDone {
            stdout,
            stderr,
            exit_code,
            message,
        })
    }
}

struct ExecDone {
    stdout: String,
    stderr: String,
    exit_code: Option<i32>,
    message: Option<String>,
}

/// Exit code from the Status sent on the exec status channel: `Success` is
/// 0; `Failure` carries the code as a cause with reason `ExitCode`.
pub(crate) fn interpret_status(s: &Status) -> (Option<i32>, Option<String>) {
    if s.status.as_deref() == Some("Success") {
        return (Some(0), None);
    }
    let code = s
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.as_deref())
                .and_then(|m| m.trim().parse::<i32>().ok())
        });
    (code, s.message.clone())
}

async fn read_tail<R: AsyncRead + Unpin>(reader: Option<R>) -> String {
    let Some(mut r) = reader else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > OUTPUT_TAIL_BYTES {
                    let cut = tail.len() - OUTPUT_TAIL_BYTES;
                    tail.drain(..cut);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// A command run on the host with `sh -c` (`--pre-hook`, `--post-hook`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHook {
    /// The shell command.
    pub command: String,
    /// How long it may run before it is killed.
    pub timeout: Duration,
    /// Variables added to its environment (besides `PVSNAP_HOOK`), e.g.
    /// `PVSNAP_SOURCE`: what the hook runs for.
    pub env: Vec<(String, String)>,
}

impl HostHook {
    /// A host hook with the default timeout.
    pub fn new(command: impl Into<String>) -> Self {
        HostHook {
            command: command.into(),
            timeout: DEFAULT_HOOK_TIMEOUT,
            env: Vec::new(),
        }
    }

    /// The same hook with `key=value` added to its environment.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// Run `cmd` on the host with `sh -c`. On timeout the whole process group
/// is killed. Host hooks always have on-error Fail. The hook finds
/// `PVSNAP_HOOK=pre|post` in its environment.
pub async fn run_host_hook(phase: HookPhase, cmd: &str, timeout: Duration) -> HookOutcome {
    run_host_hook_env(phase, cmd, timeout, &[]).await
}

/// [`run_host_hook`] with `env` added to the hook's environment.
async fn run_host_hook_env(
    phase: HookPhase,
    cmd: &str,
    timeout: Duration,
    env: &[(String, String)],
) -> HookOutcome {
    use std::process::Stdio;
    let mut outcome = HookOutcome::not_run(phase, vec!["sh".into(), "-c".into(), cmd.into()]);
    tracing::info!(phase = %phase, command = %cmd, "running host hook");
    let started = Instant::now();
    let mut child = match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PVSNAP_HOOK", phase.to_string())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(format!("cannot start sh for host {phase} hook: {e}"));
            return outcome;
        }
    };
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let run = async {
        let (o, e, status) = tokio::join!(read_tail(stdout), read_tail(stderr), child.wait());
        (o, e, status)
    };
    let res = tokio::time::timeout(timeout, run).await;
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    match res {
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            let _ = child.kill().await;
            outcome.error = Some(format!(
                "host {phase} hook timed out after {timeout:?} and was killed; raise the hook timeout or fix the command"
            ));
        }
        Ok((o, e, status)) => {
            outcome.stdout_tail = o;
            outcome.stderr_tail = e;
            match status {
                Err(err) => outcome.error = Some(format!("waiting for host hook failed: {err}")),
                Ok(st) => {
                    outcome.exit_code = st.code();
                    outcome.ok = st.success();
                    if !outcome.ok {
                        outcome.error = Some(match st.code() {
                            Some(c) => format!("host {phase} hook exited with code {c}"),
                            None => format!("host {phase} hook was killed by a signal"),
                        });
                    }
                }
            }
        }
    }
    // The caller reports a failure (once, as an error or a hook line);
    // `-v` adds what the command said.
    if outcome.ok {
        tracing::info!(phase = %phase, ms = outcome.duration_ms, "host hook succeeded");
    } else {
        tracing::info!(phase = %phase, error = %outcome.error.as_deref().unwrap_or_default(), stderr = %outcome.stderr_tail.trim_end(), "host hook failed");
    }
    tracing::debug!(phase = %phase, stdout = %outcome.stdout_tail.trim_end(), stderr = %outcome.stderr_tail.trim_end(), "host hook output");
    outcome
}

fn kill_group(pid: u32) {
    if let Ok(pgid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals the process group that
        // `process_group(0)` created for the hook; it touches no memory.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// What happened to the body of [`with_hooks`].
#[derive(Debug)]
pub enum BodyOutcome<T, E> {
    /// The body ran and gave this.
    Ran(std::result::Result<T, E>),
    /// A pre hook with on-error Fail failed, so the body did not run.
    Skipped {
        /// Which hook, and why.
        reason: String,
    },
}

/// Result of [`with_hooks`]: every hook outcome and the body's fate.
#[derive(Debug)]
pub struct HookedRun<T, E> {
    /// Pre hooks in the order they ran (host first, then pods).
    pub pre: Vec<HookOutcome>,
    /// Post hooks in the order they ran (pods first, then host).
    pub post: Vec<HookOutcome>,
    /// The body's result, or why it was skipped.
    pub body: BodyOutcome<T, E>,
}

impl<T, E> HookedRun<T, E> {
    /// True when the body was skipped.
    pub fn skipped(&self) -> bool {
        matches!(self.body, BodyOutcome::Skipped { .. })
    }

    /// Every outcome, pre then post.
    pub fn outcomes(&self) -> impl Iterator<Item = &HookOutcome> {
        self.pre.iter().chain(self.post.iter())
    }

    /// Failed hooks whose on-error is Fail (pre or post).
    pub fn fatal_failures(&self) -> Vec<&HookOutcome> {
        self.outcomes().filter(|o| o.is_fatal()).collect()
    }
}

/// Run `body` between hooks.
///
/// Order: host pre hook, pod pre hooks (in `pods` order), body, pod post
/// hooks, host post hook. A failing pre hook with on-error Fail stops the
/// pre phase and skips the body. Post hooks run even when the body fails or
/// is skipped, for every pod the pre phase reached (pods after the failing
/// one are left alone, the failing one is included so it can undo a half
/// applied pre hook); the host post hook, when given, always runs (also
/// after its own pre hook failed). `cluster` may be `None` when there are
/// only host hooks; `pods` are then ignored.
pub async fn with_hooks<T, E, F, Fut>(
    cluster: Option<&Cluster>,
    pods: &[PodRef],
    host_pre: Option<&HostHook>,
    host_post: Option<&HostHook>,
    body: F,
) -> HookedRun<T, E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let pods = if cluster.is_some() { pods } else { &[] };
    let mut pre = Vec::new();
    let mut skip_reason: Option<String> = None;
    let mut reached = 0usize;

    if let Some(h) = host_pre {
        let o = run_host_hook_env(HookPhase::Pre, &h.command, h.timeout, &h.env).await;
        if o.is_fatal() {
            let error = o.error.as_deref().unwrap_or_default();
            skip_reason = Some(format!(
                "host pre hook `{}` failed: {}",
                h.command,
                error.strip_prefix("host pre hook ").unwrap_or(error)
            ));
        }
        pre.push(o);
    }
    if skip_reason.is_none()
        && let Some(cluster) = cluster
    {
        for pod in pods {
            reached += 1;
            if let Some(o) = cluster.run_pod_hook(HookPhase::Pre, pod).await {
                let fatal = o.is_fatal();
                if fatal {
                    skip_reason = Some(format!(
                        "pre hook in {} failed: {}",
                        o.target(),
                        o.error.clone().unwrap_or_default()
                    ));
                }
                pre.push(o);
                if fatal {
                    break;
                }
            }
        }
    }

    let body = match skip_reason {
        Some(reason) => {
            tracing::info!(%reason, "skipping the snapshot because a pre hook failed");
            BodyOutcome::Skipped { reason }
        }
        None => BodyOutcome::Ran(body().await),
    };

    let mut post = Vec::new();
    if let Some(cluster) = cluster {
        for pod in &pods[..reached] {
            if let Some(o) = cluster.run_pod_hook(HookPhase::Post, pod).await {
                post.push(o);
            }
        }
    }
    if let Some(h) = host_post {
        post.push(run_host_hook_env(HookPhase::Post, &h.command, h.timeout, &h.env).await);
    }
    HookedRun { pre, post, body }
}
