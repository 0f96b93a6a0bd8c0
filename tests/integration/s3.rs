//! Repositories on S3: every command against moto's server, through a
//! proxy that counts requests and checks the access key (moto itself
//! checks no signatures). Skips loudly when moto is not installed, unless
//! PVSNAP_REQUIRE_S3=1 (set by scripts/test).

use std::process::Output;

use pvsnap_engine::backend::s3_test_server::{Proxy, TestServer, free_port};

use crate::util::{self, Env, stderr, stdout};

pub(crate) const KEY: &str = "pvsnaptest";

/// A scratch folder and a fresh bucket of moto behind a proxy that takes
/// only `KEY`.
pub(crate) fn s3_env(prefix: &str) -> Option<(Env, Proxy, String)> {
    s3_env_on(TestServer::get()?, prefix)
}

/// [`s3_env`] on `server`.
pub(crate) fn s3_env_on(server: &TestServer, prefix: &str) -> Option<(Env, Proxy, String)> {
    let bucket = server.new_bucket();
    let proxy = Proxy::start(&server.endpoint, Some(KEY.into()));
    let mut env = Env::new();
    env.repo_at = Some(format!("s3:{}/{bucket}/{prefix}", proxy.endpoint).into());
    Some((env, proxy, bucket))
}

/// pvsnap with `KEY` as the access key, whatever the outcome.
pub(crate) fn run_as(env: &Env, key: &str, args: &[&str]) -> Output {
    env.cmd()
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .args(args)
        .output()
        .expect("run pvsnap")
}

