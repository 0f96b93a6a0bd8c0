#![no_main]
//! cargo-fuzz target `pack_trailer`: see `pvsnap_engine::fuzzing::pack_trailer`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvsnap_engine::fuzzing::pack_trailer(data));
