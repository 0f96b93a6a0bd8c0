//! Pod hooks: Velero annotations read and run over exec.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pvsnap_k8s::testing::fake::FakeCluster;
use pvsnap_k8s::testing::fixtures::*;
use pvsnap_k8s::{HookOutcome, HookPhase, OnError, parse_go_duration, pod_hook};

use crate::scenario::{Answer, Scenario, argv, json_array};

#[tokio::test]
async fn pods_mounting_finds_running_pods_with_their_owner() {
    let s = Scenario::fixtures().await;
    let pods = s.pods("db", "data-postgres-0").await;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].name, "postgres-0");
    assert_eq!(pods[0].containers, argv(&["postgres", "metrics"]));
    assert_eq!(pods[0].owner.as_deref(), Some("StatefulSet/postgres"));
    // The Succeeded job is not hooked; the web pods are.
    let names: Vec<String> = s
        .pods("default", "data")
        .await
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, argv(&WEB_PODS));
}

/// Scripts what `command` answers in the PostgreSQL pod's main container.
fn postgres(s: Scenario, command: &[&str], answer: Answer) -> Scenario {
    s.answer("postgres-0", "postgres", command, answer)
}

/// What running the hooks of the PostgreSQL pod gave.
struct Ran<'a> {
    pre: Vec<HookOutcome>,
    post: Vec<HookOutcome>,
    fake: &'a FakeCluster,
    took: Duration,
}

/// One scenario of the PostgreSQL pod's hooks: how the fixtures are
/// changed, which phases run (in order), and what must come out.
struct ExecCase {
    name: &'static str,
    given: fn(Scenario) -> Scenario,
    phases: &'static [HookPhase],
    then: fn(&Ran),
}

const PRE: &[HookPhase] = &[HookPhase::Pre];
const POST: &[HookPhase] = &[HookPhase::Post];
const BOTH: &[HookPhase] = &[HookPhase::Pre, HookPhase::Post];

