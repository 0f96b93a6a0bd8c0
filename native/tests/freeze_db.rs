//! The freeze presets against real servers: private PostgreSQL 15 and
//! MariaDB instances in temporary folders (root only: they run as the
//! `postgres` and `mysql` users), and a recording stand-in for `mongosh`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pvsnap_native::Freezer;
use pvsnap_native::freeze::{HostFreezer, Options, Preset};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Whether the database tests can run; says so loudly when they cannot.
fn can_run(what: &str) -> bool {
    let required = std::env::var("PVSNAP_REQUIRE_DB").is_ok_and(|v| v == "1");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !required,
            "PVSNAP_REQUIRE_DB=1 but not root: {what} cannot run"
        );
        eprintln!("SKIPPED {what}: needs root to run private database servers");
        return false;
    }
    true
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chown(path: &Path, user: &str) {
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:{user}"))
        .arg(path));
}

/// Kills the client process whose environment carries `PVSNAP_TEST_TAG=tag`.
fn kill_client_tagged(tag: &str) {
    let want = format!("PVSNAP_TEST_TAG={tag}");
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            // SAFETY: plain kill(2) of a process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed += 1;
        }
    }
    assert_eq!(killed, 1, "exactly one client tagged {tag}");
}

fn options(env: &[(&str, &str)], tag: &str) -> Options {
    let mut env: Vec<(OsString, OsString)> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    env.push(("PVSNAP_TEST_TAG".into(), tag.into()));
    Options {
        env,
        timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

// ---------------------------------------------------------------- PostgreSQL

struct Postgres {
    dir: tempfile::TempDir,
    data: PathBuf,
    port: u16,
}

impl Postgres {
    /// A new cluster in a temporary folder.
    fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "right-pw\n").unwrap();
        chown(dir.path(), "postgres");
        let data = dir.path().join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-N", "-E", "UTF8", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", dir.path().join("pw").display())));
        Postgres::serve(dir, data, "-c fsync=off")
    }

    /// Starts a server on the cluster at `data` (waiting for any recovery).
    fn serve(dir: tempfile::TempDir, data: PathBuf, settings: &str) -> Postgres {
        chown(dir.path(), "postgres");
        chown(&data, "postgres");
        let port = free_port();
        let run = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 {settings}",
                dir.path().display()
            ))
            .args(["-t", "120", "-w", "start"])
            .output()
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        assert!(run.status.success(), "PostgreSQL did not start:\n{log}");
        Postgres { dir, data, port }
    }

    fn env(&self, password: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", "127.0.0.1".into()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", "postgres".into()),
            ("PGDATABASE", "postgres".into()),
            ("PGPASSWORD", password.into()),
        ]
    }

    fn freezer(&self, password: &'static str, tag: &str) -> HostFreezer {
        let env = self.env(password);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        HostFreezer::new(Preset::Postgres, options(&env, tag)).unwrap()
    }

    fn sql(&self, sql: &str) -> String {
        let mut cmd = Command::new("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        for (k, v) in self.env("right-pw") {
            cmd.env(k, v);
        }
        run(&mut cmd).trim().to_owned()
    }

    /// Sessions whose last statement started a backup and that still live.
    fn backups_running(&self) -> u32 {
        self.sql(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query LIKE 'SELECT pg_backup_start(%' AND pid <> pg_backend_pid()",
        )
        .parse()
        .unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.data.as_os_str().is_empty() {
            return; // stopped and handed on
        }
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

#[test]
fn postgres_backup_is_held_in_one_session_and_ends_with_it() {
    if !can_run("postgres freeze test") {
        return;
    }
    let pg = Postgres::start();
    pg.sql("CREATE TABLE t (i int)");

    // A wrong password: the error names the database, never the password.
    let e = pg
        .freezer("wrong-pw-123", "pg-wrong")
        .freeze()
        .err()
        .expect("a wrong password fails")
        .to_string();
    assert!(
        e.contains(&format!(
            "PostgreSQL database postgres on 127.0.0.1:{}",
            pg.port
        )),
        "{e}"
    );
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("wrong-pw-123"), "{e}");
    // No password at all: an error, never a prompt on the terminal.
    let e = pg
        .freezer("", "pg-nopw")
        .freeze()
        .err()
        .expect("no password fails")
        .to_string();
    assert!(e.contains("no password supplied"), "{e}");

    // Freeze and thaw: the backup runs in the held session, writes go on
    // (PostgreSQL does not block them), and the backup label comes back.
    let freezer = pg.freezer("right-pw", "pg-main");
    let t0 = Instant::now();
    let frozen = freezer.freeze().unwrap();
    let froze_in = t0.elapsed();
    assert_eq!(pg.backups_running(), 1);
    pg.sql("INSERT INTO t VALUES (1)");
    let t1 = Instant::now();
    let kept = frozen.thaw_keeping().unwrap();
    let thawed_in = t1.elapsed();
    eprintln!(
        "postgres freeze: lock taken in {:?}, released in {:?}",
        froze_in, thawed_in
    );
    assert!(froze_in + thawed_in < Duration::from_secs(5));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].name, "backup_label");
    assert!(kept[0].contents.contains("START WAL LOCATION"), "{kept:?}");
    assert!(kept[0].contents.contains("LABEL: pvsnap"), "{kept:?}");
    // The session is gone with the thaw.
    assert_eq!(pg.backups_running(), 0);

    // Dropped without a thaw (an error in between): the backup ends too.
    let frozen = freezer.freeze().unwrap();
    assert_eq!(pg.backups_running(), 1);
    drop(frozen);
    assert_eq!(pg.backups_running(), 0);

    // The client killed: the server ends the backup; thaw says so.
    let freezer = pg.freezer("right-pw", "pg-kill");
    let frozen = freezer.freeze().unwrap();
    kill_client_tagged("pg-kill");
    let until = Instant::now() + Duration::from_secs(10);
    while pg.backups_running() != 0 {
        assert!(Instant::now() < until, "the backup outlived its client");
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = frozen.thaw().unwrap_err().to_string();
    assert!(
        e.contains("PostgreSQL database postgres") && e.contains("psql"),
        "{e}"
    );
}

