//! Finding a configuration: the search order and what an error says.

use std::path::Path;

use pvsnap_k8s::testing::fake::{self, FakeCluster};
use pvsnap_k8s::{ConfigSource, ConfigSources, ConnectOptions, Error, Scope, connect_with};

use crate::scenario::{Scenario, claim, write};

#[tokio::test]
async fn explicit_kubeconfig_connects_and_names_cluster_after_context() {
    let s = Scenario::fixtures().await;
    assert_eq!(s.cluster.name(), fake::CONTEXT);
    assert!(matches!(s.cluster.source(), ConfigSource::Explicit(_)));
    // The client really talks to the fake (with the kubeconfig's token).
    let claims = s
        .cluster
        .list_claims(Scope::Namespace("db".into()), None)
        .await
        .unwrap();
    assert_eq!(claims, vec![claim("db", "data-postgres-0")]);
}

#[tokio::test]
async fn explicit_kubeconfig_is_the_only_source_tried() {
    let fake = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A perfectly good ~/.kube/config exists, but --kubeconfig wins alone.
    write(
        &dir.path().join("home/.kube/config"),
        &fake::kubeconfig_yaml(fake.addr, "home"),
    );
    let mut sources = ConfigSources::empty_under(dir.path());
    sources.home = Some(dir.path().join("home"));
    let missing = dir.path().join("nope.yaml");
    let err = connect_with(
        ConnectOptions {
            kubeconfig: Some(missing.clone()),
            context: None,
        },
        &sources,
    )
    .await
    .unwrap_err();
    let Error::NoConfig { attempts } = &err else {
        panic!("unexpected {err}")
    };
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(
        attempts[0].source,
        format!("--kubeconfig {}", missing.display())
    );
    assert!(
        attempts[0].reason.contains("does not exist"),
        "{}",
        attempts[0].reason
    );
    assert!(err.to_string().contains("next step"), "{err}");
}

#[tokio::test]
async fn search_order_error_lists_every_source_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut sources = ConfigSources::empty_under(dir.path());
    let env_file = dir.path().join("env.yaml");
    write(&env_file, "this: [is not a kubeconfig");
    sources.kubeconfig_env = Some(env_file.clone().into_os_string());
    sources.home = Some(dir.path().join("home"));
    sources.service_host = Some("10.152.183.1".into());
    sources.service_port = Some("443".into());
    let err = connect_with(ConnectOptions::default(), &sources)
        .await
        .unwrap_err();
    let Error::NoConfig { attempts } = &err else {
        panic!("unexpected {err}")
    };
    let order: Vec<&str> = attempts.iter().map(|a| a.source.as_str()).collect();
    let home_cfg = dir.path().join("home/.kube/config");
    assert_eq!(
        order,
        vec![
            format!("KUBECONFIG={}", env_file.display()).as_str(),
            home_cfg.display().to_string().as_str(),
            format!(
                "MicroK8s config {}",
                dir.path().join("microk8s/client.config").display()
            )
            .as_str(),
            "in-cluster service account",
        ]
    );
    assert!(
        attempts[0].reason.contains("env.yaml"),
        "{}",
        attempts[0].reason
    );
    assert!(attempts[1].reason.contains("does not exist"));
    assert!(attempts[2].reason.contains("does not exist"));
    assert!(
        attempts[3].reason.contains("no service account token"),
        "{}",
        attempts[3].reason
    );
    let text = err.to_string();
    for a in attempts {
        assert!(
            text.contains(&a.source) && text.contains(&a.reason),
            "{text}"
        );
    }
}

#[tokio::test]
async fn unset_sources_are_reported_too() {
    let dir = tempfile::tempdir().unwrap();
    let err = connect_with(
        ConnectOptions::default(),
        &ConfigSources::empty_under(dir.path()),
    )
    .await
    .unwrap_err();
    let Error::NoConfig { attempts } = &err else {
        panic!("unexpected {err}")
    };
    assert_eq!(attempts[0].source, "KUBECONFIG");
    assert_eq!(attempts[0].reason, "not set");
    assert_eq!(attempts[1].reason, "HOME is not set");
    assert!(
        attempts[3].reason.contains("KUBERNETES_SERVICE_HOST"),
        "{:?}",
        attempts[3]
    );
}

