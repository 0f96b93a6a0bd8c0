#![no_main]
//! cargo-fuzz target `key_slot`: see `pvsnap_engine::fuzzing::key_slot`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvsnap_engine::fuzzing::key_slot(data));
