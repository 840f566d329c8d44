//! cargo-fuzz target `listening`: see `muster::fuzz::listening` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::listening(data));
