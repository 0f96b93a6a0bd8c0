//! A progress line on standard error, only when it is a terminal.
//!
//! The engine only counts (atomics in `backup::Progress`,
//! `restore::RestoreProgress`, `maintenance::steps::Steps`); a thread here
//! samples them a few times a second into a [`Frame`] and draws it. The
//! rate is measured over the last few seconds ([`Rate`]), and an ETA is
//! shown only when both the total and the rate are known, never as 0 while
//! work remains ([`eta`]).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use pvsnap_engine::maintenance::steps::{StepNow, Steps, Unit};

use crate::output;

/// One sample of a command's progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// What is being done when a command has several steps ("reading packs").
    pub step: &'static str,
    pub done: u64,
    /// `None` while the total is not known yet: no bar, no ETA.
    pub total: Option<u64>,
    /// What `done` counts: bytes, or the name of a unit ("packs").
    pub unit: Option<&'static str>,
    /// More counters, shown after the amounts ("120/300 files").
    pub extra: String,
    /// Steps that ended since the last frame, as they ended: each stays
    /// on the terminal as a line of its own.
    pub ended: Vec<Frame>,
}

/// Draws from a sampling function until dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Samples a command's counters.
pub type Sample = Box<dyn Fn() -> Frame + Send>;

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(150);

impl Display {
    /// Draws `sample` under `label` on standard error, unless `hidden`
    /// (`--quiet`, `--json`) or standard error is not a terminal.
    pub fn start(hidden: bool, label: &'static str, sample: Sample) -> Display {
        let stop = Arc::new(AtomicBool::new(false));
        if hidden || !std::io::stderr().is_terminal() {
            return Display { stop, handle: None };
        }
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            // One template and one `set_message` per frame: every line
            // drawn is a whole frame (the bar is part of the text).
            let bar = ProgressBar::new(0)
                .with_style(
                    ProgressStyle::with_template("{prefix} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                )
                .with_prefix(label);
            let started = Instant::now();
            let mut rate = Rate::default();
            let mut step = "";
            loop {
                // The last frame is drawn after the work ended and stays.
                let end = s.load(Ordering::Relaxed);
                let f = sample();
                if f.step != step {
                    rate = Rate::default();
                    step = f.step;
                }
                rate.add(started.elapsed().as_secs_f64(), f.done);
                for e in &f.ended {
                    bar.println(format!("{label} {}{}", gauge(e), line(e, None, true)));
                }
                bar.set_message(format!("{}{}", gauge(&f), line(&f, rate.per_sec(), end)));
                if end {
                    bar.finish();
                    // The last frame stays; what follows starts below it.
                    eprintln!();
                    break;
                }
                // Woken early by `drop` (so the command does not end late)
                // and by a new step.
                std::thread::park_timeout(TICK);
            }
        });
        Display {
            stop,
            handle: Some(handle),
        }
    }

