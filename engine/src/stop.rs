//! A request to stop a long run cleanly (a snapshot, a restore), shared
//! with whoever may make it: a signal handler, since [`Stop::request`] only
//! stores to an atomic. Each run says what stopping cleanly means for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
