//! MariaDB under load, snapshotted with `--freeze mysql` (issue #21): a
//! private `mariadbd` whose data directory is a btrfs subvolume, three
//! sessions committing transactions that insert into a log table (three
//! secondary indexes), update one counter row per writer, update and
//! delete older log rows. `pvsnap snapshot --freeze mysql` takes the read
//! lock (the client gets its user, host and port from `~/.my.cnf` and the
//! password from `MYSQL_PWD`, never argv), makes the btrfs snapshot and
//! unlocks. The restored copy starts by InnoDB crash recovery, `CHECK
//! TABLE … EXTENDED` and `mariadb-check --extended --all-databases` find
//! nothing, and each writer's counter agrees with its rows in the log
//! (they change in one transaction).
//!
//! Live reads (`--source-snapshot off`) of the same load are restored too;
//! what their copies do is reported on stderr, not asserted (a live read
//! copies the redo log and the tablespaces at different moments). Seen
//! here (MariaDB 10.11, several runs of three live reads each): every live
//! copy came up through crash recovery, some rolling back a transaction
//! caught half-way, and checked clean with agreeing counters. The load is
//! small, its whole redo since the checkpoint is in the 16 MiB log, and
//! InnoDB's doublewrite buffer repairs torn pages; with more writes than
//! the log holds during the read, a live copy can miss changes for good.
//!
//! Needs root, btrfs and Debian's mariadb-server; skipped loudly without
//! them, a failure instead when `PVSNAP_REQUIRE_DB=1` (as `scripts/test`
//! sets for root).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::btrfs::{Btrfs, btrfs};
use crate::database::{let_others_in, require_db, run};
use crate::util::{Env, stderr};

const MARIADBD: &str = "/usr/sbin/mariadbd";
/// The application user's password: it must never be on a command line.
const PASSWORD: &str = "pw-only-in-the-environment-7f3a";
const WRITERS: u32 = 3;

/// A `mariadbd` on `data`; its socket, pid file and error log live in
/// `run_dir`. Killed on drop.
struct Server {
    child: Child,
    run_dir: PathBuf,
}

