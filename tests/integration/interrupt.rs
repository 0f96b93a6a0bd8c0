//! Interrupted snapshots keep their work: SIGINT and SIGTERM stop cleanly
//! (exit 130/143, what was stored indexed, no lock left, post hook run), a
//! kill -9 leaves what the last index checkpoint named, and the next
//! snapshot stores only what is missing. Also `restore --delete` killed
//! partway, then run again.
//!
//! The signal is sent once the repository holds a number of packs, so no
//! assertion depends on time; a snapshot that ended before it fails the test.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::util::{self, Env};

/// Source: 24 files of 4 MiB of noise (incompressible, so stored bytes are
/// source bytes), in a repository of 1 MiB packs.
const FILES: usize = 24;
const FILE_LEN: usize = 4 << 20;
const SOURCE: u64 = (FILES * FILE_LEN) as u64;
/// A pack holds up to a chunk more than the pack size (chunks up to 4 MiB).
const ONE_PACK: u64 = 5 << 20;

fn setup() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    util::write_noise_files(&src, 7, FILES, FILE_LEN);
    (env, src)
}

/// Bytes of the files below `dir` (0 if it does not exist).
fn bytes_below(dir: &Path) -> u64 {
    if !dir.exists() {
        return 0;
    }
    util::files_below(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

fn count_below(dir: &Path) -> usize {
    if dir.exists() {
        util::files_below(dir).len()
    } else {
        0
    }
}

/// Starts `pvsnap snapshot SRC ARGS` with `envs`.
fn spawn_snapshot(env: &Env, src: &Path, args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut c = env.cmd();
    c.arg("snapshot").arg(src).args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pvsnap")
}

/// Waits until the repository holds `packs` packs, then sends `signal`.
fn signal_after_packs(env: &Env, child: &mut Child, packs: usize, signal: i32) {
    let data = env.repo().join("data");
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "the snapshot ended ({status}) before it stored {packs} packs; the test needs a slower source"
            );
        }
        if count_below(&data) >= packs {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill on the pid of our own child, which has not been reaped.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(r, 0, "kill {}", child.id());
}

/// The next snapshot, after an interruption: reads everything, stores only
/// what is missing, and `check --read-data` is clean.
fn next_snapshot_adds(env: &Env, src: &Path) -> u64 {
    let v = env.snapshot(src, &[]);
    let s = &v["summary"];
    assert_eq!(s["bytes_read"].as_u64(), Some(SOURCE), "{v}");
    let out = env.ok(&["check", "--read-data"]);
    let all = format!("{}{}", util::stdout(&out), util::stderr(&out));
    assert!(!all.contains("no index"), "check after the next run: {all}");
    assert!(!all.contains("warning"), "check after the next run: {all}");
    s["bytes_added"].as_u64().expect("bytes_added")
}

#[test]
fn sigint_and_sigterm_stop_cleanly_and_the_next_snapshot_stores_only_the_rest() {
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let (env, src) = setup();
        let marker = env.path("post-hook-ran");
        let post = format!("touch {}", marker.display());
        // SIGTERM with host hooks: the post hook runs after the stop.
        let args: Vec<&str> = if signal == libc::SIGTERM {
            vec!["--pre-hook", "true", "--post-hook", &post]
        } else {
            vec![]
        };
        let mut child = spawn_snapshot(&env, &src, &args, &[]);
        signal_after_packs(&env, &mut child, 8, signal);
        let out = child.wait_with_output().expect("wait");
        let err = util::stderr(&out);
        assert_eq!(out.status.code(), Some(code), "signal {signal}: {err}");
        let src_text = std::fs::canonicalize(&src).unwrap().display().to_string();
        assert!(
            err.contains("pvsnap: interrupted: kept ")
                && err.contains(&format!(
                    "the next snapshot of {src_text} stores only what is missing"
                )),
            "{err}"
        );
        if signal == libc::SIGTERM {
            assert!(marker.exists(), "the post hook did not run: {err}");
        }
        // No lock left, no snapshot, and what was stored is indexed.
        assert_eq!(count_below(&env.repo().join("locks")), 0, "{err}");
        let snaps = env.ok(&["snapshots", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
        assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
        assert!(count_below(&env.repo().join("index")) >= 1, "{err}");
        let kept = bytes_below(&env.repo().join("data"));
        assert!(kept >= 8 << 20, "kept {kept} bytes");
        let check = env.ok(&["check"]);
        let all = format!("{}{}", util::stdout(&check), util::stderr(&check));
        assert!(!all.contains("no index"), "check after the stop: {all}");

        let added = next_snapshot_adds(&env, &src);
        assert!(
            added <= SOURCE - kept + ONE_PACK,
            "signal {signal}: the next run added {added} bytes of {SOURCE}, though {kept} were kept"
        );
        let total = bytes_below(&env.repo().join("data"));
        assert!(
            total <= SOURCE + 2 * ONE_PACK,
            "signal {signal}: the repository holds {total} bytes of packs for {SOURCE} of source"
        );
    }
}

#[test]
fn kill_9_keeps_what_the_last_checkpoint_indexed() {
    let (env, src) = setup();
    let checkpoint: u64 = 4 << 20;
    let mut child = spawn_snapshot(
        &env,
        &src,
        &[],
        &[("PVSNAP_CHECKPOINT_BYTES", &checkpoint.to_string())],
    );
    signal_after_packs(&env, &mut child, 12, libc::SIGKILL);
    child.wait().expect("wait");
    let stored = bytes_below(&env.repo().join("data"));
    assert!(count_below(&env.repo().join("index")) >= 2, "no checkpoint");

    // Unindexed at most: what came after the last checkpoint, and the
    // packs on their way (one per kind being written).
    let added = env.snapshot(&src, &[])["summary"]["bytes_added"]
        .as_u64()
        .unwrap();
    assert!(
        added <= SOURCE - stored + checkpoint + 2 * ONE_PACK,
        "after kill -9 with {stored} bytes of packs stored the next run added {added} of {SOURCE}"
    );
    // The packs written after the last checkpoint are garbage prune removes.
    env.ok(&["prune", "--grace", "0"]);
    let out = env.ok(&["check", "--read-data"]);
    let all = format!("{}{}", util::stdout(&out), util::stderr(&out));
    assert!(!all.contains("warning"), "{all}");
    let restored = env.path("restored");
    env.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    assert_eq!(util::manifest(&restored), util::manifest(&src));
}

#[test]
fn restore_delete_killed_partway_then_run_again_gives_exactly_the_snapshot() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    util::write_noise_files(&src.join("a"), 1, 16, 1 << 20);
    util::write_noise_files(&src.join("b/c"), 100, 16, 256 << 10);
    env.snapshot(&src, &[]);
    let target = env.path("target");
    let mut killed_partway = 0;
    for delay_ms in [0u64, 20, 60, 150, 400] {
        // A target far from the snapshot: other content, extra files.
        let _ = std::fs::remove_dir_all(&target);
        util::write_noise_files(&target.join("a"), 50, 20, 512 << 10);
        util::write_noise_files(&target.join("extra/deep"), 9, 4, 1000);
        let mut child = env
            .cmd()
            .args(["restore", "latest", "--delete", "--target"])
            .arg(&target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start restore");
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().expect("wait").is_none() {
            killed_partway += 1;
        }
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        env.ok(&[
            "restore",
            "latest",
            "--delete",
            "--target",
            target.to_str().unwrap(),
        ]);
        assert_eq!(
            util::manifest(&target),
            util::manifest(&src),
            "after a kill at {delay_ms} ms"
        );
    }
    assert!(
        killed_partway > 0,
        "every restore ended before its kill; the test killed none partway"
    );
}

#[test]
fn a_second_ctrl_c_stops_at_once_and_blocks_nothing() {
    let (env, src) = setup();
    let mut child = spawn_snapshot(&env, &src, &[], &[]);
    signal_after_packs(&env, &mut child, 8, libc::SIGINT);
    // SAFETY: kill on the pid of our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", util::stderr(&out));
    // The lock it may have left is stale (this host, pid gone): prune
    // (exclusive) removes the packs it left unindexed, and the next
    // snapshot is whole.
    env.ok(&["prune", "--grace", "0"]);
    let added = next_snapshot_adds(&env, &src);
    assert!(added <= SOURCE + ONE_PACK, "{added}");
}
