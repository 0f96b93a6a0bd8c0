//! The thin layer over system calls that the standard library does not
//! offer, and the only place of the engine with `unsafe` code: every call
//! is wrapped in a safe function here, with its SAFETY note. The rest of
//! the engine denies `unsafe_code`.

pub mod dir;
pub mod extents;
pub mod host;
pub mod io;
pub mod meta;
