//! A restore drill: restore a snapshot into a scratch folder, check every
//! file of it against the snapshot, optionally run a command on the copy
//! (start a database on it and query it), report how long the restore took
//! (the recovery time) and clean up.
//!
//! A drill proves what a backup is for: that it comes back. It fails when
//! the snapshot holds no files, when the restore reports damage, when any
//! entry differs from the snapshot, and when the command fails.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvsnap_engine::IndexedRepository;
use pvsnap_engine::restore::verify::{VerifyProgress, verify};
use pvsnap_engine::restore::{self, RestoreOptions, RestoreProgress};
use pvsnap_engine::snapshot::Snapshot;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::observe::Observer;

/// How a drill runs.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Where to restore: a folder that does not exist yet or is empty.
    /// `None`: a new folder under the system's temporary folder.
    pub target: Option<PathBuf>,
    /// Run with `sh -c` in the restored folder once it is verified; the
    /// drill fails when it exits non-zero. It gets `PVSNAP_DRILL_DIR`,
    /// `PVSNAP_SNAPSHOT` and `PVSNAP_SOURCE`.
    pub verify_cmd: Option<String>,
    /// How long the command may run (default 10 minutes).
    pub verify_timeout: Option<Duration>,
    /// Leave the restored folder in place (to look at it).
    pub keep: bool,
}

/// What a drill found; `ok` is the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub snapshot: String,
    pub source: String,
    pub ok: bool,
    /// Seconds the restore took: the recovery time of this snapshot.
    pub rto_seconds: f64,
    /// Seconds spent reading every file back and comparing it.
    pub verify_seconds: f64,
    pub files_verified: u64,
    /// Content bytes restored and read back.
    pub bytes: u64,
    /// Restore throughput, bytes per second.
    pub throughput_bytes_per_s: f64,
    /// Each difference between the copy and the snapshot, and each file the
    /// restore reported damaged: (path, what).
    pub problems: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_cmd: Option<CommandOutcome>,
    /// Where the copy was made; it is gone unless kept.
    pub target: PathBuf,
    pub kept: bool,
    /// Why the drill failed, in a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the verify command did.
#[derive(Debug, Clone, Serialize)]
pub struct CommandOutcome {
    pub command: String,
    /// `None` when it was stopped at its timeout.
    pub exit_code: Option<i32>,
    pub seconds: f64,
    /// The last 2,000 bytes of its standard output and error.
    pub output: String,
}

/// Runs a drill of `snap`; see the module documentation. An error is
/// returned only when the drill could not be set up (the target is in the
/// way, the snapshot cannot be read at all); a drill that ran and found
/// problems is an `Ok` report with `ok: false`.
pub fn drill(
    repo: &IndexedRepository,
    snap: &Snapshot,
    opts: &DrillOptions,
    observer: &dyn Observer,
) -> Result<DrillReport> {
    if snap.summary.total_files == 0 {
        return Err(Error::Drill(format!(
            "snapshot {} of {} holds no files: a drill of it proves nothing; drill a snapshot that holds data (`pvsnap snapshots` lists them)",
            snap.short_id(),
            snap.source.key()
        )));
    }
    let (target, made) = scratch(opts.target.as_deref(), snap)?;
    let mut report = DrillReport {
        snapshot: snap.id.to_hex(),
        source: snap.source.key(),
        ok: false,
        rto_seconds: 0.0,
        verify_seconds: 0.0,
        files_verified: 0,
        bytes: 0,
        throughput_bytes_per_s: 0.0,
        problems: vec![],
        verify_cmd: None,
        target: target.clone(),
        kept: opts.keep,
        error: None,
    };
    let ran = run(repo, snap, opts, &target, &mut report, observer);
    if let Err(e) = ran {
        report.error = Some(e.to_string());
    }
    report.ok = report.error.is_none() && report.problems.is_empty();
    if !opts.keep {
        let cleanup = if made {
            std::fs::remove_dir_all(&target)
        } else {
            empty(&target)
        };
        if let Err(e) = cleanup {
            report.ok = false;
            report.error.get_or_insert(format!(
                "the drill's copy at {} could not be removed: {e}; remove it by hand",
                target.display()
            ));
        }
    }
    Ok(report)
}

