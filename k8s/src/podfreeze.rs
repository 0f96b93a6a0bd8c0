//! Database freeze presets for claims (`pvsnap snapshot pvc/NS/NAME
//! --freeze postgres|mysql|mongodb`): the preset's one client session runs
//! in the pod that mounts the claim, over the exec subresource with stdin
//! open, exactly as it runs as a local child for host folders
//! ([`pvsnap_native::freeze`]): the same recipe, marker protocol and
//! timeouts; only the [`LineStream`] differs.
//!
//! The pod: the first running pod (by name) that mounts the claim and
//! carries the annotation [`FREEZE_CONTAINER_ANNOTATION`], else the first
//! running pod that mounts it (the hooks' order). The container: the one
//! that annotation names, else the pod's first container.
//!
//! Credentials come from the container: its environment (`PGPASSWORD`,
//! `PGUSER`, `MYSQL_PWD`, `MONGODB_URI` set in the pod spec) or a file in
//! it (`~/.pgpass`, `~/.my.cnf`). Nothing but the recipe's client argv goes
//! on the exec command line.
//!
//! The exec stream lives on a thread of its own, with its own runtime and
//! client, because the freeze is called from the synchronous middle of a
//! snapshot while the caller's runtime waits for it. When pvsnap dies the
//! stream's connection closes, the API server ends the exec, the client in
//! the pod reads the end of its input and the server ends the session:
//! PostgreSQL's backup and MySQL's read lock go with it. MongoDB's
//! `fsyncLock` outlives the session (as for hosts): after a killed pvsnap
//! the database stays locked until `db.fsyncUnlock()`.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use kube::{Client, Config};
use pvsnap_native::freeze::{self, LineStream, Preset, Recv, Session};
use pvsnap_native::{Freezer, Frozen};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::Cluster;
use crate::error::{Error, Result};
use crate::hooks::{PodRef, interpret_status};

/// The pod annotation naming the container a freeze runs in.
pub const FREEZE_CONTAINER_ANNOTATION: &str = "pvsnap.io/freeze-container";

/// A freeze preset run in a pod over exec.
pub struct PodFreezer {
    preset: Preset,
    config: Config,
    namespace: String,
    pod: String,
    container: String,
    timeout: Duration,
}

impl PodFreezer {
    /// The freezer for claim `namespace/claim` mounted by `pods` (running,
    /// sorted by name, as [`Cluster::pods_mounting`] lists them).
    pub fn for_claim(
        cluster: &Cluster,
        namespace: &str,
        claim: &str,
        pods: &[PodRef],
        preset: Preset,
        timeout: Duration,
    ) -> Result<PodFreezer> {
        let refused = |reason: String| Error::FreezeRefused {
            claim: format!("{namespace}/{claim}"),
            reason,
        };
        let pod = pods
            .iter()
            .find(|p| p.annotations.contains_key(FREEZE_CONTAINER_ANNOTATION))
            .or_else(|| pods.first())
            .ok_or_else(|| {
                refused(format!(
                    "no running pod mounts it, so there is no database to run `--freeze {preset}` in; start its workload, or snapshot without --freeze (a stopped database needs no freeze)"
                ))
            })?;
        let container = match pod.annotations.get(FREEZE_CONTAINER_ANNOTATION) {
            Some(c) if pod.containers.contains(c) => c.clone(),
            Some(c) => {
                return Err(refused(format!(
                    "pod {}/{} names container {c:?} in its {FREEZE_CONTAINER_ANNOTATION} annotation but has no such container (containers: {}); fix the annotation",
                    pod.namespace,
                    pod.name,
                    pod.containers.join(", ")
                )));
            }
            None => pod.containers.first().cloned().ok_or_else(|| {
                refused(format!(
                    "pod {}/{} has no containers",
                    pod.namespace, pod.name
                ))
            })?,
        };
        let config = cluster.config.clone().ok_or_else(|| {
            refused("the cluster connection was not made from a configuration pvsnap can reuse for a second client".into())
        })?;
        Ok(PodFreezer {
            preset,
            config,
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container,
            timeout,
        })
    }

    /// `namespace/pod` and the container, for messages and tests.
    pub fn place(&self) -> (String, String) {
        (
            format!("{}/{}", self.namespace, self.pod),
            self.container.clone(),
        )
    }

    /// Which database this is, for messages.
    fn target(&self) -> String {
        let db = match self.preset {
            Preset::Postgres => "PostgreSQL",
            Preset::Mysql => "MySQL",
            Preset::Mongodb => "MongoDB",
        };
        format!(
            "{db} in pod {}/{} (container {})",
            self.namespace, self.pod, self.container
        )
    }
}

