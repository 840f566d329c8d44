//! cargo-fuzz target `config_import`: see `muster::fuzz::config_import` (src/fuzz.rs) for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster::fuzz::config_import(data));
