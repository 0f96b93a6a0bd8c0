//! The scheduler on a simulated clock: a year of ticks with runs of random
//! length, checking that no job overlaps itself or its group, that every
//! slot is run or counted missed, that no run starts before its slot (plus
//! jitter) or outside the jitter; and missed runs after a restart.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().map_err(|_| format!("bad number in {s}"))?;
    Ok(Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("unknown unit in {s}")),
    }))
}

/// A run that ends at a fixed simulated time.
struct SimRun {
    ends: Timestamp,
    clock: Rc<RefCell<Timestamp>>,
    code: i32,
}

impl Running for SimRun {
    fn poll(&mut self) -> Option<Outcome> {
        (*self.clock.borrow() >= self.ends).then_some(Outcome::exited(Some(self.code)))
    }
    fn stop(&mut self) {
        self.ends = *self.clock.borrow();
    }
    fn kill(&mut self) -> Outcome {
        Outcome::exited(None)
    }
}

/// Starts runs whose length is drawn from a small generator, and records
/// (job, group, slot, start, end).
struct SimRunner {
    clock: Rc<RefCell<Timestamp>>,
    seed: u64,
    runs: Vec<(String, Option<String>, Timestamp, Timestamp, Timestamp)>,
    longest: Duration,
}

impl Runner for SimRunner {
    fn start(&mut self, job: &Job, slot: Timestamp) -> Box<dyn Running> {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let secs = (self.seed >> 33) % self.longest.as_secs().max(1);
        let now = *self.clock.borrow();
        let ends = now + SignedDuration::from_secs(secs as i64);
        self.runs
            .push((job.name.clone(), job.group.clone(), slot, now, ends));
        Box::new(SimRun {
            ends,
            clock: self.clock.clone(),
            code: if secs.is_multiple_of(7) { 1 } else { 0 },
        })
    }
}

const SCHEDULE: &str = r#"
time_zone = "Europe/Berlin"

[[job]]
name = "volumes"
cron = "*/15 * * * *"
jitter = "2m"
args = ["snapshot", "/srv/data"]

[[job]]
name = "forget"
cron = "0 * * * *"
args = ["forget", "--policy", "default", "--prune"]

[[job]]
name = "check"
cron = "30 */2 * * *"
args = ["check", "--read-data-subset", "5%"]

[[job]]
name = "drill"
cron = "0 4 * * sun"
args = ["drill", "--source", "/srv/data"]
"#;

#[test]
fn a_simulated_year_has_no_overlap_and_every_slot_is_run_or_missed() {
    let schedule = Schedule::parse(SCHEDULE, &parse_duration).unwrap();
    assert_eq!(schedule.jobs[1].group.as_deref(), Some("maintenance"));
    assert_eq!(schedule.jobs[2].group.as_deref(), Some("maintenance"));
    assert_eq!(schedule.jobs[0].group, None);
    let start = ts("2027-01-01T00:00:00Z");
    let end = ts("2028-01-01T00:00:00Z");
    let clock = Rc::new(RefCell::new(start));
    let mut runner = SimRunner {
        clock: clock.clone(),
        seed: 7,
        runs: vec![],
        // Longer than the 15-minute period: some slots must be missed.
        longest: Duration::from_secs(40 * 60),
    };
    let (mut s, events) = Scheduler::new(&schedule, &BTreeMap::new(), start);
    assert!(events.is_empty());
    let mut missed = 0;
    // Tick every two simulated minutes (the real loop polls every second).
    while *clock.borrow() < end {
        for e in s.tick(*clock.borrow(), &mut runner) {
            if let Event::Missed { .. } = e {
                missed += 1;
            }
        }
        let next = *clock.borrow() + SignedDuration::from_secs(120);
        *clock.borrow_mut() = next;
    }
    let states = s.states();
    assert_eq!(missed, states.values().map(|st| st.missed).sum::<u64>());

    // Every slot of the year is either started or missed, once.
    for job in &schedule.jobs {
        let mut slots = 0u64;
        let mut t = start;
        while let Some(n) = job.cron.next_after(t, &schedule.time_zone) {
            if start_time(job, &schedule.node, n) >= end {
                break;
            }
            slots += 1;
            t = n;
        }
        let started = runner.runs.iter().filter(|r| r.0 == job.name).count() as u64;
        let st = &states[&job.name];
        // The last run may still be running at the end.
        let queued = u64::from(
            s.jobs
                .iter()
                .any(|l| l.job.name == job.name && l.queued.is_some()),
        );
        assert_eq!(
            started + st.missed + queued,
            slots,
            "{}: {started} started + {} missed + {queued} queued of {slots} slots",
            job.name,
            st.missed
        );
        assert!(started > 0, "{} never ran", job.name);
    }
    assert!(missed > 0, "runs longer than the period must miss slots");

    // No overlap: a job with itself, a group with itself (sorted by start,
    // each run ends before the next of the same key begins).
    let mut by_key: BTreeMap<String, Vec<(Timestamp, Timestamp)>> = BTreeMap::new();
    for r in &runner.runs {
        by_key
            .entry(format!("job {}", r.0))
            .or_default()
            .push((r.3, r.4));
        if let Some(g) = &r.1 {
            by_key
                .entry(format!("group {g}"))
                .or_default()
                .push((r.3, r.4));
        }
    }
    for (key, mut runs) in by_key {
        runs.sort();
        for w in runs.windows(2) {
            assert!(w[0].1 <= w[1].0, "{key}: {:?} overlaps {:?}", w[0], w[1]);
        }
    }
    for a in &runner.runs {
        // Never before the slot's start time, jitter within bounds.
        let job = schedule.jobs.iter().find(|j| j.name == a.0).unwrap();
        let due = start_time(job, &schedule.node, a.2);
        assert!(a.3 >= due, "{a:?} started before {due}");
        assert!(
            due.duration_since(a.2)
                < SignedDuration::try_from(job.jitter).unwrap() + SignedDuration::from_secs(1)
        );
    }
    // Jitter spreads the snapshot job's starts over its 2 minutes.
    let offsets: std::collections::HashSet<i64> = runner
        .runs
        .iter()
        .filter(|r| r.0 == "volumes")
        .map(|r| r.3.duration_since(r.2).as_secs())
        .collect();
    assert!(offsets.len() > 1, "{offsets:?}");
}

