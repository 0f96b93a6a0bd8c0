#![no_main]
//! cargo-fuzz target `tree`: see `pvsnap_engine::fuzzing::tree`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvsnap_engine::fuzzing::tree(data));
