//! The Prometheus rules and the Grafana dashboard in deploy/: `promtool
//! check rules` and `promtool test rules` pass, every metric they use is one
//! pvsnap exports, and a real Prometheus scrapes pvsnap's metrics, loads the
//! rules and puts a never-snapshotted source's alert in pending. The scrape
//! target is `pvsnap serve --listen` on a repository that holds a snapshot,
//! a check, a drill and a failed run of a second source. The tests
//! skip loudly when Prometheus is not installed, unless
//! PVSNAP_REQUIRE_PROMETHEUS=1 (set by scripts/test).

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pvsnap_engine::backend::s3_test_server::free_port;
use serde_json::Value;

use crate::serve::Serve;
use crate::util::{Env, stderr, stdout};

/// The metric names of issue #22, a contract: the alerts and the dashboard
/// use only these, and `pvsnap metrics` must export them.
pub(crate) const CONTRACT_METRICS: &[&str] = &[
    "pvsnap_last_snapshot_timestamp_seconds",
    "pvsnap_last_snapshot_duration_seconds",
    "pvsnap_last_snapshot_added_bytes",
    "pvsnap_snapshots",
    "pvsnap_snapshot_failures_total",
    "pvsnap_repository_stored_bytes",
    "pvsnap_repository_raw_bytes",
    "pvsnap_repository_free_bytes",
    "pvsnap_last_check_timestamp_seconds",
    "pvsnap_last_check_success",
    "pvsnap_native_snapshot_usage_ratio",
    "pvsnap_last_drill_timestamp_seconds",
    "pvsnap_last_drill_rto_seconds",
];

/// Exported only after a read through an LVM snapshot, which these tests
/// cannot take (no device-mapper here).
const NEEDS_LVM: &[&str] = &["pvsnap_native_snapshot_usage_ratio"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A tool of Debian's `prometheus` package, or `None` after saying loudly
/// that the test skips (a failure under PVSNAP_REQUIRE_PROMETHEUS=1).
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        let required = std::env::var("PVSNAP_REQUIRE_PROMETHEUS").as_deref() == Ok("1");
        assert!(
            !required,
            "{name} is not installed but PVSNAP_REQUIRE_PROMETHEUS=1: install Debian's `prometheus` package (scripts/test does, as root)"
        );
        eprintln!(
            "\n*** SKIPPED: {name} is not installed (Debian package `prometheus`); the Prometheus tests did not run ***\n"
        );
    }
    found
}

