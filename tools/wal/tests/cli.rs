//! Golden-output tests of `muster-wal` against the fixtures `tests/data/wal-v1/` and `wal-v2/`
//! (formats 1 and 2, the same content), plus its
//! read-only promise and `repair`'s refusals. Regenerate the `.out` files (only when the output
//! format changes on purpose) with `MUSTER_UPDATE_FIXTURES=1 cargo test -p muster-wal`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

fn fixture() -> PathBuf {
    data().join("wal-v1")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muster-wal"))
        .args(args)
        .output()
        .expect("run muster-wal")
}

/// `MUSTER_UPDATE_FIXTURES=1` rewrites the `.out` files. Only `1` does: unset, empty or `0`
/// compares, and any other value fails (a typo must not silently rewrite fixtures).
fn update_fixtures() -> bool {
    match std::env::var("MUSTER_UPDATE_FIXTURES") {
        Ok(v) if v == "1" => true,
        Ok(v) if v.is_empty() || v == "0" => false,
        Err(std::env::VarError::NotPresent) => false,
        Ok(v) => panic!("MUSTER_UPDATE_FIXTURES={v:?}: set it to 1, or leave it unset"),
        Err(e) => panic!("MUSTER_UPDATE_FIXTURES: {e}; set it to 1, or leave it unset"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a command on each fixture, format 1 (before state-machine domains) and format 2, and
/// compares stdout with `tests/data/wal-v<N>-out/<name>.out`. The two outputs differ only in
/// byte offsets (a format-2 event also archives its domain).
fn golden(name: &str, args: &[&str]) {
    for version in ["wal-v1", "wal-v2"] {
        golden_in(version, name, args);
    }
}

fn golden_in(version: &str, name: &str, args: &[&str]) {
    let dir = data().join(version);
    let mut full: Vec<&str> = vec![args[0], dir.to_str().unwrap()];
    full.extend_from_slice(&args[1..]);
    let out = run(&full);
    assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "",
        "{name}: no warnings on the clean fixture"
    );
    let path = data()
        .join(format!("{version}-out"))
        .join(format!("{name}.out"));
    if update_fixtures() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &out.stdout).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (MUSTER_UPDATE_FIXTURES=1 creates it)",
            path.display()
        )
    });
    assert_eq!(
        text(&out.stdout),
        want,
        "{name}: output drifted from {}",
        path.display()
    );
}

#[test]
fn golden_dump() {
    golden("dump", &["dump"]);
}

#[test]
fn golden_dump_json_service() {
    golden(
        "dump-json-payments",
        &["dump", "--json", "--service", "payments"],
    );
}

#[test]
fn golden_dump_index_and_time_range() {
    golden(
        "dump-range",
        &[
            "dump",
            "--from",
            "10",
            "--to",
            "20",
            "--since",
            "2025-11-13T02:13:40Z",
            "--until",
            "1763000028500",
        ],
    );
}

#[test]
fn golden_stats() {
    golden("stats", &["stats"]);
    golden("stats-json", &["stats", "--json"]);
}

#[test]
fn golden_verify() {
    golden("verify", &["verify"]);
}

#[test]
fn golden_history() {
    golden(
        "history-orders",
        &["history", "--service", "public##DEFAULT_GROUP@@orders"],
    );
    golden(
        "history-orders-json",
        &["history", "--json", "--service", "payments"],
    );
}

/// A copy of the fixture in a temporary directory.
fn copy_fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    tmp
}

