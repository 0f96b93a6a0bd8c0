//! Errors of native snapshots. Every message names the volume, snapshot or
//! tool it is about and, where the user can act, what to do next.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tool could not be started (not installed, not on `PATH`).
    #[error("`{tool}` could not be run: {source}; install it or put it on PATH")]
    ToolMissing {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed; `stderr` is what it said, trimmed.
    #[error("`{command}` failed ({status}): {stderr}")]
    ToolFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// A tool did not finish in time and was killed.
    #[error(
        "`{command}` did not finish within {seconds} s and was stopped; \
         check the storage (a hung daemon or a full pool) and try again"
    )]
    ToolTimedOut { command: String, seconds: u64 },
    /// A tool answered in a form this code does not understand.
    #[error("`{command}` printed something unexpected ({detail}): {output}")]
    Unparsed {
        command: String,
        detail: String,
        output: String,
    },
    /// The source's storage cannot snapshot natively and it was required.
    #[error("{path}: {reason}")]
    NotNative { path: PathBuf, reason: String },
    /// The storage refused for a reason that has a clear next step.
    #[error("{what}: {detail}")]
    Refused { what: String, detail: String },
    /// A native snapshot (or what it needs) is no longer on the storage.
    #[error("{what} no longer exists")]
    Missing { what: String },
    /// A database freeze preset could not freeze or thaw; `database` names
    /// the server (never with its password).
    #[error("{database}: {detail}")]
    Freeze { database: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
