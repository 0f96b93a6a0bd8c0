//! `--freeze` for claims: the preset's session in the pod over exec with
//! stdin open, against the fake's real-process exec and a stand-in `psql`
//! (a shell script that speaks the preset's marker protocol, checks its
//! password from its environment and logs what it read). The real
//! PostgreSQL runs behind the binary's tests (`tests/integration/podfreeze.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use pvsnap_k8s::testing::fake::Kind;
use pvsnap_k8s::{FREEZE_CONTAINER_ANNOTATION, PodFreezer};
use pvsnap_native::Freezer;
use pvsnap_native::freeze::Preset;

use crate::scenario::{Scenario, argv};

/// A stand-in `psql` in `dir`: answers the version, echoes markers,
/// fails like psql on a wrong `PGPASSWORD`, and logs its input and its end
/// to `dir/log`.
fn stand_in_psql(dir: &Path) -> PathBuf {
    let log = dir.join("log");
    let script = format!(
        r#"#!/bin/bash
log={log}
echo "argv $*" >> "$log"
if [ "$PGPASSWORD" != "right-pw" ]; then
  echo 'psql: error: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed for user "postgres"' >&2
  exit 2
fi
while IFS= read -r line; do
  echo "in $line" >> "$log"
  case "$line" in
    'SHOW server_version_num;') echo 150004 ;;
    '\echo '*) echo "${{line#\\echo }}" ;;
    *pg_backup_start*) echo 0/2000028 ;;
    *pg_backup_stop*) echo '4c4142454c3a207076736e6170|' ;;
  esac
done
echo "eof" >> "$log"
"#,
        log = log.display()
    );
    let p = dir.join("psql");
    std::fs::write(&p, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    log
}

fn path_with(dir: &Path) -> String {
    format!("{}:/usr/bin:/bin", dir.display())
}

/// The freezer of the PostgreSQL claim, as `snapshot pvc/db/data-postgres-0` makes it.
async fn freezer(s: &Scenario) -> pvsnap_k8s::Result<PodFreezer> {
    let pods = s.pods("db", "data-postgres-0").await;
    PodFreezer::for_claim(
        &s.cluster,
        "db",
        "data-postgres-0",
        &pods,
        Preset::Postgres,
        Duration::from_secs(10),
    )
}

