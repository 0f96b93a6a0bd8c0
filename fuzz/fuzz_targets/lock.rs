#![no_main]
//! cargo-fuzz target `lock`: see `pvsnap_engine::fuzzing::lock`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvsnap_engine::fuzzing::lock(data));