#[test]
fn after_a_restart_the_last_missed_slot_runs_if_recent_and_the_rest_are_counted() {
    let schedule = Schedule::parse(SCHEDULE, &parse_duration).unwrap();
    let mut saved = BTreeMap::new();
    saved.insert(
        "forget".to_string(),
        JobState {
            last_slot: Some(ts("2027-03-01T00:00:00Z")),
            ..JobState::default()
        },
    );
    saved.insert(
        "drill".to_string(),
        JobState {
            last_slot: Some(ts("2027-02-21T03:00:00Z")),
            ..JobState::default()
        },
    );
    // Down from midnight to 05:10: forget missed 01:00 … 05:00.
    let now = ts("2027-03-01T05:10:00Z");
    let (mut s, events) = Scheduler::new(&schedule, &saved, now);
    let st = s.states();
    assert_eq!(st["forget"].missed, 4, "01:00-04:00 missed, 05:00 runs now");
    assert_eq!(
        st["drill"].missed, 1,
        "Sunday's drill is days old: missed, not run"
    );
    assert_eq!(events.len(), 2, "{events:?}");
    let clock = Rc::new(RefCell::new(now));
    let mut runner = SimRunner {
        clock,
        seed: 1,
        runs: vec![],
        longest: Duration::from_secs(60),
    };
    let started = s.tick(now, &mut runner);
    assert_eq!(
        started,
        vec![Event::Started {
            job: "forget".into(),
            slot: ts("2027-03-01T05:00:00Z")
        }]
    );
}

#[test]
fn bad_schedules_are_refused_with_the_job_named() {
    for (text, says) in [
        ("", "no [[job]]"),
        (
            "[[job]]\nname = \"a\"\ncron = \"* * *\"\nargs = [\"snapshot\", \"/x\"]",
            "job `a`: cron `* * *`: 3 field(s)",
        ),
        (
            "[[job]]\nname = \"a\"\ncron = \"@daily\"\nargs = [\"--repo\", \"/x\"]",
            "must start with a pvsnap command",
        ),
        (
            "[[job]]\nname = \"a\"\ncron = \"@daily\"\nargs = [\"mount\", \"/x\"]",
            "cannot be scheduled",
        ),
        (
            "[[job]]\nname = \"a\"\ncron = \"@daily\"\nargs = [\"snapshot\"]\njitter = \"5x\"",
            "job `a`: jitter `5x`",
        ),
        (
            "time_zone = \"Mars/Olympus\"\n[[job]]\nname = \"a\"\ncron = \"@daily\"\nargs = [\"snapshot\"]",
            "time_zone `Mars/Olympus`",
        ),
        (
            "[[job]]\nname = \"a\"\ncron = \"@daily\"\nargs = [\"snapshot\"]\n[[job]]\nname = \"a\"\ncron = \"@daily\"\nargs = [\"check\"]",
            "named twice",
        ),
        (
            "[[job]]\nname = \"a\"\ncron = \"@daily\"\nargs = [\"snapshot\"]\ncolour = \"red\"",
            "unknown field",
        ),
    ] {
        let e = Schedule::parse(text, &parse_duration).unwrap_err();
        assert!(e.contains(says), "{text:?}: {e}");
    }
}

