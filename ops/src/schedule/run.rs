//! The scheduler's loop on the real clock, running jobs as child processes
//! of the `pvsnap` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use pvsnap_engine::stop::Stop;

use super::{Event, Job, JobState, Outcome, Runner, Running, Schedule, Scheduler, save_state};

/// Runs each job as `program [global…] args…` (the same binary with the
/// repository flags the scheduler was given), its output on the
/// scheduler's own standard error.
pub struct ProcessRunner {
    pub program: PathBuf,
    /// Flags put before every job's arguments (`--repo`, `--password-file`).
    pub global: Vec<String>,
}

struct ChildRun(Child);

impl Running for ChildRun {
    fn poll(&mut self) -> Option<Outcome> {
        match self.0.try_wait() {
            Ok(Some(status)) => Some(Outcome {
                code: status.code(),
            }),
            Ok(None) => None,
            Err(_) => Some(Outcome { code: None }),
        }
    }

    fn stop(&mut self) {
        // SIGTERM: a snapshot stores what it read and indexes it.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A run that could not even start: it ends at once as a failure.
struct NotStarted;

impl Running for NotStarted {
    fn poll(&mut self) -> Option<Outcome> {
        Some(Outcome { code: Some(127) })
    }
    fn stop(&mut self) {}
}

impl Runner for ProcessRunner {
    fn start(&mut self, job: &Job, slot: Timestamp) -> Box<dyn Running> {
        let child = Command::new(&self.program)
            .args(&self.global)
            .args(&job.args)
            .env("PVSNAP_SCHEDULE_JOB", &job.name)
            .env("PVSNAP_SCHEDULE_SLOT", slot.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn();
        match child {
            Ok(c) => Box::new(ChildRun(c)),
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

/// Runs the schedule until `stop` is requested; then asks running jobs to
/// stop, waits for them up to `grace`, and saves the state. `on_event`
/// sees every event (logs, metrics); the state file is written after each
/// start and end.
pub fn run(
    schedule: &Schedule,
    state_file: &Path,
    runner: &mut dyn Runner,
    stop: &Stop,
    grace: Duration,
    on_event: &mut dyn FnMut(&Event, &BTreeMap<String, JobState>),
) -> Result<(), String> {
    let saved = super::load_state(state_file)?;
    let (mut s, events) = Scheduler::new(schedule, &saved, Timestamp::now());
    let states = s.states();
    for e in &events {
        on_event(e, &states);
    }
    save_state(state_file, &states)?;
    while !stop.requested() {
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
    save_state(state_file, &s.states())
}
