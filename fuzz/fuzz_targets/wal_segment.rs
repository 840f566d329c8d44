//! cargo-fuzz target `wal_segment`: see `muster::fuzz::wal_segment` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::wal_segment(data));
