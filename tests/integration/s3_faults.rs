//! Faults of an S3 server while pvsnap works, injected by the proxy in
//! front of moto: the server gone in the middle of a snapshot, connections
//! reset, 503 SlowDown for a while, a server clock off by an hour. Each
//! gives a clear error or is retried, and the repository stays consistent.

use std::time::{Duration, Instant};

use pvsnap_engine::backend::s3_test_server::TestServer;
use pvsnap_engine::repo::lock::LockInfo;

use crate::s3::{KEY, fails, ok, run_as, s3_env};
use crate::util::{self, stderr, stdout};

/// The server killed while a snapshot uploads packs: the snapshot fails
/// naming the endpoint, the bucket and the next step; `check` finds the
/// repository consistent, and the retry uploads only what the first run
/// did not checkpoint.
#[test]
fn a_server_gone_in_the_middle_of_a_snapshot_leaves_a_repository_the_retry_completes() {
    let Some((env, proxy, bucket)) = s3_env("r") else {
        return;
    };
    let src = env.path("src");
    util::write_noise_files(&src, 31, 24, 400_000);
    let src_s = src.to_str().unwrap();
    ok(&env, &["init", "--pack-size", "1"]);
    let child = env
        .cmd()
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .env("PVSNAP_CHECKPOINT_BYTES", "1500000")
        .args(["--connections", "2", "snapshot", src_s])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.count("PUT", "/index/") < 2 {
        assert!(Instant::now() < deadline, "no index checkpoint was written");
        std::thread::sleep(Duration::from_millis(5));
    }
    proxy.cut_after(0);
    let out = child.wait_with_output().unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains(&proxy.endpoint) && e.contains(&format!("bucket {bucket}")),
        "the error names the endpoint and the bucket: {e}"
    );
    assert!(
        e.contains("is running") && e.contains("run the command again"),
        "the error says what to do: {e}"
    );
    assert!(!e.contains("X-Amz-"), "no signed URL in an error: {e}");
    proxy.heal();
    let stored: Vec<String> = TestServer::get()
        .unwrap()
        .keys(&bucket, "r/data/")
        .into_iter()
        .collect();
    assert!(!stored.is_empty(), "the first run stored packs");

    let check = ok(&env, &["check"]);
    eprintln!("check after the cut: {}", stdout(&check));
    let puts = proxy.count("PUT", "/data/");
    ok(&env, &["snapshot", src_s]);
    let retry_puts = proxy.count("PUT", "/data/") - puts;
    let total = TestServer::get().unwrap().keys(&bucket, "r/data/").len();
    eprintln!(
        "server cut after an index checkpoint: {} packs stored before, {retry_puts} uploaded by the retry, {total} in the bucket",
        stored.len()
    );
    assert!(
        retry_puts + 2 <= total,
        "the retry reuses the checkpointed packs: {retry_puts} uploaded of {total}"
    );
    ok(&env, &["check", "--read-data"]);
    let target = env.path("restored");
    ok(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(util::manifest(&src), util::manifest(&target));
    // The packs the cut left without an index go at prune, after the grace.
    ok(&env, &["prune", "--grace", "0"]);
    ok(&env, &["check", "--read-data"]);
}

