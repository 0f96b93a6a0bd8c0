//! Live counters of a maintenance command (check, prune, repair), for a
//! progress display: which step runs, and how far it is.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Thread;

/// What a step counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unit {
    #[default]
    Bytes,
    Packs,
    Snapshots,
}

/// The step running and its counters. A step's total is set when it
/// starts, before any of its work is done; `done` then grows up to it.
#[derive(Debug, Default)]
pub struct Steps {
    step: Mutex<(&'static str, Unit)>,
    done: AtomicU64,
    total: AtomicU64,
    /// A display's thread, woken when a step starts so that every step is
    /// shown, however short.
    watcher: Mutex<Option<Thread>>,
    /// Steps ended and not yet taken by [`Steps::take_ended`], as they ended.
    ended: Mutex<Vec<StepNow>>,
}

/// What [`Steps::now`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepNow {
    /// What the step does, in words ("reading packs"); empty before the first.
    pub step: &'static str,
    pub unit: Unit,
    pub done: u64,
    pub total: u64,
}

impl Steps {
    /// A new step of `total` units begins.
    pub fn start(&self, step: &'static str, unit: Unit, total: u64) {
        let mut g = self.step.lock().expect("steps");
        if !g.0.is_empty() {
            let last = StepNow {
                step: g.0,
                unit: g.1,
                done: self.done.load(Ordering::Relaxed),
                total: self.total.load(Ordering::Relaxed),
            };
            self.ended.lock().expect("steps").push(last);
        }
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        *g = (step, unit);
        drop(g);
        if let Some(t) = &*self.watcher.lock().expect("steps") {
            t.unpark();
        }
    }

    /// Wakes `thread` whenever a step starts.
    pub fn watch(&self, thread: Thread) {
        *self.watcher.lock().expect("steps") = Some(thread);
    }

    /// `n` more units of the current step are done.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// The steps that ended since the last call, each as it ended, so that
    /// a display shows every step however short.
    pub fn take_ended(&self) -> Vec<StepNow> {
        std::mem::take(&mut *self.ended.lock().expect("steps"))
    }

    /// The current step and how far it is.
    pub fn now(&self) -> StepNow {
        let g = self.step.lock().expect("steps");
        StepNow {
            step: g.0,
            unit: g.1,
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
        }
    }
}
