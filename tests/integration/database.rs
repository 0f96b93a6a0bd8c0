//! A real database under load, snapshotted without hooks (issue #21):
//! PostgreSQL on a btrfs subvolume, and on a zfs-fuse dataset, with pgbench
//! writing. The frozen-source
//! snapshot (the default where the storage can) is one instant of the
//! volume, so the restored copy starts like a server after a power cut:
//! recovery completes and `pg_amcheck --heapallindexed` finds nothing. The
//! same with `--source-snapshot off` (a live read) is reported, not
//! asserted: a torn copy may or may not start.
//!
//! Needs root, btrfs (or zfs-fuse) and Debian's PostgreSQL 15; skipped
//! loudly without them, a failure instead when `PVSNAP_REQUIRE_DB=1` (and
//! `PVSNAP_REQUIRE_BTRFS=1`, `PVSNAP_REQUIRE_ZFS=1`, as `scripts/test` sets
//! for root). MariaDB under load is in `mariadb.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::btrfs::btrfs;
use crate::util::{self, Env, stderr};
use crate::zfs::Pool;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub(crate) fn have_postgres(test: &str) -> bool {
    let missing = (!Path::new(PG_BIN).join("postgres").exists())
        .then_some("PostgreSQL 15 is not installed (Debian package postgresql)");
    require_db(test, missing)
}

/// Whether a database test can run (root, and nothing `missing`); says so
/// loudly when it cannot, and fails instead under `PVSNAP_REQUIRE_DB=1`.
pub(crate) fn require_db(test: &str, missing: Option<&str>) -> bool {
    let why = if !util::is_root() {
        "not root"
    } else if let Some(m) = missing {
        m
    } else {
        return true;
    };
    if std::env::var("PVSNAP_REQUIRE_DB").as_deref() == Ok("1") {
        panic!("{test}: PVSNAP_REQUIRE_DB=1 but {why}");
    }
    eprintln!("\n*** SKIPPED {test}: {why} (set PVSNAP_REQUIRE_DB=1 to make this a failure) ***\n");
    false
}

/// Opens `dir` and its parents up to the temp folder to other users (the
/// database servers run as their own users and must reach their folders).
pub(crate) fn let_others_in(dir: &Path) {
    let mut p = dir.to_owned();
    while p != Path::new("/") && p.starts_with(std::env::temp_dir()) {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.pop();
    }
}

