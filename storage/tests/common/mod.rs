//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use muster_storage::fs::{FileSystem, RealFs};
use muster_storage::record::{EntryRecord, HardStateRecord, Record};
use muster_storage::wal::{Options, RecoveryMode};

/// Options with small (4 KiB) segments on `fs`.
pub fn opts(fs: Arc<dyn FileSystem>) -> Options {
    Options {
        segment_size: 4096,
        fs,
        recovery: RecoveryMode::Strict,
    }
}

/// Options on the real filesystem that drop a corrupt tail ([`RecoveryMode::TruncateTail`]).
pub fn truncating() -> Options {
    Options {
        recovery: RecoveryMode::TruncateTail,
        ..real()
    }
}

/// Options on the real filesystem.
pub fn real() -> Options {
    opts(Arc::new(RealFs))
}

/// Entry record `index` in `term` with `n` bytes of non-zero data derived from the index.
pub fn entry(index: u64, term: u64, n: usize) -> Record {
    Record::Entry(EntryRecord {
        index,
        term,
        entry_type: 0,
        data: (0..n)
            .map(|i| (index as u8).wrapping_add(i as u8) | 1)
            .collect(),
        context: Vec::new(),
    })
}

/// Hard state record.
pub fn hs(term: u64, vote: u64, commit: u64) -> Record {
    Record::HardState(HardStateRecord { term, vote, commit })
}

/// Entry indexes currently in a state.
pub fn indexes(st: &muster_storage::wal::LogState) -> Vec<u64> {
    st.entries.iter().map(|e| e.index).collect()
}

/// Segment file names in `dir`, sorted.
pub fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    v.sort();
    v
}

/// Reads a test switch that only the value `1` turns on: unset, empty or `0` is off, and any
/// other value fails the test (a typo must not silently change what a test does).
pub fn switch(name: &str) -> bool {
    match std::env::var(name) {
        Ok(v) if v == "1" => true,
        Ok(v) if v.is_empty() || v == "0" => false,
        Err(std::env::VarError::NotPresent) => false,
        Ok(v) => panic!("{name}={v:?}: set it to 1, or leave it unset"),
        Err(e) => panic!("{name}: {e}; set it to 1, or leave it unset"),
    }
}

/// `MUSTER_UPDATE_FIXTURES=1`: rewrite golden fixtures from the current code instead of
/// comparing against them.
pub fn update_fixtures() -> bool {
    switch("MUSTER_UPDATE_FIXTURES")
}

/// `MUSTER_ALLOW_SKIP=1`: a test whose environment lacks a capability it needs (root, a mount)
/// may pass with a message instead of failing. CI never sets it.
pub fn allow_skip() -> bool {
    switch("MUSTER_ALLOW_SKIP")
}
