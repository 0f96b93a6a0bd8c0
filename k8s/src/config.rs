//! Finding a cluster configuration and connecting to the API server.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result, SourceAttempt};

/// Where MicroK8s keeps the admin kubeconfig of the node.
pub const MICROK8S_CLIENT_CONFIG: &str = "/var/snap/microk8s/current/credentials/client.config";

/// Where a pod finds its service account credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the caller asked for on its command line.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// An explicit kubeconfig file (`--kubeconfig`). When given, it is the
    /// only source tried.
    pub kubeconfig: Option<PathBuf>,
    /// The context to use instead of the file's `current-context`.
    pub context: Option<String>,
}

/// The places [`connect`] looks at, after an explicit `--kubeconfig`.
///
/// [`ConfigSources::default`] reads them from the process environment; tests
/// build one by hand so that nothing depends on the machine they run on.
#[derive(Debug, Clone)]
pub struct ConfigSources {
    /// Value of `KUBECONFIG` (a list of files separated like `PATH`).
    pub kubeconfig_env: Option<OsString>,
    /// The home directory, for `~/.kube/config`.
    pub home: Option<PathBuf>,
    /// MicroK8s's own admin kubeconfig.
    pub microk8s_config: PathBuf,
    /// `KUBERNETES_SERVICE_HOST` of a pod.
    pub service_host: Option<String>,
    /// `KUBERNETES_SERVICE_PORT` of a pod.
    pub service_port: Option<String>,
    /// Directory holding `token`, `ca.crt` and `namespace` of the pod's
    /// service account.
    pub service_account_dir: PathBuf,
}

impl Default for ConfigSources {
    fn default() -> Self {
        ConfigSources {
            kubeconfig_env: std::env::var_os("KUBECONFIG"),
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
            microk8s_config: PathBuf::from(MICROK8S_CLIENT_CONFIG),
            service_host: std::env::var("KUBERNETES_SERVICE_HOST").ok(),
            service_port: std::env::var("KUBERNETES_SERVICE_PORT").ok(),
            service_account_dir: PathBuf::from(SERVICE_ACCOUNT_DIR),
        }
    }
}

impl ConfigSources {
    /// Sources that find nothing: no environment, no home, and paths that do
    /// not exist under `root`. Handy as a base for tests.
    pub fn empty_under(root: &Path) -> Self {
        ConfigSources {
            kubeconfig_env: None,
            home: None,
            microk8s_config: root.join("microk8s/client.config"),
            service_host: None,
            service_port: None,
            service_account_dir: root.join("serviceaccount"),
        }
    }
}

/// The configuration source that [`connect`] used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--kubeconfig FILE`.
    Explicit(PathBuf),
    /// The files named by `KUBECONFIG`.
    KubeconfigEnv(Vec<PathBuf>),
    /// `~/.kube/config`.
    Home(PathBuf),
    /// MicroK8s's admin kubeconfig.
    MicroK8s(PathBuf),
    /// The pod's service account.
    InCluster,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Explicit(p) => write!(f, "--kubeconfig {}", p.display()),
            ConfigSource::KubeconfigEnv(ps) => {
                let list: Vec<String> = ps.iter().map(|p| p.display().to_string()).collect();
                write!(f, "KUBECONFIG={}", list.join(":"))
            }
            ConfigSource::Home(p) => write!(f, "{}", p.display()),
            ConfigSource::MicroK8s(p) => write!(f, "MicroK8s config {}", p.display()),
            ConfigSource::InCluster => write!(f, "in-cluster service account"),
        }
    }
}

/// A connection to one cluster.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) client: Client,
    name: String,
    source: ConfigSource,
    /// The configuration the client was made from, for clients of other
    /// runtimes (a database freeze runs its exec on a thread of its own).
    pub(crate) config: Option<Config>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Wrap an existing client. `name` is recorded in resolved claims.
    pub fn from_client(client: Client, name: impl Into<String>, source: ConfigSource) -> Self {
        Cluster {
            client,
            name: name.into(),
            source,
            config: None,
        }
    }

    /// The cluster's name: the kubeconfig context used, or `in-cluster`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the configuration came from.
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// The underlying client, for requests this crate does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Connect using the process environment; see [`connect_with`].
pub async fn connect(opts: ConnectOptions) -> Result<Cluster> {
    connect_with(opts, &ConfigSources::default()).await
}