fn exec_cases() -> Vec<ExecCase> {
    vec![
        ExecCase {
            name: "a pre hook runs over exec and reports its output",
            given: |s| {
                postgres(
                    s,
                    &PG_PRE,
                    Answer::exit(0)
                        .stdout("CHECKPOINT\n")
                        .stderr("notice: done\n"),
                )
            },
            phases: PRE,
            then: |r| {
                assert_eq!(r.pre.len(), 1);
                let o = &r.pre[0];
                assert!(o.ok, "{o:?}");
                assert_eq!(o.exit_code, Some(0));
                assert_eq!(o.command, argv(&PG_PRE));
                assert_eq!(o.container.as_deref(), Some("postgres"));
                assert_eq!(o.pod.as_deref(), Some("postgres-0"));
                assert_eq!(o.stdout_tail, "CHECKPOINT\n");
                assert_eq!(o.stderr_tail, "notice: done\n");
                assert_eq!(o.on_error, OnError::Fail);
                let execs = r.fake.execs();
                assert_eq!(execs.len(), 1);
                assert_eq!(execs[0].namespace, "db");
                assert_eq!(execs[0].protocol, "v5.channel.k8s.io");
            },
        },
        ExecCase {
            name: "a non-zero exit code comes from the status channel",
            given: |s| {
                postgres(
                    s,
                    &PG_PRE,
                    Answer::exit(2).stderr("psql: error: connection refused\n"),
                )
            },
            phases: PRE,
            then: |r| {
                let o = &r.pre[0];
                assert!(!o.ok);
                assert_eq!(o.exit_code, Some(2));
                assert_eq!(o.error.as_deref(), Some("command exited with code 2"));
                assert!(o.stderr_tail.contains("connection refused"));
                assert!(o.is_fatal());
            },
        },
        ExecCase {
            // Nothing scripted: the fake answers like a missing executable.
            name: "a failure without exit code keeps the server's message",
            given: |s| s,
            phases: POST,
            then: |r| {
                let o = &r.post[0];
                assert!(!o.ok);
                assert_eq!(o.exit_code, None);
                assert!(
                    o.error
                        .as_deref()
                        .unwrap()
                        .contains("executable file not found"),
                    "{o:?}"
                );
            },
        },
        ExecCase {
            name: "large output is kept bounded to its tail",
            given: |s| {
                let mut big = Vec::new();
                for i in 0..20_000 {
                    big.extend_from_slice(format!("line {i}\n").as_bytes());
                }
                postgres(s, &PG_PRE, Answer::exit(0).stdout(big))
            },
            phases: PRE,
            then: |r| {
                let o = &r.pre[0];
                assert!(o.ok, "{o:?}");
                assert_eq!(o.stdout_tail.len(), pvsnap_k8s::OUTPUT_TAIL_BYTES);
                assert!(o.stdout_tail.ends_with("line 19999\n"));
            },
        },
        ExecCase {
            name: "the annotation's timeout abandons the exec",
            given: |s| {
                s.annotate(
                    "db",
                    "postgres-0",
                    &[
                        ("pre.hook.backup.velero.io/command", &json_array(&PG_PRE)),
                        ("pre.hook.backup.velero.io/timeout", "300ms"),
                    ],
                )
                .answer(
                    "postgres-0",
                    "postgres",
                    &PG_PRE,
                    Answer::exit(0)
                        .stdout("late\n")
                        .after(Duration::from_secs(5)),
                )
            },
            phases: PRE,
            then: |r| {
                assert!(r.took < Duration::from_secs(3), "{:?}", r.took);
                let o = &r.pre[0];
                assert!(!o.ok);
                assert!(
                    o.error
                        .as_deref()
                        .unwrap()
                        .contains("timed out after 300ms"),
                    "{o:?}"
                );
                assert!(o.duration_ms >= 300, "{o:?}");
                // Default container when none is annotated: the first one.
                assert_eq!(o.container.as_deref(), Some("postgres"));
            },
        },
        ExecCase {
            name: "plain string and legacy annotations follow Velero",
            given: |s| {
                s.annotate(
                    "db",
                    "postgres-0",
                    &[
                        ("hook.backup.velero.io/command", "/usr/local/bin/freeze"),
                        ("hook.backup.velero.io/container", "metrics"),
                    ],
                )
                .answer(
                    "postgres-0",
                    "metrics",
                    &["/usr/local/bin/freeze"],
                    Answer::exit(0).stdout("frozen"),
                )
            },
            phases: BOTH,
            then: |r| {
                assert_eq!(r.pre.len(), 1);
                assert!(r.pre[0].ok, "{:?}", r.pre[0]);
                assert_eq!(r.pre[0].container.as_deref(), Some("metrics"));
                assert_eq!(r.pre[0].command, argv(&["/usr/local/bin/freeze"]));
                // The legacy form is a pre hook only.
                assert!(r.post.is_empty());
            },
        },
        ExecCase {
            name: "invalid annotations and unknown containers fail without exec",
            given: |s| {
                s.annotate(
                    "db",
                    "postgres-0",
                    &[
                        ("pre.hook.backup.velero.io/command", "[\"/bin/true\""),
                        ("pre.hook.backup.velero.io/on-error", "Continue"),
                        ("pre.hook.backup.velero.io/timeout", "soon"),
                        ("post.hook.backup.velero.io/command", "[\"/bin/true\"]"),
                        ("post.hook.backup.velero.io/container", "sidecar"),
                    ],
                )
            },
            phases: BOTH,
            then: |r| {
                let err = r.pre[0].error.as_deref().unwrap();
                assert!(
                    err.contains("not a JSON string array") && err.contains("\"soon\""),
                    "{err}"
                );
                assert_eq!(r.pre[0].on_error, OnError::Continue);
                let post = &r.post[0];
                assert!(
                    post.error
                        .as_deref()
                        .unwrap()
                        .contains("has no container \"sidecar\" (containers: postgres, metrics)"),
                    "{post:?}"
                );
                assert!(r.fake.execs().is_empty());
            },
        },
        ExecCase {
            name: "exec works with the older v4 channel protocol",
            given: |s| {
                s.fake.set_exec_protocols(&["v4.channel.k8s.io"]);
                postgres(s, &PG_POST, Answer::exit(5).stdout("resumed\n"))
            },
            phases: POST,
            then: |r| {
                let o = &r.post[0];
                assert_eq!(o.exit_code, Some(5), "{o:?}");
                assert_eq!(o.stdout_tail, "resumed\n");
                assert_eq!(r.fake.execs()[0].protocol, "v4.channel.k8s.io");
            },
        },
    ]
}

