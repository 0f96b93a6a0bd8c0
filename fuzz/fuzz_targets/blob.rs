#![no_main]
//! cargo-fuzz target `blob`: see `pvsnap_engine::fuzzing::blob`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvsnap_engine::fuzzing::blob(data));