pub(crate) fn ok(env: &Env, args: &[&str]) -> Output {
    let out = run_as(env, KEY, args);
    assert!(
        out.status.success(),
        "pvsnap {args:?} failed:\n{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    out
}

pub(crate) fn fails(env: &Env, key: &str, args: &[&str]) -> String {
    let out = run_as(env, key, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
    stderr(&out)
}

pub(crate) fn snapshot_id(env: &Env, src: &str) -> String {
    let pw = env.path("pw");
    let out = ok(
        env,
        &[
            "--password-file",
            pw.to_str().unwrap(),
            "snapshot",
            src,
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v[0]["id"].as_str().expect("id").to_string()
}

#[test]
fn a_repository_in_a_bucket_works_with_every_command() {
    if let Some(server) = TestServer::get() {
        every_command(server);
    }
}

/// The same on s3s-fs, which verifies every request's signature.
#[test]
fn every_command_works_on_a_server_that_verifies_signatures() {
    if let Some(server) = TestServer::verifying() {
        every_command(server);
    }
}

fn every_command(server: &TestServer) {
    let Some((env, proxy, _bucket)) = s3_env_on(server, "cluster1/repo") else {
        return;
    };
    let dir = env.dir.path();
    std::fs::write(dir.join("pw"), "first\n").unwrap();
    std::fs::write(dir.join("pw2"), "second\n").unwrap();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    util::write_noise_files(&src, 1, 20, 300_000);
    std::fs::write(src.join("sub/small.txt"), "hello").unwrap();
    let pw = dir.join("pw");
    let pw = pw.to_str().unwrap();
    let src_s = src.to_str().unwrap();

    let out = ok(&env, &["--password-file", pw, "init", "--encryption"]);
    assert!(
        stdout(&out).contains(&format!("at {}", env.repo().display())),
        "{}",
        stdout(&out)
    );
    let again = fails(&env, KEY, &["--password-file", pw, "init", "--encryption"]);
    assert!(again.contains("already"), "{again}");

    let first = snapshot_id(&env, src_s);
    std::fs::write(src.join("sub/small.txt"), "hello, changed").unwrap();
    let packs_before = proxy.count("PUT", "/data/");
    let second = snapshot_id(&env, src_s);
    let packs_incremental = proxy.count("PUT", "/data/") - packs_before;
    assert!(packs_incremental >= 1, "the change is uploaded");
    let before = proxy.count("PUT", "/data/");
    let gets_before = proxy.count("GET", "/data/");
    let requests_before = proxy.requests().len();
    let third = snapshot_id(&env, src_s);
    assert_eq!(
        proxy.count("PUT", "/data/"),
        before,
        "an unchanged re-snapshot uploads no pack"
    );
    eprintln!(
        "unchanged re-snapshot: {} pack GETs, {} requests in all",
        proxy.count("GET", "/data/") - gets_before,
        proxy.requests().len() - requests_before
    );
    assert_eq!(
        proxy.count("GET", "/data/"),
        gets_before,
        "the local cache holds the tree packs an unchanged re-snapshot reads"
    );

    let target = env.path("restored");
    ok(
        &env,
        &[
            "--password-file",
            pw,
            "restore",
            &third,
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(util::manifest(&src), util::manifest(&target));
    for f in util::files_below(&src) {
        let rel = f.strip_prefix(&src).unwrap();
        if f.is_file() {
            assert!(std::fs::read(&f).unwrap() == std::fs::read(target.join(rel)).unwrap());
        }
    }
    let gets_before = proxy.count("GET", "/data/");
    let ls = stdout(&ok(&env, &["--password-file", pw, "ls", "latest"]));
    assert!(ls.contains("small.txt"), "{ls}");
    assert_eq!(
        proxy.count("GET", "/data/"),
        gets_before,
        "ls browses from the cache"
    );
    ok(&env, &["--password-file", pw, "--no-cache", "ls", "latest"]);
    assert!(
        proxy.count("GET", "/data/") > gets_before,
        "without the cache, ls reads tree packs from the bucket"
    );
    let dump = ok(
        &env,
        &["--password-file", pw, "dump", "latest", "/sub/small.txt"],
    );
    assert_eq!(dump.stdout, b"hello, changed");
    let diff = stdout(&ok(&env, &["--password-file", pw, "diff", &first, &second]));
    assert!(diff.contains("M  /sub/small.txt"), "{diff}");
    ok(&env, &["--password-file", pw, "stats"]);
    ok(
        &env,
        &[
            "--password-file",
            pw,
            "forget",
            "--keep-last",
            "1",
            "--prune",
        ],
    );
    let list = stdout(&ok(&env, &["--password-file", pw, "snapshots", "--json"]));
    assert!(list.contains(&third) && !list.contains(&first), "{list}");
    ok(&env, &["--password-file", pw, "check", "--read-data"]);
    ok(&env, &["--password-file", pw, "prune", "--grace", "0"]);
    let pw2 = dir.join("pw2");
    let pw2 = pw2.to_str().unwrap();
    ok(
        &env,
        &[
            "--password-file",
            pw,
            "key",
            "add",
            "--new-password-file",
            pw2,
        ],
    );
    ok(&env, &["--password-file", pw2, "snapshots"]);
    ok(&env, &["unlock"]);
    ok(&env, &["--password-file", pw, "repair", "index"]);
    ok(&env, &["--password-file", pw, "check", "--read-data"]);
}

#[test]
fn bucket_faults_give_one_clear_error_and_store_nothing() {
    let Some((env, _proxy, bucket)) = s3_env("r") else {
        return;
    };
    // Wrong credentials: the proxy, like a real server, refuses them.
    let e = fails(&env, "wrongkey", &["init"]);
    assert!(
        e.contains("refused access") && e.contains("AWS_ACCESS_KEY_ID"),
        "{e}"
    );
    assert!(e.contains(&bucket), "{e}");
    ok(&env, &["init"]);
    ok(&env, &["snapshots"]);
    // A prefix holding something else is no place for a repository.
    let mut other = Env::new();
    other.repo_at = Some(
        env.repo()
            .to_str()
            .unwrap()
            .trim_end_matches("/r")
            .to_string()
            .into(),
    );
    let e = fails(&other, KEY, &["init"]);
    assert!(e.contains("not empty"), "{e}");
    let e = fails(&other, KEY, &["snapshots"]);
    assert!(e.contains("not a pvsnap repository"), "{e}");

    let server = TestServer::get().unwrap();
    let mut missing = Env::new();
    missing.repo_at = Some(format!("s3:{}/no-such-bucket/r", server.endpoint).into());
    let e = fails(&missing, KEY, &["init"]);
    assert!(
        e.contains("bucket no-such-bucket does not exist") && e.contains("s3 mb"),
        "{e}"
    );

    let down_at = format!("http://127.0.0.1:{}", free_port());
    let mut down = Env::new();
    down.repo_at = Some(format!("s3:{down_at}/b").into());
    let e = fails(&down, KEY, &["snapshots"]);
    assert!(
        e.contains(&down_at) && e.contains("bucket b") && e.contains("running"),
        "{e}"
    );

    let mut bad = Env::new();
    bad.repo_at = Some("s3:ftp://host/b".into());
    let e = fails(&bad, KEY, &["snapshots"]);
    assert!(
        e.contains("s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]"),
        "{e}"
    );
}

/// The 3-2-1 step: a local repository copied offsite into a bucket, with
/// its own password; the bucket then verifies and restores on its own, and
/// copying again sends nothing.
#[test]
fn a_local_repository_is_copied_into_a_bucket() {
    if let Some(server) = TestServer::get() {
        copy_into_a_bucket(server);
    }
}

/// The same on s3s-fs, which verifies every request's signature.
#[test]
fn a_local_repository_is_copied_into_a_bucket_that_verifies_signatures() {
    if let Some(server) = TestServer::verifying() {
        copy_into_a_bucket(server);
    }
}

fn copy_into_a_bucket(server: &TestServer) {
    let Some((bucket_env, proxy, _bucket)) = s3_env_on(server, "offsite") else {
        return;
    };
    let bucket = bucket_env.repo();
    let bucket = bucket.to_str().unwrap();
    let local = Env::new();
    let src = local.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    util::write_noise_files(&src, 7, 12, 200_000);
    std::fs::write(src.join("sub/small.txt"), "offsite").unwrap();
    local.ok(&["init"]);
    local.ok(&["snapshot", src.to_str().unwrap()]);
    std::fs::write(src.join("sub/small.txt"), "offsite, changed").unwrap();
    local.ok(&["snapshot", src.to_str().unwrap()]);

    let pw = bucket_env.path("pw");
    std::fs::write(&pw, "offsite-secret\n").unwrap();
    let pw = pw.to_str().unwrap();
    ok(
        &bucket_env,
        &["--password-file", pw, "init", "--encryption"],
    );

    let copy = |proxy: &Proxy| {
        let puts = proxy.count("PUT", "/data/");
        let out = local
            .cmd()
            .env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_REGION", "us-east-1")
            .env("PVSNAP_TO_PASSWORD", "offsite-secret")
            .args(["copy", "--to", bucket, "--connections", "4", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (j, proxy.count("PUT", "/data/") - puts)
    };
    let (first, packs) = copy(&proxy);
    assert_eq!(first["snapshots_copied"], 2, "{first}");
    assert!(packs >= 1, "packs were uploaded");
    let (again, packs) = copy(&proxy);
    assert_eq!(again["snapshots_copied"], 0, "{again}");
    assert_eq!(again["bytes_sent"], 0, "{again}");
    assert_eq!(packs, 0, "a second copy uploads no pack");

    ok(
        &bucket_env,
        &["--password-file", pw, "check", "--read-data"],
    );
    let target = bucket_env.path("restored");
    ok(
        &bucket_env,
        &[
            "--password-file",
            pw,
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(util::manifest(&src), util::manifest(&target));
    assert_eq!(
        std::fs::read(target.join("sub/small.txt")).unwrap(),
        b"offsite, changed"
    );
}

/// A request signed with the wrong secret key is refused by a server that
/// verifies signatures (403 SignatureDoesNotMatch): one clear error about
/// the credentials, naming the endpoint and bucket, and nothing stored.
#[test]
fn a_wrong_secret_key_is_a_clear_credentials_error() {
    let Some(server) = TestServer::verifying() else {
        return;
    };
    let bucket = server.new_bucket();
    let mut env = Env::new();
    env.repo_at = Some(format!("s3:{}/{bucket}/r", server.endpoint).into());
    let out = env
        .cmd()
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .env("AWS_REGION", "us-east-1")
        .arg("init")
        .output()
        .unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("credentials") && e.contains("AWS_SECRET_ACCESS_KEY"),
        "{e}"
    );
    assert!(e.contains(&server.endpoint) && e.contains(&bucket), "{e}");
    assert!(
        !e.contains("X-Amz-Signature") && !e.contains("X-Amz-Credential"),
        "no signed URL in an error: {e}"
    );
    ok(&env, &["init"]);
    ok(&env, &["snapshots"]);
    // A bucket name the server refuses (too short): HEAD's 400 has no
    // body, and the message says what is usually wrong.
    let mut short = Env::new();
    short.repo_at = Some(format!("s3:{}/ab/r", server.endpoint).into());
    let e = fails(&short, KEY, &["init"]);
    assert!(e.contains("bucket name") && e.contains("bucket ab"), "{e}");
}

/// `repo probe` says what the server does, in words and as JSON, and
/// leaves nothing behind; `init` on a bucket prints the same findings.
#[test]
fn the_probe_reports_conditional_writes_listing_uploads_and_the_clock() {
    let Some((env, proxy, bucket)) = s3_env("p") else {
        return;
    };
    let server = TestServer::get().unwrap();
    let out = stdout(&ok(&env, &["init"]));
    assert!(
        out.contains("conditional put (If-None-Match): honoured")
            && out.contains("does not depend on conditional writes"),
        "{out}"
    );
    proxy.shift_clock(-600);
    let out = stdout(&ok(&env, &["repo", "probe"]));
    assert!(
        out.contains("listing right after writes:      consistent"),
        "{out}"
    );
    assert!(out.contains("s behind this machine's"), "{out}");
    let j: serde_json::Value =
        serde_json::from_slice(&ok(&env, &["repo", "probe", "--json"]).stdout).unwrap();
    assert_eq!(j["conditional_put"], "honoured", "{j}");
    assert_eq!(j["racers"], 8, "{j}");
    assert_eq!(j["racers_told_ok"], 1, "{j}");
    assert_eq!(j["list_after_write"], true, "{j}");
    assert_eq!(j["multipart_listing"], true, "{j}");
    assert_eq!(j["needs_conditional_put"], false, "{j}");
    let off = j["clock_offset_s"].as_f64().unwrap();
    assert!((-605.0..=-595.0).contains(&off), "{j}");
    assert!(
        proxy.count("PUT", "/pvsnap-probe-") >= 10,
        "the probe wrote under pvsnap-probe-"
    );
    let left: Vec<_> = server
        .keys(&bucket, "p/")
        .into_iter()
        .filter(|k| k.contains("pvsnap-probe-"))
        .collect();
    assert!(left.is_empty(), "the probe removed its objects: {left:?}");
    ok(&env, &["check"]);
    // A folder has nothing to probe.
    let folder = Env::new();
    let out = folder.run(&["repo", "probe"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("s3:http[s]://"), "{}", stderr(&out));
}

/// Two `init`s at once on one empty prefix: one creates the repository,
/// the other gets a clear error, and the repository is valid.
#[test]
fn two_inits_racing_on_one_prefix_make_one_repository() {
    let Some(server) = TestServer::get() else {
        return;
    };
    let bucket = server.new_bucket();
    for round in 0..4 {
        let mut env = Env::new();
        env.repo_at = Some(format!("s3:{}/{bucket}/race{round}", server.endpoint).into());
        let pw = env.path("pw");
        std::fs::write(&pw, "race\n").unwrap();
        let pw = pw.to_str().unwrap();
        let spawn = || {
            env.cmd()
                .env("AWS_ACCESS_KEY_ID", KEY)
                .env("AWS_SECRET_ACCESS_KEY", "secret")
                .env("AWS_REGION", "us-east-1")
                .args(["--quiet", "--password-file", pw, "init", "--encryption"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let won = outs.iter().filter(|o| o.status.success()).count();
        let errors: Vec<String> = outs
            .iter()
            .filter(|o| !o.status.success())
            .map(stderr)
            .collect();
        assert_eq!(won, 1, "round {round}: one init wins: {errors:?}");
        assert!(
            errors[0].contains("already") || errors[0].contains("another `pvsnap init`"),
            "{errors:?}"
        );
        ok(&env, &["--password-file", pw, "snapshots"]);
        ok(&env, &["--password-file", pw, "check"]);
        let keys = server.keys(&bucket, &format!("race{round}/keys/"));
        assert_eq!(keys.len(), 1, "one key slot, the winner's: {keys:?}");
        assert!(
            server
                .keys(&bucket, &format!("race{round}/locks/"))
                .is_empty()
        );
    }
}

/// `forget` → trash → `undelete` → restore, then emptied by `prune
/// --keep-deleted 0`, in a bucket (the trash entry's name carries the
/// storage's clock, `Backend::now`, which S3 gives by a request).
#[test]
fn undelete_brings_a_forgotten_snapshot_back_from_a_bucket() {
    let Some((env, _proxy, _bucket)) = s3_env("trash/repo") else {
        return;
    };
    std::fs::write(env.path("pw"), "pw\n").unwrap();
    let pw = env.path("pw");
    let pw = pw.to_str().unwrap();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), util::noise(5, 300_000)).unwrap();
    ok(&env, &["--password-file", pw, "init", "--encryption"]);
    let first = snapshot_id(&env, src.to_str().unwrap());
    std::fs::write(src.join("g"), b"later").unwrap();
    snapshot_id(&env, src.to_str().unwrap());
    let json = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["--password-file", pw];
        a.extend_from_slice(args);
        serde_json::from_slice(&ok(&env, &a).stdout).unwrap()
    };
    json(&["forget", &first, "--json"]);
    assert_eq!(json(&["snapshots", "--json"]).as_array().unwrap().len(), 1);
    let trash = json(&["snapshots", "--deleted", "--json"]);
    assert_eq!(trash[0]["id"].as_str(), Some(first.as_str()), "{trash}");
    let expires: jiff::Timestamp = trash[0]["expires"].as_str().unwrap().parse().unwrap();
    assert!(expires > jiff::Timestamp::now(), "{trash}");
    json(&["prune", "--json", "--grace", "0"]);
    ok(&env, &["--password-file", pw, "undelete", &first[..8]]);
    assert_eq!(json(&["snapshots", "--json"]).as_array().unwrap().len(), 2);
    let back = env.path("back");
    ok(
        &env,
        &[
            "--password-file",
            pw,
            "restore",
            &first,
            "--target",
            back.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(back.join("f")).unwrap(),
        util::noise(5, 300_000)
    );
    assert!(!back.join("g").exists());
    // Emptied: gone for good, and undelete says so.
    json(&["forget", &first, "--json"]);
    json(&["prune", "--json", "--grace", "0", "--keep-deleted", "0"]);
    assert!(
        json(&["snapshots", "--deleted", "--json"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let err = fails(&env, KEY, &["--password-file", pw, "undelete", &first]);
    assert!(err.contains("gone"), "{err}");
    ok(&env, &["--password-file", pw, "check", "--read-data"]);
}
