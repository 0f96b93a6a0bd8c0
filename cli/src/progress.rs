//! A progress line on standard error, only when it is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Draws from a sampling function until dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// What the bar shows: (files or another count, bytes done, bytes total or 0).
pub type Sample = Box<dyn Fn() -> (u64, u64, u64) + Send>;

impl Display {
    pub fn start(quiet: bool, label: &'static str, sample: Sample) -> Display {
        Display::start_counting(quiet, label, "files", sample)
    }

    /// As [`Display::start`], the count being of `unit` (`snapshots`).
    pub fn start_counting(
        quiet: bool,
        label: &'static str,
        unit: &'static str,
        sample: Sample,
    ) -> Display {
        let stop = Arc::new(AtomicBool::new(false));
        if quiet || !std::io::stderr().is_terminal() {
            return Display { stop, handle: None };
        }
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{prefix} {msg} [{elapsed_precise}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(label);
            while !s.load(Ordering::Relaxed) {
                let (files, done, total) = sample();
                bar.set_length(total.max(done));
                bar.set_position(done);
                bar.set_message(format!("{files} {unit}"));
                // Woken early by `drop`, so the command does not end late.
                std::thread::park_timeout(Duration::from_millis(150));
            }
            bar.finish_and_clear();
        });
        Display {
            stop,
            handle: Some(handle),
        }
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

/// A workflow's progress as bars: the snapshot's files and bytes, the
/// restore's bytes.
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
    fn storing(&self, p: Arc<pvsnap_engine::backup::Progress>) -> pvsnap_ops::Watch {
        let sample = move || {
            let files = p.files.load(Ordering::Relaxed);
            let total = p.total_bytes_hint.load(Ordering::Relaxed);
            (files, p.bytes.load(Ordering::Relaxed), total)
        };
        self.show("snapshot", Box::new(sample))
    }

    fn restoring(&self, p: Arc<pvsnap_engine::restore::RestoreProgress>) -> pvsnap_ops::Watch {
        let sample = move || {
            let total = p.total_bytes.load(Ordering::Relaxed);
            (0, p.bytes.load(Ordering::Relaxed), total)
        };
        self.show("restore", Box::new(sample))
    }
}