fn run(
    repo: &IndexedRepository,
    snap: &Snapshot,
    opts: &DrillOptions,
    target: &Path,
    report: &mut DrillReport,
    observer: &dyn Observer,
) -> Result<()> {
    let progress = Arc::new(RestoreProgress::default());
    let watch = observer.restoring(progress.clone());
    let started = Instant::now();
    let restored = restore::restore(
        repo,
        snap,
        None,
        target,
        &RestoreOptions::default(),
        &progress,
    );
    report.rto_seconds = started.elapsed().as_secs_f64();
    drop(watch);
    let summary = restored?;
    report.problems.extend(
        summary
            .damaged
            .iter()
            .map(|(p, why)| (p.clone(), format!("damaged in the repository: {why}"))),
    );
    let started = Instant::now();
    let verified = verify(repo, &snap.root, target, &VerifyProgress::default())?;
    report.verify_seconds = started.elapsed().as_secs_f64();
    report.files_verified = verified.files_verified;
    report.bytes = verified.bytes;
    report.throughput_bytes_per_s = verified.bytes as f64 / report.rto_seconds.max(1e-9);
    report.problems.extend(verified.mismatches);
    if !report.problems.is_empty() {
        return Err(Error::Drill(format!(
            "{} entr{} of the restored copy differ from the snapshot",
            report.problems.len(),
            if report.problems.len() == 1 {
                "y"
            } else {
                "ies"
            }
        )));
    }
    if let Some(cmd) = &opts.verify_cmd {
        let outcome = run_command(cmd, target, snap, opts.verify_timeout)?;
        let failed = outcome.exit_code != Some(0);
        let said = match outcome.exit_code {
            Some(c) => format!("exited with {c}"),
            None => "was stopped at its timeout".into(),
        };
        report.verify_cmd = Some(outcome);
        if failed {
            return Err(Error::Drill(format!(
                "the verify command {said}; its output is in the report"
            )));
        }
    }
    Ok(())
}

/// The folder to restore into, and whether the drill made it (else it was
/// there and empty, and is emptied again afterwards).
fn scratch(target: Option<&Path>, snap: &Snapshot) -> Result<(PathBuf, bool)> {
    let Some(t) = target else {
        let dir = std::env::temp_dir().join(format!(
            "pvsnap-drill-{}-{}",
            snap.short_id(),
            std::process::id()
        ));
        std::fs::create_dir(&dir).map_err(|e| {
            Error::Drill(format!(
                "{}: cannot make the drill's folder: {e}; give one with --target",
                dir.display()
            ))
        })?;
        return Ok((dir, true));
    };
    match std::fs::read_dir(t) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Drill(format!(
                    "{}: not empty; a drill restores into an empty or new folder, so that it never overwrites anything: give another --target",
                    t.display()
                )));
            }
            Ok((t.to_path_buf(), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(t)
                .map_err(|e| Error::Drill(format!("{}: cannot make it: {e}", t.display())))?;
            Ok((t.to_path_buf(), true))
        }
        Err(e) => Err(Error::Drill(format!("{}: {e}", t.display()))),
    }
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Signals the process group `pgid` (the verify command's).
fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn run_command(
    cmd: &str,
    dir: &Path,
    snap: &Snapshot,
    timeout: Option<Duration>,
) -> Result<CommandOutcome> {
    let timeout = timeout.unwrap_or(Duration::from_secs(600));
    let out_path = dir.with_extension("verify-output");
    let out = std::fs::File::create(&out_path)
        .map_err(|e| Error::Drill(format!("{}: {e}", out_path.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| Error::Drill(format!("{}: {e}", out_path.display())))?;
    let started = Instant::now();
    // A group of its own, so that what it starts is stopped with it.
    let mut child = Command::new("sh")
        .process_group(0)
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .env("PVSNAP_DRILL_DIR", dir)
        .env("PVSNAP_SNAPSHOT", snap.id.to_hex())
        .env("PVSNAP_SOURCE", snap.source.key())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| Error::Drill(format!("the verify command could not start: {e}")))?;
    let code = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::Drill(format!("waiting for the verify command: {e}")))?
        {
            break status.code();
        }
        if started.elapsed() > timeout {
            kill_group(child.id(), "KILL");
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // What it left running in its group (a server it started and did not
    // stop) would hold the copy that is removed next.
    kill_group(child.id(), "TERM");
    let output = std::fs::read(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let tail = &output[output.len().saturating_sub(2000)..];
    Ok(CommandOutcome {
        command: cmd.to_owned(),
        exit_code: code,
        seconds: started.elapsed().as_secs_f64(),
        output: String::from_utf8_lossy(tail).into_owned(),
    })
}
