//! The thin layer over system calls that the standard library does not
//! offer; the `unsafe` of restore lives here, each call with its SAFETY note.

pub mod dir;
