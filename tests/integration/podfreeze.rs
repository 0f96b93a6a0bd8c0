//! `snapshot pvc/NS/NAME --freeze postgres` (issue #21): the preset's one
//! session runs in the pod that mounts the claim, over exec with stdin
//! open. A real PostgreSQL serves from the claim's volume folder, a btrfs
//! subvolume; the fake API server runs execs into the pod as real local
//! processes with the container's environment (so the `psql` in the "pod"
//! reads its password from there, never from pvsnap). A stand-in `btrfs`
//! first on pvsnap's `PATH` looks, from another session, whether a backup
//! is in progress when the native snapshot is made, and can hold there
//! (for the kill -9 case) before handing over to the real `btrfs`.
//!
//! Needs root, btrfs and Debian's PostgreSQL 15; skipped loudly without
//! them (a failure when `PVSNAP_REQUIRE_DB=1` or `PVSNAP_REQUIRE_BTRFS=1`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pvsnap_engine::backend::s3_test_server::free_port;
use serde_json::Value;

use crate::btrfs::{Btrfs, btrfs, sh};
use crate::database::{Server, have_postgres, pg, run};
use crate::k8s::Kube;
use crate::util;

const PSQL_ARGV: [&str; 8] = [
    "psql",
    "-X",
    "-w",
    "-q",
    "-A",
    "-t",
    "-v",
    "ON_ERROR_STOP=1",
];

/// A claim whose volume folder is a btrfs subvolume holding a running
/// PostgreSQL that asks for a password, and a pod that mounts it.
struct Setup {
    // Dropped first: it is stopped through the fake host's path.
    server: Server,
    k: Kube,
    fs: Btrfs,
    /// The stand-in `btrfs`'s folder (first on pvsnap's PATH) and files.
    tools: tempfile::TempDir,
}

impl Setup {
    fn new(test: &str) -> Option<Setup> {
        if !have_postgres(test) {
            return None;
        }
        let (k, fs) = claim_on_btrfs(test)?;
        let data = k.pg().join("data");
        let sock = fs.mnt.join("sock");
        for d in [&data, &sock] {
            std::fs::create_dir(d).unwrap();
            run(
                Command::new("chown").args(["postgres:postgres", d.to_str().unwrap()]),
                "chown",
            );
        }
        let pw = sock.join("pw");
        std::fs::write(&pw, "right-pw\n").unwrap();
        run(
            &mut pg(
                "initdb",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "-N",
                    "--auth-local=scram-sha-256",
                    &format!("--pwfile={}", pw.display()),
                ],
            ),
            "initdb",
        );
        let server = Server::start(&data, &sock, free_port()).unwrap();
        // The pod: no Velero hooks, and execs into its postgres container
        // run for real with the container's environment.
        k.fake.set_annotations("db", "postgres-0", &[]);
        let tools = tempfile::tempdir().unwrap();
        let s = Setup {
            k,
            server,
            fs,
            tools,
        };
        s.pod_env("right-pw");
        let observe = format!(
            "PGHOST={} PGPORT={} PGUSER=postgres PGPASSWORD=right-pw psql -XAt -c \"SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_backup_start(%'\"",
            s.server.sock.display(),
            s.server.port
        );
        stand_in_btrfs(s.tools.path(), &observe);
        Some(s)
    }

    /// The postgres container's environment, with its password.
    fn pod_env(&self, password: &str) {
        let port = self.server.port.to_string();
        let host = self.server.sock.to_str().unwrap().to_owned();
        self.k.fake.exec_real(
            "postgres-0",
            "postgres",
            &[
                ("PGHOST", &host),
                ("PGPORT", &port),
                ("PGUSER", "postgres"),
                ("PGDATABASE", "postgres"),
                ("PGPASSWORD", password),
            ],
        );
    }

    fn snapshot(&self) -> (i32, Vec<Value>, String) {
        snapshot(&self.k, self.tools.path(), "postgres")
    }

    fn command(&self) -> Command {
        command(&self.k, self.tools.path(), "postgres")
    }

    /// What the stand-in `btrfs` saw: backups in progress at each snapshot.
    fn seen(&self) -> Vec<String> {
        seen(self.tools.path())
    }

    fn sql(&self, sql: &str) -> String {
        let mut c = self
            .server
            .client("psql", &["-U", "postgres", "-XAt", "-c", sql]);
        c.env("PGPASSWORD", "right-pw");
        run(&mut c, sql).trim().to_owned()
    }

    /// Sessions that started a backup and still live.
    fn backups_running(&self) -> u32 {
        self.sql(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query LIKE 'SELECT pg_backup_start(%' AND pid <> pg_backend_pid()",
        )
        .parse()
        .unwrap()
    }

    /// The native snapshots pvsnap holds of the claim's subvolume.
    fn native_snapshots(&self) -> usize {
        native_snapshots(&self.fs)
    }

    fn exec_argvs(&self) -> Vec<Vec<String>> {
        self.k
            .fake
            .execs()
            .into_iter()
            .map(|e| {
                let mut v = vec![format!("{}/{}", e.pod, e.container)];
                v.extend(e.command);
                v
            })
            .collect()
    }
}

