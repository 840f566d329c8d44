//! cargo-fuzz target `dechunk`: see `muster::fuzz::dechunk` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::dechunk(data));