/// Find a configuration and build a client.
///
/// Order: `opts.kubeconfig` (alone: when given, no other source is tried, so
/// a typo never silently selects another cluster), then `KUBECONFIG`,
/// `~/.kube/config`, MicroK8s's admin kubeconfig, and the in-cluster service
/// account. A source that is missing or unusable (unreadable, unparsable,
/// lacking the requested context) is skipped; if none works, the error lists
/// every source with its reason. No request is sent to the server here.
pub async fn connect_with(opts: ConnectOptions, sources: &ConfigSources) -> Result<Cluster> {
    crate::install_crypto_provider();
    let context = opts.context.as_deref();
    let mut attempts = Vec::new();

    let candidates: Vec<ConfigSource> = if let Some(path) = &opts.kubeconfig {
        vec![ConfigSource::Explicit(path.clone())]
    } else {
        let mut c = Vec::new();
        match &sources.kubeconfig_env {
            Some(v) => {
                let paths: Vec<PathBuf> = std::env::split_paths(v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect();
                if paths.is_empty() {
                    attempts.push(SourceAttempt {
                        source: "KUBECONFIG".into(),
                        reason: "set but empty".into(),
                    });
                } else {
                    c.push(ConfigSource::KubeconfigEnv(paths));
                }
            }
            None => attempts.push(SourceAttempt {
                source: "KUBECONFIG".into(),
                reason: "not set".into(),
            }),
        }
        match &sources.home {
            Some(h) => c.push(ConfigSource::Home(h.join(".kube").join("config"))),
            None => attempts.push(SourceAttempt {
                source: "~/.kube/config".into(),
                reason: "HOME is not set".into(),
            }),
        }
        c.push(ConfigSource::MicroK8s(sources.microk8s_config.clone()));
        c.push(ConfigSource::InCluster);
        c
    };

    for candidate in candidates {
        let loaded = match &candidate {
            ConfigSource::Explicit(p) | ConfigSource::Home(p) | ConfigSource::MicroK8s(p) => {
                load_kubeconfig(std::slice::from_ref(p), context).await
            }
            ConfigSource::KubeconfigEnv(ps) => load_kubeconfig(ps, context).await,
            ConfigSource::InCluster => load_in_cluster(sources),
        };
        match loaded {
            Ok((config, name)) => {
                tracing::info!(source = %candidate, cluster = %name, server = %config.cluster_url, "using Kubernetes configuration");
                let client = Client::try_from(config.clone()).map_err(|source| Error::Client {
                    source_name: candidate.to_string(),
                    source,
                })?;
                let mut cluster = Cluster::from_client(client, name, candidate);
                cluster.config = Some(config);
                return Ok(cluster);
            }
            Err(reason) => {
                tracing::debug!(source = %candidate, %reason, "configuration source not usable");
                attempts.push(SourceAttempt {
                    source: candidate.to_string(),
                    reason,
                });
            }
        }
    }
    Err(Error::NoConfig { attempts })
}

/// Read and merge kubeconfig files; returns the config and the context name.
async fn load_kubeconfig(
    paths: &[PathBuf],
    context: Option<&str>,
) -> std::result::Result<(Config, String), String> {
    let mut merged: Option<Kubeconfig> = None;
    for path in paths {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("{} does not exist", path.display()));
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            Ok(_) => {}
        }
        let kc = Kubeconfig::read_from(path).map_err(|e| match &e {
            kube::config::KubeconfigError::ReadConfig(io, _)
                if io.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                format!(
                    "permission denied reading {} (run as root?)",
                    path.display()
                )
            }
            _ => format!("{}: {e}", path.display()),
        })?;
        merged = Some(match merged {
            None => kc,
            Some(m) => m.merge(kc).map_err(|e| e.to_string())?,
        });
    }
    let kc = merged.ok_or_else(|| "no file".to_string())?;
    let name = match context {
        Some(c) => {
            if !kc.contexts.iter().any(|nc| nc.name == c) {
                let known: Vec<&str> = kc.contexts.iter().map(|nc| nc.name.as_str()).collect();
                return Err(format!(
                    "context {c:?} not found (contexts: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            c.to_string()
        }
        None => kc
            .current_context
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| "no current-context set and no --context given".to_string())?,
    };
    let options = KubeConfigOptions {
        context: Some(name.clone()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|e| e.to_string())?;
    Ok((config, name))
}

/// Build an in-cluster configuration from the pod's environment and its
/// service account files.
fn load_in_cluster(sources: &ConfigSources) -> std::result::Result<(Config, String), String> {
    let host = sources
        .service_host
        .as_deref()
        .filter(|h| !h.is_empty())
        .ok_or("KUBERNETES_SERVICE_HOST is not set (not running in a pod)")?;
    let port = sources
        .service_port
        .as_deref()
        .ok_or("KUBERNETES_SERVICE_PORT is not set")?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("KUBERNETES_SERVICE_PORT {port:?} is not a port: {e}"))?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url: http::Uri = format!("https://{host}:{port}")
        .parse()
        .map_err(|e| format!("bad API server address {host}:{port}: {e}"))?;
    let dir = &sources.service_account_dir;
    let token = dir.join("token");
    if !token.is_file() {
        return Err(format!("no service account token at {}", token.display()));
    }
    let ca = dir.join("ca.crt");
    let ca_pem =
        std::fs::read(&ca).map_err(|e| format!("cannot read CA bundle {}: {e}", ca.display()))?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&ca_pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("bad CA bundle {}: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", ca.display()));
    }
    let namespace = std::fs::read_to_string(dir.join("namespace"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "default".to_string());
    let mut config = Config::new(url);
    config.default_namespace = namespace;
    config.root_cert = Some(certs);
    config.auth_info = AuthInfo {
        token_file: Some(token.display().to_string()),
        ..Default::default()
    };
    Ok((config, "in-cluster".to_string()))
}
