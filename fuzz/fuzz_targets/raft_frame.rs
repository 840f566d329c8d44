//! cargo-fuzz target `raft_frame`: see `muster::fuzz::raft_frame` (src/fuzz.rs) for what it
//! feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::raft_frame(data));