/// `runuser -u postgres -- PG_BIN/tool args…`.
pub(crate) fn pg(tool: &str, args: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"])
        .arg(Path::new(PG_BIN).join(tool))
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Runs `c` and requires success; its standard output.
pub(crate) fn run(c: &mut Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PostgreSQL server on `data`, listening on a socket in `sock` only.
pub(crate) struct Server {
    data: PathBuf,
    pub(crate) sock: PathBuf,
    pub(crate) port: u16,
}

impl Server {
    pub(crate) fn start(data: &Path, sock: &Path, port: u16) -> Result<Server, String> {
        let opts = format!("-p {port} -k {} -c listen_addresses=''", sock.display());
        let log = sock.join(format!("pg-{port}.log"));
        let out = pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-t",
                "120",
                "-w",
                "start",
            ],
        )
        .output()
        .unwrap();
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start: {}{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        Ok(Server {
            data: data.to_owned(),
            sock: sock.to_owned(),
            port,
        })
    }

    pub(crate) fn client(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = pg(
            tool,
            &[
                "-h",
                self.sock.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
            ],
        );
        c.args(args);
        c
    }

    fn stop(&self) {
        let _ = pg(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
        .output();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = pg(
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"],
        )
        .output();
    }
}

fn snapshot(env: &Env, data: &Path, extra: &[&str]) -> Value {
    let mut c = env.cmd();
    c.arg("snapshot").arg(data).arg("--json").args(extra);
    let out = c.output().unwrap();
    assert!(out.status.success(), "snapshot: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().map(|a| a[0].clone()).unwrap_or(v)
}

fn restore(env: &Env, id: &str, target: &Path) {
    env.ok(&["restore", id, "--target", target.to_str().unwrap()]);
}

/// Starts PostgreSQL on a restored copy and checks it: `Ok(accounts)` when
/// recovery completed and `pg_amcheck --heapallindexed` is clean.
fn check_copy(copy: &Path, sock: &Path, port: u16) -> Result<i64, String> {
    // A crash-consistent copy holds the old server's lock file. Its pid
    // means nothing for the copy (and may belong to another process by
    // now), so it goes, as on any machine a copy is started on.
    let _ = std::fs::remove_file(copy.join("postmaster.pid"));
    let server = Server::start(copy, sock, port)?;
    let out = server
        .client(
            "pg_amcheck",
            &[
                "-U",
                "postgres",
                "--install-missing",
                "--heapallindexed",
                "--all",
            ],
        )
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "pg_amcheck: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let n = server
        .client(
            "psql",
            &[
                "-U",
                "postgres",
                "-At",
                "-c",
                "SELECT count(*) FROM pgbench_accounts",
            ],
        )
        .output()
        .unwrap();
    server.stop();
    String::from_utf8_lossy(&n.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("count: {e}: {}", String::from_utf8_lossy(&n.stderr)))
}

#[test]
fn postgres_under_pgbench_restores_from_a_frozen_source_and_passes_amcheck() {
    let test = "postgres_under_pgbench_restores_from_a_frozen_source_and_passes_amcheck";
    if !have_postgres(test) {
        return;
    }
    let Some(fs) = btrfs(test) else { return };
    // The postgres user must reach its folders below the test's temp dir.
    let_others_in(&fs.mnt);
    let vol = fs.subvolume("pg");
    under_pgbench(&vol, "btrfs", 3);
}

/// The same on a zfs-fuse dataset: pvsnap reads the ZFS snapshot through
/// a temporary read-only clone (zfs-fuse has no `.zfs` folder), which goes
/// with the snapshot after the read.
#[test]
fn postgres_under_pgbench_on_zfs_restores_from_a_frozen_source_and_passes_amcheck() {
    let test = "postgres_under_pgbench_on_zfs_restores_from_a_frozen_source_and_passes_amcheck";
    if !have_postgres(test) {
        return;
    }
    let Some(pool) = Pool::new(test, 256) else {
        return;
    };
    let_others_in(&pool.mnt);
    under_pgbench(&pool.mnt.join("vol"), "zfs", 1);
    let all = pool.all();
    assert!(
        !all.iter()
            .any(|d| d.contains("pvsnap-tmp") || d.contains("pvsnap-read")),
        "no read clone or read snapshot left: {all:?}"
    );
}

/// A cluster in `vol` (a btrfs subvolume or ZFS dataset) under pgbench
/// (`scale` × 100,000 accounts): a frozen-source snapshot (the storage's
/// `kind`) and a live read, both restored; the frozen copy must recover
/// and pass `pg_amcheck --heapallindexed`, the live copy is reported.
fn under_pgbench(vol: &Path, kind: &str, scale: u32) {
    std::fs::set_permissions(vol, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = vol.join("data");
    // Sockets live outside the storage under test (FUSE for zfs-fuse).
    let run_dir = tempfile::tempdir().unwrap();
    let_others_in(run_dir.path());
    let sock = run_dir.path().join("sock");
    std::fs::create_dir_all(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir(&data).unwrap();
    run(
        Command::new("chown").args(["postgres:postgres", data.to_str().unwrap()]),
        "chown",
    );
    run(
        &mut pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        ),
        "initdb",
    );
    let port = 20_000 + (std::process::id() % 10_000) as u16 + if kind == "zfs" { 10 } else { 0 };
    let server = Server::start(&data, &sock, port).unwrap();
    let s = scale.to_string();
    run(
        &mut server.client(
            "pgbench",
            &["-U", "postgres", "-i", "-s", &s, "-q", "postgres"],
        ),
        "pgbench -i",
    );
    let mut load: Child = server
        .client(
            "pgbench",
            &["-U", "postgres", "-c", "2", "-T", "120", "postgres"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));

    let env = Env::new();
    env.init();
    let started = Instant::now();
    let frozen = snapshot(&env, &data, &[]);
    let frozen_s = started.elapsed().as_secs_f64();
    let ss = &frozen["source_snapshot"];
    assert_eq!(ss["kind"], kind, "read through a {kind} snapshot: {frozen}");
    let live = snapshot(&env, &data, &["--source-snapshot", "off"]);
    assert!(live["source_snapshot"].is_null(), "{live}");
    let _ = load.kill();
    let _ = load.wait();
    server.stop();
    drop(server);

    // The copies go outside the small volume, which the original, its WAL
    // and the snapshots fill.
    let_others_in(env.dir.path());
    let copy = env.path("frozen-copy");
    restore(&env, frozen["id"].as_str().unwrap(), &copy);
    let accounts = check_copy(&copy, &sock, port + 1)
        .unwrap_or_else(|e| panic!("the frozen copy did not come up clean: {e}"));
    assert_eq!(
        accounts,
        i64::from(scale) * 100_000,
        "pgbench -s {scale} holds {scale} × 100,000 accounts"
    );
    eprintln!(
        "frozen source on {kind} under pgbench: snapshot in {frozen_s:.2} s (native snapshot {} s, frozen {} s); recovery completed, pg_amcheck --heapallindexed clean, {accounts} accounts",
        ss["create_s"], ss["freeze_window_s"]
    );

    // The live read: what happens is reported, not asserted.
    let torn = env.path("live-copy");
    restore(&env, live["id"].as_str().unwrap(), &torn);
    match check_copy(&torn, &sock, port + 2) {
        Ok(n) => eprintln!(
            "live read on {kind} under pgbench (--source-snapshot off): this time the copy started and pg_amcheck passed ({n} accounts); a live read gives no such guarantee"
        ),
        Err(e) => eprintln!(
            "live read on {kind} under pgbench (--source-snapshot off): the copy is torn: {}",
            e.lines().take(3).collect::<Vec<_>>().join(" / ")
        ),
    }
}
