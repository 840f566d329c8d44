//! cargo-fuzz target `wal_record`: see `muster::fuzz::wal_record` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::wal_record(data));
