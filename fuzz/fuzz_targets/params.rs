//! cargo-fuzz target `params`: see `muster::fuzz::params` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::params(data));
