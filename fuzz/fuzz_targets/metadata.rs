//! cargo-fuzz target `metadata`: see `muster::fuzz::metadata` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::metadata(data));