impl Freezer for PodFreezer {
    fn name(&self) -> &str {
        self.preset.as_str()
    }

    fn freeze(&self) -> pvsnap_native::Result<Box<dyn Frozen>> {
        let argv: Vec<String> = self
            .preset
            .client_argv(None)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let stream =
            ExecStream::open(self, argv, Instant::now() + self.timeout).map_err(|detail| {
                pvsnap_native::Error::Freeze {
                    database: self.target(),
                    detail,
                }
            })?;
        freeze::hold(Session::new(
            self.preset,
            self.target(),
            Vec::new(),
            Box::new(stream),
            self.timeout,
        ))
    }
}

enum Command {
    Write(Vec<u8>),
    /// End of the client's input.
    Close,
}

/// How the exec ended, filled in by its thread.
#[derive(Default)]
struct Ending {
    status: Option<String>,
    stderr: String,
}

/// A client in a container, over an exec stream run by a thread of its own.
struct ExecStream {
    commands: Option<UnboundedSender<Command>>,
    lines: Receiver<String>,
    ending: Arc<Mutex<Ending>>,
    done: Receiver<()>,
    client: String,
    container: String,
    /// The freeze timeout: how long the end of a finished exec may take.
    timeout: Duration,
}

impl ExecStream {
    /// Starts the exec and waits (until `deadline`) for the stream to open.
    fn open(
        f: &PodFreezer,
        argv: Vec<String>,
        deadline: Instant,
    ) -> std::result::Result<ExecStream, String> {
        let (commands, command_rx) = unbounded_channel();
        let (line_tx, lines) = channel();
        let (opened_tx, opened) = sync_channel(1);
        let (done_tx, done) = sync_channel(1);
        let ending = Arc::new(Mutex::new(Ending::default()));
        let job = Job {
            config: f.config.clone(),
            namespace: f.namespace.clone(),
            pod: f.pod.clone(),
            container: f.container.clone(),
            argv,
            ending: ending.clone(),
        };
        std::thread::Builder::new()
            .name("pvsnap-freeze-exec".into())
            .spawn(move || {
                job.run(command_rx, line_tx, opened_tx);
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start a thread for the exec: {e}"))?;
        let wait = deadline.saturating_duration_since(Instant::now());
        let stream = ExecStream {
            commands: Some(commands),
            lines,
            ending,
            done,
            client: f.preset.client().to_owned(),
            container: f.container.clone(),
            timeout: f.timeout,
        };
        match opened.recv_timeout(wait) {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "the exec into pod {}/{} did not open within the freeze timeout ({}s); check that the API server answers and the pod runs",
                f.namespace,
                f.pod,
                f.timeout.as_secs_f64()
            )),
        }
    }

    /// Waits up to `grace` for the exec's thread to end.
    fn wait_done(&self, grace: Duration) -> bool {
        !matches!(
            self.done.recv_timeout(grace),
            Err(RecvTimeoutError::Timeout)
        )
    }
}

impl LineStream for ExecStream {
    fn send(&mut self, text: &str) -> std::io::Result<()> {
        match &self.commands {
            Some(c) => c
                .send(Command::Write(text.as_bytes().to_vec()))
                .map_err(|_| std::io::ErrorKind::BrokenPipe.into()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn recv(&mut self, deadline: Instant) -> Recv {
        Recv::from_channel(&self.lines, deadline)
    }

    fn ended(&mut self) -> (String, String) {
        // The status comes right after the output, but on a loaded
        // machine the exec's thread may take a while to get there.
        self.wait_done(self.timeout.max(Duration::from_secs(5)));
        let e = self.ending.lock().unwrap_or_else(|e| e.into_inner());
        let status = e
            .status
            .clone()
            .unwrap_or_else(|| "the exec stream closed without a status".into());
        let mut said = e.stderr.trim().to_owned();
        if status.contains("executable file not found") || status.contains("no such file") {
            said = format!(
                "container {} has no `{}` in its image; name a container that has it with the pod annotation {FREEZE_CONTAINER_ANNOTATION}, or freeze with Velero hook annotations instead",
                self.container, self.client
            );
        }
        (status, said)
    }

    fn kill(&mut self) {
        // Dropping the sender ends the thread, which drops the stream: the
        // connection closes and the API server ends the exec. (The exec
        // protocol cannot signal the process; the client in the pod gets
        // the end of its input.)
        self.commands = None;
        self.wait_done(Duration::from_secs(5));
    }

    fn close(&mut self, grace: Duration) {
        if let Some(c) = &self.commands {
            let _ = c.send(Command::Close);
        }
        if !self.wait_done(grace) {
            self.kill();
        }
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        self.commands = None;
    }
}

/// What the exec thread needs.
struct Job {
    config: Config,
    namespace: String,
    pod: String,
    container: String,
    argv: Vec<String>,
    ending: Arc<Mutex<Ending>>,
}

impl Job {
    fn run(
        self,
        commands: UnboundedReceiver<Command>,
        lines: Sender<String>,
        opened: SyncSender<std::result::Result<(), String>>,
    ) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = opened.send(Err(format!("cannot start a runtime for the exec: {e}")));
                return;
            }
        };
        rt.block_on(self.stream(commands, lines, opened));
    }

