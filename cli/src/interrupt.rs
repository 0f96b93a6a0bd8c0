//! SIGINT and SIGTERM during a snapshot or an in-place restore. The first
//! asks the run to stop cleanly (`pvsnap_engine::stop::Stop`). A snapshot
//! stores the packs in hand, indexes everything stored, runs its post
//! hooks; a restore into a claim stops after the data in hand (see
//! `pvsnap_ops::ScaleBack`). Then the lock is released and the command
//! exits 130 (SIGINT) or 143 (SIGTERM). A second signal exits at once with
//! its own code; what the last index checkpoint named is kept even then,
//! and the lock left behind is stale (its pid is gone).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use pvsnap_engine::stop::Stop;

/// The first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The stop the handler requests; set before the handler is installed.
static STOP: OnceLock<Stop> = OnceLock::new();
/// What the handler says on the first signal; set before it is installed.
static SAYS: OnceLock<&'static [u8]> = OnceLock::new();

/// What a snapshot says when it is asked to stop.
pub const STORING: &[u8] = b"\npvsnap: stopping: storing what was read and indexing it (press Ctrl-C again to stop at once)\n";
/// What an in-place restore says when it is asked to stop.
pub const RESTORING: &[u8] =
    b"\npvsnap: stopping after the data in hand (press Ctrl-C again to stop at once)\n";

/// Installs the handlers, which print `says` on the first signal; returns
/// the stop the run must honour.
pub fn clean_stop(says: &'static [u8]) -> Stop {
    let stop = STOP.get_or_init(Stop::default).clone();
    SAYS.get_or_init(|| says);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the action is zeroed plain data, then filled in; the
        // handler only touches atomics and calls write(2) and _exit(2),
        // which are async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    stop
}

/// The signal that asked for the stop, if one did.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The exit code for a stop by `signal`: 128 + its number, as shells report.
pub fn exit_code(signal: i32) -> u8 {
    (128 + signal) as u8
}

extern "C" fn on_signal(sig: libc::c_int) {
    if SIGNAL
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // SAFETY: _exit is async-signal-safe and ends the process here.
        unsafe { libc::_exit(128 + sig) };
    }
    if let Some(stop) = STOP.get() {
        stop.request();
    }
    let msg: &[u8] = SAYS.get().copied().unwrap_or(STORING);
    // SAFETY: write(2) on stderr from a valid buffer; async-signal-safe.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}
