//! The scheduler of `pvsnap serve --schedule FILE`: pvsnap commands run by
//! cron expression, one long-running process per node.
//!
//! A job is a pvsnap command line (`["snapshot", "/srv/data", "--tag",
//! "hourly"]`) with a cron expression, an optional jitter (a fixed offset
//! per node, job and slot, within the jitter, so that the nodes of a
//! DaemonSet do not all start at the same second against one repository) and an optional group: jobs of one group never run at the
//! same time (maintenance of one repository: forget, prune, check). Rules:
//! - **One run at a time per job.** A slot that comes while the job still
//!   runs is skipped and counted as missed.
//! - **Groups queue.** A job whose group is busy waits, and starts as soon
//!   as the group is free; further slots meanwhile are missed.
//! - **Missed while down.** At start, a job whose last slot before now was
//!   not run (by the state file) runs at once if that slot is within its
//!   `catch_up` window; older ones are counted missed.
//!
//! Time comes from a [`Clock`] and jobs run through a [`Runner`], so the
//! whole thing is tested on a simulated clock, not by sleeping.

pub mod cron;
pub mod run;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

pub use cron::Cron;

/// One scheduled job.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub cron: Cron,
    /// The pvsnap arguments (without the program name).
    pub args: Vec<String>,
    pub jitter: Duration,
    /// A slot missed while the scheduler was down runs at start if it is
    /// at most this old.
    pub catch_up: Duration,
    /// Jobs of one group never overlap.
    pub group: Option<String>,
    /// Where to POST this job's notifications (else `serve --notify`).
    pub notify: Option<String>,
    /// Whether a success is notified too (else only failures).
    pub notify_always: bool,
}

/// A schedule file (TOML), as written by people.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    /// IANA name; default: the system's.
    time_zone: Option<String>,
    #[serde(rename = "job", default)]
    jobs: Vec<JobForm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobForm {
    name: String,
    cron: String,
    args: Vec<String>,
    jitter: Option<String>,
    catch_up: Option<String>,
    group: Option<String>,
    notify: Option<String>,
    notify_on: Option<String>,
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub time_zone: TimeZone,
    pub jobs: Vec<Job>,
    /// The node this scheduler runs on (mixed into the jitter); empty
    /// from [`Schedule::parse`], set by the caller.
    pub node: String,
}

/// Commands that change what other commands rely on: they share one group
/// per repository when the schedule names none.
const MAINTENANCE: [&str; 5] = ["forget", "prune", "check", "repair", "copy"];

impl Schedule {
    /// Parses a schedule file's text; `parse_duration` reads `5m`, `1h`.
    pub fn parse(
        text: &str,
        parse_duration: &dyn Fn(&str) -> Result<Duration, String>,
    ) -> Result<Schedule, String> {
        let form: FileForm = toml::from_str(text).map_err(|e| e.to_string())?;
        let time_zone = match &form.time_zone {
            Some(name) => TimeZone::get(name).map_err(|e| {
                format!("time_zone `{name}`: {e}; use an IANA name such as Europe/Berlin or UTC")
            })?,
            None => TimeZone::system(),
        };
        if form.jobs.is_empty() {
            return Err("no [[job]] in the schedule: add at least one".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut jobs = Vec::new();
        for j in form.jobs {
            if !names.insert(j.name.clone()) {
                return Err(format!("job `{}` is named twice", j.name));
            }
            let dur = |what: &str, v: &Option<String>, default: Duration| match v {
                Some(s) => {
                    parse_duration(s).map_err(|e| format!("job `{}`: {what} `{s}`: {e}", j.name))
                }
                None => Ok(default),
            };
            let first = j.args.first().map(String::as_str).unwrap_or("");
            if first.is_empty() || first.starts_with('-') {
                return Err(format!(
                    "job `{}`: args must start with a pvsnap command (snapshot, forget, check, drill, copy, …), not `{first}`",
                    j.name
                ));
            }
            if ["serve", "mount"].contains(&first) {
                return Err(format!(
                    "job `{}`: `{first}` runs until stopped and cannot be scheduled",
                    j.name
                ));
            }
            let group = j.group.clone().or_else(|| {
                MAINTENANCE
                    .contains(&first)
                    .then(|| "maintenance".to_string())
            });
            let notify_always = match j.notify_on.as_deref() {
                None | Some("failure") => false,
                Some("always") => true,
                Some(other) => {
                    return Err(format!(
                        "job `{}`: notify_on `{other}`: write \"failure\" or \"always\"",
                        j.name
                    ));
                }
            };
            if let Some(url) = &j.notify
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(format!(
                    "job `{}`: notify `{url}` is not an http:// or https:// URL",
                    j.name
                ));
            }
            jobs.push(Job {
                notify: j.notify.clone(),
                notify_always,
                cron: Cron::parse(&j.cron).map_err(|e| format!("job `{}`: {e}", j.name))?,
                jitter: dur("jitter", &j.jitter, Duration::ZERO)?,
                catch_up: dur("catch_up", &j.catch_up, Duration::from_secs(3600))?,
                name: j.name,
                args: j.args,
                group,
            });
        }
        Ok(Schedule {
            time_zone,
            jobs,
            node: String::new(),
        })
    }
}

/// Where time comes from.
pub trait Clock {
    fn now(&self) -> Timestamp;
}

/// Starts a job's command.
pub trait Runner {
    fn start(&mut self, job: &Job, slot: Timestamp) -> Box<dyn Running>;
}

/// A job's command while it runs.
pub trait Running {
    /// `Some(outcome)` once it ended.
    fn poll(&mut self) -> Option<Outcome>;
    /// Asks it to stop cleanly (SIGTERM: a snapshot checkpoints).
    fn stop(&mut self);
    /// Ends it by force (SIGKILL to its process group) and waits for it.
    fn kill(&mut self) -> Outcome;
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// The scheduler killed it: it still ran when the stop timeout ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub killed: bool,
}

impl Outcome {
    /// A run that ended by itself with `code` (`None`: by a signal).
    pub fn exited(code: Option<i32>) -> Outcome {
        Outcome {
            code,
            killed: false,
        }
    }
}

/// What the scheduler remembers across restarts, per job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobState {
    /// The slot of the last run started.
    pub last_slot: Option<Timestamp>,
    pub runs: u64,
    pub failures: u64,
    pub missed: u64,
    pub last_outcome: Option<Outcome>,
}