/// Connections reset and 503 SlowDown for a while are retried with
/// backoff: the snapshot succeeds. 503 for longer than the retries last
/// is a clear error.
#[test]
fn resets_and_slow_down_are_retried_with_backoff() {
    let Some((env, proxy, bucket)) = s3_env("r") else {
        return;
    };
    let src = env.path("src");
    util::write_noise_files(&src, 51, 6, 200_000);
    let src_s = src.to_str().unwrap();
    ok(&env, &["init"]);

    proxy.drop_next(5);
    ok(&env, &["snapshot", src_s]);
    assert_eq!(proxy.dropped(), 5, "five connections were reset");

    std::fs::write(src.join("new"), util::noise(99, 300_000)).unwrap();
    let started = Instant::now();
    proxy.slow_down_for(Duration::from_secs(2));
    ok(&env, &["snapshot", src_s]);
    let slowed = proxy.slowed();
    eprintln!(
        "503 SlowDown for 2 s: {slowed} requests answered 503 and retried; the snapshot took {:?}",
        started.elapsed()
    );
    assert!(
        slowed >= 4,
        "one request met 503 several times, waiting longer each time: {slowed}"
    );
    ok(&env, &["check", "--read-data"]);

    proxy.slow_down_for(Duration::from_secs(120));
    let e = fails(&env, KEY, &["snapshots"]);
    proxy.heal();
    assert!(
        e.contains("HTTP 503 SlowDown")
            && e.contains(&proxy.endpoint)
            && e.contains(&format!("bucket {bucket}")),
        "{e}"
    );
    assert_eq!(
        stdout(&ok(&env, &["snapshots", "--json"]))
            .matches("\"id\"")
            .count(),
        2
    );
}

/// A server clock an hour behind this machine's: ages are taken on the
/// server's clock, so a pack just written is young (prune keeps it) and a
/// lock another node refreshed just now is live (not stale, it blocks
/// prune). On this machine's clock both would look an hour old.
#[test]
fn grace_periods_and_stale_locks_are_judged_on_the_servers_clock() {
    let Some((env, proxy, bucket)) = s3_env("r") else {
        return;
    };
    let server = TestServer::get().unwrap();
    ok(&env, &["init"]);
    let src = env.path("src");
    util::write_noise_files(&src, 61, 2, 10_000);
    ok(&env, &["snapshot", src.to_str().unwrap()]);
    proxy.shift_clock(-3600);

    // A pack another node is uploading: no index names it yet.
    let pack = format!("r/data/ab/ab{}", "0".repeat(62));
    server.put_raw(&bucket, &pack, &util::noise(5, 5000));
    let out = stdout(&ok(&env, &["prune", "--grace", "30m"]));
    assert!(
        server.keys(&bucket, "r/data/ab/").contains(&pack),
        "a pack written a moment ago (on the server's clock) is kept: {out}"
    );

    // A lock that another node's snapshot took a moment ago, by the
    // server's clock (an hour ago by this machine's).
    let lock = LockInfo {
        exclusive: false,
        hostname: "other-node".into(),
        pid: 1,
        operation: "snapshot".into(),
        time: jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600),
    };
    let name = format!("r/locks/{}", "cd".repeat(32));
    server.put_raw(&bucket, &name, &lock.encode());
    let out = run_as(&env, KEY, &["unlock"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("kept") && stdout(&out).contains("0 lock(s) removed"),
        "the lock is live on the server's clock: {}{}",
        stderr(&out),
        stdout(&out)
    );
    let out = run_as(&env, KEY, &["prune"]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    // On a server whose clock agrees with this machine's, the same lock is
    // an hour old: stale.
    proxy.shift_clock(0);
    let out = stdout(&ok(&env, &["unlock"]));
    assert!(out.contains("1 lock(s) removed"), "{out}");
}

/// A multipart upload a killed client left behind is aborted by prune; one
/// under another prefix is not touched. (moto dates every upload
/// 2010-11-10, so the grace period is not tried here: `Leftover::older_than`
/// has its own tests.)
#[test]
fn prune_aborts_leftover_multipart_uploads_of_its_prefix() {
    let Some((env, _proxy, bucket)) = s3_env("r") else {
        return;
    };
    let server = TestServer::get().unwrap();
    ok(&env, &["init"]);
    server.start_upload(&bucket, "r/data/ab/unfinished");
    server.start_upload(&bucket, "other/unfinished");
    let out = stdout(&ok(&env, &["prune"]));
    assert_eq!(
        server.uploads(&bucket),
        ["other/unfinished"],
        "the repository's upload was aborted: {out}"
    );
    assert!(out.contains("interrupted writes removed"), "{out}");
    ok(&env, &["check"]);
}
