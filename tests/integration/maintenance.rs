//! forget, policy, prune, check and repair through the binary.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::util::{self, Env};

/// Runs pvsnap with the time zone pinned (calendar buckets are local).
fn run(env: &Env, args: &[&str]) -> Output {
    env.cmd()
        .env("TZ", "UTC")
        .args(args)
        .output()
        .expect("run pvsnap")
}

fn ok_json(env: &Env, args: &[&str]) -> Value {
    let out = run(env, args);
    assert!(
        out.status.success(),
        "pvsnap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// Runs a command that must fail with `code`; returns its JSON (if any) and stderr.
fn fails(env: &Env, args: &[&str], code: i32) -> (Value, String) {
    let out = run(env, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "pvsnap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, content: &[u8]) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// Bytes of packs, index files and snapshots.
fn stored(repo: &Path) -> u64 {
    let mut n = 0;
    for sub in ["data", "index", "snapshots"] {
        for e in walk(&repo.join(sub)) {
            n += std::fs::metadata(e).unwrap().len();
        }
    }
    n
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
            out.push(p);
        }
    }
    out
}

/// Names of the objects in a repository folder (`data` walks the fan-out).
fn objects(repo: &Path, sub: &str) -> BTreeSet<String> {
    walk(&repo.join(sub))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn pack_path(repo: &Path, id: &str) -> std::path::PathBuf {
    repo.join("data").join(&id[..2]).join(id)
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn forget_applies_several_rules_and_says_which_kept_what() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src, "f", b"content");
    let times = [
        "2026-01-01T10:00:00Z",
        "2026-01-01T11:00:00Z",
        "2026-01-02T10:00:00Z",
        "2026-01-08T10:00:00Z",
        "2026-02-01T10:00:00Z",
    ];
    let snaps: Vec<String> = times
        .iter()
        .map(|t| {
            let tag: &[&str] = if *t == times[1] {
                &["--tag", "keep-me"]
            } else {
                &[]
            };
            let mut extra = vec!["--time", t];
            extra.extend_from_slice(tag);
            env.snapshot(&src, &extra)["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let rules = [
        "--keep-last",
        "1",
        "--keep-daily",
        "2",
        "--keep-monthly",
        "2",
        "--keep-tag",
        "keep-me",
    ];
    let mut args = vec!["forget", "--dry-run", "--json"];
    args.extend_from_slice(&rules);
    let plan = ok_json(&env, &args);
    assert_eq!(plan["dry_run"], true);
    let verdicts: Vec<(String, bool, Vec<String>)> = plan["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let reasons = v["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            (
                v["id"].as_str().unwrap().to_string(),
                v["keep"].as_bool().unwrap(),
                reasons,
            )
        })
        .collect();
    let r = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        verdicts,
        vec![
            (snaps[4].clone(), true, r(&["last", "daily", "monthly"])),
            (snaps[3].clone(), true, r(&["daily", "monthly"])),
            (snaps[2].clone(), false, r(&[])),
            (snaps[1].clone(), true, r(&["tag:keep-me"])),
            (snaps[0].clone(), false, r(&[])),
        ]
    );
    assert_eq!(
        ids(&ok_json(&env, &["snapshots", "--json"])).len(),
        5,
        "a dry run removes nothing"
    );

    let mut args = vec!["forget"];
    args.extend_from_slice(&rules);
    let out = run(&env, &args);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("removed") && text.contains("3 snapshot(s) kept, 2 removed"),
        "{text}"
    );
    let left: BTreeSet<String> = ids(&ok_json(&env, &["snapshots", "--json"]))
        .into_iter()
        .collect();
    assert_eq!(
        left,
        [&snaps[1], &snaps[3], &snaps[4]]
            .into_iter()
            .cloned()
            .collect()
    );

    // Without any rule, forget refuses rather than removing everything.
    let (_, err) = fails(&env, &["forget"], 1);
    assert!(err.contains("keeps nothing"), "{err}");
}

#[test]
fn named_policies_and_the_default_one() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src, "f", b"x");
    let a = env.snapshot(&src, &["--time", "2025-06-01T10:00:00Z"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = env.snapshot(&src, &["--time", "2026-03-01T10:00:00Z"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = env.snapshot(&src, &["--time", "2026-03-01T10:30:00Z"])["id"]
        .as_str()
        .unwrap()
        .to_string();

    // `default` works without being set: 24 hourly, 7 daily, 4 weekly, 12 monthly.
    let plan = ok_json(
        &env,
        &["forget", "--policy", "default", "--dry-run", "--json"],
    );
    let reasons = |plan: &Value, id: &str| -> Vec<String> {
        let v = plan["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == id)
            .unwrap();
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(reasons(&plan, &c), ["hourly", "daily", "weekly", "monthly"]);
    assert!(
        reasons(&plan, &b).is_empty(),
        "same hour as a newer snapshot"
    );
    assert_eq!(reasons(&plan, &a), ["hourly", "daily", "weekly", "monthly"]);
    let shown = ok_json(&env, &["policy", "show", "default", "--json"]);
    assert_eq!(
        shown["keep"],
        serde_json::json!({"keep_hourly": 24, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12})
    );
    assert_eq!(shown["builtin"], true);

    env.ok(&[
        "policy",
        "set",
        "nightly",
        "--keep-last",
        "1",
        "--keep-within",
        "300d",
    ]);
    env.ok(&["policy", "set", "nightly", "--keep-last", "2"]);
    let shown = ok_json(&env, &["policy", "show", "nightly", "--json"]);
    assert_eq!(
        shown["keep"],
        serde_json::json!({"keep_last": 2}),
        "set replaces"
    );
    assert_eq!(shown["group_by"], "source");
    let names: Vec<Value> = ok_json(&env, &["policy", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, ["default", "nightly"]);
    assert_eq!(
        objects(&env.repo(), "policies").len(),
        1,
        "the older revision is gone"
    );

    let plan = ok_json(&env, &["forget", "--policy", "nightly", "--json"]);
    assert_eq!(
        (plan["kept"].as_u64(), plan["removed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        ids(&ok_json(&env, &["snapshots", "--json"])),
        [b.clone(), c.clone()]
    );

    let (_, err) = fails(&env, &["policy", "set", "a/b", "--keep-last", "1"], 1);
    assert!(err.contains("`/`"), "{err}");
    let (_, err) = fails(&env, &["forget", "--policy", "weekly"], 1);
    assert!(err.contains("no policy named `weekly`"), "{err}");
    fails(
        &env,
        &["forget", "--policy", "nightly", "--keep-last", "1"],
        2,
    );
}

#[test]
fn prune_leaves_about_the_size_of_a_fresh_repository() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for i in 0..30 {
        write(
            &src,
            &format!("d{}/f{i}", i % 4),
            &util::noise(i, 64 * 1024),
        );
    }
    env.snapshot(&src, &["--time", "2026-01-01T00:00:00Z"]);
    for round in 1..3u64 {
        for i in (round - 1) * 10..round * 10 {
            write(
                &src,
                &format!("d{}/f{i}", i % 4),
                &util::noise(1000 * round + i, 64 * 1024),
            );
        }
        env.snapshot(
            &src,
            &["--time", &format!("2026-01-0{}T00:00:00Z", round + 1)],
        );
    }
    let before = stored(&env.repo());
    let forgotten = ok_json(&env, &["forget", "--keep-last", "1", "--json"]);
    assert_eq!(forgotten["removed"], 2);

    let dry = ok_json(
        &env,
        &[
            "prune",
            "--dry-run",
            "--json",
            "--grace",
            "0",
            "--keep-deleted",
            "0",
        ],
    );
    assert_eq!(dry["dry_run"], true);
    let after_forget = stored(&env.repo());
    assert!(
        after_forget > before - 10_000,
        "forget only removes small snapshot objects"
    );
    let r = ok_json(
        &env,
        &["prune", "--json", "--grace", "0", "--keep-deleted", "0"],
    );
    for field in [
        "packs_deleted",
        "packs_repacked",
        "bytes_freed",
        "duration_s",
    ] {
        assert!(r[field].is_number(), "{field} in {r}");
    }
    assert_eq!(
        (r["packs_deleted"].clone(), r["packs_repacked"].clone()),
        (dry["packs_deleted"].clone(), dry["packs_repacked"].clone())
    );
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["bytes_freed"].as_u64().unwrap() > 500_000, "{r}");
    let pruned = stored(&env.repo());
    assert_eq!(
        after_forget - pruned,
        r["bytes_freed"].as_u64().unwrap(),
        "the report matches the disk"
    );
    env.ok(&["check", "--read-data"]);
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(util::manifest(&target).len(), util::manifest(&src).len());

    let fresh = Env::new();
    fresh.init();
    fresh.snapshot(&src, &["--time", "2026-01-03T00:00:00Z"]);
    let fresh_size = stored(&fresh.repo());
    assert!(
        before as f64 > 1.5 * fresh_size as f64,
        "the test needs garbage: {before} vs {fresh_size}"
    );
    let ratio = pruned as f64 / fresh_size as f64;
    assert!(
        (0.95..1.05).contains(&ratio),
        "pruned {pruned} vs fresh {fresh_size}"
    );
}

/// A repository with two snapshots: `first` (files a, b, c) and `second`
/// (adding only-second.bin); returns the snapshot ids and the packs each
/// snapshot added, and the index files each wrote.
struct Fixture {
    env: Env,
    first: String,
    second: String,
    first_packs: BTreeSet<String>,
    second_packs: BTreeSet<String>,
    second_index: BTreeSet<String>,
}

fn fixture() -> Fixture {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for (i, n) in ["a.bin", "b.bin", "sub/c.bin"].iter().enumerate() {
        write(&src, n, &util::noise(i as u64, 300_000));
    }
    let first = env.snapshot(&src, &[])["id"].as_str().unwrap().to_string();
    let first_packs = objects(&env.repo(), "data");
    let first_index = objects(&env.repo(), "index");
    write(&src, "only-second.bin", &util::noise(99, 300_000));
    let second = env.snapshot(&src, &[])["id"].as_str().unwrap().to_string();
    let second_packs = objects(&env.repo(), "data")
        .difference(&first_packs)
        .cloned()
        .collect();
    let second_index = objects(&env.repo(), "index")
        .difference(&first_index)
        .cloned()
        .collect();
    Fixture {
        env,
        first,
        second,
        first_packs,
        second_packs,
        second_index,
    }
}

/// The biggest of `packs`: the data pack (trees go to their own, small packs).
fn data_pack(repo: &Path, packs: &BTreeSet<String>) -> String {
    packs
        .iter()
        .max_by_key(|p| std::fs::metadata(pack_path(repo, p)).unwrap().len())
        .unwrap()
        .clone()
}

fn damaged_paths(report: &Value, snapshot: &str) -> BTreeSet<String> {
    report["damaged_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["id"] == snapshot)
        .flat_map(|d| {
            d["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["path"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn check_names_a_flipped_byte_in_a_pack() {
    let f = fixture();
    let pack = data_pack(&f.env.repo(), &f.first_packs);
    let path = pack_path(&f.env.repo(), &pack);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    ok_json(&f.env, &["check", "--json"]); // structure alone does not see it
    let (r, err) = fails(&f.env, &["check", "--read-data", "--json"], 4);
    assert!(err.is_empty() || err.contains("exit code 4"), "{err}");
    assert_eq!(r["ok"], false);
    let kinds: BTreeSet<(String, String)> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["pack"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("blob_damaged".to_string(), pack.clone())),
        "{kinds:?}"
    );
    let hit = damaged_paths(&r, &f.first);
    assert_eq!(hit.len(), 1, "one chunk of one file: {hit:?}");
    assert_eq!(
        damaged_paths(&r, &f.second),
        hit,
        "the second snapshot shares that file"
    );
    let victim = hit.iter().next().unwrap().clone();

    // Restore names the same file and restores the others intact.
    let target = f.env.path("restored");
    let out = run(
        &f.env,
        &["restore", &f.first, "--target", target.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains(victim.trim_start_matches('/')));
    for n in ["a.bin", "b.bin", "sub/c.bin"]
        .iter()
        .filter(|n| !victim.ends_with(*n))
    {
        assert_eq!(
            std::fs::read(target.join(n)).unwrap(),
            std::fs::read(f.env.path("src").join(n)).unwrap(),
            "{n}"
        );
    }

    // A subset: part 1/2 and part 2/2 read every pack once between them.
    let p1 = ok_or_damaged(&f.env, &["check", "--read-data-subset", "1/2", "--json"]);
    let p2 = ok_or_damaged(&f.env, &["check", "--read-data-subset", "2/2", "--json"]);
    assert_eq!(
        p1["packs_read"].as_u64().unwrap() + p2["packs_read"].as_u64().unwrap(),
        r["packs_read"].as_u64().unwrap()
    );
    assert_ne!(
        p1["ok"], p2["ok"],
        "exactly one part holds the damaged pack"
    );
}

fn ok_or_damaged(env: &Env, args: &[&str]) -> Value {
    let out = run(env, args);
    assert!(
        matches!(out.status.code(), Some(0) | Some(4)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asserts that the `check --json` report `r` has an error of `kind` whose
/// `field` is `value`.
fn assert_error(r: &Value, kind: &str, field: &str, value: &str) {
    let errors = r["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e["kind"] == kind && e[field] == value),
        "no {kind} error with {field} {value}: {r}"
    );
}

#[test]
fn check_names_a_truncated_index_file() {
    let f = fixture();
    let victim = f.second_index.iter().next().unwrap().clone();
    let path = f.env.repo().join("index").join(&victim);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (r, _) = fails(&f.env, &["check", "--json"], 4);
    assert_error(&r, "index_damaged", "index", victim.as_str());
    assert_eq!(
        damaged_paths(&r, &f.second),
        ["/".to_string()].into(),
        "its trees were in that file"
    );
    assert!(damaged_paths(&r, &f.first).is_empty());
    let (_, err) = fails(&f.env, &["prune"], 1);
    assert!(
        err.contains(&victim[..16]) || err.contains("index"),
        "prune refuses a damaged index: {err}"
    );
}

#[test]
fn check_names_a_missing_pack_and_the_files_it_held() {
    let f = fixture();
    let pack = data_pack(&f.env.repo(), &f.second_packs);
    std::fs::remove_file(pack_path(&f.env.repo(), &pack)).unwrap();
    let (r, _) = fails(&f.env, &["check", "--json"], 4);
    assert_error(&r, "pack_missing", "pack", pack.as_str());
    assert_eq!(
        damaged_paths(&r, &f.second),
        ["/only-second.bin".to_string()].into()
    );
    assert!(damaged_paths(&r, &f.first).is_empty());
    let out = run(&f.env, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&pack) && text.contains(&f.second) && text.contains("/only-second.bin"),
        "{text}"
    );
}

#[test]
fn repair_index_rebuilds_a_deleted_index() {
    let f = fixture();
    for i in objects(&f.env.repo(), "index") {
        std::fs::remove_file(f.env.repo().join("index").join(i)).unwrap();
    }
    fails(&f.env, &["check"], 4);
    let r = ok_json(&f.env, &["repair", "index", "--json"]);
    assert_eq!(
        r["packs"].as_u64().unwrap() as usize,
        objects(&f.env.repo(), "data").len()
    );
    f.env.ok(&["check", "--read-data"]);
    let target = f.env.path("restored");
    f.env
        .ok(&["restore", &f.second, "--target", target.to_str().unwrap()]);
    assert_eq!(util::manifest(&target), util::manifest(&f.env.path("src")));
}

#[test]
fn repair_snapshots_saves_the_undamaged_files() {
    let f = fixture();
    let pack = data_pack(&f.env.repo(), &f.second_packs);
    std::fs::remove_file(pack_path(&f.env.repo(), &pack)).unwrap();
    let r = ok_json(&f.env, &["repair", "snapshots", "--json"]);
    let repaired = r["repaired"].as_array().unwrap();
    assert_eq!(repaired.len(), 1, "{r}");
    assert_eq!(repaired[0]["original"], f.second.as_str());
    let lost: Vec<&str> = repaired[0]["lost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(lost, ["/only-second.bin"]);
    let copy = repaired[0]["repaired"].as_str().unwrap().to_string();

    let snaps = ok_json(&f.env, &["snapshots", "--json"]);
    let copy_obj = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == copy.as_str())
        .unwrap();
    assert!(
        copy_obj["tags"]
            .as_array()
            .unwrap()
            .contains(&"repaired".into())
    );
    assert_eq!(copy_obj["labels"]["repaired_from"], f.second.as_str());
    assert!(ids(&snaps).contains(&f.second), "the original stays");

    let target = f.env.path("restored");
    f.env
        .ok(&["restore", &copy, "--target", target.to_str().unwrap()]);
    for n in ["a.bin", "b.bin", "sub/c.bin"] {
        assert_eq!(
            std::fs::read(target.join(n)).unwrap(),
            std::fs::read(f.env.path("src").join(n)).unwrap(),
            "{n}"
        );
    }
    assert!(!target.join("only-second.bin").exists());

    // Forgetting the damaged original and pruning leaves a clean repository.
    f.env
        .ok(&["forget", &f.second[..12], "--prune", "--grace", "0"]);
    f.env.ok(&["check", "--read-data"]);
}

#[test]
fn prune_and_forget_wait_for_running_snapshots() {
    let f = fixture();
    // A live shared lock from another host, as a running snapshot holds.
    let mut lock = b"PVSN\x06\x01\x00\x00".to_vec();
    let info = serde_json::json!({"exclusive": false, "hostname": "elsewhere", "pid": 1, "operation": "snapshot", "time": jiff::Timestamp::now().to_string()});
    lock.extend_from_slice(info.to_string().as_bytes());
    std::fs::write(f.env.repo().join("locks").join("ab".repeat(32)), lock).unwrap();
    let (_, err) = fails(&f.env, &["prune"], 11);
    assert!(err.contains("shared lock for `snapshot`"), "{err}");
    fails(&f.env, &["forget", "--keep-last", "1"], 11);
    f.env.ok(&["check"]);
    f.env.ok(&["prune", "--dry-run"]);
    assert_eq!(ids(&ok_json(&f.env, &["snapshots", "--json"])).len(), 2);
}

/// A forgotten snapshot waits in the trash: listed by `snapshots
/// --deleted`, brought back by `undelete` (by prefix) whole, even after a
/// prune that keeps the trash; after a prune with `--keep-deleted 0` it is
/// gone, and `undelete` says so.
#[test]
fn forget_is_undone_by_undelete_until_prune_empties_the_trash() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src, "a/one", &util::noise(1, 300_000));
    write(&src, "b/two", &util::noise(2, 200_000));
    let first = env.snapshot(&src, &[])["id"].as_str().unwrap().to_owned();
    std::fs::remove_dir_all(&src).unwrap();
    write(&src, "c/three", &util::noise(3, 100_000));
    env.snapshot(&src, &[]);

    ok_json(&env, &["forget", &first, "--json"]);
    let live = ok_json(&env, &["snapshots", "--json"]);
    assert_eq!(live.as_array().unwrap().len(), 1, "{live}");
    let trash = ok_json(&env, &["snapshots", "--deleted", "--json"]);
    let trash = trash.as_array().unwrap();
    assert_eq!(trash.len(), 1, "{trash:?}");
    assert_eq!(trash[0]["id"].as_str(), Some(first.as_str()));
    assert!(trash[0]["expires"].is_string(), "{:?}", trash[0]);

    // A prune with the default grace keeps what the trash needs.
    ok_json(&env, &["prune", "--json", "--grace", "0"]);
    run(&env, &["undelete", &first[..8]]);
    let live = ok_json(&env, &["snapshots", "--json"]);
    assert_eq!(live.as_array().unwrap().len(), 2, "{live}");
    let back = env.path("back");
    let out = run(
        &env,
        &["restore", &first, "--target", back.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(back.join("a/one")).unwrap(),
        util::noise(1, 300_000)
    );
    assert_eq!(
        std::fs::read(back.join("b/two")).unwrap(),
        util::noise(2, 200_000)
    );
    let out = run(&env, &["check", "--read-data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Undeleting a live snapshot is refused; after the trash is emptied,
    // the forgotten snapshot is gone and `undelete` says so.
    let (_, err) = fails(&env, &["undelete", &first], 1);
    assert!(err.contains("is not deleted"), "{err}");
    ok_json(&env, &["forget", &first, "--json"]);
    ok_json(
        &env,
        &["prune", "--json", "--grace", "0", "--keep-deleted", "0"],
    );
    let trash = ok_json(&env, &["snapshots", "--deleted", "--json"]);
    assert_eq!(trash.as_array().unwrap().len(), 0, "{trash}");
    let (_, err) = fails(&env, &["undelete", &first], 1);
    assert!(err.contains("gone"), "{err}");
    let out = run(&env, &["check", "--read-data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