// ------------------------------------------------------------------- MariaDB

struct Mariadb {
    dir: tempfile::TempDir,
    server: Child,
    port: u16,
}

impl Mariadb {
    fn start() -> Mariadb {
        let dir = tempfile::tempdir().unwrap();
        chown(dir.path(), "mysql");
        let data = dir.path().join("data");
        run(Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=mysql", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .stdout(Stdio::null()));
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let db = Mariadb { dir, server, port };
        let until = Instant::now() + Duration::from_secs(60);
        while !db
            .root()
            .arg("-e")
            .arg("SELECT 1")
            .output()
            .unwrap()
            .status
            .success()
        {
            assert!(Instant::now() < until, "mariadbd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        db.sql(
            "CREATE DATABASE d; CREATE TABLE d.t (i int) ENGINE=InnoDB; \
             CREATE USER app@'127.0.0.1' IDENTIFIED BY 'right-pw'; \
             GRANT ALL ON *.* TO app@'127.0.0.1';",
        );
        std::fs::write(
            db.dir.path().join("app.cnf"),
            format!("[client]\nuser=app\nhost=127.0.0.1\nport={port}\n"),
        )
        .unwrap();
        db
    }

    /// The root client over the socket (unix_socket authentication).
    fn root(&self) -> Command {
        let mut cmd = Command::new("mariadb");
        cmd.arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-u", "root", "--batch", "--skip-column-names"]);
        cmd
    }

    fn sql(&self, sql: &str) -> String {
        run(self.root().arg("-e").arg(sql)).trim().to_owned()
    }

    fn freezer(&self, password: &str, tag: &str, timeout: Duration) -> HostFreezer {
        let mut o = options(&[("MYSQL_PWD", password)], tag);
        o.conn_file = Some(self.dir.path().join("app.cnf"));
        o.timeout = timeout;
        HostFreezer::new(Preset::Mysql, o).unwrap()
    }

    /// An INSERT in a session of its own, running in the background.
    fn writer(&self) -> Child {
        self.root()
            .arg("-e")
            .arg("INSERT INTO d.t VALUES (1)")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Waits up to `limit` for `child` to exit; whether it did.
fn exits_within(child: &mut Child, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn mysql_read_lock_blocks_writers_until_thaw_and_dies_with_its_client() {
    if !can_run("mysql freeze test") {
        return;
    }
    let db = Mariadb::start();
    let target = format!(
        "MySQL server on 127.0.0.1:{} (options from {}",
        db.port,
        db.dir.path().display()
    );

    // A wrong password: named database, no password in the message.
    let e = db
        .freezer("wrong-pw-123", "my-wrong", Duration::from_secs(10))
        .freeze()
        .err()
        .expect("a wrong password fails")
        .to_string();
    assert!(e.contains(&target) && e.contains("Access denied"), "{e}");
    assert!(!e.contains("wrong-pw-123"), "{e}");

    // Frozen: an INSERT waits; thawed: it goes through.
    let freezer = db.freezer("right-pw", "my-main", Duration::from_secs(10));
    let t0 = Instant::now();
    let frozen = freezer.freeze().unwrap();
    let froze_in = t0.elapsed();
    let mut w = db.writer();
    assert!(
        !exits_within(&mut w, Duration::from_millis(700)),
        "INSERT ran while frozen"
    );
    let t1 = Instant::now();
    assert!(frozen.thaw_keeping().unwrap().is_empty());
    let thawed_in = t1.elapsed();
    eprintln!(
        "mysql freeze: lock taken in {:?}, released in {:?}",
        froze_in, thawed_in
    );
    assert!(
        exits_within(&mut w, Duration::from_secs(10)),
        "INSERT still blocked after thaw"
    );
    assert_eq!(db.sql("SELECT count(*) FROM d.t"), "1");

    // Dropped without a thaw: the lock goes with the session.
    let frozen = freezer.freeze().unwrap();
    let mut w = db.writer();
    assert!(!exits_within(&mut w, Duration::from_millis(300)));
    drop(frozen);
    assert!(
        exits_within(&mut w, Duration::from_secs(10)),
        "a dropped freeze kept the lock"
    );

    // The client killed: the lock is gone, thaw reports it.
    let freezer = db.freezer("right-pw", "my-kill", Duration::from_secs(10));
    let frozen = freezer.freeze().unwrap();
    let mut w = db.writer();
    assert!(!exits_within(&mut w, Duration::from_millis(300)));
    kill_client_tagged("my-kill");
    assert!(
        exits_within(&mut w, Duration::from_secs(10)),
        "a killed client kept the lock"
    );
    let e = frozen.thaw().unwrap_err().to_string();
    assert!(e.contains(&target) && e.contains("UNLOCK TABLES"), "{e}");

    // Another session holds a table: the freeze gives up in time, naming
    // the database and what it waited for.
    let mut holder = db
        .root()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .arg("--unbuffered")
        .spawn()
        .unwrap();
    let mut hin = holder.stdin.take().unwrap();
    writeln!(hin, "LOCK TABLES d.t WRITE;\nSELECT 'held';").unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let t0 = Instant::now();
    let e = db
        .freezer("right-pw", "my-timeout", Duration::from_secs(2))
        .freeze()
        .err()
        .expect("the freeze waits for LOCK TABLES")
        .to_string();
    let waited = t0.elapsed();
    eprintln!("mysql lock timeout after {waited:?}: {e}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(
        e.contains(&target) && e.contains("FLUSH TABLES WITH READ LOCK"),
        "{e}"
    );
    assert!(
        e.contains("did not finish within the freeze timeout (2s)"),
        "{e}"
    );
    drop(hin);
    let _ = holder.wait();
}

// ------------------------------------------------------------------- MongoDB

/// mongosh is not installable here: a stand-in records its arguments,
/// environment and session script, and prints the markers it is asked to.
#[test]
fn mongodb_session_script_through_a_stand_in() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("mongosh");
    let rec = dir.path().to_path_buf();
    std::fs::write(
        &bin,
        format!(
            "#!/bin/bash\n\
             printf '%s\\n' \"$@\" > {r}/argv\n\
             printf '%s' \"$MONGODB_URI\" > {r}/uri\n\
             while IFS= read -r line; do\n\
               printf '%s\\n' \"$line\" >> {r}/script\n\
               case \"$line\" in \"print('\"*) m=${{line#print(\\'}}; echo \"${{m%\\')}}\";; esac\n\
             done\n",
            r = rec.display()
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(&bin));
    let uri = "mongodb://app:s3cret-pw@db.local:27017/admin";
    let freezer = |tag: &str| {
        let mut o = options(&[("MONGODB_URI", uri)], tag);
        o.program = Some(bin.clone().into());
        HostFreezer::new(Preset::Mongodb, o).unwrap()
    };
    let read = |name: &str| std::fs::read_to_string(rec.join(name)).unwrap_or_default();

    freezer("mongo").freeze().unwrap().thaw().unwrap();
    assert_eq!(read("argv"), "--nodb\n--quiet\n");
    assert_eq!(
        read("uri"),
        uri,
        "the URI reaches the client by its environment"
    );
    let script = read("script");
    let order: Vec<&str> = script
        .lines()
        .filter(|l| !l.starts_with("print("))
        .collect();
    assert_eq!(
        order,
        [
            "db = connect(process.env.MONGODB_URI || 'mongodb://localhost:27017/admin');",
            "db.fsyncLock();",
            "db.fsyncUnlock();"
        ]
    );

    // Dropped without a thaw: fsyncLock outlives a session, so the drop
    // unlocks before it ends the client.
    std::fs::remove_file(rec.join("script")).unwrap();
    drop(freezer("mongo").freeze().unwrap());
    assert!(
        read("script").contains("db.fsyncUnlock();"),
        "{}",
        read("script")
    );

    // A client that fails names the server without the password.
    std::fs::write(
        &bin,
        "#!/bin/sh\necho 'MongoServerError: Authentication failed.' >&2\nexit 1\n",
    )
    .unwrap();
    let e = freezer("mongo").freeze().err().unwrap().to_string();
    assert!(
        e.contains("MongoDB at mongodb://app:***@db.local:27017/admin"),
        "{e}"
    );
    assert!(
        e.contains("Authentication failed") && !e.contains("s3cret-pw"),
        "{e}"
    );
}

// ------------------------------------------- PostgreSQL under load on btrfs

/// A btrfs file system on a loop file, unmounted on drop.
struct Btrfs {
    dir: tempfile::TempDir,
}

impl Btrfs {
    fn mount() -> Btrfs {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        run(Command::new("mkfs.btrfs").arg("-q").arg(&img));
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        Btrfs { dir }
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt()).output();
    }
}

/// Copies the cluster out of a read-only snapshot (plus `extra` files),
/// starts PostgreSQL on the copy and has `pg_amcheck --heapallindexed`
/// check every table and index; returns the pgbench account count.
fn recover_and_check(snapshot: &Path, extra: &[pvsnap_native::KeptFile]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run(Command::new("cp")
        .arg("-a")
        .arg(snapshot.join("data"))
        .arg(&data));
    // The live server's lock file came along; its pid is alive.
    let _ = std::fs::remove_file(data.join("postmaster.pid"));
    for f in extra {
        std::fs::write(data.join(&f.name), &f.contents).unwrap();
    }
    let pg = Postgres::serve(dir, data, "");
    let log = std::fs::read_to_string(pg.dir.path().join("log")).unwrap_or_default();
    assert!(log.contains("database system is ready"), "{log}");
    let mut check = Command::new(format!("{PG_BIN}/pg_amcheck"));
    check.args(["--install-missing", "--heapallindexed", "-d", "postgres"]);
    for (k, v) in pg.env("right-pw") {
        check.env(k, v);
    }
    run(&mut check);
    pg.sql("SELECT count(*) FROM pgbench_accounts")
        .parse()
        .unwrap()
}

/// The issue's database-under-load test, against btrfs directly (the
/// frozen-source pipeline will take over the snapshot step): pgbench writes
/// while a read-only snapshot is taken without and with the freeze; both
/// copies recover and pass pg_amcheck.
#[test]
fn postgres_under_load_recovers_from_btrfs_snapshots() {
    if !can_run("postgres under load on btrfs") {
        return;
    }
    let fs = Btrfs::mount();
    let vol = fs.mnt().join("vol");
    run(Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(&vol));
    let mut pg = Postgres::start();
    // Move the cluster onto the subvolume.
    run(Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(format!("{PG_BIN}/pg_ctl"))
        .arg("-D")
        .arg(&pg.data)
        .args(["-m", "fast", "-w", "stop"]));
    run(Command::new("cp")
        .arg("-a")
        .arg(&pg.data)
        .arg(vol.join("data")));
    let dir = std::mem::replace(&mut pg.dir, tempfile::tempdir().unwrap());
    pg.data = PathBuf::new();
    drop(pg);
    let pg = Postgres::serve(dir, vol.join("data"), "");

    let bench = |args: &[&str]| {
        let mut cmd = Command::new(format!("{PG_BIN}/pgbench"));
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in pg.env("right-pw") {
            cmd.env(k, v);
        }
        cmd
    };
    run(&mut bench(&["-i", "-q", "-s", "2"]));
    let load = bench(&["-c", "4", "-T", "8", "-n"]).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let live = fs.mnt().join("pvsnap-read-live");
    run(Command::new("btrfs")
        .args(["subvolume", "snapshot", "-r"])
        .arg(&vol)
        .arg(&live));

    std::thread::sleep(Duration::from_secs(1));
    let frozen_snap = fs.mnt().join("pvsnap-read-frozen");
    let t0 = Instant::now();
    let frozen = pg.freezer("right-pw", "pg-load").freeze().unwrap();
    run(Command::new("btrfs")
        .args(["subvolume", "snapshot", "-r"])
        .arg(&vol)
        .arg(&frozen_snap));
    let kept = frozen.thaw_keeping().unwrap();
    let window = t0.elapsed();
    eprintln!("postgres under pgbench: freeze + btrfs snapshot + thaw took {window:?}");
    assert!(window < Duration::from_secs(5), "{window:?}");

    let out = load.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(recover_and_check(&live, &[]), 200_000);
    // The backup label points past the snapshot: its end record is written
    // by pg_backup_stop, after the snapshot. With the label alone recovery
    // stops ("WAL ends before end of online backup"); it is for archive
    // recovery (restore_command). The atomic snapshot recovers as a crash.
    assert!(kept[0].contents.contains("LABEL: pvsnap"), "{kept:?}");
    assert_eq!(recover_and_check(&frozen_snap, &[]), 200_000);
}