/// A kubeconfig a source offers.
#[derive(Clone, Copy)]
enum Offer {
    /// None there.
    Absent,
    /// A path that does not exist.
    Missing,
    /// A kubeconfig for the fake, with this context.
    Context(&'static str),
}

/// The first source that holds a usable kubeconfig wins:
/// `KUBECONFIG`, then `~/.kube/config`, then MicroK8s's client config.
#[tokio::test]
async fn the_first_usable_source_wins() {
    type Chosen = fn(&ConfigSource, &ConfigSources) -> bool;
    let cases: [(&str, [Offer; 3], &str, Chosen); 3] = [
        (
            "a broken KUBECONFIG falls through to home",
            [Offer::Missing, Offer::Context("home-ctx"), Offer::Absent],
            "home-ctx",
            |c, _| matches!(c, ConfigSource::Home(_)),
        ),
        (
            "KUBECONFIG comes before home and MicroK8s",
            [
                Offer::Context("env-ctx"),
                Offer::Context("home-ctx"),
                Offer::Context("microk8s"),
            ],
            "env-ctx",
            |c, _| matches!(c, ConfigSource::KubeconfigEnv(p) if p.len() == 1),
        ),
        (
            "MicroK8s's config when the user has none",
            [Offer::Absent, Offer::Absent, Offer::Context("microk8s")],
            "microk8s",
            |c, sources| c == &ConfigSource::MicroK8s(sources.microk8s_config.clone()),
        ),
    ];
    for (case, [env, home, microk8s], context, chosen) in cases {
        let fake = FakeCluster::with_fixtures().await;
        let dir = tempfile::tempdir().unwrap();
        let mut sources = ConfigSources::empty_under(dir.path());
        sources.home = Some(dir.path().join("home"));
        let offer = |path: &Path, offer: Offer| {
            if let Offer::Context(c) = offer {
                write(path, &fake::kubeconfig_yaml(fake.addr, c));
            }
        };
        let env_file = dir.path().join("env.yaml");
        if !matches!(env, Offer::Absent) {
            sources.kubeconfig_env = Some(env_file.clone().into_os_string());
        }
        offer(&env_file, env);
        offer(&dir.path().join("home/.kube/config"), home);
        offer(&sources.microk8s_config, microk8s);
        let cluster = connect_with(ConnectOptions::default(), &sources)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(cluster.name(), context, "{case}");
        assert!(chosen(cluster.source(), &sources), "{case}");
        // The client really talks to the fake.
        let db = cluster
            .list_claims(Scope::Namespace("db".into()), None)
            .await
            .unwrap();
        assert_eq!(db.len(), 1, "{case}");
        let all = cluster
            .list_claims(Scope::AllNamespaces, None)
            .await
            .unwrap();
        assert!(!all.is_empty(), "{case}");
    }
}

#[tokio::test]
async fn missing_context_is_named_with_the_known_ones() {
    let fake = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let err = connect_with(
        ConnectOptions {
            kubeconfig: Some(fake.kubeconfig()),
            context: Some("prod".into()),
        },
        &ConfigSources::empty_under(dir.path()),
    )
    .await
    .unwrap_err();
    let Error::NoConfig { attempts } = &err else {
        panic!("unexpected {err}")
    };
    assert_eq!(
        attempts[0].reason,
        format!("context \"prod\" not found (contexts: {})", fake::CONTEXT)
    );
}

#[tokio::test]
async fn in_cluster_service_account_is_the_last_resort() {
    let dir = tempfile::tempdir().unwrap();
    let mut sources = ConfigSources::empty_under(dir.path());
    let sa = &sources.service_account_dir;
    write(&sa.join("token"), "sa-token");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ca.crt"),
        sa.join("ca.crt"),
    )
    .unwrap();
    write(&sa.join("namespace"), "backup\n");
    sources.service_host = Some("10.152.183.1".into());
    sources.service_port = Some("443".into());
    let cluster = connect_with(ConnectOptions::default(), &sources)
        .await
        .unwrap();
    assert_eq!(cluster.name(), "in-cluster");
    assert_eq!(cluster.source(), &ConfigSource::InCluster);
    assert_eq!(cluster.client().default_namespace(), "backup");

    // A bad port is a reason, not a crash.
    sources.service_port = Some("https".into());
    let err = connect_with(ConnectOptions::default(), &sources)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("KUBERNETES_SERVICE_PORT \"https\" is not a port"),
        "{err}"
    );
}

#[test]
fn crypto_provider_install_is_idempotent() {
    pvsnap_k8s::install_crypto_provider();
    pvsnap_k8s::install_crypto_provider();
    let p = rustls::crypto::CryptoProvider::get_default().expect("a provider is installed");
    assert!(!p.cipher_suites.is_empty());
}
