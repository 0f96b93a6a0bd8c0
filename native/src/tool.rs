//! Running the storage's tools: by name from `PATH`, no shell, arguments
//! as given, the exact stderr kept for the error, and a time limit so a
//! wedged daemon (a hung `zfs destroy`, an `lvcreate` waiting on a lock)
//! turns into an error that names the command instead of a run that never
//! ends.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long one tool call may take unless the caller says otherwise.
/// Snapshot, clone and destroy calls finish in seconds; ten minutes leaves
/// room for a loaded machine and still ends a hung one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// One tool invocation.
pub struct Tool {
    cmd: Command,
    shown: String,
    timeout: Duration,
}

impl Tool {
    pub fn new(program: &str) -> Tool {
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null());
        // Tools answer in the formats the parsers know, whatever the
        // user's locale.
        cmd.env("LC_ALL", "C");
        let timeout = std::env::var("PVSNAP_TOOL_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        Tool {
            cmd,
            shown: program.to_owned(),
            timeout,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Tool {
        let a = a.as_ref();
        self.shown.push(' ');
        self.shown.push_str(&a.to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Tool {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Sets the time limit of this call.
    pub fn timeout(mut self, limit: Duration) -> Tool {
        self.timeout = limit;
        self
    }

    /// The command line as shown in errors.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs it; its stdout when it exits 0, else [`Error::ToolFailed`], or
    /// [`Error::ToolTimedOut`] (after killing it) when it outlives its
    /// time limit.
    pub fn output(mut self) -> Result<String> {
        let program = self.cmd.get_program().to_string_lossy().into_owned();
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::ToolMissing {
                tool: program,
                source,
            })?;
        // Both pipes are drained on their own threads so a chatty tool
        // never blocks on a full pipe while we wait for it.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = match wait(&mut child, self.timeout) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::ToolTimedOut {
                    command: self.shown,
                    seconds: self.timeout.as_secs(),
                });
            }
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        if !status.success() {
            return Err(Error::ToolFailed {
                command: self.shown,
                status: status.to_string(),
                stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }

    /// Runs it for its effect.
    pub fn run(self) -> Result<()> {
        self.output().map(drop)
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` up to `limit`; `None` when it is still running.
fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // The child cannot be waited for; treat it as hung.
            Err(_) => return None,
        }
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_that_outlives_its_limit_is_killed_and_named() {
        let start = Instant::now();
        let err = Tool::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(200))
            .output()
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        match &err {
            Error::ToolTimedOut { command, .. } => assert_eq!(command, "sleep 30"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(
            err.to_string().contains("`sleep 30` did not finish"),
            "{err}"
        );
    }

    #[test]
    fn output_and_failure_come_through_with_a_limit() {
        let out = Tool::new("sh")
            .args(["-c", "printf out; printf err >&2"])
            .output()
            .unwrap();
        assert_eq!(out, "out");
        let err = Tool::new("sh")
            .args(["-c", "printf oops >&2; exit 3"])
            .output()
            .unwrap_err();
        match err {
            Error::ToolFailed { stderr, .. } => assert_eq!(stderr, "oops"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_large_output_does_not_block_the_wait() {
        // More than a pipe's 64 KiB buffer.
        let out = Tool::new("sh")
            .args(["-c", "head -c 1000000 /dev/zero | tr '\\\\0' a"])
            .output()
            .unwrap();
        assert_eq!(out.len(), 1_000_000);
    }
}