/// Freeze (and thaw) off the runtime that serves the fake.
async fn freeze_thaw(f: PodFreezer) -> Result<Vec<pvsnap_native::KeptFile>, String> {
    tokio::task::spawn_blocking(move || {
        let frozen = f.freeze().map_err(|e| e.to_string())?;
        frozen.thaw_keeping().map_err(|e| e.to_string())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_runs_in_the_pod_with_stdin_open_and_ends_at_the_thaw() {
    let dir = tempfile::tempdir().unwrap();
    let log = stand_in_psql(dir.path());
    let s = Scenario::fixtures().await;
    let path = path_with(dir.path());
    s.fake.exec_real(
        "postgres-0",
        "postgres",
        &[("PATH", &path), ("PGPASSWORD", "right-pw")],
    );
    let f = freezer(&s).await.unwrap();
    assert_eq!(f.place(), ("db/postgres-0".into(), "postgres".into()));
    let kept = freeze_thaw(f).await.unwrap();
    assert_eq!(kept[0].name, "backup_label");
    assert_eq!(kept[0].contents, "LABEL: pvsnap");
    // One exec, in the first container, with the recipe's argv only.
    let execs = s.fake.execs();
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!(execs[0].container, "postgres");
    assert_eq!(
        execs[0].command,
        argv(&[
            "psql",
            "-X",
            "-w",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1"
        ])
    );
    let log = std::fs::read_to_string(&log).unwrap();
    let read: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("in "))
        .filter(|l| !l.starts_with("\\echo"))
        .collect();
    assert_eq!(read[0], "SHOW server_version_num;");
    assert!(read[1..3].join(" ").contains("pg_backup_start"), "{read:?}");
    assert!(read[3].contains("pg_backup_stop"), "{read:?}");
    // The thaw closed the client's input: it read the end and left.
    assert!(log.trim_end().ends_with("eof"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_pod_the_container_and_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    stand_in_psql(dir.path());
    let path = path_with(dir.path());

    // The client is not in the image (no real process, no script: the
    // fake answers like the kubelet).
    let s = Scenario::fixtures().await;
    let e = freeze_thaw(freezer(&s).await.unwrap()).await.unwrap_err();
    eprintln!("{e}");
    assert!(
        e.contains("PostgreSQL in pod db/postgres-0 (container postgres)")
            && e.contains("executable file not found")
            && e.contains(FREEZE_CONTAINER_ANNOTATION),
        "{e}"
    );

    // A wrong password: the in-pod client fails, its words are passed on.
    s.fake.exec_real(
        "postgres-0",
        "postgres",
        &[("PATH", &path), ("PGPASSWORD", "wrong-pw-1")],
    );
    let e = freeze_thaw(freezer(&s).await.unwrap()).await.unwrap_err();
    eprintln!("{e}");
    assert!(
        e.contains("password authentication failed") && e.contains("exit code 2"),
        "{e}"
    );
    assert!(!e.contains("wrong-pw-1"), "{e}");

    // The pod gone between listing and exec.
    let f = freezer(&s).await.unwrap();
    assert!(s.fake.remove(Kind::Pod, "db", "postgres-0"));
    let e = freeze_thaw(f).await.unwrap_err();
    eprintln!("{e}");
    assert!(
        e.contains("exec into pod db/postgres-0 container postgres failed")
            && e.contains("pods \"postgres-0\" not found")
            && e.contains("the pod is gone")
            && e.contains("kubectl get pod -n db postgres-0"),
        "{e}"
    );

    // No running pod: refused before anything runs.
    let e = freezer(&s).await.err().unwrap().to_string();
    assert!(
        e.contains("claim db/data-postgres-0") && e.contains("no running pod mounts it"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_annotation_picks_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let log = stand_in_psql(dir.path());
    let path = path_with(dir.path());
    let s = Scenario::fixtures().await.annotate(
        "db",
        "postgres-0",
        &[(FREEZE_CONTAINER_ANNOTATION, "metrics")],
    );
    s.fake.exec_real(
        "postgres-0",
        "metrics",
        &[("PATH", &path), ("PGPASSWORD", "right-pw")],
    );
    let f = freezer(&s).await.unwrap();
    assert_eq!(f.place().1, "metrics");
    freeze_thaw(f).await.unwrap();
    assert_eq!(s.fake.execs()[0].container, "metrics");
    assert!(std::fs::read_to_string(log).unwrap().contains("eof"));

    let s = s.annotate("db", "postgres-0", &[(FREEZE_CONTAINER_ANNOTATION, "pg")]);
    let e = freezer(&s).await.err().unwrap().to_string();
    assert!(
        e.contains("no such container (containers: postgres, metrics)"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_times_out_and_its_stream_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let p = dir.path().join("psql");
    // Reads everything, answers nothing: a lock that is never granted.
    std::fs::write(
        &p,
        format!(
            "#!/bin/bash\nwhile IFS= read -r l; do :; done\necho eof >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Scenario::fixtures().await;
    let path = path_with(dir.path());
    s.fake
        .exec_real("postgres-0", "postgres", &[("PATH", &path)]);
    let pods = s.pods("db", "data-postgres-0").await;
    let f = PodFreezer::for_claim(
        &s.cluster,
        "db",
        "data-postgres-0",
        &pods,
        Preset::Postgres,
        Duration::from_secs(1),
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let e = freeze_thaw(f).await.unwrap_err();
    assert!(
        e.contains("did not finish within the freeze timeout (1s)")
            && e.contains("PostgreSQL in pod db/postgres-0"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // The stream was closed: the client in the pod read the end of its input.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log).unwrap_or_default() != "eof\n" {
        assert!(
            std::time::Instant::now() < until,
            "the client never saw the end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