impl Server {
    /// Starts a server and waits until it answers (crash recovery first,
    /// on a copy): `Err` with its error log when it exits or stays silent.
    fn start(data: &Path, run_dir: &Path, wait: Duration) -> Result<Server, String> {
        std::fs::create_dir_all(run_dir).unwrap();
        std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        // A port free a moment ago (the server's own TCP port: the
        // application user connects over TCP).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new(MARIADBD)
            .args(["--no-defaults", "--user=mysql", "--skip-log-bin"])
            .args([
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
            ])
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--port={}", port))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", run_dir.display()))
            .arg(format!("--socket={}", run_dir.join("sock").display()))
            .arg(format!("--pid-file={}", run_dir.join("pid").display()))
            .arg(format!(
                "--log-error={}",
                run_dir.join("mariadbd.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            run_dir: run_dir.to_owned(),
        };
        let until = Instant::now() + wait;
        loop {
            let mut ping = server.root();
            ping.args(["-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if ping.status().is_ok_and(|s| s.success()) {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                return Err(format!("mariadbd exited ({status}):\n{}", server.log()));
            }
            if Instant::now() > until {
                return Err(format!(
                    "mariadbd did not answer in {wait:?}:\n{}",
                    server.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn port(&self) -> u16 {
        self.sql("SELECT @@port").parse().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("mariadbd.log")).unwrap_or_default()
    }

    /// The root client over the socket (unix_socket authentication).
    fn root(&self) -> Command {
        let mut c = self.tool("mariadb");
        c.args(["--batch", "--skip-column-names"]);
        c
    }

    /// A client tool as root over the socket.
    fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.run_dir.join("sock").display()))
            .args(["-u", "root"])
            .stdin(Stdio::null());
        c
    }

    fn sql(&self, sql: &str) -> String {
        run(self.root().arg("-e").arg(sql), sql).trim().to_owned()
    }

    /// Stops the server cleanly (a clean shutdown of the original; the
    /// copies were taken while it ran).
    fn stop(&mut self) {
        let _ = self.sql("SHUTDOWN");
        let until = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The schema and the writers' procedure. Each transaction of `load(w)`
/// changes the log and writer `w`'s counter row together, so in any
/// transaction-consistent copy `ledger.n`/`ledger.total` equal the count
/// and the sum of the writer's rows in `log`.
const SCHEMA: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.ctl (stop INT NOT NULL) ENGINE=InnoDB;
INSERT INTO shop.ctl VALUES (0);
CREATE TABLE shop.ledger (id INT PRIMARY KEY, n BIGINT NOT NULL, total BIGINT NOT NULL)
  ENGINE=InnoDB;
INSERT INTO shop.ledger VALUES (1, 0, 0), (2, 0, 0), (3, 0, 0);
CREATE TABLE shop.log (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  writer INT NOT NULL,
  amount INT NOT NULL,
  note VARCHAR(80) NOT NULL,
  pad CHAR(200) NOT NULL DEFAULT '',
  KEY by_writer (writer, id),
  KEY by_amount (amount),
  KEY by_note (note)
) ENGINE=InnoDB;
DELIMITER //
CREATE PROCEDURE shop.load(w INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  DECLARE a INT;
  DECLARE v BIGINT;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v = NULL;
  -- Each writer touches only its own rows; without gap locks writers do
  -- not wait for each other.
  SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED;
  WHILE (SELECT stop FROM shop.ctl) = 0 DO
    SET i = i + 1, a = FLOOR(1 + RAND() * 100);
    BEGIN
      -- A deadlock (or lock wait timeout) undoes the whole transaction.
      DECLARE EXIT HANDLER FOR 1213, 1205 ROLLBACK;
      START TRANSACTION;
      INSERT INTO shop.log (writer, amount, note, pad) VALUES (w, a, CONCAT('w', w, '-', i), REPEAT('x', 150));
      UPDATE shop.ledger SET n = n + 1, total = total + a WHERE id = w;
      COMMIT;
    END;
    BEGIN
      DECLARE EXIT HANDLER FOR 1213, 1205 ROLLBACK;
      -- A secondary index entry moves: an older row's note changes.
      UPDATE shop.log SET note = CONCAT('u', w, '-', i)
        WHERE writer = w AND id = FLOOR(1 + RAND() * LAST_INSERT_ID());
    END;
    IF i % 5 = 0 THEN
      BEGIN
        DECLARE EXIT HANDLER FOR 1213, 1205 ROLLBACK;
        -- The writer's oldest row goes, its counter with it.
        START TRANSACTION;
        SET v = NULL;
        SELECT id, amount INTO v, a FROM shop.log WHERE writer = w ORDER BY id LIMIT 1 FOR UPDATE;
        IF v IS NOT NULL THEN
          DELETE FROM shop.log WHERE id = v;
          UPDATE shop.ledger SET n = n - 1, total = total - a WHERE id = w;
        END IF;
        COMMIT;
      END;
    END IF;
  END WHILE;
END//
DELIMITER ;
CREATE USER app@'127.0.0.1' IDENTIFIED BY 'PASSWORD';
GRANT RELOAD ON *.* TO app@'127.0.0.1';
";

/// What a copy holds, or why it is not usable.
struct Checked {
    /// Rows in the log.
    rows: u64,
    /// What the server's log says about recovery.
    recovery: String,
}

/// Starts `mariadbd` on a restored copy and checks it: every table passes
/// `CHECK TABLE … EXTENDED` and `mariadb-check --extended --all-databases`,
/// and each writer's counter agrees with its rows.
fn check_copy(copy: &Path, run_dir: &Path) -> Result<Checked, String> {
    let server = Server::start(copy, run_dir, Duration::from_secs(40))?;
    let log = server.log();
    let check = server.sql("CHECK TABLE shop.log, shop.ledger, shop.ctl EXTENDED");
    // Rows: Table, Op, Msg_type, Msg_text; only `status OK` is clean.
    for line in check.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.get(2..4) != Some(&["status", "OK"][..]) {
            return Err(format!("CHECK TABLE EXTENDED: {check}"));
        }
    }
    let out = server
        .tool("mariadb-check")
        .args(["--extended", "--all-databases"])
        .output()
        .unwrap();
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let bad = |l: &str| {
        let l = l.to_lowercase();
        l.contains("error") || l.contains("corrupt") || l.contains("warning")
    };
    if !out.status.success() || all.lines().any(bad) || !all.contains("shop.log") {
        return Err(format!("mariadb-check --extended --all-databases: {all}"));
    }
    let disagree = server.sql(
        "SELECT l.id, l.n, l.total, count(g.id), coalesce(sum(g.amount), 0) \
         FROM shop.ledger l LEFT JOIN shop.log g ON g.writer = l.id \
         GROUP BY l.id HAVING l.n <> count(g.id) OR l.total <> coalesce(sum(g.amount), 0)",
    );
    if !disagree.is_empty() {
        return Err(format!(
            "counters disagree with the log (id, n, total, rows, sum): {disagree}"
        ));
    }
    let rows = server.sql("SELECT count(*) FROM shop.log").parse().unwrap();
    drop(server);
    Ok(Checked {
        rows,
        recovery: log
            .lines()
            .filter(|l| l.contains("InnoDB") && l.to_lowercase().contains("recover"))
            .map(|l| l.split_once("] ").map_or(l, |(_, m)| m))
            .collect::<Vec<_>>()
            .join(" / "),
    })
}

/// A private server on a btrfs subvolume with the schema, the client's
/// settings as an operator keeps them (user, host and port in `~/.my.cnf`,
/// the password in `MYSQL_PWD`), and a folder for a `mysql` first on PATH.
struct Setup {
    server: Server,
    data: PathBuf,
    home: PathBuf,
    bin: PathBuf,
    /// Unmounted last (fields drop in order).
    fs: Btrfs,
}

impl Setup {
    /// `None` after saying loudly why the test is skipped.
    fn new(test: &str) -> Option<Setup> {
        let missing = (!Path::new(MARIADBD).exists())
            .then_some("MariaDB is not installed (Debian package mariadb-server)");
        if !require_db(test, missing) {
            return None;
        }
        let fs = btrfs(test)?;
        let_others_in(&fs.mnt);
        let vol = fs.subvolume("my");
        let data = vol.join("data");
        let run_dir = fs.mnt.join("run");
        std::fs::create_dir(&run_dir).unwrap();
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        run(
            Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=mysql", "--skip-test-db"])
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", run_dir.display()))
                .stdout(Stdio::null()),
            "mariadb-install-db",
        );
        let server = Server::start(&data, &run_dir, Duration::from_secs(60)).unwrap();
        let mut child = server
            .tool("mariadb")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(
                SCHEMA
                    .replace("'PASSWORD'", &format!("'{PASSWORD}'"))
                    .as_bytes(),
            )
            .unwrap();
        assert!(child.wait().unwrap().success(), "schema");
        let home = fs.mnt.join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(
            home.join(".my.cnf"),
            format!(
                "[client]\nuser=app\nhost=127.0.0.1\nport={}\n",
                server.port()
            ),
        )
        .unwrap();
        let bin = fs.mnt.join("bin");
        std::fs::create_dir(&bin).unwrap();
        Some(Setup {
            server,
            data,
            home,
            bin,
            fs,
        })
    }

    /// Puts a `mysql` running `script` (a shell script) first on PATH.
    fn mysql(&self, script: &str) {
        let p = self.bin.join("mysql");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `pvsnap snapshot DATA --json EXTRA` with the client's settings.
    fn pvsnap(&self, env: &Env, extra: &[&str]) -> Command {
        let mut c = env.cmd();
        c.arg("snapshot")
            .arg(&self.data)
            .arg("--json")
            .args(extra)
            .env("HOME", &self.home)
            .env("MYSQL_PWD", PASSWORD)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        c
    }

    /// A snapshot that must succeed; its JSON object.
    fn snapshot(&self, env: &Env, extra: &[&str]) -> Value {
        let out = self.pvsnap(env, extra).output().unwrap();
        assert!(out.status.success(), "snapshot {extra:?}: {}", stderr(&out));
        let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
        assert!(
            !String::from_utf8_lossy(&all).contains(PASSWORD),
            "pvsnap printed the password: {}",
            stderr(&out)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().map(|a| a[0].clone()).unwrap_or(v)
    }
}

#[test]
fn mariadb_under_load_frozen_with_freeze_mysql_recovers_and_checks_clean() {
    let test = "mariadb_under_load_frozen_with_freeze_mysql_recovers_and_checks_clean";
    let Some(mut setup) = Setup::new(test) else {
        return;
    };
    let server = &setup.server;
    // A `mysql` that records its arguments and runs the real client.
    let argv_log = setup.fs.mnt.join("mysql-argv");
    setup.mysql(&format!(
        "#!/bin/sh\nfor a in \"$0\" \"$@\"; do printf '%s\\n' \"$a\"; done >> {}\nexec mariadb \"$@\"\n",
        argv_log.display()
    ));

    let writers: Vec<Child> = (1..=WRITERS)
        .map(|w| {
            server
                .root()
                .arg("-e")
                .arg(format!("CALL shop.load({w})"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let rows_now = || -> u64 { server.sql("SELECT count(*) FROM shop.log").parse().unwrap() };
    std::thread::sleep(Duration::from_secs(2));
    let before = rows_now();
    assert!(before > 0, "the writers write");

    let env = Env::new();
    env.init();
    let started = Instant::now();
    let frozen = setup.snapshot(
        &env,
        &["--freeze", "mysql", "--source-snapshot", "required"],
    );
    let frozen_s = started.elapsed().as_secs_f64();
    let ss = &frozen["source_snapshot"];
    assert_eq!(ss["kind"], "btrfs", "{frozen}");
    let window = ss["freeze_window_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("the frozen snapshot reports its freeze window: {frozen}"));
    assert!(window < 5.0, "{frozen}");
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(argv.contains("--batch"), "the freeze ran `mysql`: {argv}");
    assert!(
        !argv.contains(PASSWORD),
        "the password went on a command line: {argv}"
    );

    // Live reads of the same load, for the report.
    let mut live = vec![];
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        let v = setup.snapshot(&env, &["--source-snapshot", "off"]);
        assert!(v["source_snapshot"].is_null(), "{v}");
        live.push(v["id"].as_str().unwrap().to_owned());
    }
    let after = rows_now();
    assert!(after > before, "the load ran through the snapshots");
    server.sql("UPDATE shop.ctl SET stop = 1");
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "writer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    setup.server.stop();

    // The copies go outside the small btrfs volume.
    let_others_in(env.dir.path());
    let copy = env.path("frozen-copy");
    env.ok(&[
        "restore",
        frozen["id"].as_str().unwrap(),
        "--target",
        copy.to_str().unwrap(),
    ]);
    let checked = check_copy(&copy, &env.path("run-frozen"))
        .unwrap_or_else(|e| panic!("the frozen copy did not come up clean: {e}"));
    assert!(checked.rows > 0, "the copy holds the log");
    eprintln!(
        "mariadb under load, --freeze mysql: snapshot in {frozen_s:.2} s (native snapshot {} s, freeze window {window} s); the copy started (log: {}), CHECK TABLE EXTENDED and mariadb-check --extended clean, counters agree with {} log rows",
        ss["create_s"], checked.recovery, checked.rows
    );

    // Live reads: reported, not asserted.
    for (i, id) in live.iter().enumerate() {
        let torn = env.path(&format!("live-copy-{i}"));
        env.ok(&["restore", id, "--target", torn.to_str().unwrap()]);
        match check_copy(&torn, &env.path(&format!("run-live-{i}"))) {
            Ok(c) => eprintln!(
                "mariadb live read {i} (--source-snapshot off): this time the copy started (log: {}) and checked clean ({} rows); a live read gives no such guarantee",
                c.recovery, c.rows
            ),
            Err(e) => eprintln!(
                "mariadb live read {i} (--source-snapshot off): the copy is torn: {}",
                e.lines()
                    .filter(|l| l.contains("ERROR")
                        || l.contains("disagree")
                        || l.contains("mariadb"))
                    .take(4)
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
        }
    }
}

/// pvsnap killed (-9) while it holds `FLUSH TABLES WITH READ LOCK`: the
/// client's input was pvsnap's pipe, so the client ends, its session with
/// it, and writers go on; nothing else kept the pipe open. The next
/// snapshot with the freeze works and no read snapshot is left behind.
#[test]
fn pvsnap_killed_while_mysql_is_frozen_releases_the_lock() {
    let test = "pvsnap_killed_while_mysql_is_frozen_releases_the_lock";
    let Some(setup) = Setup::new(test) else {
        return;
    };
    // A `mysql` that passes its input on line by line and, once the lock
    // statement has gone through, says so and holds back the rest (the
    // marker pvsnap waits for) for three seconds: pvsnap is then frozen.
    let locked = setup.fs.mnt.join("locked");
    setup.mysql(&format!(
        "#!/bin/bash\n\
         while IFS= read -r line; do\n\
           printf '%s\\n' \"$line\"\n\
           case \"$line\" in *'READ LOCK'*) sleep 0.5; : > {l}; sleep 3;; esac\n\
         done | mariadb \"$@\"\n",
        l = locked.display()
    ));
    let env = Env::new();
    env.init();
    let mut pvsnap = setup
        .pvsnap(
            &env,
            &["--freeze", "mysql", "--source-snapshot", "required"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while !locked.exists() {
        assert!(Instant::now() < until, "the freeze never took the lock");
        assert!(
            pvsnap.try_wait().unwrap().is_none(),
            "pvsnap ended before the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The lock holds: an INSERT waits.
    let mut insert = setup
        .server
        .root()
        .arg("-e")
        .arg("INSERT INTO shop.ledger VALUES (9, 0, 0)")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        insert.try_wait().unwrap().is_none(),
        "an INSERT ran while pvsnap held the read lock"
    );
    pvsnap.kill().unwrap();
    pvsnap.wait().unwrap();
    // The lock goes with pvsnap (after the stand-in's held-back seconds).
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = insert.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < until,
            "the read lock outlived pvsnap by 15 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        setup
            .server
            .sql("SELECT count(*) FROM shop.ledger WHERE id = 9"),
        "1"
    );

    // The next frozen snapshot runs as usual, through the plain client.
    std::fs::remove_file(setup.bin.join("mysql")).unwrap();
    let snap = setup.snapshot(
        &env,
        &["--freeze", "mysql", "--source-snapshot", "required"],
    );
    assert_eq!(snap["source_snapshot"]["kind"], "btrfs", "{snap}");
    let leftovers: Vec<String> = std::fs::read_dir(setup.fs.mnt.join(".pvsnap-snapshots/my"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
