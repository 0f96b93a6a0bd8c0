//! Running the storage's tools: by name from `PATH`, no shell, arguments
//! as given, the exact stderr kept for the error.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// One tool invocation.
pub struct Tool {
    cmd: Command,
    shown: String,
}

impl Tool {
    pub fn new(program: &str) -> Tool {
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null());
        // Tools answer in the formats the parsers know, whatever the
        // user's locale.
        cmd.env("LC_ALL", "C");
        Tool {
            cmd,
            shown: program.to_owned(),
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

    /// The command line as shown in errors.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs it; its stdout when it exits 0, else [`Error::ToolFailed`].
    pub fn output(mut self) -> Result<String> {
        let program = self.cmd.get_program().to_string_lossy().into_owned();
        let out = self.cmd.output().map_err(|source| Error::ToolMissing {
            tool: program,
            source,
        })?;
        if !out.status.success() {
            return Err(Error::ToolFailed {
                command: self.shown,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs it for its effect.
    pub fn run(self) -> Result<()> {
        self.output().map(drop)
    }
}
