//! Kill -9 at random points: `snapshot`, `prune` (and `forget --prune`) and
//! `restore` are killed after a random delay, then `check` must pass, no
//! snapshot may be lost, every remaining snapshot must restore bit-exact, and
//! the next command must not be blocked by the killed process's lock.
//!
//! `PVSNAP_KILL_TRIALS` sets the number of trials over the three tests
//! (default 20); `PVSNAP_KILL_SEED` replays the delays of an earlier run (its
//! seed is printed). Delays are drawn up to the length of an uncut run of the
//! same command, measured in the test, and the range is halved after a run
//! that ended before its kill; no assertion depends on time.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, Env};

/// Files of the source: content seeds by relative path.
const FILES: usize = 64;
const FILE_LEN: usize = 384 * 1024;

/// A seeded generator for delays and choices (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A delay from 0 to `max`.
    fn delay(&mut self, max: Duration) -> Duration {
        max.mul_f64(self.below(1001) as f64 / 1000.0)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
    )
}

/// What each test starts from: its share of the trials and a seeded
/// generator ([`setup`]), a repository ([`init`]), and a source folder `src`
/// with what its files hold.
fn start(name: &str, share: u64) -> (u64, Rng, Env, PathBuf, Source) {
    let (trials, rng) = setup(name, share);
    let env = Env::new();
    init(&env);
    let src = env.path("src");
    let source = Source::new(&src);
    (trials, rng, env, src, source)
}

/// This test's share of the trials, and the seed of its generator.
fn setup(name: &str, share: u64) -> (u64, Rng) {
    let total = env_u64("PVSNAP_KILL_TRIALS").unwrap_or(20);
    // Shares are 8, 6 and 6 out of 20.
    let trials = (total * share).div_ceil(20).max(1);
    let seed = env_u64("PVSNAP_KILL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64
    });
    eprintln!(
        "kill -9 of {name}: {trials} trials, seed {seed} (replay with PVSNAP_KILL_SEED={seed})"
    );
    (trials, Rng(seed))
}

/// Counts printed at the end of each test.
#[derive(Debug, Default)]
struct Tally {
    trials: u64,
    killed_mid_run: u64,
    finished_before_kill: u64,
    snapshots_lost: u64,
    check_failures: u64,
    restores_verified: u64,
}

impl Tally {
    /// Counts a trial, whether its kill landed mid-run or not.
    fn trial(&mut self, killed: bool) {
        self.trials += 1;
        if killed {
            self.killed_mid_run += 1;
        } else {
            self.finished_before_kill += 1;
        }
    }

    /// Prints the counts of test `name` and requires a kill mid-run.
    fn report(&self, name: &str) {
        eprintln!("kill -9 of {name}: {self:?}");
        assert!(
            self.killed_mid_run > 0,
            "no kill landed before the end of a run: {self:?}"
        );
    }
}

/// The source folder and what its files hold.
struct Source {
    files: BTreeMap<String, u64>,
    next_seed: u64,
}

impl Source {
    fn new(dir: &Path) -> Source {
        let mut s = Source {
            files: BTreeMap::new(),
            next_seed: 1,
        };
        for i in 0..FILES {
            s.write(dir, &format!("d{}/f{i:02}", i % 4));
        }
        s
    }

    fn write(&mut self, dir: &Path, rel: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, util::noise(self.next_seed, FILE_LEN)).expect("write");
        self.files.insert(rel.to_string(), self.next_seed);
        self.next_seed += 1;
    }

    /// Rewrites a few files and adds one.
    fn change(&mut self, dir: &Path, rng: &mut Rng) {
        for _ in 0..6 {
            let i = rng.below(FILES as u64);
            self.write(dir, &format!("d{}/f{i:02}", i % 4));
        }
        let n = self.next_seed;
        self.write(dir, &format!("new/n{n}"));
    }

    /// Checksums of the files, as a restore must give them back.
    fn expected(&self) -> BTreeMap<String, String> {
        self.files
            .iter()
            .map(|(rel, seed)| (rel.clone(), util::checksum(&util::noise(*seed, FILE_LEN))))
            .collect()
    }
}

/// Checksums of every file below `root`.
fn restored(root: &Path) -> BTreeMap<String, String> {
    util::files_below(root)
        .into_iter()
        .map(|p| {
            let sum = util::checksum(&std::fs::read(&p).expect("read"));
            (util::relative(root, &p), sum)
        })
        .collect()
}

/// A repository with small packs and chunks, so a run writes many packs.
fn init(env: &Env) {
    env.ok(&["init", "--pack-size", "1", "--chunker", "32,128,512"]);
}