/// What happened in a [`Scheduler::tick`], for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        job: String,
        slot: Timestamp,
    },
    Finished {
        job: String,
        outcome: Outcome,
    },
    /// A slot not run: the job still ran, or was down too long.
    Missed {
        job: String,
        slot: Timestamp,
        why: &'static str,
    },
}

struct Live {
    job: Job,
    state: JobState,
    /// The next slot not yet handled.
    next: Option<Timestamp>,
    /// A slot whose run waits for its group.
    queued: Option<Timestamp>,
    running: Option<Box<dyn Running>>,
}

/// The jobs, their state and what runs; see the module documentation.
pub struct Scheduler {
    tz: TimeZone,
    node: String,
    jobs: Vec<Live>,
}

impl Scheduler {
    /// A scheduler starting at `now`, with `saved` state from a previous
    /// run (job name → state). Missed slots are handled here: the last one
    /// within its job's catch-up window is queued, the rest counted.
    pub fn new(
        schedule: &Schedule,
        saved: &BTreeMap<String, JobState>,
        now: Timestamp,
    ) -> (Scheduler, Vec<Event>) {
        let mut events = vec![];
        let jobs = schedule
            .jobs
            .iter()
            .map(|job| {
                let mut state = saved.get(&job.name).cloned().unwrap_or_default();
                let mut queued = None;
                if let Some(since) = state.last_slot {
                    // The slots that came while no scheduler ran.
                    let mut gap = 0u64;
                    let mut last = None;
                    let mut t = since;
                    while let Some(n) = job.cron.next_after(t, &schedule.time_zone) {
                        if n > now || gap >= 10_000_000 {
                            break;
                        }
                        gap += 1;
                        last = Some(n);
                        t = n;
                    }
                    if let Some(last) = last {
                        let window = jiff::SignedDuration::try_from(job.catch_up)
                            .unwrap_or(jiff::SignedDuration::MAX);
                        let lost = if now.duration_since(last) <= window {
                            queued = Some(last);
                            gap - 1
                        } else {
                            gap
                        };
                        if lost > 0 {
                            state.missed += lost;
                            events.push(Event::Missed {
                                job: job.name.clone(),
                                slot: last,
                                why: "the scheduler was not running",
                            });
                        }
                    }
                }
                Live {
                    next: job.cron.next_after(now, &schedule.time_zone),
                    job: job.clone(),
                    state,
                    queued,
                    running: None,
                }
            })
            .collect();
        (
            Scheduler {
                tz: schedule.time_zone.clone(),
                node: schedule.node.clone(),
                jobs,
            },
            events,
        )
    }

    /// Each job's state, for the state file and metrics.
    pub fn states(&self) -> BTreeMap<String, JobState> {
        self.jobs
            .iter()
            .map(|l| (l.job.name.clone(), l.state.clone()))
            .collect()
    }

    /// Whether any job is running.
    pub fn busy(&self) -> bool {
        self.jobs.iter().any(|l| l.running.is_some())
    }