#[test]
fn the_state_file_round_trips_and_a_damaged_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    assert!(load_state(&path).unwrap().is_empty());
    let mut st = BTreeMap::new();
    st.insert(
        "volumes".to_string(),
        JobState {
            last_slot: Some(ts("2027-01-01T00:15:00Z")),
            runs: 3,
            failures: 1,
            missed: 2,
            last_outcome: Some(Outcome::exited(Some(0))),
        },
    );
    save_state(&path, &st).unwrap();
    assert_eq!(load_state(&path).unwrap(), st);
    std::fs::write(&path, b"{ not json").unwrap();
    let e = load_state(&path).unwrap_err();
    assert!(e.contains("move it aside"), "{e}");
}

/// The (slot, start) of the first `n` runs of a schedule on `node`, from a
/// scheduler started at `from` that ticks at each wake-up it asks for.
fn starts_on(node: &str, from: Timestamp, n: usize) -> Vec<(Timestamp, Timestamp)> {
    let mut schedule = Schedule::parse(
        "time_zone = \"UTC\"\n[[job]]\nname = \"volumes\"\ncron = \"*/15 * * * *\"\njitter = \"10m\"\nargs = [\"snapshot\", \"/srv\"]",
        &parse_duration,
    )
    .unwrap();
    schedule.node = node.into();
    let clock = Rc::new(RefCell::new(from));
    let mut runner = SimRunner {
        clock: clock.clone(),
        seed: 3,
        runs: vec![],
        longest: Duration::from_secs(1),
    };
    let (mut s, _) = Scheduler::new(&schedule, &BTreeMap::new(), from);
    while runner.runs.len() < n {
        let t = s.next_wakeup().expect("a next slot");
        *clock.borrow_mut() = t;
        s.tick(t, &mut runner);
    }
    runner.runs.iter().map(|r| (r.2, r.3)).collect()
}

#[test]
fn jitter_differs_per_node_stays_in_bounds_and_survives_a_restart() {
    let from = ts("2027-05-01T00:00:00Z");
    let a = starts_on("node-a", from, 40);
    let b = starts_on("node-b", from, 40);
    let jitter = SignedDuration::from_mins(10);
    for (slot, start) in a.iter().chain(&b) {
        let off = start.duration_since(*slot);
        assert!(off >= SignedDuration::ZERO && off < jitter, "{slot}: {off}");
    }
    // Same slots, different offsets (two equal by chance is allowed, all
    // equal is the bug: every node of a DaemonSet at the same instant).
    assert_eq!(
        a.iter().map(|r| r.0).collect::<Vec<_>>(),
        b.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let same = a.iter().zip(&b).filter(|(x, y)| x.1 == y.1).count();
    assert!(same <= 2, "{same} of 40 starts equal on two nodes");
    // A restart (a new scheduler, here from a later point) gives the same
    // starts for the same node and slots.
    assert_eq!(starts_on("node-a", from, 40), a);
    let later = starts_on("node-a", a[10].0, 10);
    assert_eq!(later[..], a[11..21]);
}

/// A run that ignores SIGTERM.
struct Stubborn;

impl Running for Stubborn {
    fn poll(&mut self) -> Option<Outcome> {
        None
    }
    fn stop(&mut self) {}
    fn kill(&mut self) -> Outcome {
        Outcome::exited(None)
    }
}

struct StubbornRunner;

impl Runner for StubbornRunner {
    fn start(&mut self, _: &Job, _: Timestamp) -> Box<dyn Running> {
        Box::new(Stubborn)
    }
}

#[test]
fn a_run_still_going_after_stop_is_killed_and_counted_failed() {
    let schedule = Schedule::parse(SCHEDULE, &parse_duration).unwrap();
    let start = ts("2027-01-01T00:00:00Z");
    let (mut s, _) = Scheduler::new(&schedule, &BTreeMap::new(), start);
    s.tick(ts("2027-01-01T01:00:00Z"), &mut StubbornRunner);
    assert!(s.busy());
    s.stop_all();
    assert!(s.tick_reap_only().is_empty() && s.busy());
    let events = s.kill_running();
    assert!(!s.busy());
    assert!(!events.is_empty());
    for e in &events {
        let Event::Finished { job, outcome } = e else {
            panic!("{e:?}")
        };
        assert!(outcome.killed, "{e:?}");
        let st = &s.states()[job];
        assert_eq!((st.runs, st.failures), (1, 1), "{job}: {st:?}");
        assert_eq!(st.last_outcome.as_ref(), Some(outcome));
    }
}