/// A fake cluster whose host root is on a fresh btrfs, the PostgreSQL
/// claim's volume folder a subvolume there, its pod without Velero hooks,
/// and every folder on the way readable by the database's user.
fn claim_on_btrfs(test: &str) -> Option<(Kube, Btrfs)> {
    let fs = btrfs(test)?;
    let k = Kube::new();
    let host = fs.mnt.join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::remove_dir_all(k.host()).unwrap();
    std::os::unix::fs::symlink(&host, k.host()).unwrap();
    std::fs::create_dir_all(k.pg().parent().unwrap()).unwrap();
    sh(&["btrfs", "subvolume", "create", k.pg().to_str().unwrap()]).unwrap();
    for start in [k.pg(), fs.mnt.clone()] {
        let mut p = std::fs::canonicalize(start).unwrap();
        while p != Path::new("/") {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
            p.pop();
        }
    }
    k.fake.set_annotations("db", "postgres-0", &[]);
    Some((k, fs))
}

/// A stand-in `btrfs` in `tools`: at `subvolume snapshot` it runs
/// `observe` (its output appended to `tools/seen`) and, while `tools/hold`
/// exists, waits (having touched `tools/frozen`); then the real `btrfs`.
fn stand_in_btrfs(tools: &Path, observe: &str) {
    let t = tools.display();
    let script = format!(
        r#"#!/bin/bash
if [ "$1 $2" = "subvolume snapshot" ]; then
  {{ {observe}; }} >> {t}/seen 2>&1
  if [ -e {t}/hold ]; then
    touch {t}/frozen
    while [ -e {t}/hold ]; do sleep 0.05; done
  fi
fi
exec /usr/bin/btrfs "$@"
"#
    );
    let p = tools.join("btrfs");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `pvsnap snapshot pvc/db/data-postgres-0 --freeze PRESET --json`, the
/// stand-in `btrfs` first on its PATH.
fn command(k: &Kube, tools: &Path, preset: &str) -> Command {
    let mut c = k.command(&[
        "snapshot",
        "--json",
        "pvc/db/data-postgres-0",
        "--freeze",
        preset,
        "--source-snapshot",
        "required",
    ]);
    let path = std::env::var("PATH").unwrap_or_default();
    c.env("PATH", format!("{}:{path}", tools.display()));
    // pvsnap itself knows no password: the pod's environment has it.
    c.env_remove("PGPASSWORD").env_remove("MYSQL_PWD");
    c
}

fn snapshot(k: &Kube, tools: &Path, preset: &str) -> (i32, Vec<Value>, String) {
    let out = command(k, tools, preset).output().unwrap();
    let snaps: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (
        out.status.code().unwrap_or(-1),
        snaps,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the stand-in `btrfs` saw at each snapshot.
fn seen(tools: &Path) -> Vec<String> {
    std::fs::read_to_string(tools.join("seen"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The btrfs snapshots on `fs` (pvsnap's, of the claim's subvolume).
fn native_snapshots(fs: &Btrfs) -> usize {
    let out = sh(&["btrfs", "subvolume", "list", "-s", fs.mnt.to_str().unwrap()]).unwrap();
    out.lines().count()
}

fn psql_exec(container: &str) -> Vec<String> {
    std::iter::once(format!("postgres-0/{container}"))
        .chain(PSQL_ARGV.iter().map(|s| s.to_string()))
        .collect()
}

#[test]
fn a_claim_is_frozen_in_its_pod_while_its_btrfs_snapshot_is_made() {
    let test = "a_claim_is_frozen_in_its_pod_while_its_btrfs_snapshot_is_made";
    let Some(s) = Setup::new(test) else { return };
    s.sql("CREATE TABLE t (i int); INSERT INTO t VALUES (1)");

    let (code, snaps, err) = s.snapshot();
    assert_eq!(code, 0, "{err}");
    let n = &snaps[0]["source_snapshot"];
    assert_eq!(n["kind"], "btrfs", "{}", snaps[0]);
    let window = n["freeze_window_s"].as_f64().unwrap();
    let create = n["create_s"].as_f64().unwrap();
    eprintln!("claim frozen in its pod: freeze window {window}s, native snapshot {create}s");
    assert!(window >= create && window < 5.0, "{n}");
    assert_eq!(snaps[0]["source"]["pvc"], "data-postgres-0", "{}", snaps[0]);
    // While the snapshot was made, a backup was in progress (seen from
    // another session), and it ended with the thaw.
    assert_eq!(s.seen(), ["1"]);
    assert_eq!(s.backups_running(), 0);
    // The session ran in the pod, with the recipe's argv: no password.
    let execs = s.exec_argvs();
    assert_eq!(execs, [psql_exec("postgres")]);
    assert!(!format!("{execs:?}").contains("right-pw"));
    assert_eq!(s.native_snapshots(), 0, "the read snapshot is released");

    // Without the observing stand-in: the window pvsnap itself adds.
    let (code, snaps, err) = snapshot(&s.k, Path::new("/nonexistent"), "postgres");
    assert_eq!(code, 0, "{err}");
    let n = &snaps[0]["source_snapshot"];
    eprintln!(
        "claim frozen in its pod, nobody watching: freeze window {}s, native snapshot {}s",
        n["freeze_window_s"], n["create_s"]
    );
    assert!(n["freeze_window_s"].as_f64().unwrap() < 5.0, "{n}");
    assert_eq!(s.backups_running(), 0);
}

#[test]
fn a_failed_freeze_fails_the_claim_and_leaves_nothing_frozen() {
    let test = "a_failed_freeze_fails_the_claim_and_leaves_nothing_frozen";
    let Some(s) = Setup::new(test) else { return };

    // A wrong password in the pod: the in-pod client fails.
    s.pod_env("wrong-pw-7");
    let (code, snaps, err) = s.snapshot();
    eprintln!("{err}");
    assert_ne!(code, 0);
    assert!(snaps.is_empty(), "{snaps:?}");
    assert!(
        err.contains("PostgreSQL in pod db/postgres-0 (container postgres)")
            && err.contains("password authentication failed"),
        "{err}"
    );
    assert!(!err.contains("wrong-pw-7"), "{err}");
    assert_eq!(s.seen(), Vec::<String>::new(), "no snapshot was made");

    // The client missing in the container the annotation names.
    s.pod_env("right-pw");
    s.k.fake.set_annotations(
        "db",
        "postgres-0",
        &[(pvsnap_k8s::FREEZE_CONTAINER_ANNOTATION, "metrics")],
    );
    let (code, _, err) = s.snapshot();
    eprintln!("{err}");
    assert_ne!(code, 0);
    assert!(
        err.contains("(container metrics)")
            && err.contains("executable file not found")
            && err.contains("pvsnap.io/freeze-container"),
        "{err}"
    );

    // No pod runs: refused, nothing to freeze in.
    s.k.fake
        .remove(pvsnap_k8s::testing::fake::Kind::Pod, "db", "postgres-0");
    let (code, _, err) = s.snapshot();
    eprintln!("{err}");
    assert_ne!(code, 0);
    assert!(err.contains("no running pod mounts it"), "{err}");

    assert_eq!(s.backups_running(), 0);
    assert_eq!(s.native_snapshots(), 0);
}

#[test]
fn kill_9_while_frozen_ends_the_backup_in_the_pod() {
    let test = "kill_9_while_frozen_ends_the_backup_in_the_pod";
    let Some(s) = Setup::new(test) else { return };
    let hold = s.tools.path().join("hold");
    std::fs::write(&hold, "").unwrap();
    let mut child = s.command().spawn().unwrap();
    let frozen = s.tools.path().join("frozen");
    let until = Instant::now() + Duration::from_secs(60);
    while !frozen.exists() {
        assert!(Instant::now() < until, "pvsnap never reached the snapshot");
        assert!(child.try_wait().unwrap().is_none(), "pvsnap ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.backups_running(), 1, "frozen in the pod");
    child.kill().unwrap();
    child.wait().unwrap();
    // The exec stream closed with pvsnap: the client in the pod read the
    // end of its input and the server ended its backup.
    let until = Instant::now() + Duration::from_secs(15);
    while s.backups_running() != 0 {
        assert!(
            Instant::now() < until,
            "the backup outlived the killed pvsnap"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The stand-in goes on to make the snapshot the killed run asked for.
    std::fs::remove_file(&hold).unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while s.native_snapshots() != 1 {
        assert!(Instant::now() < until, "no leftover snapshot appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next run works and removes what the killed one left.
    let (code, snaps, err) = s.snapshot();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("left by an interrupted run"), "{err}");
    assert_eq!(snaps.len(), 1);
    assert_eq!(s.backups_running(), 0);
    assert_eq!(s.native_snapshots(), 0);
}

/// A MariaDB server whose data directory is the claim's subvolume, for the
/// `mysql` preset; killed when dropped.
struct Mariadb {
    server: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Mariadb {
    fn start(data: &Path) -> Result<Mariadb, String> {
        let dir = tempfile::tempdir().unwrap();
        for d in [dir.path(), data] {
            run(
                Command::new("chown").args(["-R", "mysql:mysql", d.to_str().unwrap()]),
                "chown",
            );
        }
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=mysql", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .output()
            .map_err(|e| format!("mariadb-install-db: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let port = free_port();
        let server = Command::new("/usr/sbin/mariadbd")
            .args(["--no-defaults", "--user=mysql", "--skip-log-bin"])
            .args(["--bind-address=127.0.0.1", "--innodb-buffer-pool-size=16M"])
            .arg(format!("--port={port}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--log-error={}", dir.path().join("err").display()))
            .spawn()
            .map_err(|e| format!("mariadbd: {e}"))?;
        let db = Mariadb { server, dir, port };
        let until = Instant::now() + Duration::from_secs(60);
        while db.root("SELECT 1").is_err() {
            if Instant::now() > until {
                return Err("mariadbd did not start".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        db.root(
            "CREATE DATABASE d; CREATE TABLE d.t (i int) ENGINE=InnoDB; \
             CREATE USER app@'127.0.0.1' IDENTIFIED BY 'right-pw'; \
             GRANT ALL ON *.* TO app@'127.0.0.1';",
        )?;
        Ok(db)
    }

    /// `sql` as root over the socket.
    fn root(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-u", "root", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

#[test]
fn the_mysql_preset_holds_its_read_lock_in_the_pod_during_the_snapshot() {
    let test = "the_mysql_preset_holds_its_read_lock_in_the_pod_during_the_snapshot";
    if !util::is_root() || !Path::new("/usr/sbin/mariadbd").exists() {
        let why = "needs root and Debian's mariadb-server";
        if std::env::var("PVSNAP_REQUIRE_DB").as_deref() == Ok("1") {
            panic!("{test}: PVSNAP_REQUIRE_DB=1 but it {why}");
        }
        eprintln!(
            "\n*** SKIPPED {test}: it {why} (set PVSNAP_REQUIRE_DB=1 to make this a failure) ***\n"
        );
        return;
    }
    let Some((k, fs)) = claim_on_btrfs(test) else {
        return;
    };
    let data = k.pg().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = Mariadb::start(&data).unwrap();
    // The container's own files: a client option file in its HOME (no
    // password) and the password in its environment.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".my.cnf"),
        format!("[client]\nuser=app\nhost=127.0.0.1\nport={}\n", db.port),
    )
    .unwrap();
    let home_s = home.path().to_str().unwrap().to_owned();
    k.fake.exec_real(
        "postgres-0",
        "postgres",
        &[("HOME", &home_s), ("MYSQL_PWD", "right-pw")],
    );
    // At the snapshot, a writer with a 1 s lock wait is turned away.
    let tools = tempfile::tempdir().unwrap();
    let observe = format!(
        "mariadb --no-defaults --socket={} -u root -e 'SET SESSION lock_wait_timeout = 1; INSERT INTO d.t VALUES (2)' && echo written",
        db.dir.path().join("sock").display()
    );
    stand_in_btrfs(tools.path(), &observe);

    let (code, snaps, err) = snapshot(&k, tools.path(), "mysql");
    assert_eq!(code, 0, "{err}");
    let n = &snaps[0]["source_snapshot"];
    assert_eq!(n["kind"], "btrfs");
    eprintln!(
        "mysql claim frozen in its pod: freeze window {}s, native snapshot {}s",
        n["freeze_window_s"], n["create_s"]
    );
    let seen = seen(tools.path()).join("\n");
    assert!(seen.contains("Lock wait timeout exceeded"), "{seen}");
    assert!(!seen.contains("written"), "{seen}");
    // Thawed: writes go through.
    db.root("INSERT INTO d.t VALUES (3)").unwrap();
    let execs: Vec<Vec<String>> = k.fake.execs().into_iter().map(|e| e.command).collect();
    assert_eq!(
        execs,
        [["mysql", "--batch", "--skip-column-names", "--unbuffered"]
            .map(String::from)
            .to_vec()]
    );
    assert_eq!(native_snapshots(&fs), 0);

    // A wrong password in the pod: the claim fails, nothing stays locked.
    k.fake.exec_real(
        "postgres-0",
        "postgres",
        &[("HOME", &home_s), ("MYSQL_PWD", "wrong-pw-5")],
    );
    let (code, _, err) = snapshot(&k, tools.path(), "mysql");
    eprintln!("{err}");
    assert_ne!(code, 0);
    assert!(
        err.contains("MySQL in pod db/postgres-0 (container postgres)")
            && err.contains("Access denied"),
        "{err}"
    );
    assert!(!err.contains("wrong-pw-5"), "{err}");
    db.root("INSERT INTO d.t VALUES (4)").unwrap();
    drop(db);
}

/// A stand-in `psql` in `dir` for a pod without a real server: it wants
/// `PGPASSWORD=right-pw`, answers the version and markers, and logs each
/// statement and the end of its input to `dir/log`.
fn stand_in_psql(dir: &Path) {
    let script = format!(
        r#"#!/bin/bash
[ "$PGPASSWORD" = right-pw ] || {{ echo 'psql: error: FATAL:  password authentication failed' >&2; exit 2; }}
while IFS= read -r l; do
  case "$l" in
    '\echo '*) echo "${{l:6}}" ;;
    SHOW*) echo 150004 ;;
    *pg_backup_stop*) echo '6c|' ;;
    *) echo "$l" >> {log} ;;
  esac
done
echo eof >> {log}
"#,
        log = dir.join("log").display()
    );
    let p = dir.join("psql");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_csi_claim_is_frozen_in_its_pod_until_the_storage_has_cut_it() {
    use pvsnap_k8s::testing::fake::{CsiBehaviour, Kind};
    use pvsnap_k8s::testing::fixtures::{CEPH_DRIVER, claim_volume, pod, snapshot_class};

    let k = Kube::new();
    k.fake
        .insert(snapshot_class("ceph-snap", CEPH_DRIVER, "Delete", true));
    k.fake
        .set_csi(CsiBehaviour::ReadyAfter(Duration::from_millis(300)));
    k.fake.insert(pod(
        "default",
        "ceph-db",
        "Running",
        &["db"],
        serde_json::json!([claim_volume("data", "ceph")]),
        None,
    ));
    let bin = tempfile::tempdir().unwrap();
    stand_in_psql(bin.path());
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    k.fake.exec_real(
        "ceph-db",
        "db",
        &[("PATH", &path), ("PGPASSWORD", "wrong-pw-3")],
    );
    let args = ["pvc/default/ceph", "--freeze", "postgres"];

    // A wrong password: the claim fails before any VolumeSnapshot exists.
    let (code, snaps, err) = k.snapshot(&args);
    assert_ne!(code, 0, "{snaps:?}");
    assert!(
        err.contains("PostgreSQL in pod default/ceph-db (container db)")
            && err.contains("password authentication failed"),
        "{err}"
    );
    assert!(k.fake.names(Kind::VolumeSnapshot).is_empty());

    k.fake.exec_real(
        "ceph-db",
        "db",
        &[("PATH", &path), ("PGPASSWORD", "right-pw")],
    );
    let (code, snaps, err) = k.snapshot(&args);
    assert_eq!(code, 0, "{err}");
    let rec = &snaps[0]["source_snapshot"];
    assert_eq!(rec["kind"], "csi", "{rec}");
    let (cut, window) = (
        rec["create_s"].as_f64().unwrap(),
        rec["freeze_window_s"].as_f64().unwrap(),
    );
    assert!(window > cut, "frozen around the cut: {rec}");
    assert_eq!(k.fake.names(Kind::VolumeSnapshot).len(), 1);
    let log = std::fs::read_to_string(bin.path().join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines[1].contains("pg_backup_start"), "{log}");
    assert_eq!(lines.last(), Some(&"eof"), "{log}");
    let execs: Vec<String> = k
        .fake
        .execs()
        .iter()
        .map(|e| format!("{}/{} {}", e.pod, e.container, e.command.join(" ")))
        .collect();
    assert_eq!(execs[1], format!("ceph-db/db {}", PSQL_ARGV.join(" ")));
}
