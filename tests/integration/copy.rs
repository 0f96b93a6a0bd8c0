//! `pvsnap copy` between two local repositories, through the binary.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{self, Env};

/// A second repository beside `env`'s, with its password file.
struct Target {
    path: PathBuf,
    password_file: Option<PathBuf>,
}

impl Target {
    /// `init` of a new repository at `name`, encrypted when `password` is
    /// given, with `extra` init options.
    fn new(env: &Env, name: &str, password: Option<&str>, extra: &[&str]) -> Target {
        let path = env.path(name);
        let password_file = password.map(|p| {
            let f = env.path(&format!("{name}.pw"));
            std::fs::write(&f, p).unwrap();
            f
        });
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pvsnap"));
        cmd.arg("--repo").arg(&path).arg("init").args(extra);
        if let Some(f) = &password_file {
            cmd.arg("--encryption").arg("--password-file").arg(f);
        }
        let out = cmd.env_remove("PVSNAP_PASSWORD").output().unwrap();
        assert!(out.status.success(), "init {name}: {}", util::stderr(&out));
        Target {
            path,
            password_file,
        }
    }

    /// `pvsnap --repo <target> ARGS` with its password.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pvsnap"));
        cmd.arg("--repo").arg(&self.path);
        if let Some(f) = &self.password_file {
            cmd.arg("--password-file").arg(f);
        }
        cmd.args(args)
            .env_remove("PVSNAP_PASSWORD")
            .env_remove("PVSNAP_REPO")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "pvsnap {args:?} on the target: {}",
            util::stderr(&out)
        );
        out
    }

    /// The `--to` arguments naming this target.
    fn to_args(&self) -> Vec<String> {
        let mut a = vec!["--to".to_string(), self.path.display().to_string()];
        if let Some(f) = &self.password_file {
            a.extend(["--to-password-file".into(), f.display().to_string()]);
        }
        a
    }

    /// The target's snapshots as JSON.
    fn snapshots(&self) -> Vec<Value> {
        let out = self.ok(&["snapshots", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// `check --read-data` passes, and each snapshot restores to the
    /// manifest its original had.
    fn assert_restores(&self, env: &Env, want: &[(String, Vec<String>)]) {
        self.ok(&["check", "--read-data"]);
        let snaps = self.snapshots();
        for (orig, manifest) in want {
            let copy = snaps
                .iter()
                .find(|s| s["original"].as_str() == Some(orig))
                .unwrap_or_else(|| panic!("no copy of {orig} in {snaps:?}"));
            let dir = env.path(&format!("restored-{}", &copy["id"].as_str().unwrap()[..12]));
            self.ok(&[
                "restore",
                copy["id"].as_str().unwrap(),
                "--target",
                dir.to_str().unwrap(),
            ]);
            assert_eq!(&util::manifest(&dir), manifest, "copy of {orig}");
        }
    }
}

/// `copy ARGS --json` from `env`'s repository (password file `src_pw`),
/// required to succeed.
fn copy(env: &Env, src_pw: Option<&Path>, args: &[String]) -> Value {
    let out = copy_run(env, src_pw, args);
    assert!(
        out.status.success(),
        "copy {args:?}: {}",
        util::stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("copy --json prints JSON")
}

fn copy_run(env: &Env, src_pw: Option<&Path>, args: &[String]) -> Output {
    let mut cmd = env.cmd();
    if let Some(f) = src_pw {
        cmd.arg("--password-file").arg(f);
    }
    cmd.arg("copy").args(args).arg("--json");
    cmd.env_remove("PVSNAP_TO_PASSWORD").output().unwrap()
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Two sources, three snapshots; returns (snapshot id, manifest of what it
/// holds) for each.
fn history(env: &Env, extra: &[&str]) -> Vec<(String, Vec<String>)> {
    let (a, b) = (env.path("src/a"), env.path("src/b"));
    util::write_noise_files(&a, 1, 6, 300_000);
    util::write_noise_files(&b, 100, 3, 200_000);
    std::fs::write(a.join("text"), b"hello\n".repeat(50_000)).unwrap();
    let mut out = Vec::new();
    for (dir, change) in [(&a, false), (&b, false), (&a, true)] {
        if change {
            std::fs::write(dir.join("f01"), util::noise(999, 250_000)).unwrap();
        }
        let s = env.snapshot(dir, extra);
        out.push((s["id"].as_str().unwrap().to_string(), util::manifest(dir)));
    }
    out
}

#[test]
fn copy_between_encrypted_and_plain_repositories_restores_bit_exact() {
    let env = Env::new();
    env.init();
    let hist = history(&env, &[]);
    // Plain into encrypted (its own password and keys).
    let enc = Target::new(&env, "offsite", Some("offsite secret"), &[]);
    let j = copy(&env, None, &enc.to_args());
    for field in [
        "snapshots_copied",
        "blobs_copied",
        "bytes_sent",
        "duration_s",
    ] {
        assert!(j.get(field).is_some(), "{field} missing from {j}");
    }
    assert_eq!(j["snapshots_copied"], 3);
    assert_eq!(j["reencoded"], true);
    assert!(j["blobs_copied"].as_u64().unwrap() > 10);
    assert!(j["bytes_sent"].as_u64().unwrap() > 2_000_000);
    enc.assert_restores(&env, &hist);
    // Again: nothing to copy, nothing sent.
    let j = copy(&env, None, &enc.to_args());
    assert_eq!(
        (j["snapshots_copied"].as_u64(), j["blobs_copied"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(j["bytes_sent"], 0);
    assert_eq!(j["snapshots_already_there"], 3);

    // Encrypted into plain: the offsite repository as the source.
    let plain = Target::new(&env, "plain", None, &[]);
    let env2 = Env {
        dir: tempfile::tempdir().unwrap(),
        repo_at: None,
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pvsnap"));
    cmd.arg("--repo")
        .arg(&enc.path)
        .arg("--password-file")
        .arg(enc.password_file.as_ref().unwrap());
    let out = cmd
        .arg("copy")
        .args(plain.to_args())
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["snapshots_copied"], 3);
    plain.assert_restores(&env2, &hist);
    // The copy of a copy names the first snapshot: copying the first
    // repository there now copies nothing.
    let j = copy(&env, None, &plain.to_args());
    assert_eq!(j["snapshots_copied"], 0);

    // A relative --to reaches the same target.
    let out = env
        .cmd()
        .current_dir(env.dir.path())
        .args(["copy", "--to", "plain", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
}

#[test]
fn copy_into_a_target_with_other_chunks_and_the_shared_chunker() {
    let env = Env::new();
    env.init();
    let hist = history(&env, &[]);
    let other = Target::new(
        &env,
        "other",
        None,
        &["--chunker", "64,128,512", "--pack-size", "1"],
    );
    let j = copy(&env, None, &other.to_args());
    assert_eq!(j["snapshots_copied"], 3);
    other.assert_restores(&env, &hist);

    // A target made to cut like the source: a snapshot taken directly into
    // it after the copy stores no data the copy brought.
    let same = Target::new(
        &env,
        "same",
        Some("pw2"),
        &["--copy-chunker-params-from", env.repo().to_str().unwrap()],
    );
    copy(&env, None, &same.to_args());
    let a = env.path("src/a");
    for f in util::files_below(&a) {
        util::set_mtime(&f, 1_700_000_000, 0); // read again, not taken from the parent
    }
    for (t, dedups) in [(&same, true), (&other, false)] {
        let out = t.ok(&["snapshot", a.to_str().unwrap(), "--json"]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        let added = s[0]["summary"]["data_blobs_added"].as_u64().unwrap();
        assert_eq!(
            added == 0,
            dedups,
            "{}: {added} data blobs added",
            t.path.display()
        );
    }
    // Its config does not show the source's seed: it is sealed.
    let config = std::fs::read(same.path.join("config")).unwrap();
    assert!(String::from_utf8_lossy(&config).contains("chunker_seed_sealed"));
}

/// Runs `copy ARGS`, which must fail with `code` and say each of `says`.
fn refused(env: &Env, args: &[String], code: i32, says: &[&str]) {
    let out = copy_run(env, None, args);
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(code), "copy {args:?}: {err}");
    for s in says {
        assert!(err.contains(s), "copy {args:?} does not say {s:?}: {err}");
    }
}

#[test]
fn copy_refuses_what_it_cannot_do_with_a_way_forward() {
    let env = Env::new();
    env.init();
    history(&env, &[]);
    let t = Target::new(&env, "t", Some("tpw"), &[]);
    let with = |extra: &[&str]| {
        let mut a = t.to_args();
        a.extend(strings(extra));
        a
    };
    // Specs matching nothing.
    refused(&env, &with(&["deadbeef"]), 1, &["deadbeef"]);
    refused(
        &env,
        &with(&["--source", "/no/such/source"]),
        1,
        &["/no/such/source"],
    );
    // A target that does not exist: nothing is created there.
    let missing = env.path("nowhere");
    let to_missing = strings(&["--to", missing.to_str().unwrap()]);
    refused(
        &env,
        &to_missing,
        1,
        &["nowhere", "not a pvsnap repository", "init"],
    );
    assert!(!missing.exists(), "copy created the target");
    // The source itself, by another spelling of its path.
    let name = env
        .repo()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let itself = format!("{}/../{name}", env.repo().display());
    refused(&env, &strings(&["--to", &itself]), 1, &["same repository"]);
    // An encrypted target without its password; then a wrong one (exit 12).
    let to_t = strings(&["--to", t.path.to_str().unwrap()]);
    refused(
        &env,
        &to_t,
        1,
        &["--to-password-file", "PVSNAP_TO_PASSWORD"],
    );
    let wrong = env.path("wrong.pw");
    std::fs::write(&wrong, "nope").unwrap();
    let mut args = to_t.clone();
    args.extend(strings(&["--to-password-file", wrong.to_str().unwrap()]));
    refused(&env, &args, 12, &[]);
    assert!(t.snapshots().is_empty());
    // A rate that is none.
    refused(&env, &with(&["--limit-upload", "fast"]), 2, &["fast"]);
}

#[test]
fn each_side_keeps_its_own_retention() {
    let env = Env::new();
    env.init();
    let hist = history(&env, &[]);
    let t = Target::new(&env, "t", None, &[]);
    // Only source a: two snapshots.
    let mut args = t.to_args();
    args.extend(strings(&["--source", env.path("src/a").to_str().unwrap()]));
    assert_eq!(copy(&env, None, &args)["snapshots_copied"], 2);
    // Forget and prune everything but the latest on the source...
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    // ...the target keeps both copies, whole.
    t.assert_restores(&env, &[hist[0].clone(), hist[2].clone()]);
    // Forget and prune on the target leaves the source alone.
    t.ok(&["forget", "--keep-last", "1", "--prune"]);
    env.ok(&["check", "--read-data"]);
    let dir = env.path("r-src");
    env.ok(&["restore", &hist[1].0, "--target", dir.to_str().unwrap()]);
    assert_eq!(util::manifest(&dir), hist[1].1);
}

/// Pack files of a repository folder.
fn packs(repo: &Path) -> Vec<PathBuf> {
    util::files_below(&repo.join("data"))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// The blob ids in an unencrypted pack's trailer (FORMAT.md, "Packs").
fn blob_ids(pack: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(pack).unwrap();
    let tlen = u32::from_le_bytes(b[b.len() - 4..].try_into().unwrap()) as usize;
    let t = &b[b.len() - 4 - tlen..b.len() - 4];
    let n = u32::from_le_bytes(t[..4].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| t[4 + i * 46 + 2..4 + i * 46 + 34].to_vec())
        .collect()
}

#[test]
fn a_copy_killed_partway_resumes_without_sending_a_pack_twice() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    let dir = env.path("big");
    util::write_noise_files(&dir, 7, 12, 1 << 20);
    env.snapshot(&dir, &[]);
    let t = Target::new(&env, "t", None, &["--pack-size", "1"]);
    // Paced at 2 MiB/s, the 12 MiB copy takes about 6 s: killed once two
    // packs are in place.
    let mut child = env
        .cmd()
        .args([
            "copy",
            "--to",
            t.path.to_str().unwrap(),
            "--limit-upload",
            "2M",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while packs(&t.path).len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no pack written"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "copy ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Prune on the target waits for the copy: refused by its lock.
    let out = t.run(&["prune"]);
    assert_eq!(out.status.code(), Some(11), "{}", util::stderr(&out));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let before = packs(&t.path);
    assert!(t.snapshots().is_empty(), "a snapshot before its data");
    // Once the killed copy's lock is stale, prune runs, and keeps its young
    // packs, which no checkpoint has indexed yet (the grace period).
    assert!(util::files_below(&t.path.join("index")).is_empty());
    t.ok(&["prune"]);
    assert_eq!(packs(&t.path), before);
    let j = copy(&env, None, &t.to_args());
    assert_eq!(j["snapshots_copied"], 1);
    let after = packs(&t.path);
    // Every pack of the killed run is still there, and the resumed run
    // wrote only the others: no blob is stored twice.
    assert!(before.iter().all(|p| after.contains(p)));
    assert_eq!(
        after.len() as u64,
        before.len() as u64 + j["packs_written"].as_u64().unwrap()
    );
    let mut ids: Vec<Vec<u8>> = after.iter().flat_map(|p| blob_ids(p)).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a blob was sent twice");
    assert!(j["blobs_present"].as_u64().unwrap() >= 2, "{j}");
    let hist =
        vec![
            (
                serde_json::from_slice::<Value>(&env.ok(&["snapshots", "--json"]).stdout).unwrap()
                    [0]["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                util::manifest(&dir),
            ),
        ];
    t.assert_restores(&env, &hist);
}

#[test]
fn limit_upload_paces_the_copy() {
    let env = Env::new();
    env.init();
    let dir = env.path("d");
    util::write_noise_files(&dir, 3, 3, 1 << 20);
    env.snapshot(&dir, &[]);
    let t = Target::new(&env, "t", None, &[]);
    let mut args = t.to_args();
    args.extend(strings(&["--limit-upload", "1M", "--connections", "2"]));
    let j = copy(&env, None, &args);
    // Over 3 MiB at 1 MiB/s: about 3 s however fast the machine (the pace
    // starts when the target is opened, a little before the copy).
    let sent = j["bytes_sent"].as_u64().unwrap();
    assert!(sent > 3 << 20, "{j}");
    assert!(j["duration_s"].as_f64().unwrap() >= 2.5, "{j}");
}

/// `audit --json` of a repository, as (operation, source, outcome, time).
fn trail(out: Output) -> Vec<(String, String, String, String)> {
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut t: Vec<_> = v
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap().to_string(),
                e["source"].as_str().unwrap_or("").to_string(),
                e["outcome"].as_str().unwrap().to_string(),
                e["time"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    t.sort();
    t
}

#[test]
fn audit_entries_travel_with_copy_once_and_verify_clean() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    env.snapshot(&src, &[]);
    crate::util::code(
        &env,
        &["snapshot", env.path("missing").to_str().unwrap()],
        1,
    );
    env.ok(&["check"]);
    assert_eq!(trail(env.ok(&["audit", "--json"])).len(), 3);
    for (name, password) in [("plain", None), ("sealed", Some("other secret"))] {
        // The second target also gets the first one's copy entries.
        let source_trail = trail(env.ok(&["audit", "--json"]));
        let source_ids: Vec<String> =
            serde_json::from_slice::<Vec<Value>>(&env.ok(&["audit", "--json"]).stdout)
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect();
        let t = Target::new(&env, name, password, &[]);
        let j = copy(&env, None, &t.to_args());
        let copied = &j["audit_entries"];
        let target_ids: Vec<String> =
            serde_json::from_slice::<Vec<Value>>(&t.ok(&["audit", "--json"]).stdout)
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect();
        // The source's entries (the copy's own is written after it, to the
        // source) are all in the target's trail.
        let there = trail(t.ok(&["audit", "--json"]));
        for e in &source_trail {
            assert!(there.contains(e), "{name}: {e:?} not in {there:?}");
        }
        if password.is_none() {
            assert_eq!(copied["verbatim"], source_ids.len(), "{name}: {j}");
            for id in &source_ids {
                assert!(target_ids.contains(id), "{name}: id {id} changed");
            }
        } else {
            assert_eq!(copied["resealed"], source_ids.len(), "{name}: {j}");
        }
        // The failure counts in the target's metrics too.
        let m = String::from_utf8(t.ok(&["metrics"]).stdout).unwrap();
        assert!(
            m.lines()
                .any(|l| l.starts_with("pvsnap_snapshot_failures_total{")
                    && l.contains("missing")
                    && l.ends_with(" 1")),
            "{name}: {m}"
        );
        let v = t.ok(&["audit", "verify"]);
        assert!(
            String::from_utf8_lossy(&v.stdout).contains("intact"),
            "{name}: {}",
            String::from_utf8_lossy(&v.stdout)
        );
        // Again: the source's trail now has one more entry (the first
        // copy's), which is all that travels.
        let before = there.len();
        let j = copy(&env, None, &t.to_args());
        let n = j["audit_entries"]["verbatim"].as_u64().unwrap()
            + j["audit_entries"]["resealed"].as_u64().unwrap();
        assert_eq!(n, 1, "{name}: only the first copy's own entry: {j}");
        let after = trail(t.ok(&["audit", "--json"]));
        assert_eq!(after.len(), before + n as usize, "{name}");
        // Nothing new at the source but the last copy's entry: one more.
        let j = copy(&env, None, &t.to_args());
        let n = j["audit_entries"]["verbatim"].as_u64().unwrap()
            + j["audit_entries"]["resealed"].as_u64().unwrap();
        assert_eq!((n, j["snapshots_copied"].as_u64()), (1, Some(0)), "{j}");
        t.ok(&["audit", "verify"]);
    }
}
