#![no_main]
//! cargo-fuzz target `index_file`: see `pvsnap_engine::fuzzing::index_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvsnap_engine::fuzzing::index_file(data));
