//! Hooks around a body (`with_hooks`): pods' and host hooks, their order,
//! and what a failure skips.

use std::time::{Duration, Instant};

use pvsnap_k8s::testing::fixtures::*;
use pvsnap_k8s::{
    BodyOutcome, HookOutcome, HookPhase, HookedRun, HostHook, OnError, run_host_hook, with_hooks,
};

use crate::scenario::{Scenario, argv, json_array};

/// The fixtures with hooks on both web pods (users of default/data):
/// `echo pre POD` with `on_error`, exiting with `exits[i].0`, and
/// `echo post POD`, exiting with `exits[i].1`.
async fn web_hooks(on_error: &str, exits: [(i32, i32); 2]) -> Scenario {
    let mut s = Scenario::fixtures().await;
    for (pod, (pre_exit, post_exit)) in WEB_PODS.into_iter().zip(exits) {
        let pre = json_array(&["/bin/sh", "-c", &format!("echo pre {pod}")]);
        let post = json_array(&["/bin/sh", "-c", &format!("echo post {pod}")]);
        s = s.annotate(
            "default",
            pod,
            &[
                ("pre.hook.backup.velero.io/command", &pre),
                ("pre.hook.backup.velero.io/on-error", on_error),
                ("post.hook.backup.velero.io/command", &post),
            ],
        );
        script_web(&s.fake, pod, "pre", pre_exit);
        script_web(&s.fake, pod, "post", post_exit);
    }
    s
}

/// Scripts `echo PHASE POD` in a web pod to exit with `exit`.
fn script_web(fake: &pvsnap_k8s::testing::fake::FakeCluster, pod: &str, phase: &str, exit: i32) {
    fake.script_simple(
        pod,
        "nginx",
        &["/bin/sh", "-c", &format!("echo {phase} {pod}")],
        exit,
        &format!("{phase} ok\n"),
    );
}

/// The fake's event log written short: `pre 0` is the pre hook exec in the
/// first web pod, `body` the body's mark.
fn events(short: &[&str]) -> Vec<String> {
    short
        .iter()
        .map(|e| match e.split_once(' ') {
            Some((phase, i)) => {
                let pod = WEB_PODS[i.parse::<usize>().unwrap()];
                format!("exec {pod}/nginx /bin/sh -c echo {phase} {pod}")
            }
            None => format!("mark {e}"),
        })
        .collect()
}

#[tokio::test]
async fn with_hooks_runs_pre_on_all_pods_before_body_and_post_after() {
    let Scenario { fake, cluster } = web_hooks("Fail", [(0, 0), (0, 0)]).await;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let host_pre = HostHook::new(format!("echo host-pre >> {}", trace.display()));
    let host_post = HostHook::new(format!("echo host-post >> {}", trace.display()));
    let pods = cluster.pods_mounting("default", "data").await.unwrap();
    let run = with_hooks(
        Some(&cluster),
        &pods,
        Some(&host_pre),
        Some(&host_post),
        || async {
            fake.mark("body");
            // The host pre hook ran before the body, the host post hook not yet.
            Ok::<_, String>(std::fs::read_to_string(&trace).unwrap())
        },
    )
    .await;
    let BodyOutcome::Ran(Ok(seen)) = &run.body else {
        panic!("{:?}", run.body)
    };
    assert_eq!(seen, "host-pre\n");
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap(),
        "host-pre\nhost-post\n"
    );
    assert_eq!(
        fake.events(),
        events(&["pre 0", "pre 1", "body", "post 0", "post 1"])
    );
    let targets: Vec<String> = run
        .outcomes()
        .map(|o| format!("{} {}", o.phase, o.target()))
        .collect();
    assert_eq!(
        targets,
        vec![
            "pre host".to_string(),
            format!("pre pod default/{} container nginx", WEB_PODS[0]),
            format!("pre pod default/{} container nginx", WEB_PODS[1]),
            format!("post pod default/{} container nginx", WEB_PODS[0]),
            format!("post pod default/{} container nginx", WEB_PODS[1]),
            "post host".to_string(),
        ]
    );
    assert!(run.fatal_failures().is_empty());
}

