//! cargo-fuzz target `http_head`: see `muster::fuzz::http_head` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::http_head(data));