/// The range of the kill delays.
struct Delays {
    max: Duration,
}

impl Delays {
    /// Runs pvsnap and kills it after a random delay; returns its output and
    /// whether the kill landed before it finished.
    fn run_and_kill(&mut self, env: &Env, args: &[&str], rng: &mut Rng) -> (Output, bool) {
        let delay = rng.delay(self.max);
        let (out, killed) = run_and_kill(env, args, delay);
        if !killed {
            // Runs are shorter than measured (a warm cache, a lighter load).
            self.max = delay / 2;
        }
        (out, killed)
    }
}

/// Runs pvsnap, kills it with SIGKILL after `delay`; returns its output and
/// whether the kill landed before it finished.
fn run_and_kill(env: &Env, args: &[&str], delay: Duration) -> (Output, bool) {
    let mut child = env
        .cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pvsnap");
    std::thread::sleep(delay);
    // SIGKILL; a child that already exited is not yet reaped, so this
    // cannot hit another process.
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait for pvsnap");
    let killed = out.status.signal() == Some(libc::SIGKILL);
    if !killed {
        assert!(
            out.status.success(),
            "pvsnap {args:?} failed before the kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out, killed)
}

/// `check` must exit 0 (warnings about leftovers allowed).
fn check(env: &Env, read_data: bool, tally: &mut Tally, context: &str) {
    let args: &[&str] = if read_data {
        &["check", "--read-data"]
    } else {
        &["check"]
    };
    let out = env.run(args);
    if !out.status.success() {
        tally.check_failures += 1;
        panic!(
            "{context}: pvsnap {args:?} exit {:?}:\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Ids of the snapshots in the repository.
fn snapshot_ids(env: &Env) -> Vec<String> {
    let out = env.ok(&["snapshots", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// Every snapshot in `kept` must still be listed.
fn assert_none_lost(
    env: &Env,
    kept: &BTreeMap<String, BTreeMap<String, String>>,
    tally: &mut Tally,
    context: &str,
) {
    let ids = snapshot_ids(env);
    let lost: Vec<&String> = kept.keys().filter(|k| !ids.contains(k)).collect();
    tally.snapshots_lost += lost.len() as u64;
    assert!(lost.is_empty(), "{context}: snapshots lost: {lost:?}");
}

/// Restores `id` into a new folder and compares it with `expected`.
fn assert_restores(env: &Env, id: &str, expected: &BTreeMap<String, String>, tally: &mut Tally) {
    let target = env.path(&format!("verify-{id}"));
    env.ok(&["restore", id, "--target", target.to_str().expect("utf-8")]);
    assert!(
        restored(&target) == *expected,
        "snapshot {id} does not restore bit-exact"
    );
    std::fs::remove_dir_all(&target).expect("clean up");
    tally.restores_verified += 1;
}

/// After the last trial: `check --read-data` passes and every snapshot in
/// `kept` restores bit-exact.
fn verify_all(env: &Env, kept: &BTreeMap<String, BTreeMap<String, String>>, tally: &mut Tally) {
    check(env, true, tally, "after the last trial");
    for (id, expected) in kept {
        assert_restores(env, id, expected, tally);
    }
}

fn snapshot_id(out: &Output) -> String {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("snapshot --json");
    v[0]["id"].as_str().expect("snapshot id").to_string()
}

#[test]
fn kill_snapshot_at_random_points() {
    let (trials, mut rng, env, src, mut source) = start("snapshot", 8);
    let src_arg = src.to_str().expect("utf-8").to_string();
    let mut kept = BTreeMap::new();
    let out = env.ok(&["snapshot", &src_arg, "--json"]);
    kept.insert(snapshot_id(&out), source.expected());
    let mut delays = Delays {
        max: Duration::ZERO,
    };

    let mut tally = Tally::default();
    for t in 0..trials {
        let context = format!("snapshot trial {t}");
        source.change(&src, &mut rng);
        if t == 0 {
            // An uncut run of a changed source gives the range of the delays.
            let started = Instant::now();
            let out = env.ok(&["snapshot", &src_arg, "--json"]);
            delays.max = started.elapsed();
            kept.insert(snapshot_id(&out), source.expected());
            source.change(&src, &mut rng);
        }
        let (out, killed) = delays.run_and_kill(&env, &["snapshot", &src_arg, "--json"], &mut rng);
        tally.trial(killed);
        if !killed {
            kept.insert(snapshot_id(&out), source.expected());
        }
        check(&env, false, &mut tally, &context);
        assert_none_lost(&env, &kept, &mut tally, &context);
        // The same snapshot again: the killed run's lock does not block it.
        let out = env.ok(&["snapshot", &src_arg, "--json"]);
        kept.insert(snapshot_id(&out), source.expected());
    }
    verify_all(&env, &kept, &mut tally);
    tally.report("snapshot");
}

#[test]
fn kill_prune_at_random_points() {
    let (trials, mut rng, env, src, mut source) = start("prune and forget --prune", 6);
    let src_arg = src.to_str().expect("utf-8").to_string();
    // Snapshots in the order taken, with what each holds.
    let mut kept: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let take = |kept: &mut BTreeMap<_, _>, order: &mut Vec<String>, source: &Source| {
        let id = snapshot_id(&env.ok(&["snapshot", &src_arg, "--json"]));
        kept.insert(id.clone(), source.expected());
        order.push(id);
    };
    take(&mut kept, &mut order, &source);
    source.change(&src, &mut rng);
    take(&mut kept, &mut order, &source);
    let prune = ["--grace", "0", "--max-unused", "0%"];
    // The range of the delays: an uncut forget --prune of the oldest snapshot.
    source.change(&src, &mut rng);
    take(&mut kept, &mut order, &source);
    let oldest = order.remove(0);
    kept.remove(&oldest);
    let started = Instant::now();
    env.ok(&[&["forget", oldest.as_str(), "--prune"][..], &prune[..]].concat());
    let mut delays = Delays {
        max: started.elapsed(),
    };

    let mut tally = Tally::default();
    for t in 0..trials {
        let context = format!("prune trial {t}");
        source.change(&src, &mut rng);
        take(&mut kept, &mut order, &source);
        // Forget the oldest snapshot; its data is now garbage.
        let oldest = order.remove(0);
        let expected_oldest = kept.remove(&oldest).expect("recorded");
        let args: Vec<&str> = if t % 2 == 0 {
            env.ok(&["forget", &oldest]);
            [&["prune"][..], &prune[..]].concat()
        } else {
            [&["forget", oldest.as_str(), "--prune"][..], &prune[..]].concat()
        };
        let (_, killed) = delays.run_and_kill(&env, &args, &mut rng);
        tally.trial(killed);
        check(&env, false, &mut tally, &context);
        assert_none_lost(&env, &kept, &mut tally, &context);
        // A forget killed before it removed the snapshot leaves it whole.
        if snapshot_ids(&env).contains(&oldest) {
            kept.insert(oldest.clone(), expected_oldest);
            order.insert(0, oldest);
        }
        // The next prune is not blocked and finishes the job.
        env.ok(&[&["prune"][..], &prune[..]].concat());
        check(&env, false, &mut tally, &context);
        // The newest snapshot restores; the others are restored at the end.
        let newest = order.last().expect("a snapshot");
        assert_restores(&env, newest, &kept[newest], &mut tally);
    }
    verify_all(&env, &kept, &mut tally);
    tally.report("prune");
}

#[test]
fn kill_restore_at_random_points() {
    let (trials, mut rng, env, src, source) = start("restore", 6);
    let id = snapshot_id(&env.ok(&["snapshot", src.to_str().expect("utf-8"), "--json"]));
    let expected = source.expected();
    let mut tally = Tally::default();
    // An uncut restore gives the range of the delays.
    let first = env.path("first");
    let started = Instant::now();
    env.ok(&["restore", &id, "--target", first.to_str().expect("utf-8")]);
    let mut delays = Delays {
        max: started.elapsed(),
    };
    assert!(
        restored(&first) == expected,
        "the uncut restore is not bit-exact"
    );
    tally.restores_verified += 1;

    for t in 0..trials {
        let context = format!("restore trial {t}");
        let target = env.path(&format!("target{t}"));
        let target_arg = target.to_str().expect("utf-8");
        let (_, killed) =
            delays.run_and_kill(&env, &["restore", &id, "--target", target_arg], &mut rng);
        tally.trial(killed);
        check(&env, false, &mut tally, &context);
        // The same restore again, over what the killed one left: not
        // blocked, and the target ends up bit-exact.
        env.ok(&["restore", &id, "--target", target_arg]);
        assert!(
            restored(&target) == expected,
            "{context}: restoring again over a killed restore is not bit-exact"
        );
        tally.restores_verified += 1;
        std::fs::remove_dir_all(&target).expect("clean up");
        // A snapshot (which writes) is not blocked either.
        env.ok(&["snapshot", src.to_str().expect("utf-8")]);
    }
    let mut kept = BTreeMap::new();
    kept.insert(id.clone(), expected.clone());
    assert_none_lost(&env, &kept, &mut tally, "after the last trial");
    check(&env, true, &mut tally, "after the last trial");
    tally.report("restore");
}
