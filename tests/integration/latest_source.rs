//! `latest` where a command works on one source, and relative source paths
//! (issue 19, item 4): with several sources `latest` follows the context
//! (the other side of `diff`, the claim of `restore --to-pvc`) or fails
//! naming every source as `latest:SOURCE`; a relative path names the same
//! source in `snapshot`, `snapshots --source` and `latest:SOURCE`.

use std::fs;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::k8s::Kube;
use crate::util::Env;
use crate::util::{stderr, stdout};

/// Two folders `vols/a` and `vols/b` with a file `f`, each snapshotted from
/// the test's folder by its relative path; `b` is the newest.
fn two_sources() -> (Env, String, String) {
    let env = Env::new();
    env.init();
    for d in ["a", "b"] {
        fs::create_dir_all(env.path("vols").join(d)).unwrap();
        fs::write(env.path("vols").join(d).join("f"), d).unwrap();
    }
    let snap = |dir: &str, time: &str| {
        let out = in_dir(&env, ".", &["snapshot", dir, "--time", time]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    snap("vols/a", "2026-01-01T00:00:00Z");
    fs::write(env.path("vols/a/f"), "a2").unwrap();
    snap("vols/a", "2026-01-02T00:00:00Z");
    snap("vols/b", "2026-01-03T00:00:00Z");
    let abs = |d: &str| {
        fs::canonicalize(env.path("vols").join(d))
            .unwrap()
            .display()
            .to_string()
    };
    let (a, b) = (abs("a"), abs("b"));
    (env, a, b)
}

/// `pvsnap ARGS` run in `rel` below the test's folder, whatever the exit code.
fn in_dir(env: &Env, rel: &str, args: &[&str]) -> Output {
    env.cmd()
        .current_dir(env.path(rel))
        .args(args)
        .output()
        .expect("run pvsnap")
}

fn ids(out: &Output) -> Vec<String> {
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    v.iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn latest_with_several_sources_fails_naming_each_as_latest_source() {
    let (env, a, b) = two_sources();
    let target = env.path("restored");
    let target = target.to_str().unwrap();
    let mut commands: Vec<Vec<&str>> = vec![
        vec!["dump", "latest", "/f"],
        vec!["ls", "latest"],
        vec!["restore", "latest", "--target", target],
        vec!["diff", "latest", "latest"],
    ];
    let mnt = env.path("mnt");
    fs::create_dir(&mnt).unwrap();
    if Path::new("/dev/fuse").exists() {
        commands.push(vec!["mount", mnt.to_str().unwrap(), "--snapshot", "latest"]);
    }
    for args in &commands {
        let out = env.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "pvsnap: error: `latest` is ambiguous: this repository holds snapshots of 2 sources; name one as `latest:SOURCE`:\n  latest:{a}\n  latest:{b}\n"
            )),
            "{args:?}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    assert!(!target_exists(&env), "nothing was restored");

    // The form the message offers works, for each source.
    assert_eq!(
        env.ok(&["dump", &format!("latest:{a}"), "/f"]).stdout,
        b"a2"
    );
    assert_eq!(env.ok(&["dump", &format!("latest:{b}"), "/f"]).stdout, b"b");
}

fn target_exists(env: &Env) -> bool {
    env.path("restored").exists()
}

#[test]
fn latest_with_one_source_is_its_newest_snapshot() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "one").unwrap();
    env.snapshot(&src, &[]);
    fs::write(src.join("f"), "two").unwrap();
    env.snapshot(&src, &[]);
    assert_eq!(env.ok(&["dump", "latest", "/f"]).stdout, b"two");
}

#[test]
fn diff_takes_latest_from_the_other_side_and_says_when_sources_differ() {
    let (env, a, b) = two_sources();
    let of_a = ids(&env.ok(&["snapshots", "--source", &a, "--json"]));
    let of_b = ids(&env.ok(&["snapshots", "--source", &b, "--json"]));
    assert_eq!((of_a.len(), of_b.len()), (2, 1));

    // `latest` is a's newest, not b's (the newest of the repository).
    let out = env.ok(&["diff", &of_a[0], "latest", "--json"]);
    let changes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = changes.as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["path"], "/f");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // On the left too: a's newest against itself.
    let out = env.ok(&["diff", "latest", &of_a[1], "--json"]);
    assert_eq!(stdout(&out).trim(), "[]");

    // Two sources named explicitly are compared, with a word about it.
    let out = env.ok(&["diff", &of_a[1], &of_b[0]]);
    assert!(
        stderr(&out).contains(&format!(
            "pvsnap: comparing snapshots of two sources: {} ({a}) and {} ({b})",
            &of_a[1][..8],
            &of_b[0][..8]
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn relative_source_paths_name_the_snapshotted_source() {
    let (env, a, _) = two_sources();
    // The snapshot recorded the absolute path of `vols/a`.
    let listed: Vec<Value> =
        serde_json::from_slice(&env.ok(&["snapshots", "--source", &a, "--json"]).stdout).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["source"]["path"], a.as_str());

    // The same relative path finds it, from where it was taken and from
    // elsewhere through `..`, in `snapshots --source` and in `latest:SOURCE`.
    for (cwd, rel) in [(".", "vols/a"), (".", "./vols/a/"), ("vols/b", "../a")] {
        let out = in_dir(&env, cwd, &["snapshots", "--source", rel, "--json"]);
        assert_eq!(ids(&out).len(), 2, "{cwd} {rel}: {}", stderr(&out));
        let out = in_dir(&env, cwd, &["dump", &format!("latest:{rel}"), "/f"]);
        assert_eq!(out.stdout, b"a2", "{cwd} {rel}: {}", stderr(&out));
    }

    // A folder that is gone (the moment to restore it) is still named by
    // its relative path.
    fs::remove_dir_all(env.path("vols/a")).unwrap();
    let out = in_dir(&env, ".", &["dump", "latest:vols/a", "/f"]);
    assert_eq!(out.stdout, b"a2", "{}", stderr(&out));
    let out = in_dir(&env, ".", &["snapshots", "--source", "vols/a", "--json"]);
    assert_eq!(ids(&out).len(), 2);

    // A source without snapshots is named, resolved, with the ones that have some.
    let out = in_dir(&env, ".", &["dump", "latest:vols/c", "/f"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let c = env.path("vols/c");
    assert!(
        err.contains(&format!(
            "no snapshot of source `vols/c` (that is {}); the sources with snapshots are:\n  latest:{a}\n",
            fs::canonicalize(env.path("vols")).unwrap().join("c").display()
        )),
        "{err} ({})",
        c.display()
    );
}

#[test]
fn restore_to_pvc_takes_latest_of_that_claim() {
    let k = Kube::new();
    fs::write(k.data().join("PG_VERSION"), b"16\n").unwrap();
    fs::write(k.data().join("postgresql.conf"), b"claim").unwrap();
    let (code, _, err) = k.snapshot(&["pvc/default/data", "--time", "2026-01-01T00:00:00Z"]);
    assert_eq!(code, 0, "{err}");
    // A folder snapshotted later is the newest snapshot of the repository.
    let other = k.env.path("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("postgresql.conf"), b"folder").unwrap();
    k.env.snapshot(&other, &["--time", "2026-01-02T00:00:00Z"]);

    fs::write(k.data().join("postgresql.conf"), b"changed").unwrap();
    let out = k.ok(&["restore", "latest", "--to-pvc", "default/data", "--yes"]);
    assert_eq!(
        fs::read(k.data().join("postgresql.conf")).unwrap(),
        b"claim",
        "{}",
        stderr(&out)
    );
    assert!(k.data().join("PG_VERSION").exists());
}