    async fn stream(
        self,
        mut commands: UnboundedReceiver<Command>,
        lines: Sender<String>,
        opened: SyncSender<std::result::Result<(), String>>,
    ) {
        let (ns, pod, container) = (&self.namespace, &self.pod, &self.container);
        let client = match Client::try_from(self.config.clone()) {
            Ok(c) => c,
            Err(e) => {
                let _ = opened.send(Err(format!("cannot make a client for the exec: {e}")));
                return;
            }
        };
        let api: Api<Pod> = Api::namespaced(client, ns);
        let ap = AttachParams::default()
            .container(container.as_str())
            .stdin(true)
            .stdout(true)
            .stderr(true);
        let mut proc = match api.exec(pod, self.argv.clone(), &ap).await {
            Ok(p) => p,
            Err(e) => {
                let (why, next) = match &e {
                    kube::Error::Api(s) if s.code == 404 => (
                        s.message.clone(),
                        format!(
                            "the pod is gone (restarted or moved?): check it with `kubectl get pod -n {ns} {pod}` and snapshot again"
                        ),
                    ),
                    kube::Error::Api(s) if s.code == 403 => (
                        s.message.clone(),
                        format!(
                            "pvsnap's account needs the `create` verb on `pods/exec` in namespace {ns}"
                        ),
                    ),
                    kube::Error::Api(s) => (
                        s.message.clone(),
                        format!(
                            "check that the pod still runs (`kubectl get pod -n {ns} {pod}`) and that pvsnap may create pods/exec in namespace {ns}"
                        ),
                    ),
                    e => (
                        e.to_string(),
                        format!(
                            "check that the pod still runs (`kubectl get pod -n {ns} {pod}`) and that pvsnap may create pods/exec in namespace {ns}"
                        ),
                    ),
                };
                let _ = opened.send(Err(format!(
                    "exec into pod {ns}/{pod} container {container} failed: {why}; {next}"
                )));
                return;
            }
        };
        let _ = opened.send(Ok(()));
        let mut stdin = proc.stdin();
        let stdout = proc.stdout();
        let stderr = proc.stderr();
        let status = proc.take_status();
        let ending = self.ending.clone();
        let output = async move {
            let out = async {
                let Some(stdout) = stdout else { return };
                let mut r = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf);
                            let line = line.trim_end_matches(['\n', '\r']).to_owned();
                            // A gone reader: the session is over.
                            if lines.send(line).is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            let err = async {
                let Some(mut stderr) = stderr else { return };
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut e = ending.lock().unwrap_or_else(|e| e.into_inner());
                    if e.stderr.len() < 16 * 1024 {
                        e.stderr.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            };
            let st = async {
                match status {
                    Some(s) => s.await,
                    None => None,
                }
            };
            let ((), (), st) = tokio::join!(out, err, st);
            let text = st.map(|s| match interpret_status(&s) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(m)) => m,
                (None, None) => "ended without an exit status".into(),
            });
            ending.lock().unwrap_or_else(|e| e.into_inner()).status = text;
        };
        let control = async {
            while let Some(c) = commands.recv().await {
                match (c, stdin.as_mut()) {
                    (Command::Write(bytes), Some(w)) => {
                        if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                    (Command::Close, Some(w)) => {
                        let _ = w.shutdown().await;
                        stdin = None;
                    }
                    (_, None) => {}
                }
            }
        };
        tokio::select! {
            // The output and the status came: the client ended.
            () = output => {}
            // The session was dropped or killed: the stream goes with `proc`.
            () = control => {}
        }
        drop(proc);
    }
}
