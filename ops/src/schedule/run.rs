//! The scheduler's loop on the real clock, running jobs as child processes
//! of the `pvsnap` binary.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use pvsnap_engine::stop::Stop;

use super::{Event, Job, JobState, Outcome, Runner, Running, Schedule, Scheduler, save_state};

/// Runs each job as `program [global…] args…` (the same binary with the
/// repository flags the scheduler was given), its output on the
/// scheduler's own standard error; the last [`TAIL`] bytes of each job's
/// standard error are kept in `tails` (job name → bytes) for notifications.
pub struct ProcessRunner {
    pub program: PathBuf,
    /// Flags put before every job's arguments (`--repo`, `--password-file`).
    pub global: Vec<String>,
    pub tails: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    /// Sends SIGTERM to a pid (a snapshot then stores what it read and
    /// indexes it); given by the binary, which may call libc.
    pub terminate: fn(u32),
    /// Sends SIGKILL to the process group a job leads (each job starts
    /// its own); given by the binary.
    pub kill: fn(u32),
}

/// How much of a job's standard error is kept.
pub const TAIL: usize = 4096;

struct ChildRun {
    child: Child,
    /// Copies the child's standard error; joined when it ends, so the tail
    /// is complete before the end is reported.
    copier: Option<JoinHandle<()>>,
    terminate: fn(u32),
    kill: fn(u32),
}

impl ChildRun {
    fn finish(&mut self) {
        if let Some(c) = self.copier.take() {
            let _ = c.join();
        }
    }
}

impl Running for ChildRun {
    fn poll(&mut self) -> Option<Outcome> {
        let outcome = match self.child.try_wait() {
            Ok(Some(status)) => Outcome::exited(status.code()),
            Ok(None) => return None,
            Err(_) => Outcome::exited(None),
        };
        self.finish();
        Some(outcome)
    }

    fn stop(&mut self) {
        (self.terminate)(self.child.id());
    }

    fn kill(&mut self) -> Outcome {
        (self.kill)(self.child.id());
        let code = self.child.wait().ok().and_then(|s| s.code());
        // The copier is not joined: a process that left the group may
        // still hold the pipe open.
        self.copier = None;
        Outcome::exited(code)
    }
}

/// A run that could not even start: it ends at once as a failure.
struct NotStarted;

impl Running for NotStarted {
    fn poll(&mut self) -> Option<Outcome> {
        Some(Outcome::exited(Some(127)))
    }
    fn stop(&mut self) {}
    fn kill(&mut self) -> Outcome {
        Outcome::exited(Some(127))
    }
}

impl Runner for ProcessRunner {
    fn start(&mut self, job: &Job, slot: Timestamp) -> Box<dyn Running> {
        let child = Command::new(&self.program)
            .args(&self.global)
            .args(&job.args)
            .env("PVSNAP_SCHEDULE_JOB", &job.name)
            .env("PVSNAP_SCHEDULE_SLOT", slot.to_string())
            // Its own process group, so that `kill` reaches what it started
            // in it, and a terminal's Ctrl-C reaches serve only (which
            // forwards SIGTERM).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn();
        match child {
            Ok(mut c) => {
                let pipe = c.stderr.take();
                let tails = self.tails.clone();
                let name = job.name.clone();
                tails.lock().expect("tails").insert(name.clone(), vec![]);
                let copier = pipe.map(|p| std::thread::spawn(move || copy_tail(p, &tails, &name)));
                Box::new(ChildRun {
                    child: c,
                    copier,
                    terminate: self.terminate,
                    kill: self.kill,
                })
            }
            Err(e) => {
                tracing::error!(
                    "job {}: cannot start {}: {e}",
                    job.name,
                    self.program.display()
                );
                Box::new(NotStarted)
            }
        }
    }
}

/// Copies a child's standard error to ours, keeping its last [`TAIL`]
/// bytes under the job's name.
fn copy_tail(mut pipe: impl Read, tails: &Mutex<BTreeMap<String, Vec<u8>>>, name: &str) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match pipe.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let _ = std::io::stderr().write_all(&buf[..n]);
        let mut tails = tails.lock().expect("tails");
        let tail = tails.entry(name.to_string()).or_default();
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > TAIL {
            tail.drain(..tail.len() - TAIL);
        }
    }
}

/// Runs the schedule until `stop` is requested; then asks running jobs to
/// stop, waits for them up to `grace`, kills those still running (a
/// `Finished` event with `killed`), and saves the state. `on_event`
/// sees every event (logs, metrics); the state file is written after each
/// start and end. `alive` is called on every turn of the loop (a health
/// check sees the loop turning).
pub fn run(
    schedule: &Schedule,
    state_file: &Path,
    runner: &mut dyn Runner,
    stop: &Stop,
    grace: Duration,
    on_event: &mut dyn FnMut(&Event, &BTreeMap<String, JobState>),
    alive: &dyn Fn(),
) -> Result<(), String> {
    let saved = super::load_state(state_file)?;
    let (mut s, events) = Scheduler::new(schedule, &saved, Timestamp::now());
    let states = s.states();
    for e in &events {
        on_event(e, &states);
    }
    save_state(state_file, &states)?;
    while !stop.requested() {
        alive();
        let events = s.tick(Timestamp::now(), runner);
        if !events.is_empty() {
            let states = s.states();
            for e in &events {
                on_event(e, &states);
            }
            if let Err(e) = save_state(state_file, &states) {
                tracing::warn!("{e}");
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    s.stop_all();
    let deadline = std::time::Instant::now() + grace;
    while s.busy() && std::time::Instant::now() < deadline {
        let events = s.tick_reap_only();
        let states = s.states();
        for e in &events {
            on_event(e, &states);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if s.busy() {
        let events = s.kill_running();
        let states = s.states();
        for e in &events {
            on_event(e, &states);
        }
    }
    save_state(state_file, &s.states())
}
