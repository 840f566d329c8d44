//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/*`) through the same entry
//! functions the cargo-fuzz targets call (`muster::fuzz`), on the stable toolchain, so a
//! decoder change that breaks on a seed or on a past crash fails `cargo test` without nightly.
//!
//! Invariants: every target has a non-empty corpus, every corpus directory is a target, and no
//! input panics. Crash inputs found by fuzzing are committed into the corpus (named
//! `crash-<target>-<what>`), so each one is a regression test here.

use std::path::{Path, PathBuf};

use muster::fuzz::TARGETS;

/// At most this many inputs per target are replayed (the committed corpora hold far fewer).
const MAX_INPUTS: usize = 10_000;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .take(MAX_INPUTS + 1)
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(
        files.len() <= MAX_INPUTS,
        "{target}: more than {MAX_INPUTS} inputs; minimise the corpus (cargo fuzz cmin)"
    );
    files.sort();
    files
}

#[test]
fn every_corpus_input_replays_without_a_panic() {
    let mut total = 0;
    for (target, run) in TARGETS {
        let files = inputs(target);
        assert!(!files.is_empty(), "{target}: empty corpus");
        for f in &files {
            let data = std::fs::read(f).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} panics", f.display());
        }
        total += files.len();
    }
    eprintln!("replayed {total} inputs over {} targets", TARGETS.len());
}

#[test]
fn every_corpus_directory_is_a_target_and_every_target_has_a_fuzz_binary() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for e in std::fs::read_dir(corpus_dir()).unwrap().take(1000) {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name} is no target in muster::fuzz::TARGETS"
        );
    }
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for (target, _) in TARGETS {
        let src = fuzz.join(format!("fuzz_targets/{target}.rs"));
        let text =
            std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        assert!(
            text.contains(&format!("muster::fuzz::{target}(")),
            "{} does not call muster::fuzz::{target}",
            src.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "fuzz/Cargo.toml has no [[bin]] {target}"
        );
    }
}

/// The harness can fail: an entry that panics is reported (so a pass means something).
#[test]
fn a_panicking_input_is_caught() {
    let outcome = std::panic::catch_unwind(|| muster::fuzz::wal_segment(&[]));
    assert!(outcome.is_ok(), "the empty input is fine");
    let bad: fn(&[u8]) = |_| panic!("planted");
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| bad(b"x"));
    std::panic::set_hook(prev);
    assert!(outcome.is_err());
}