/// A web pod's pre hook fails: with on-error Fail the pre phase stops and
/// the body is skipped; with Continue everything runs. Post hooks run for
/// every pod the pre phase reached, whatever the body did.
#[tokio::test]
async fn a_failed_pod_pre_hook_decides_by_its_on_error() {
    type Then = fn(&HookedRun<(), &'static str>);
    /// On-error of both pods, (pre, post) exit codes per pod, the events
    /// expected, and what else must hold.
    type Case = (&'static str, [(i32, i32); 2], &'static [&'static str], Then);
    let cases: [Case; 3] = [
        (
            "Fail",
            [(1, 0), (0, 0)],
            // The second pod's pre hook never ran, and neither does its post hook.
            &["pre 0", "post 0"],
            |run| {
                assert!(run.skipped());
                let BodyOutcome::Skipped { reason } = &run.body else {
                    unreachable!()
                };
                assert!(
                    reason.contains(WEB_PODS[0]) && reason.contains("exited with code 1"),
                    "{reason}"
                );
                assert_eq!(run.pre.len(), 1);
                assert_eq!(run.post.len(), 1);
                assert!(run.post[0].ok);
                assert_eq!(run.fatal_failures().len(), 1);
            },
        ),
        (
            "Continue",
            [(1, 0), (0, 0)],
            // Post hooks run although the body failed.
            &["pre 0", "pre 1", "body", "post 0", "post 1"],
            |run| {
                assert!(matches!(run.body, BodyOutcome::Ran(Err("body failed"))));
                assert_eq!(run.pre.len(), 2);
                assert!(!run.pre[0].ok && run.pre[0].on_error == OnError::Continue);
                assert!(run.fatal_failures().is_empty());
            },
        ),
        (
            "Fail",
            [(0, 0), (0, 0)],
            &["pre 0", "pre 1", "body", "post 0", "post 1"],
            |run| {
                assert!(matches!(run.body, BodyOutcome::Ran(Err("body failed"))));
                assert!(run.outcomes().all(|o| o.ok));
            },
        ),
    ];
    for (on_error, exits, want, then) in cases {
        let s = web_hooks(on_error, exits).await;
        let pods = s.pods("default", "data").await;
        let run = with_hooks(Some(&s.cluster), &pods, None, None, || async {
            s.fake.mark("body");
            Err::<(), _>("body failed")
        })
        .await;
        assert_eq!(s.fake.events(), events(want), "{on_error} {exits:?}");
        then(&run);
    }
}

#[tokio::test]
async fn failed_host_pre_hook_skips_pods_and_body_but_runs_host_post() {
    let s = Scenario::fixtures().await;
    let pods = s.pods("db", "data-postgres-0").await;
    let run = with_hooks(
        Some(&s.cluster),
        &pods,
        Some(&HostHook::new("echo nope >&2; exit 4")),
        Some(&HostHook::new("echo cleanup")),
        || async { Ok::<_, String>(()) },
    )
    .await;
    assert!(run.skipped());
    assert!(s.fake.execs().is_empty());
    assert_eq!(run.pre[0].exit_code, Some(4));
    assert_eq!(run.pre[0].stderr_tail, "nope\n");
    assert_eq!(run.post.len(), 1);
    assert_eq!(run.post[0].stdout_tail, "cleanup\n");
}

#[tokio::test]
async fn run_hooks_stops_the_pre_phase_at_a_fatal_failure() {
    let s = web_hooks("Fail", [(1, 1), (1, 1)]).await;
    let pods = s.pods("default", "data").await;
    let pre = s.cluster.run_hooks(HookPhase::Pre, &pods).await;
    assert_eq!(pre.len(), 1);
    assert_eq!(s.fake.execs().len(), 1);
    // Post hooks are all attempted even when they fail.
    let post = s.cluster.run_hooks(HookPhase::Post, &pods).await;
    assert_eq!(post.len(), 2);
    assert!(post.iter().all(|o| o.exit_code == Some(1)));
}

#[tokio::test]
async fn host_hooks_report_output_exit_code_and_timeout() {
    let ok = run_host_hook(
        HookPhase::Pre,
        "echo out; echo err >&2",
        Duration::from_secs(10),
    )
    .await;
    assert!(ok.ok && ok.exit_code == Some(0), "{ok:?}");
    assert_eq!(
        (ok.stdout_tail.as_str(), ok.stderr_tail.as_str()),
        ("out\n", "err\n")
    );
    assert_eq!(ok.command, argv(&["sh", "-c", "echo out; echo err >&2"]));
    assert!(ok.pod.is_none());

    let bad = run_host_hook(HookPhase::Post, "exit 7", Duration::from_secs(10)).await;
    assert_eq!(bad.exit_code, Some(7));
    assert_eq!(
        bad.error.as_deref(),
        Some("host post hook exited with code 7")
    );

    let started = Instant::now();
    // The child of sh keeps the pipes open; the group kill must end it too.
    let slow = run_host_hook(
        HookPhase::Pre,
        "sleep 30 & sleep 30",
        Duration::from_millis(200),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !slow.ok && slow.error.as_deref().unwrap().contains("timed out"),
        "{slow:?}"
    );

    let big = run_host_hook(HookPhase::Pre, "seq 1 100000", Duration::from_secs(10)).await;
    assert_eq!(big.stdout_tail.len(), pvsnap_k8s::OUTPUT_TAIL_BYTES);
    assert!(big.stdout_tail.ends_with("99999\n100000\n"));
}

#[test]
fn hook_outcomes_serialize_for_the_snapshot_record() {
    let o = HookOutcome {
        phase: HookPhase::Pre,
        namespace: Some("db".into()),
        pod: Some("postgres-0".into()),
        container: Some("postgres".into()),
        command: argv(&PG_PRE),
        ok: false,
        exit_code: Some(3),
        stdout_tail: String::new(),
        stderr_tail: "boom".into(),
        duration_ms: 12,
        error: Some("command exited with code 3".into()),
        on_error: OnError::Continue,
    };
    let v = serde_json::to_value(&o).unwrap();
    assert_eq!(v["phase"], "pre");
    assert_eq!(v["on_error"], "Continue");
    assert_eq!(v["exit_code"], 3);
    let back: HookOutcome = serde_json::from_value(v).unwrap();
    assert_eq!(back, o);
    let host = HookOutcome {
        namespace: None,
        pod: None,
        container: None,
        ..o
    };
    let v = serde_json::to_value(&host).unwrap();
    assert!(v.get("pod").is_none());
    assert_eq!(host.target(), "host");
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for its reaper is dead too.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn host_hook_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let cmd = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    let o = run_host_hook(HookPhase::Pre, &cmd, Duration::from_millis(300)).await;
    assert!(!o.ok);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !process_gone(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        process_gone(pid),
        "background child {pid} of the hook survived"
    );
}