    /// Reaps ended runs and starts nothing (while stopping).
    pub fn tick_reap_only(&mut self) -> Vec<Event> {
        self.reap()
    }

    fn reap(&mut self) -> Vec<Event> {
        let mut events = vec![];
        for l in &mut self.jobs {
            if let Some(r) = &mut l.running
                && let Some(outcome) = r.poll()
            {
                l.running = None;
                l.state.runs += 1;
                if outcome.code != Some(0) {
                    l.state.failures += 1;
                }
                l.state.last_outcome = Some(outcome.clone());
                events.push(Event::Finished {
                    job: l.job.name.clone(),
                    outcome,
                });
            }
        }
        events
    }

    /// Reaps ended runs, then starts what is due at `now`.
    pub fn tick(&mut self, now: Timestamp, runner: &mut dyn Runner) -> Vec<Event> {
        let mut events = self.reap();
        // Slots that came: queue them, or count them missed.
        for l in &mut self.jobs {
            while let Some(slot) = l.next
                && start_time(&l.job, &self.node, slot) <= now
            {
                l.next = l.job.cron.next_after(slot, &self.tz);
                if l.running.is_some() || l.queued.is_some() {
                    l.state.missed += 1;
                    events.push(Event::Missed {
                        job: l.job.name.clone(),
                        slot,
                        why: "the previous run had not ended",
                    });
                } else {
                    l.queued = Some(slot);
                }
            }
        }
        // Start queued runs whose group is free, in slot order.
        let mut order: Vec<usize> = (0..self.jobs.len())
            .filter(|i| self.jobs[*i].queued.is_some())
            .collect();
        order.sort_by_key(|i| self.jobs[*i].queued);
        for i in order {
            let group = self.jobs[i].job.group.clone();
            let busy = group.is_some()
                && self
                    .jobs
                    .iter()
                    .any(|o| o.running.is_some() && o.job.group == group);
            if busy || self.jobs[i].running.is_some() {
                continue;
            }
            let l = &mut self.jobs[i];
            let slot = l.queued.take().expect("queued");
            l.running = Some(runner.start(&l.job, slot));
            l.state.last_slot = Some(slot);
            events.push(Event::Started {
                job: l.job.name.clone(),
                slot,
            });
        }
        events
    }

    /// When to tick next: the earliest start time of a coming slot (runs
    /// that end are noticed by the caller polling more often).
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.jobs
            .iter()
            .filter_map(|l| l.next.map(|s| start_time(&l.job, &self.node, s)))
            .min()
    }

    /// Ends every job still running by force (the stop timeout passed):
    /// each is killed and its run counted as failed, with `killed` set.
    pub fn kill_running(&mut self) -> Vec<Event> {
        let mut events = vec![];
        for l in &mut self.jobs {
            if let Some(mut r) = l.running.take() {
                let outcome = Outcome {
                    killed: true,
                    ..r.kill()
                };
                l.state.runs += 1;
                l.state.failures += 1;
                l.state.last_outcome = Some(outcome.clone());
                events.push(Event::Finished {
                    job: l.job.name.clone(),
                    outcome,
                });
            }
        }
        events
    }

    /// Asks every running job to stop (SIGTERM to the scheduler).
    pub fn stop_all(&mut self) {
        for l in &mut self.jobs {
            if let Some(r) = &mut l.running {
                r.stop();
            }
        }
    }
}

/// When the run of `slot` starts on `node`: the slot plus the job's jitter
/// for it, a fixed offset below the jitter from a hash of the node, the
/// job's name and the slot. The hash (FNV-1a, then the SplitMix64 finalizer)
/// is written here, not taken from the standard library, so that the
/// offset stays the same across restarts and pvsnap versions.
pub fn start_time(job: &Job, node: &str, slot: Timestamp) -> Timestamp {
    let jitter_ms = job.jitter.as_millis() as u64;
    if jitter_ms == 0 {
        return slot;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = node
        .bytes()
        .chain([0])
        .chain(job.name.bytes())
        .chain([0])
        .chain(slot.as_second().to_le_bytes());
    for b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let off = h % jitter_ms;
    slot.checked_add(jiff::SignedDuration::from_millis(off as i64))
        .unwrap_or(slot)
}

/// Reads the state file (missing: no state yet).
pub fn load_state(path: &Path) -> Result<BTreeMap<String, JobState>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            format!(
                "{}: not a schedule state file ({e}); move it aside to start afresh",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the state file atomically (temporary file, fsync, rename).
pub fn save_state(path: &Path, state: &BTreeMap<String, JobState>) -> Result<(), String> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(state).expect("state serializes"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
