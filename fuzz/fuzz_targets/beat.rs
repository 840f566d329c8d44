//! cargo-fuzz target `beat`: see `muster::fuzz::beat` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::beat(data));