    /// Draws a maintenance command's steps.
    pub fn steps(hidden: bool, label: &'static str, steps: Arc<Steps>) -> Display {
        let watched = steps.clone();
        let frame = |now: StepNow| Frame {
            step: now.step,
            done: now.done,
            // A step starts with its total; 0 is a step that does not count.
            total: (now.total > 0).then_some(now.total),
            unit: match now.unit {
                Unit::Bytes => None,
                Unit::Packs => Some("packs"),
                Unit::Snapshots => Some("snapshots"),
            },
            ..Frame::default()
        };
        let sample = move || {
            // Ended first, so that no step is missed between the two.
            let ended = steps.take_ended().into_iter().map(frame).collect();
            Frame {
                ended,
                ..frame(steps.now())
            }
        };
        let d = Display::start(hidden, label, Box::new(sample));
        if let Some(h) = &d.handle {
            watched.watch(h.thread().clone());
        }
        d
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// `[=====>      ] ` for a frame with a total, nothing without.
pub fn gauge(f: &Frame) -> String {
    const WIDTH: u64 = 24;
    let Some(total) = f.total else {
        return String::new();
    };
    let full = if f.done >= total {
        WIDTH
    } else {
        (f.done as u128 * WIDTH as u128 / total as u128) as u64
    } as usize;
    let head = if full < WIDTH as usize { ">" } else { "" };
    let rest = (WIDTH as usize).saturating_sub(full + head.len());
    format!("[{}{head}{}] ", "=".repeat(full), " ".repeat(rest))
}

/// The text after the bar: `step: done / total · extra · rate · ETA`;
/// at the `end`, without the ETA.
pub fn line(f: &Frame, per_sec: Option<f64>, end: bool) -> String {
    let amount = |n: u64| match f.unit {
        None => output::bytes(n),
        Some(u) => format!("{n} {u}"),
    };
    let mut parts = Vec::new();
    let step = if f.step.is_empty() {
        String::new()
    } else {
        format!("{}: ", f.step)
    };
    match f.total {
        Some(t) => parts.push(format!(
            "{step}{} / {}",
            amount(f.done),
            amount(t.max(f.done))
        )),
        // A step that has not counted its work yet.
        None if !f.step.is_empty() => parts.push(format!("{}…", f.step)),
        None => parts.push(format!("{step}{} done", amount(f.done))),
    }
    if !f.extra.is_empty() {
        parts.push(f.extra.clone());
    }
    if let Some(r) = per_sec.filter(|r| *r > 0.0) {
        parts.push(match f.unit {
            None => format!("{}/s", output::bytes(r as u64)),
            Some(u) => format!("{r:.1} {u}/s"),
        });
    }
    // No ETA at all before the total is known.
    if let Some(remaining) = f.total.map(|t| t.saturating_sub(f.done)).filter(|_| !end) {
        parts.push(match eta(remaining, per_sec) {
            _ if remaining == 0 => "finishing".into(),
            None => "ETA unknown".into(),
            Some(d) => format!("ETA {}", duration(d)),
        });
    }
    parts.join(" · ")
}

/// The time left for `remaining` units at `per_sec`: `None` when there is
/// nothing left or the rate is unknown or zero; at least a second otherwise.
pub fn eta(remaining: u64, per_sec: Option<f64>) -> Option<Duration> {
    let r = per_sec.filter(|r| r.is_finite() && *r > 0.0)?;
    if remaining == 0 {
        return None;
    }
    let secs = (remaining as f64 / r).ceil().clamp(1.0, 1e9);
    Some(Duration::from_secs(secs as u64))
}

/// `42s`, `3m05s`, `2h07m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The rate of the last [`Rate::WINDOW`] seconds.
#[derive(Debug, Default)]
pub struct Rate {
    /// (seconds since the start, units done), oldest first.
    samples: VecDeque<(f64, u64)>,
}

impl Rate {
    /// How far back the rate looks, in seconds.
    pub const WINDOW: f64 = 10.0;
    /// The shortest span a rate is measured over.
    pub const MIN_SPAN: f64 = 1.0;

    /// Notes that `done` units were done at `t` seconds.
    pub fn add(&mut self, t: f64, done: u64) {
        if self.samples.back().is_some_and(|&(_, d)| done < d) {
            // The counter went back: a new piece of work.
            self.samples.clear();
        }
        self.samples.push_back((t, done));
        while self
            .samples
            .get(1)
            .is_some_and(|&(t1, _)| t - t1 >= Self::WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Units per second, or `None` before [`Rate::MIN_SPAN`] of samples.
    pub fn per_sec(&self) -> Option<f64> {
        let (&(t0, d0), &(t1, d1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1 - t0;
        (span >= Self::MIN_SPAN).then(|| (d1 - d0) as f64 / span)
    }
}

/// A workflow's progress as bars: the snapshot's files and bytes against
/// the pre-scan's totals, the restore's files and bytes against the plan's.
pub struct Bars {
    /// No bars (`--quiet`, `--json`).
    pub hidden: bool,
}

impl Bars {
    fn show(&self, label: &'static str, sample: Sample) -> pvsnap_ops::Watch {
        Box::new(Display::start(self.hidden, label, sample))
    }
}

impl pvsnap_ops::Observer for Bars {
    fn note(&self, what: &str, text: &str) {
        eprintln!("pvsnap: {what}: {text}");
    }

    fn csi_leftover_removed(&self, snapshot: &str) {
        eprintln!(
            "pvsnap: removed volumesnapshot {snapshot}: a pvsnap run that is gone made it and never recorded it"
        );
    }

    fn storing(&self, p: Arc<pvsnap_engine::backup::Progress>) -> pvsnap_ops::Watch {
        if self.hidden || !std::io::stderr().is_terminal() {
            return Box::new(());
        }
        // The bar needs the total before the data is read.
        p.want_scan.store(true, Ordering::Relaxed);
        let sample = move || snapshot_frame(&p);
        self.show("snapshot", Box::new(sample))
    }

    fn restoring(&self, p: Arc<pvsnap_engine::restore::RestoreProgress>) -> pvsnap_ops::Watch {
        let sample = move || {
            if !p.planned.load(Ordering::Acquire) {
                return Frame {
                    extra: "planning…".into(),
                    ..Frame::default()
                };
            }
            let files = p.files.load(Ordering::Relaxed);
            let total_files = p.total_files.load(Ordering::Relaxed);
            Frame {
                done: p.bytes.load(Ordering::Relaxed),
                total: Some(p.total_bytes.load(Ordering::Relaxed)),
                extra: format!("{files}/{total_files} files"),
                ..Frame::default()
            }
        };
        self.show("restore", Box::new(sample))
    }
}

/// The snapshot's frame: "scanning…" until the pre-scan has seen
/// everything, then its totals.
fn snapshot_frame(p: &pvsnap_engine::backup::Progress) -> Frame {
    let files = p.files.load(Ordering::Relaxed);
    let done = p.bytes.load(Ordering::Relaxed);
    let found_files = p.scanned_files.load(Ordering::Relaxed);
    let found = p.scanned_bytes.load(Ordering::Relaxed);
    if p.scan_done.load(Ordering::Acquire) {
        Frame {
            done,
            total: Some(found),
            extra: format!("{files}/{} files", found_files.max(files)),
            ..Frame::default()
        }
    } else {
        Frame {
            done,
            total: None,
            extra: format!(
                "{files} files · scanning… {found_files} files, {} found so far",
                output::bytes(found)
            ),
            ..Frame::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rate_before_a_second_of_samples_nor_after_a_reset() {
        let mut r = Rate::default();
        assert_eq!(r.per_sec(), None);
        r.add(0.0, 0);
        r.add(0.5, 500);
        assert_eq!(r.per_sec(), None, "half a second is too short to judge");
        r.add(1.0, 1000);
        assert_eq!(r.per_sec(), Some(1000.0));
        r.add(1.5, 10);
        assert_eq!(r.per_sec(), None, "the counter went back: a new step");
    }

    #[test]
    fn the_rate_is_the_recent_one() {
        let mut r = Rate::default();
        // Fast for 20 s, then slow for 10 s: the rate is the slow one.
        for t in 0..=20 {
            r.add(t as f64, t * 1000);
        }
        for t in 21..=30 {
            r.add(t as f64, 20_000 + (t - 20) * 10);
        }
        assert_eq!(r.per_sec(), Some(10.0));
    }

    #[test]
    fn eta_is_unknown_without_a_rate_and_never_zero_while_work_remains() {
        assert_eq!(eta(100, None), None);
        assert_eq!(eta(100, Some(0.0)), None);
        assert_eq!(eta(100, Some(f64::NAN)), None);
        assert_eq!(eta(0, Some(10.0)), None, "nothing left: no estimate");
        assert_eq!(eta(1, Some(1e12)), Some(Duration::from_secs(1)));
        assert_eq!(eta(1000, Some(100.0)), Some(Duration::from_secs(10)));
        assert_eq!(eta(1001, Some(100.0)), Some(Duration::from_secs(11)));
        assert_eq!(
            eta(u64::MAX, Some(1e-9)),
            Some(Duration::from_secs(1_000_000_000))
        );
    }

    #[test]
    fn the_line_says_what_is_known() {
        let mut f = Frame {
            done: 3 << 20,
            total: None,
            extra: "3 files".into(),
            ..Frame::default()
        };
        let l = line(&f, Some(1e6), false);
        assert!(l.contains("3.0 MiB done") && !l.contains("ETA"), "{l}");
        f.total = Some(5 << 20);
        let l = line(&f, None, false);
        assert!(
            l.contains("3.0 MiB / 5.0 MiB") && l.ends_with("ETA unknown"),
            "{l}"
        );
        let l = line(&f, Some((1 << 20) as f64), false);
        assert!(l.contains("1.0 MiB/s") && l.ends_with("ETA 2s"), "{l}");
        f.total = Some(1 << 20);
        let l = line(&f, Some(1.0), false);
        assert!(
            l.contains("3.0 MiB / 3.0 MiB"),
            "never a total below done: {l}"
        );
        assert!(l.ends_with("finishing") && !l.contains("ETA 0s"), "{l}");
        f.total = Some(5 << 20);
        let l = line(&f, Some(1.0), true);
        assert!(
            !l.contains("ETA") && l.starts_with("3.0 MiB / 5.0 MiB · 3 files"),
            "the last frame: {l}"
        );
        let f = Frame {
            step: "reading packs",
            unit: Some("packs"),
            done: 2,
            total: Some(4),
            ..Frame::default()
        };
        assert_eq!(
            line(&f, Some(0.5), false),
            "reading packs: 2 packs / 4 packs · 0.5 packs/s · ETA 4s"
        );
        assert_eq!(gauge(&f), format!("[{:24}] ", "=".repeat(12) + ">"));
        let done = Frame {
            done: 9,
            total: Some(4),
            ..Frame::default()
        };
        assert_eq!(gauge(&done), format!("[{}] ", "=".repeat(24)));
        assert_eq!(gauge(&Frame::default()), "");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(7620)), "2h07m");
    }
}
