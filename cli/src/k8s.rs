//! Glue between the command line and `pvsnap-k8s`: the Kubernetes flags,
//! a tokio runtime that exists only while a Kubernetes command runs (the
//! engine and every other command stay synchronous), claim names, and how
//! hook outcomes are shown. The workflows themselves are `pvsnap-ops`'s.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pvsnap_k8s::{ClaimRef, Cluster, ConnectOptions, HookOutcome, ResolveOptions};
pub use pvsnap_ops::claim_key;

/// Where MicroK8s's hostpath provisioner keeps volume directories.
pub const DEFAULT_STORAGE_DIR: &str = "/var/snap/microk8s/common/default-storage";

/// Flags shared by the commands that talk to a cluster.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Kubernetes")]
pub struct KubeArgs {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, MicroK8s's client config, then the pod's service account)
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Where the host's root file system is mounted when pvsnap runs in a pod (e.g. /host); volume paths are looked up below it
    #[arg(long, value_name = "PREFIX")]
    pub host_root: Option<PathBuf>,
    /// This machine's Kubernetes node name; volumes pinned to another node are refused (default: the host name)
    #[arg(long, value_name = "NAME", env = "PVSNAP_NODE")]
    pub node: Option<String>,
}

impl KubeArgs {
    pub fn node_name(&self) -> String {
        self.node
            .clone()
            .unwrap_or_else(pvsnap_engine::repo::hostname_public)
    }

    pub fn resolve_options(&self) -> ResolveOptions {
        ResolveOptions {
            node_name: self.node_name(),
            host_root: self.host_root.clone(),
        }
    }
}

/// A runtime and, when asked for, a cluster connection.
pub struct Kube {
    rt: tokio::runtime::Runtime,
    cluster: Option<Cluster>,
}

impl Kube {
    /// A runtime only (host hooks without any claim).
    pub fn runtime_only() -> Result<Kube> {
        pvsnap_k8s::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime for Kubernetes requests")?;
        Ok(Kube { rt, cluster: None })
    }

    /// A runtime and a client for the cluster the flags name. No request is
    /// sent yet.
    pub fn connect(args: &KubeArgs) -> Result<Kube> {
        let mut k = Kube::runtime_only()?;
        let opts = ConnectOptions {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
        };
        k.cluster = Some(k.rt.block_on(pvsnap_k8s::connect(opts))?);
        Ok(k)
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The cluster; only call after [`Kube::connect`].
    pub fn connected(&self) -> &Cluster {
        self.cluster.as_ref().expect("Kube::connect was called")
    }
}

/// Parses `NAMESPACE/NAME`.
pub fn parse_claim(s: &str) -> Result<ClaimRef> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ClaimRef {
                namespace: ns.to_string(),
                name: name.to_string(),
            })
        }
        _ => bail!("`{s}` is not NAMESPACE/NAME of a persistentvolumeclaim"),
    }
}

/// `pvc/NAMESPACE/NAME` as a snapshot source argument; `None` for a folder.
pub fn claim_argument(arg: &std::path::Path) -> Option<Result<ClaimRef>> {
    let rest = arg.to_str()?.strip_prefix("pvc/")?;
    Some(parse_claim(rest).with_context(|| {
        format!(
            "{}: claims are written pvc/NAMESPACE/NAME (for a folder of that name, write ./{})",
            arg.display(),
            arg.display()
        )
    }))
}

/// Parses durations such as `90s`, `5m` or `1m30s` (the reader `--grace`
/// and keep-within use too).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::cmd::maintenance::parse_duration(s)
}

/// One line per hook: `pre hook in pod ns/p container c: ok (12 ms)`.
pub fn hook_line(o: &HookOutcome) -> String {
    let status = if o.ok {
        "ok".to_string()
    } else {
        format!("FAILED: {}", o.error.as_deref().unwrap_or("unknown error"))
    };
    format!(
        "{} hook on {} `{}`: {status} ({} ms)",
        o.phase,
        o.target(),
        o.command.join(" "),
        o.duration_ms
    )
}

/// Hook outcomes recorded in a snapshot, for display.
pub fn recorded_hooks(hooks: &[serde_json::Value]) -> Vec<HookOutcome> {
    hooks
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// Asks on the terminal; refuses when standard input is not one.
pub fn confirm(question: &str, refusal: &str) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!("{refusal}: standard input is not a terminal to ask on; pass --yes to go ahead");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        bail!("{refusal}: not confirmed")
    }
}
