//! Records each run of a command that changes the repository or a volume
//! in the repository's audit trail (`pvsnap_engine::repo::audit`).
//!
//! `crate::repo::open` remembers the repository it opened; when the
//! command has finished, [`finish`] writes its entry there, with the
//! outcome, so a failing command records its failure too. A command that
//! wants more than one entry (snapshot: one per source) adds them with
//! [`note`]. A failure to record is a warning, never the command's failure.
//! A command that fails before the repository is opened records nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use pvsnap_engine::Repository;
use pvsnap_engine::repo::audit::{self, Entry, Outcome};

use crate::{Cli, Command};

static OPENED: Mutex<Option<Repository>> = Mutex::new(None);
static NOTES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static RECORDED: AtomicBool = AtomicBool::new(false);

/// Says the command wrote its own entry (`audit forget`).
pub fn recorded() {
    RECORDED.store(true, Ordering::SeqCst);
}

/// Remembers the repository the command works on (not in dry runs).
pub fn opened(repo: &Repository) {
    *OPENED.lock().expect("audit lock") = Some(repo.clone());
}

/// Adds an entry of this run (its operation and arguments are filled in
/// by [`finish`]).
pub fn note(
    source: Option<String>,
    snapshots: Vec<String>,
    outcome: Outcome,
    error: Option<String>,
) {
    let mut e = Entry::new("", outcome);
    e.source = source;
    e.snapshots = snapshots;
    e.error = error;
    NOTES.lock().expect("audit lock").push(e);
}

/// Adds the recovery time of a drill to the entry [`note`] added last.
pub fn note_rto(seconds: f64) {
    if let Some(e) = NOTES.lock().expect("audit lock").last_mut() {
        e.rto_seconds = Some(seconds);
    }
}

/// The operation a command line records, or `None` when it changes nothing.
pub fn operation(c: &Command) -> Option<String> {
    use crate::cmd::audit::{AuditArgs, AuditWhat};
    use crate::cmd::key::KeyCommand;
    use crate::cmd::maintenance::{Command as M, PolicyWhat};
    let op = match c {
        Command::Init(_) => "init",
        Command::Snapshot(_) => "snapshot",
        Command::Restore(_) => "restore",
        Command::Unlock(_) => "unlock",
        Command::Key(KeyCommand::List { .. }) => return None,
        Command::Key(KeyCommand::Add { .. }) => "key add",
        Command::Key(KeyCommand::Passwd { .. }) => "key passwd",
        Command::Key(KeyCommand::Remove { .. }) => "key remove",
        Command::Maintenance(M::Forget(_)) => "forget",
        Command::Maintenance(M::Undelete(_)) => "undelete",
        Command::Maintenance(M::Prune(_)) => "prune",
        Command::Maintenance(M::Check(_)) => "check",
        Command::Maintenance(M::Repair(_)) => "repair",
        Command::Maintenance(M::Policy(p)) => match p.what {
            PolicyWhat::Set { .. } => "policy set",
            PolicyWhat::Remove { .. } => "policy remove",
            PolicyWhat::List { .. } | PolicyWhat::Show { .. } => return None,
        },
        Command::Audit(AuditArgs {
            what: Some(AuditWhat::Forget { .. }),
            ..
        }) => "audit forget",
        Command::Copy(_) => "copy",
        Command::Tag(_) => "tag",
        Command::Drill(_) => "drill",
        _ => return None,
    };
    Some(op.into())
}

/// Writes the entries of this run with its result.
pub fn finish(cli: &Cli, result: &anyhow::Result<u8>) {
    let Some(operation) = operation(&cli.command) else {
        return;
    };
    if RECORDED.load(Ordering::SeqCst) {
        return;
    }
    let Some(repo) = OPENED.lock().expect("audit lock").take() else {
        return;
    };
    // The command line after `pvsnap`: passwords never appear there (they
    // come from a file, the environment or a prompt).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut notes = std::mem::take(&mut *NOTES.lock().expect("audit lock"));
    if notes.is_empty() {
        let (outcome, error) = match result {
            Ok(0) => (Outcome::Ok, None),
            Ok(code) => (outcome_of_code(*code), Some(format!("exit code {code}"))),
            Err(e) => (
                if crate::interrupt::received().is_some() {
                    Outcome::Interrupted
                } else {
                    Outcome::Failed
                },
                Some(crate::output::error_text(e)),
            ),
        };
        let mut e = Entry::new(&operation, outcome);
        e.error = error;
        notes.push(e);
    }
    for mut e in notes {
        e.operation = operation.clone();
        e.args = args.clone();
        if let Err(err) = audit::record(&repo, e) {
            eprintln!(
                "pvsnap: warning: could not record this {operation} in the audit trail: {err}"
            );
        }
    }
}

fn outcome_of_code(code: u8) -> Outcome {
    if code >= 128 {
        Outcome::Interrupted
    } else {
        Outcome::Failed
    }
}
