#![no_main]
//! cargo-fuzz target `snapshot`: see `pvsnap_engine::fuzzing::snapshot`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvsnap_engine::fuzzing::snapshot(data));
