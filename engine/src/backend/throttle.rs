//! The upload limit decorator (`copy --limit-upload`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Backend, DynBackend, ObjectKey, forward::Forward};
use crate::error::BackendError;

/// Decorator that paces writes to at most `rate` bytes per second on
/// average since it was made: a put waits until the bytes written before
/// it and its own are due. Reads and everything else pass on unchanged.
pub struct Throttled {
    inner: DynBackend,
    rate: u64,
    /// When pacing started, and the bytes put since.
    sent: Mutex<(Instant, u64)>,
}

impl Throttled {
    /// Paces `inner`'s writes to `rate` bytes per second (at least 1).
    pub fn new(inner: DynBackend, rate: u64) -> Self {
        Throttled {
            inner,
            rate: rate.max(1),
            sent: Mutex::new((Instant::now(), 0)),
        }
    }
}

impl Forward for Throttled {
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        let due = {
            let mut sent = self.sent.lock().expect("throttle");
            sent.1 += data.len() as u64;
            sent.0 + Duration::from_secs_f64(sent.1 as f64 / self.rate as f64)
        };
        // A put leaves when its last byte is due, so the average never
        // exceeds the rate (a slow backend makes it lower).
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        self.inner.put(key, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::repo::format::ObjectKind;
    use std::sync::Arc;

    #[test]
    fn writes_are_paced_to_the_rate() {
        let be: DynBackend = Arc::new(Throttled::new(Arc::new(MemoryBackend::new()), 1_000_000));
        let start = Instant::now();
        for i in 0..5 {
            be.put(
                &ObjectKey::new(ObjectKind::Index, format!("{i:064x}")),
                &vec![0u8; 100_000],
            )
            .unwrap();
        }
        // 500 kB at 1 MB/s: at least 0.5 s, whatever the machine's speed.
        assert!(
            start.elapsed() >= Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(be.list(ObjectKind::Index).unwrap().len(), 5);
    }
}