fn snapshot_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Runs a repair that must be refused: exit 1, `refusing to repair` on stderr, and the
/// directory unchanged (but for the LOCK file the attempt creates). Returns stderr.
fn refused_repair(dir: &Path, args: &[&str]) -> String {
    let before = snapshot_of(dir);
    let out = run(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refusing to repair"), "{err}");
    let mut after = snapshot_of(dir);
    after.retain(|(n, _)| n != "LOCK");
    assert_eq!(after, before, "a refused repair changes nothing");
    err
}

const SEG1: &str = "0000000000000001-0000000000000001.wal";
const SEG2: &str = "0000000000000002-0000000000000018.wal";

/// Read-only commands neither lock nor change anything, even on a damaged directory.
#[test]
fn read_only_commands_change_nothing() {
    let tmp = copy_fixture();
    let d = tmp.path().to_str().unwrap();
    let seg = tmp.path().join(SEG2);
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[end - 40..=end].fill(0); // tear the last record
    bytes[end - 200] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let before = snapshot_of(tmp.path());
    for args in [
        vec!["dump", d],
        vec!["dump", d, "--json"],
        vec!["verify", d],
        vec!["stats", d],
        vec!["history", d, "--service", "orders"],
    ] {
        let _ = run(&args);
        assert_eq!(
            snapshot_of(tmp.path()),
            before,
            "{args:?} changed the directory"
        );
    }
    assert!(!tmp.path().join("LOCK").exists());
}

/// A flipped bit mid-log: verify exits 1 naming the file and offset; repair refuses and
/// changes nothing; dump shows the records before the damage, then fails.
#[test]
fn bit_flip_mid_log_verify_names_file_and_offset_and_repair_refuses() {
    let tmp = copy_fixture();
    let d = tmp.path().to_str().unwrap();
    let seg = tmp.path().join(SEG1);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[224 + 40] ^= 0x10; // inside the payload of the record at offset 224 (index 2)
    std::fs::write(&seg, &bytes).unwrap();

    let out = run(&["verify", d]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(SEG1) && err.contains("at byte 224") && err.contains("crc mismatch"),
        "{err}"
    );

    refused_repair(tmp.path(), &["repair", d]);

    let out = run(&["dump", d]);
    assert_eq!(out.status.code(), Some(1));
    let dumped = text(&out.stdout);
    assert_eq!(
        dumped.lines().count(),
        3,
        "records before the damage:\n{dumped}"
    );
}

/// A torn tail: verify fails, repair cuts it keeping `.broken`, then verify passes.
#[test]
fn torn_tail_is_repaired_keeping_broken_copy() {
    let tmp = copy_fixture();
    let d = tmp.path().to_str().unwrap();
    let seg = tmp.path().join(SEG2);
    let mut bytes = std::fs::read(&seg).unwrap();
    // Cut the file inside the last record (the final hard state), as a crash mid-write would.
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes.truncate(end - 20);
    std::fs::write(&seg, &bytes).unwrap();

    let out = run(&["verify", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("torn tail"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["repair", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let msg = text(&out.stdout);
    assert!(
        msg.starts_with(&format!("repaired: cut {SEG2} at byte ")),
        "{msg}"
    );
    assert!(tmp.path().join(format!("{SEG2}.broken")).exists());
    assert_eq!(
        std::fs::read(tmp.path().join(format!("{SEG2}.broken"))).unwrap(),
        bytes
    );

    let out = run(&["verify", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("33 records"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["repair", d]);
    assert_eq!(text(&out.stdout), "nothing to repair: log is clean\n");
}

/// Repair refuses while a writer holds the directory lock.
#[test]
fn repair_refuses_a_locked_directory() {
    use muster_storage::fs::FileSystem;
    let tmp = copy_fixture();
    let _held = muster_storage::fs::RealFs
        .lock(&tmp.path().join("LOCK"))
        .unwrap();
    let out = run(&["repair", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(
        run(&["history", "/x"]).status.code(),
        Some(2),
        "--service is required"
    );
    assert_eq!(
        run(&["dump", "/x", "--since", "yesterday"]).status.code(),
        Some(2)
    );
    let out = run(&["verify", "/nonexistent/muster"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/muster"));
}

/// Damages the payloads of SEG2's last entry (index 24, at byte 248) and of the hard state after
/// it (byte 408): corrupt, not torn, and nothing valid follows.
fn corrupt_final_records(dir: &Path) -> Vec<u8> {
    let seg = dir.join(SEG2);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[248 + 20] ^= 0x5a;
    bytes[408 + 20] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();
    bytes
}

/// `repair --truncate-corrupt-tail` (stdin is not a terminal, so it does not ask): golden
/// output; the damaged segment is kept as `.broken`; verify then passes with the log ending at
/// index 23. Before it, plain `repair` refuses the same damage and verify names what
/// truncate-tail would drop.
#[test]
fn golden_repair_truncate_corrupt_tail() {
    let tmp = copy_fixture();
    let d = tmp.path().to_str().unwrap();
    let damaged = corrupt_final_records(tmp.path());
    refused_repair(tmp.path(), &["repair", d]);

    let out = run(&["verify", d]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("corrupt {d}/{SEG2} at byte 248: crc mismatch"))
            && err.contains("would drop entries 24..=24 and keep the log up to index 23"),
        "{err}"
    );

    let out = run(&["repair", "--truncate-corrupt-tail", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = format!(
        "corrupt tail in {SEG2} at byte 248: crc mismatch: stored 0xf3fd3b56, computed 0xecfe076e\n\
         will drop: entries 24..=24 (records from byte 248 to the end of the segment); the log will end at index 23\n\
         repaired: {SEG2}; the log ends at index 23; damaged copy kept as {SEG2}.broken\n"
    );
    assert_eq!(text(&out.stdout), want);
    assert_eq!(
        std::fs::read(tmp.path().join(format!("{SEG2}.broken"))).unwrap(),
        damaged
    );
    let out = run(&["verify", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with("log 13..=23\n"),
        "{}",
        text(&out.stdout)
    );
}

/// A corrupt record followed by a valid one is mid-log corruption: `--truncate-corrupt-tail`
/// refuses it and changes nothing.
#[test]
fn truncate_corrupt_tail_refuses_damage_followed_by_a_valid_record() {
    let tmp = copy_fixture();
    let d = tmp.path().to_str().unwrap();
    let seg = tmp.path().join(SEG2);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[248 + 20] ^= 0x5a; // entry 24; the hard state at 408 stays valid
    std::fs::write(&seg, &bytes).unwrap();
    let err = refused_repair(
        tmp.path(),
        &["repair", "--truncate-corrupt-tail", "--yes", d],
    );
    assert!(
        err.contains("at byte 248") && err.contains("a valid record follows"),
        "{err}"
    );
}
