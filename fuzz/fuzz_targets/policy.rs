#![no_main]
//! cargo-fuzz target `policy`: see `pvsnap_engine::fuzzing::policy`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvsnap_engine::fuzzing::policy(data));
