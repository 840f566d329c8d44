//! cargo-fuzz target `peer`: see `muster::fuzz::peer` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::peer(data));