#[tokio::test]
async fn hooks_of_a_pod_run_over_exec() {
    for case in exec_cases() {
        let s = (case.given)(Scenario::fixtures().await);
        let started = Instant::now();
        let (mut pre, mut post) = (Vec::new(), Vec::new());
        for &phase in case.phases {
            let out = s.run_hooks(phase, "db", "data-postgres-0").await;
            match phase {
                HookPhase::Pre => pre = out,
                HookPhase::Post => post = out,
            }
        }
        let ran = Ran {
            pre,
            post,
            fake: &s.fake,
            took: started.elapsed(),
        };
        eprintln!("case: {}", case.name);
        (case.then)(&ran);
    }
}

#[tokio::test]
async fn exec_into_a_vanished_pod_is_a_hook_failure() {
    let s = Scenario::fixtures().await;
    let mut pods = s.pods("db", "data-postgres-0").await;
    pods[0].name = "postgres-9".into();
    let o = &s.cluster.run_hooks(HookPhase::Pre, &pods).await[0];
    assert!(!o.ok);
    let err = o.error.as_deref().unwrap();
    assert!(
        err.contains("exec into pod db/postgres-9 container postgres failed")
            && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn hook_annotations_parse_like_velero() {
    let ann: BTreeMap<String, String> =
        serde_json::from_value(postgres_hook_annotations()).unwrap();
    let pre = pod_hook(&ann, HookPhase::Pre).unwrap().unwrap();
    assert_eq!(pre.command, argv(&PG_PRE));
    assert_eq!(pre.container.as_deref(), Some("postgres"));
    assert_eq!(pre.timeout, Duration::from_secs(60));
    let post = pod_hook(&ann, HookPhase::Post).unwrap().unwrap();
    assert_eq!(post.timeout, pvsnap_k8s::DEFAULT_HOOK_TIMEOUT);
    assert_eq!(post.on_error, OnError::Fail);
    assert!(pod_hook(&BTreeMap::new(), HookPhase::Pre).is_none());
    let odd: BTreeMap<String, String> = [
        (
            "post.hook.backup.velero.io/command".to_string(),
            "x".to_string(),
        ),
        (
            "post.hook.backup.velero.io/on-error".to_string(),
            "sometimes".to_string(),
        ),
    ]
    .into();
    let bad = pod_hook(&odd, HookPhase::Post).unwrap().unwrap_err();
    assert!(
        bad.reason.contains("neither Fail nor Continue"),
        "{}",
        bad.reason
    );
}

#[test]
fn go_durations_parse() {
    for (text, want) in [
        ("30s", Some(Duration::from_secs(30))),
        ("1m", Some(Duration::from_secs(60))),
        ("1h2m3s", Some(Duration::from_secs(3723))),
        ("1.5s", Some(Duration::from_millis(1500))),
        ("250ms", Some(Duration::from_millis(250))),
        ("0", Some(Duration::ZERO)),
        ("-1s", None),
        ("30", None),
        ("1d", None),
        ("", None),
    ] {
        assert_eq!(parse_go_duration(text), want, "{text:?}");
    }
}
