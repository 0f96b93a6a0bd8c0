//! Issue #19, items 6 and 9: one bad source does not cancel the others, a
//! symbolic link to a folder is followed, and incomplete and repaired
//! snapshots say what they hold (`snapshots`, `repair snapshots`, `check`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{self, Env};
use crate::util::{code, stderr, stdout};

fn write(dir: &Path, name: &str, content: &[u8]) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("JSON on standard output")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn one_bad_source_does_not_cancel_the_others() {
    let env = Env::new();
    env.init();
    let ok = env.path("ok");
    write(&ok, "f", b"kept");
    let file = env.path("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let nope = env.path("nope");

    let out = code(&env, &["snapshot", s(&nope), s(&ok), s(&file), "--json"], 1);
    let err = stderr(&out);
    let taken = json(&out);
    assert_eq!(taken.as_array().unwrap().len(), 1, "{taken}");
    let ok_abs = std::fs::canonicalize(&ok).unwrap();
    assert_eq!(taken[0]["source"]["path"], s(&ok_abs));
    assert!(
        err.contains(&format!("{}: cannot snapshot", nope.display()))
            && err.contains("check the path"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: not a folder", file.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "2 of 3 source(s) failed: {}, {}; 1 snapshot(s) saved (exit code 1)",
            nope.display(),
            file.display()
        )),
        "{err}"
    );
    let listed = json(&env.ok(&["snapshots", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Nothing left to snapshot: exit 1, each failure named, nothing saved.
    let out = code(&env, &["snapshot", s(&nope)], 1);
    assert!(
        stderr(&out).contains("1 of 1 source(s) failed")
            && stderr(&out).contains("nothing was saved"),
        "{}",
        stderr(&out)
    );
    let listed = json(&env.ok(&["snapshots", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

#[test]
fn a_symlink_to_a_folder_is_followed_and_the_folder_recorded() {
    let env = Env::new();
    env.init();
    let real = env.path("real");
    write(&real, "data/f", b"through the link");
    let link = env.path("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    let out = code(&env, &["snapshot", s(&link), "--json"], 0);
    let real_abs = std::fs::canonicalize(&real).unwrap();
    let taken = json(&out);
    assert_eq!(taken[0]["source"]["path"], s(&real_abs), "{taken}");
    assert_eq!(taken[0]["summary"]["total_files"], 1, "{taken}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{} is a symbolic link: snapshotting the folder it resolves to, {}",
            link.display(),
            real_abs.display()
        )),
        "{err}"
    );

    // A link to nothing, or to a file, is refused with what it points to.
    let dangling = env.path("dangling");
    std::os::unix::fs::symlink(env.path("gone"), &dangling).unwrap();
    let to_file = env.path("to-file");
    std::os::unix::fs::symlink(real.join("data/f"), &to_file).unwrap();
    let out = code(&env, &["snapshot", s(&dangling), s(&to_file)], 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: a symbolic link to {}, which cannot be reached",
            dangling.display(),
            env.path("gone").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: a symbolic link to", to_file.display()))
            && err.contains("which is not a folder"),
        "{err}"
    );
}

/// Runs pvsnap as an unprivileged user (root is needed to switch).
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_pvsnap"),
        ])
        .args(args)
        .env_remove("PVSNAP_REPO")
        .env_remove("PVSNAP_PASSWORD")
        .env_remove("PVSNAP_PASSWORD_FILE")
        .output()
        .expect("setpriv")
}

#[test]
fn a_snapshot_with_unreadable_files_is_marked_incomplete() {
    if !util::is_root() {
        if std::env::var("PVSNAP_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
            eprintln!("SKIPPED: needs root to switch to an unprivileged user");
            return;
        }
        panic!("needs root to switch users; run as root, or set PVSNAP_SKIP_ROOT_TESTS=1");
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    let partial = env.path("partial");
    let whole = env.path("whole");
    for (dir, names) in [(&partial, &["a", "b", "secret"][..]), (&whole, &["c"][..])] {
        std::fs::create_dir(dir).unwrap();
        mode(dir, 0o755).unwrap();
        for n in names {
            std::fs::write(dir.join(n), n.as_bytes()).unwrap();
            mode(&dir.join(n), 0o644).unwrap();
        }
    }
    mode(&partial.join("secret"), 0o600).unwrap();
    let repo = env.repo();
    let base = ["--repo", s(&repo)];
    let run = |more: &[&str]| as_nobody(&[&base[..], more].concat());
    assert!(run(&["init"]).status.success());
    assert_eq!(run(&["snapshot", s(&partial)]).status.code(), Some(3));
    assert_eq!(run(&["snapshot", s(&whole)]).status.code(), Some(0));

    let out = run(&["snapshots", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let by_source = |dir: &Path| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|x| x["source"]["path"] == s(dir))
            .unwrap_or_else(|| panic!("{v}"))
            .clone()
    };
    let p = by_source(&partial);
    assert_eq!(p["incomplete"], true, "{p}");
    assert_eq!(p["missing_paths"], 1, "{p}");
    assert_eq!(p["errors"][0]["kind"], "unreadable", "{p}");
    let w = by_source(&whole);
    assert_eq!(w["incomplete"], false, "{w}");
    assert_eq!(w["missing_paths"], 0, "{w}");

    let out = run(&["snapshots"]);
    let table = stdout(&out);
    let line = |dir: &Path| {
        table
            .lines()
            .find(|l| l.contains(&format!(" {}", dir.display())))
            .unwrap_or_else(|| panic!("{table}"))
            .to_string()
    };
    assert!(
        line(&partial).ends_with(&format!(
            "{}  [incomplete: 1 path(s) missing]",
            partial.display()
        )),
        "{table}"
    );
    assert!(line(&whole).ends_with(s(&whole)), "{table}");
    assert!(
        table.contains("1 incomplete: paths that could not be read"),
        "{table}"
    );
}

/// Two snapshots of one folder; the data pack only the second uses is
/// removed. Returns the env, the second snapshot's id and the source.
fn damaged_second() -> (Env, String, PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for (i, n) in ["a.bin", "b.bin", "sub/c.bin"].iter().enumerate() {
        write(&src, n, &util::noise(i as u64, 300_000));
    }
    env.snapshot(&src, &[]);
    let packs = |repo: &Path| -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(repo.join("data")).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                out.push(f.unwrap().path());
            }
        }
        out
    };
    let before = packs(&env.repo());
    write(&src, "only-second.bin", &util::noise(99, 300_000));
    let second = env.snapshot(&src, &[])["id"].as_str().unwrap().to_string();
    let biggest = packs(&env.repo())
        .into_iter()
        .filter(|p| !before.contains(p))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(biggest).unwrap();
    (env, second, src)
}

#[test]
fn a_repaired_copy_says_what_it_holds_and_check_names_the_original_to_forget() {
    let (env, second, _src) = damaged_second();

    let out = code(&env, &["repair", "snapshots"], 0);
    let text = stdout(&out);
    assert!(
        text.contains("holding 3 file(s), 878.9 KiB; lost:"),
        "{text}"
    );
    assert!(
        text.contains(&format!("run `pvsnap forget {second}`")),
        "{text}"
    );

    let snaps = json(&env.ok(&["snapshots", "--json"]));
    let find = |pred: &dyn Fn(&Value) -> bool| {
        snaps
            .as_array()
            .unwrap()
            .iter()
            .find(|x| pred(x))
            .unwrap_or_else(|| panic!("{snaps}"))
            .clone()
    };
    let copy = find(&|x| x["labels"]["repaired_from"] == second.as_str());
    let original = find(&|x| x["id"] == second.as_str());
    assert_eq!(copy["summary"]["total_files"], 3, "{copy}");
    assert_eq!(copy["summary"]["total_bytes"], 900_000, "{copy}");
    assert_eq!(copy["incomplete"], true, "{copy}");
    assert_eq!(copy["missing_paths"], 1, "{copy}");
    assert_eq!(original["summary"]["total_files"], 4, "{original}");
    let copy_id = copy["id"].as_str().unwrap().to_string();
    let copy_short = copy["short_id"].as_str().unwrap().to_string();

    // The copy restores what its summary says.
    let target = env.path("restored");
    env.ok(&["restore", &copy_id, "--target", s(&target)]);
    assert_eq!(util::manifest(&target).len(), 3 + 1, "three files and sub/");

    // check still fails about the original, and says it waits to be forgotten.
    let out = code(&env, &["check"], 4);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "repaired as {copy_short}: this damaged original stays until it is forgotten"
        )) && text.contains(&format!("run `pvsnap forget {second}`")),
        "{text}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "1 damaged snapshot(s) have repaired copies: `pvsnap forget {second}` removes the originals"
        )),
        "{err}"
    );
    let r = json(&code(&env, &["check", "--json"], 4));
    assert_eq!(r["damaged_snapshots"][0]["id"], second.as_str(), "{r}");
    assert_eq!(
        r["damaged_snapshots"][0]["repaired_as"],
        copy_id.as_str(),
        "{r}"
    );

    // Doing what it says leaves a clean repository.
    env.ok(&["forget", &second, "--prune", "--grace", "0"]);
    env.ok(&["check", "--read-data"]);
}
