//! One writer per file at a time, and nobody waiting for it.
//!
//! The kernel lets one buffered write into a file run at a time (the inode
//! lock). When two workers restore parts of one big file, the second one's
//! write spins on that lock while the first copies, and that CPU is lost to
//! decoding. Here a worker that finds a file being written leaves its decoded
//! bytes with the file's writer and goes on to its next unit; the writer
//! writes what was left for it before it lets the file go.
//!
//! What is left waiting is bounded: a worker that would add more than
//! `limit` bytes behind a non-empty queue waits until the writer takes the
//! queue. A worker waits only while it holds no file, so waiting cannot close
//! a cycle.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Files being written, each with the jobs left for its writer.
pub(super) struct Handoff<J> {
    busy: Mutex<HashMap<usize, Queue<J>>>,
    taken: Condvar,
    limit: u64,
}

struct Queue<J> {
    jobs: Vec<J>,
    bytes: u64,
}

impl<J> Handoff<J> {
    pub(super) fn new(limit: u64) -> Self {
        Handoff {
            busy: Mutex::new(HashMap::new()),
            taken: Condvar::new(),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<usize, Queue<J>>> {
        self.busy.lock().expect("handoff")
    }

    /// Writes `job` (`bytes` long) into `file` with `write` now, or leaves it
    /// for the worker writing that file. A worker that writes also writes,
    /// with the same `write`, every job left while it held the file. After
    /// an error the jobs it had taken are dropped and the error is returned;
    /// the caller ends the restore.
    pub(super) fn submit<E>(
        &self,
        file: usize,
        job: J,
        bytes: u64,
        mut write: impl FnMut(J) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut busy = self.lock();
        loop {
            match busy.get_mut(&file) {
                None => {
                    busy.insert(
                        file,
                        Queue {
                            jobs: Vec::new(),
                            bytes: 0,
                        },
                    );
                    break;
                }
                Some(q) if q.jobs.is_empty() || q.bytes + bytes <= self.limit => {
                    q.jobs.push(job);
                    q.bytes += bytes;
                    return Ok(());
                }
                Some(_) => busy = self.taken.wait(busy).expect("handoff"),
            }
        }
        drop(busy);
        // The file is ours until its queue is found empty. The guard lets it
        // go if `write` panics.
        let mut held = Held {
            h: self,
            file,
            armed: true,
        };
        let mut result = write(job);
        loop {
            let jobs = {
                let mut busy = self.lock();
                let q = busy.get_mut(&file).expect("held file has a queue");
                if q.jobs.is_empty() {
                    // Let go under the same lock that found the queue empty,
                    // so no job can slip in between.
                    busy.remove(&file);
                    held.armed = false;
                    drop(busy);
                    self.taken.notify_all();
                    return result;
                }
                q.bytes = 0;
                std::mem::take(&mut q.jobs)
            };
            self.taken.notify_all();
            for j in jobs {
                if result.is_ok() {
                    result = write(j);
                }
            }
        }
    }
}

/// Lets a held file go when its writer unwinds.
struct Held<'a, J> {
    h: &'a Handoff<J>,
    file: usize,
    armed: bool,
}

impl<J> Drop for Held<'_, J> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The map is never poisoned by `write`, which runs without the lock.
        if let Ok(mut busy) = self.h.busy.lock() {
            busy.remove(&self.file);
        }
        self.h.taken.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[test]
    fn a_busy_file_takes_the_job_and_its_writer_writes_it() {
        let h = Handoff::<u32>::new(100);
        let written = Mutex::new(Vec::new());
        let inner_returned = AtomicBool::new(false);
        h.submit(7, 1, 10, |j| {
            written.lock().unwrap().push(j);
            if j == 1 {
                // While file 7 is held, another job for it is left, not
                // written, and the call returns at once.
                h.submit(7, 2, 10, |_| -> Result<(), ()> {
                    panic!("the held file was written twice at once")
                })?;
                inner_returned.store(true, Ordering::SeqCst);
                // Another file is free and written right away.
                h.submit(8, 80, 10, |j| {
                    written.lock().unwrap().push(j);
                    Ok(())
                })?;
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(inner_returned.load(Ordering::SeqCst));
        assert_eq!(*written.lock().unwrap(), [1, 80, 2]);
        assert!(h.lock().is_empty(), "every file is let go");
    }

    #[test]
    fn an_error_drops_the_taken_jobs_and_lets_the_file_go() {
        let h = Handoff::<u32>::new(100);
        let seen = Mutex::new(Vec::new());
        let r = h.submit(1, 1, 10, |j| {
            seen.lock().unwrap().push(j);
            if j == 1 {
                h.submit(1, 2, 10, |_| Ok::<(), &str>(()))?;
                h.submit(1, 3, 10, |_| Ok::<(), &str>(()))?;
                return Err("disk full");
            }
            Ok(())
        });
        assert_eq!(r, Err("disk full"));
        assert_eq!(
            *seen.lock().unwrap(),
            [1],
            "nothing is written after an error"
        );
        assert!(h.lock().is_empty());
        // The next worker finds the file free.
        assert_eq!(
            h.submit(1, 4, 10, |j| if j == 4 { Ok(()) } else { Err("") }),
            Ok(())
        );
    }

    #[test]
    fn a_writer_that_panics_lets_the_file_go() {
        let h = Handoff::<u32>::new(100);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.submit(3, 1, 10, |_| -> Result<(), ()> { panic!("write blew up") })
        }));
        assert!(r.is_err());
        assert!(h.lock().is_empty(), "the next worker must not wait forever");
    }

    /// Many threads, few files: every job is written exactly once, never two
    /// at a time into one file, and the queue stays within its limit.
    #[test]
    fn jobs_are_written_once_and_one_at_a_time_per_file() {
        const FILES: usize = 3;
        const JOBS: usize = 400;
        let h = Arc::new(Handoff::<(usize, usize)>::new(30));
        let writing: Arc<Vec<AtomicBool>> =
            Arc::new((0..FILES).map(|_| AtomicBool::new(false)).collect());
        let count: Arc<Vec<AtomicUsize>> =
            Arc::new((0..JOBS).map(|_| AtomicUsize::new(0)).collect());
        let most_queued = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for t in 0..4 {
                let (h, writing, count, most_queued) = (&h, &writing, &count, &most_queued);
                s.spawn(move || {
                    for i in (t..JOBS).step_by(4) {
                        let file = (i * 7) % FILES;
                        h.submit(file, (file, i), 10, |(f, j)| {
                            assert!(
                                !writing[f].swap(true, Ordering::SeqCst),
                                "two writers in file {f}"
                            );
                            count[j].fetch_add(1, Ordering::SeqCst);
                            let queued = h.lock().get(&f).map_or(0, |q| q.bytes as usize);
                            most_queued.fetch_max(queued, Ordering::SeqCst);
                            std::thread::yield_now();
                            writing[f].store(false, Ordering::SeqCst);
                            Ok::<(), ()>(())
                        })
                        .unwrap();
                    }
                });
            }
        });
        for (j, c) in count.iter().enumerate() {
            assert_eq!(c.load(Ordering::SeqCst), 1, "job {j}");
        }
        assert!(most_queued.load(Ordering::SeqCst) <= 30);
        assert!(h.lock().is_empty());
    }
}
