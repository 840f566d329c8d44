//! cargo-fuzz target `snapshot`: see `muster::fuzz::snapshot` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::snapshot(data));
