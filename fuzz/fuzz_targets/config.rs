#![no_main]
//! cargo-fuzz target `config`: see `pvsnap_engine::fuzzing::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvsnap_engine::fuzzing::config(data));