fn alert_rules() -> Vec<Value> {
    let text = fs::read_to_string(deploy_dir().join("prometheus/alerts.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).expect("alerts.yaml is YAML");
    doc["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

/// Every PromQL query of the dashboard, with the `source` variable as "all".
fn dashboard_queries() -> Vec<String> {
    let text = fs::read_to_string(deploy_dir().join("grafana/pvsnap.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("pvsnap.json is JSON");
    let vars = dash["templating"]["list"].as_array().expect("variables");
    assert!(
        vars.iter()
            .any(|v| v["name"] == "source" && v["type"] == "query"),
        "the dashboard has a `source` variable"
    );
    let mut out: Vec<String> = vars
        .iter()
        .filter_map(|v| v["definition"].as_str())
        .map(|q| {
            q.trim_start_matches("label_values(")
                .split(',')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            out.push(t["expr"].as_str().expect("expr").replace("$source", ".*"));
        }
    }
    out
}

/// The `pvsnap_…` names a query mentions.
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = query;
    while let Some(i) = rest.find("pvsnap_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = deploy_dir().join("prometheus");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    // Every alert has a case that fires and one that does not.
    let tests = fs::read_to_string(dir.join("alerts.test.yaml")).unwrap();
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap();
        let cases: Vec<&str> = tests
            .split("alertname: ")
            .skip(1)
            .filter(|c| c.starts_with(&format!("{name}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_labels")),
            "{name}: no test where it fires"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{name}: no test where it does not fire"
        );
        for key in ["summary", "runbook"] {
            assert!(rule["annotations"][key].is_string(), "{name}: no {key}");
        }
        assert!(rule["for"].is_string(), "{name}: no `for:`");
        assert!(
            rule["labels"]["severity"].is_string(),
            "{name}: no severity"
        );
    }
}

/// The names pvsnap exports: from `pvsnap metrics` when the command
/// exists, else the contract list.
fn exported_metrics(promtool: Option<&Path>) -> BTreeSet<String> {
    let env = Env::new();
    if !env.run(&["metrics", "--help"]).status.success() {
        eprintln!(
            "prometheus.rs: `pvsnap metrics` does not exist; comparing against the contract list"
        );
        return CONTRACT_METRICS.iter().map(|s| s.to_string()).collect();
    }
    eprintln!("prometheus.rs: comparing against the output of `pvsnap metrics`");
    env.init();
    let data = env.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("file"), b"content").unwrap();
    env.snapshot(&data, &[]);
    env.ok(&["check"]);
    env.ok(&["drill", "--source", data.to_str().unwrap()]);
    let out = env.ok(&["metrics"]);
    if let Some(promtool) = promtool {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let check = child.wait_with_output().unwrap();
        assert!(
            check.status.success(),
            "promtool check metrics: {}{}",
            stdout(&check),
            stderr(&check)
        );
    }
    let mut names: BTreeSet<String> = stdout(&out)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    for name in CONTRACT_METRICS {
        assert!(
            names.contains(*name) || NEEDS_LVM.contains(name),
            "`pvsnap metrics` does not export the contract metric {name}"
        );
    }
    names.extend(NEEDS_LVM.iter().map(|s| s.to_string()));
    names
}

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let promtool = tool("promtool");
    let exported = exported_metrics(promtool.as_deref());
    let mut used = BTreeSet::new();
    for (what, query) in alert_rules()
        .iter()
        .map(|r| {
            (
                format!("alert {}", r["alert"].as_str().unwrap()),
                r["expr"].as_str().unwrap().to_string(),
            )
        })
        .chain(
            dashboard_queries()
                .into_iter()
                .map(|q| ("dashboard".into(), q)),
        )
    {
        for name in metric_names(&query) {
            assert!(
                CONTRACT_METRICS.contains(&name.as_str()) && exported.contains(&name),
                "{what} uses {name}, which pvsnap does not export: {query}"
            );
            used.insert(name);
        }
    }
    // And nothing exported goes unwatched.
    for name in CONTRACT_METRICS {
        assert!(
            used.contains(*name),
            "neither an alert nor the dashboard uses {name}"
        );
    }
}

/// A Prometheus process, killed when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(bin: &Path, dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        let rules = deploy_dir().join("prometheus/alerts.yaml");
        fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 2s, scrape_timeout: 2s, evaluation_interval: 1s}}\n\
                 rule_files: [{rules:?}]\n\
                 scrape_configs:\n  - job_name: pvsnap\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Prometheus { child, addr, log }
    }

    /// GET `path` from the HTTP API, as JSON (`None` while it is not up).
    fn get(&self, path: &str) -> Option<Value> {
        let mut conn = TcpStream::connect(&self.addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(conn, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).ok()?;
        let mut resp = String::new();
        conn.read_to_string(&mut resp).ok()?;
        let (_, body) = resp.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    fn query(&self, promql: &str) -> Option<Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.get(&format!("/api/v1/query?query={encoded}"))
    }

    /// Polls `probe` until it returns `Some`, for at most a minute.
    fn wait_for<T>(&mut self, what: &str, probe: impl Fn(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "prometheus exited ({status}): {}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: no {what} within 60 s; its log:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn real_prometheus_scrapes_and_loads_the_rules() {
    let Some(bin) = tool("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A repository with a snapshot, a check and a drill of one source, and
    // a failed run of another that never succeeded.
    let env = Env::new();
    env.init();
    let app = env.path("app");
    fs::create_dir(&app).unwrap();
    fs::write(app.join("file"), b"content").unwrap();
    env.snapshot(&app, &[]);
    env.ok(&["check"]);
    env.ok(&["drill", "--source", app.to_str().unwrap()]);
    let missing = env.path("never");
    let failed = env.run(&["snapshot", missing.to_str().unwrap()]);
    assert!(
        !failed.status.success(),
        "a missing folder: {}",
        stderr(&failed)
    );
    let (snapshotted, never_snapshotted) =
        (app.display().to_string(), missing.display().to_string());

    let serve = Serve::start(&env, &["--listen", "127.0.0.1:0"]);
    let mut prom = Prometheus::start(&bin, dir.path(), &serve.addr());

    // The series arrive, one per source.
    let sources = prom.wait_for("scraped series", |p| {
        let v = p.query("pvsnap_last_snapshot_timestamp_seconds")?;
        let result = v["data"]["result"].as_array()?;
        let sources: BTreeSet<String> = result
            .iter()
            .filter_map(|s| s["metric"]["source"].as_str().map(str::to_string))
            .collect();
        (sources.len() == 2).then_some(sources)
    });
    assert_eq!(
        sources,
        BTreeSet::from([snapshotted.clone(), never_snapshotted.clone()])
    );
    // The failed run is counted, and the never-snapshotted source's
    // timestamp is 0 (so the alert below fires).
    for (metric, want) in [
        ("pvsnap_snapshot_failures_total", "1"),
        ("pvsnap_last_snapshot_timestamp_seconds", "0"),
    ] {
        let v = prom.query(&format!("{metric}{{source=\"{never_snapshotted}\"}}"));
        let v = v.expect("an answer");
        assert_eq!(v["data"]["result"][0]["value"][1], want, "{metric}: {v}");
    }

    // All rules load and are healthy; the never-snapshotted source's alert
    // is pending (its `for:` is 24 h), the snapshotted one raises none.
    let want = alert_rules().len();
    let rules = prom.wait_for("pending alert", |p| {
        let v = p.get("/api/v1/rules")?;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let never = rules
            .iter()
            .find(|r| r["name"] == "PvsnapSourceNeverSnapshotted")?;
        (never["state"] == "pending").then_some(rules)
    });
    assert_eq!(rules.len(), want, "{rules:#?}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r:#}");
    }
    let never = rules
        .iter()
        .find(|r| r["name"] == "PvsnapSourceNeverSnapshotted")
        .unwrap();
    let alerts = never["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{never:#}");
    assert_eq!(alerts[0]["labels"]["source"], never_snapshotted.as_str());
    let host = alerts[0]["labels"]["host"].as_str().unwrap_or_default();
    assert!(!host.is_empty(), "the alert names the host: {never:#}");
    let too_old = rules
        .iter()
        .find(|r| r["name"] == "PvsnapSnapshotTooOld")
        .unwrap();
    assert_eq!(too_old["state"], "inactive", "{too_old:#}");

    // Every alert expression and dashboard query is valid PromQL, and the
    // dashboard's queries find data.
    for rule in alert_rules() {
        let expr = rule["expr"].as_str().unwrap();
        let v = prom.query(expr).expect("an answer");
        assert_eq!(v["status"], "success", "{expr}: {v}");
    }
    for q in dashboard_queries() {
        let v = prom.query(&q).expect("an answer");
        assert_eq!(v["status"], "success", "{q}: {v}");
        if metric_names(&q)
            .iter()
            .all(|m| NEEDS_LVM.contains(&m.as_str()))
        {
            eprintln!(
                "prometheus.rs: NOT CHECKED for data (needs an LVM snapshot, which cannot be taken here): {q}"
            );
            continue;
        }
        // A rate needs two scrapes: wait for data.
        prom.wait_for(&format!("data for the dashboard query {q}"), |p| {
            let v = p.query(&q)?;
            (!v["data"]["result"].as_array()?.is_empty()).then_some(())
        });
    }
    let (status, err) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{err}");
}
