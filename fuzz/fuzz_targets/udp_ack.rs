//! cargo-fuzz target `udp_ack`: see `muster::fuzz::udp_ack` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::udp_ack(data));
