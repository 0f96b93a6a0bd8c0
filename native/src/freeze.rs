//! Database freeze presets (`--freeze postgres|mysql|mongodb`).
//!
//! A stub until the presets are built: [`preset`] knows the names and
//! refuses with "not built yet".

use crate::Freezer;
use crate::error::{Error, Result};

/// The preset names `--freeze` takes.
pub const PRESETS: &[&str] = &["postgres", "mysql", "mongodb"];

/// The freezer for the preset `name`.
pub fn preset(name: &str) -> Result<Box<dyn Freezer>> {
    if !PRESETS.contains(&name) {
        return Err(Error::Refused {
            what: format!("--freeze {name}"),
            detail: format!("not a preset; give one of {}", PRESETS.join(", ")),
        });
    }
    Err(Error::Refused {
        what: format!("--freeze {name}"),
        detail: "not built yet in this pvsnap; freeze the database with --pre-hook/--post-hook, or snapshot without --freeze".into(),
    })
}
