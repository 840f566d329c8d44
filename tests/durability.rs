//! Durability of persistent instances against the real binary: restarts, kill -9 at random
//! moments, a flipped bit mid-log, a torn tail, and a full disk (a real tmpfs).
//!
//! Persistent instances here use 127.0.0.x addresses: the server probes them (TCP), and no
//! test may send traffic off loopback.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

fn hosts(s: &Server, svc: &str) -> Vec<Value> {
    let (st, b) = s.request(
        "GET",
        &format!("/nacos/v1/ns/instance/list?serviceName={svc}"),
        "",
    );
    assert_eq!(st, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    v["hosts"].as_array().cloned().unwrap_or_default()
}

fn ips(s: &Server, svc: &str) -> BTreeSet<String> {
    hosts(s, svc)
        .iter()
        .map(|h| format!("{}:{}", h["ip"].as_str().unwrap(), h["port"]))
        .collect()
}

fn register_persistent(s: &Server, svc: &str, ip: &str, port: u16, extra: &str) -> (u16, String) {
    s.request(
        "POST",
        &format!(
            "/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port={port}&ephemeral=false{extra}"
        ),
        "",
    )
}

/// The WAL segments of a data dir, oldest first.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("raft"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// Offset just past the last non-zero byte (the end of written records).
fn data_end(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map(|i| i + 1)
        .unwrap_or(0)
}

/// The offset of the record whose frame holds byte `at` of an undamaged segment, walking the
/// frames from the 64-byte header (storage/FORMAT.md §2–3: `len` u32 at the frame's start, the
/// frame is align8(16 + len) bytes). Bounded by the segment's length.
fn record_holding(segment: &[u8], at: usize) -> usize {
    let mut off = 64;
    while off + 16 <= segment.len() {
        let len = u32::from_le_bytes(segment[off..off + 4].try_into().unwrap()) as usize;
        assert!(len > 0, "end of data at {off} before byte {at}");
        let next = off + (16 + len).div_ceil(8) * 8;
        if at < next {
            return off;
        }
        off = next;
    }
    panic!("byte {at} is past the records of the segment");
}

#[test]
fn persistent_state_survives_restart_and_ephemeral_does_not() {
    let s = Server::start(&["--shards", "2"]);
    for i in 1..=3 {
        let (st, b) = register_persistent(
            &s,
            "mysql",
            &format!("127.0.0.{i}"),
            3306,
            "&metadata=role%3Dprimary",
        );
        assert_eq!((st, b.as_str()), (200, "ok"));
    }
    assert_eq!(
        s.request(
            "POST",
            "/nacos/v1/ns/instance?serviceName=mysql&ip=127.0.0.1&port=3306",
            ""
        )
        .0,
        200,
        "same ip:port may also be ephemeral"
    );
    assert_eq!(
        s.request(
            "POST",
            "/nacos/v1/ns/service?serviceName=redis&protectThreshold=0.3&metadata=team%3Dinfra",
            ""
        )
        .0,
        200
    );
    assert_eq!(s.request("PUT", "/nacos/v1/ns/cluster?serviceName=mysql&clusterName=DEFAULT&checkPort=80&useInstancePort4Check=true&healthChecker=%7B%22type%22%3A%22NONE%22%7D", "").0, 200);
    assert_eq!(
        s.request(
            "POST",
            "/nacos/v1/ns/instance?serviceName=web&ip=10.0.0.1&port=80",
            ""
        )
        .0,
        200
    );
    assert_eq!(hosts(&s, "mysql").len(), 4);

    let s = s.restart(&["--shards", "2"]);
    let h = hosts(&s, "mysql");
    assert_eq!(
        h.len(),
        3,
        "persistent instances are back, the ephemeral one is not: {h:?}"
    );
    assert!(h
        .iter()
        .all(|x| x["ephemeral"] == false && x["metadata"]["role"] == "primary"));
    assert!(hosts(&s, "web").is_empty());
    let (_, b) = s.request("GET", "/nacos/v1/ns/service?serviceName=redis", "");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["protectThreshold"], 0.3);
    assert_eq!(v["metadata"]["team"], "infra");
    let (_, b) = s.request("GET", "/nacos/v1/ns/service?serviceName=mysql", "");
    assert!(b.contains("\"NONE\""), "cluster checker survives: {b}");

    // Deregister and delete are durable too; update of a persistent instance is strict.
    assert_eq!(
        s.request(
            "DELETE",
            "/nacos/v1/ns/instance?serviceName=mysql&ip=127.0.0.1&port=3306&ephemeral=false",
            ""
        )
        .0,
        200
    );
    assert_eq!(
        s.request("DELETE", "/nacos/v1/ns/service?serviceName=redis", "")
            .0,
        200
    );
    assert_eq!(s.request("PUT", "/nacos/v1/ns/instance?serviceName=mysql&ip=127.0.0.2&port=3306&ephemeral=false&weight=5", "").0, 200);
    let s = s.kill_and_restart(&["--shards", "1"]);
    let h = hosts(&s, "mysql");
    assert_eq!(h.len(), 2);
    assert!(h
        .iter()
        .any(|x| x["ip"] == "127.0.0.2" && x["weight"] == 5.0));
    let (st, _) = s.request("GET", "/nacos/v1/ns/service?serviceName=redis", "");
    assert_eq!(st, 500, "deleted service stays deleted");
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    const ROUNDS: usize = 20;
    const WRITERS: usize = 4;
    let mut rng: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    /// Acknowledged writes each round must reach before the kill (bounded by `ACK_WAIT`).
    const MIN_ACKS: usize = 20;
    const ACK_WAIT: Duration = Duration::from_secs(20);
    let acked: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
    // One fixed port for every restart: each new process binds it while the killed one's
    // sockets are still in TIME_WAIT / FIN_WAIT.
    let listen = common::free_loopback_addr().to_string();
    let args = ["--shards", "2", "--snapshot-entries", "150"];
    let mut s = Server::launch_on(&listen, tempfile::tempdir().unwrap(), &args, &[]);
    for round in 0..ROUNDS {
        let round_acks = AtomicUsize::new(0);
        // Failures of requests sent before the kill: any is a defect (a 5xx, a reset).
        let failures: Mutex<Vec<String>> = Mutex::default();
        let killed = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for w in 0..WRITERS {
                let (addr, acked) = (s.addr, acked.clone());
                let (round_acks, failures, killed) = (&round_acks, &failures, &killed);
                scope.spawn(move || {
                    let probe = common::Client::new(addr);
                    // Bounded: at most 2000 writes per writer per round, and only until the kill.
                    for i in 0..2000u32 {
                        let svc = format!("crash-{}", i % 5);
                        let ip = format!("127.0.{}.{}", round, w * 60 + (i as usize % 60));
                        let port = 1000 + i;
                        let answer = probe.request("POST", &format!("/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port={port}&ephemeral=false"), "");
                        match answer {
                            Some((200, b)) if b == "ok" => {
                                acked.lock().unwrap().insert((svc, format!("{ip}:{port}")));
                                round_acks.fetch_add(1, Ordering::SeqCst);
                            }
                            // The kill flag is raised before the kill: what fails after it is
                            // the kill's doing.
                            _ if killed.load(Ordering::SeqCst) => return,
                            other => {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("writer {w} write {i}: {other:?}"));
                                return;
                            }
                        }
                    }
                });
            }
            let waited = Instant::now();
            while round_acks.load(Ordering::SeqCst) < MIN_ACKS && waited.elapsed() < ACK_WAIT {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(next() % 400));
            killed.store(true, Ordering::SeqCst);
            let _ = s.child.kill();
        });
        let (n, failures) = (round_acks.into_inner(), failures.into_inner().unwrap());
        eprintln!(
            "round {round}: {n} acknowledged, {} failed before the kill",
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "round {round}: writes failed before the kill: {failures:#?}"
        );
        assert!(
            n >= MIN_ACKS,
            "round {round}: only {n} writes acknowledged within {ACK_WAIT:?}"
        );
        s = s.kill_and_restart(&args);
        assert_eq!(s.addr.to_string(), listen, "restarted on the same port");
        let acked = acked.lock().unwrap();
        for svc in 0..5 {
            let svc = format!("crash-{svc}");
            let have = ips(&s, &svc);
            for (_, inst) in acked.iter().filter(|(s2, _)| *s2 == svc) {
                assert!(
                    have.contains(inst),
                    "round {round}: acknowledged {svc} {inst} is missing after kill -9"
                );
            }
        }
    }
    let data = s.data_dir.path().to_path_buf();
    let st = s.terminate().unwrap();
    assert!(st.success());
    let out = std::process::Command::new(common::muster_wal())
        .arg("verify")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "muster-wal verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The log's binary op bodies read back as the ops' JSON.
    let out = std::process::Command::new(common::muster_wal())
        .args(["history", "--service", "crash-0"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "muster-wal history failed: {text}");
    assert!(
        text.contains(r#"{"op":"register","instance":{"ip":"127.0."#),
        "history shows register ops as JSON: {}",
        text.lines().take(3).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn a_flipped_bit_mid_log_refuses_to_start_and_names_file_and_offset() {
    let s = Server::start(&["--shards", "1"]);
    for i in 0..200u16 {
        assert_eq!(
            register_persistent(&s, "flip", "127.0.0.1", 2000 + i, "").0,
            200
        );
    }
    let mut s = s;
    assert!(s.terminate().unwrap().success());
    let seg = segments(s.data_dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = data_end(&bytes);
    let at = end * 2 / 5;
    let record = record_holding(&bytes, at);
    assert!(record >= 64, "the flip is in a record, not in the header");
    bytes[at] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let out = common::command(s.data_dir.path(), &["--shards", "1"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a corrupted log must not start");
    let name = seg.file_name().unwrap().to_string_lossy();
    assert!(err.contains(&*name), "error names the file: {err}");
    let offset = err
        .split("at byte ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(
        offset,
        Some(record),
        "error names the byte offset of the bad record (byte {at} was flipped): {err}"
    );
    // muster-wal verify agrees.
    let v = std::process::Command::new(common::muster_wal())
        .arg("verify")
        .arg(s.data_dir.path())
        .output()
        .unwrap();
    assert!(!v.status.success());
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(
        report.contains(&*name) && report.contains(&format!("at byte {record}:")),
        "muster-wal verify names the same file and offset ({record}): {report}"
    );
}

#[test]
fn a_torn_tail_is_repaired_at_startup() {
    let s = Server::start(&["--shards", "1"]);
    for i in 0..50u16 {
        assert_eq!(
            register_persistent(&s, "torn", "127.0.0.1", 3000 + i, "").0,
            200
        );
    }
    let mut s = s;
    assert!(s.terminate().unwrap().success());
    let seg = segments(s.data_dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = data_end(&bytes);
    // A write that never finished: the file ends 12 bytes into the last record (FORMAT.md 6:
    // torn). Zeroing those bytes instead is torn only when they fill a sector chunk of the
    // record, which depends on where records happen to fall.
    bytes.truncate(end - 12);
    std::fs::write(&seg, &bytes).unwrap();
    let dir = std::mem::replace(&mut s.data_dir, tempfile::tempdir().unwrap());
    drop(s);
    let s = Server::launch(dir, &["--shards", "1"], &[]);
    let n = hosts(&s, "torn").len();
    assert!(n >= 49, "only the torn record may be lost, got {n} of 50");
    let broken: Vec<_> = std::fs::read_dir(s.data_dir.path().join("raft"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".broken"))
        .collect();
    assert_eq!(broken.len(), 1, "the damaged copy is kept as .broken");
    assert_eq!(
        register_persistent(&s, "torn", "127.0.0.1", 4000, "").0,
        200,
        "writes work after repair"
    );
}

#[test]
fn a_full_disk_fails_persistent_writes_cleanly_and_they_resume() {
    let fs = common::Tmpfs::mount("768k");
    let args = [
        "--shards",
        "2",
        "--wal-segment-bytes",
        "131072",
        "--snapshot-entries",
        "1000000",
    ];
    let data = tempfile::TempDir::new_in(&fs.0).unwrap();
    let s = Server::launch(data, &args, &[]);
    let md = format!("&metadata=k%3D{}", "x".repeat(900));
    let mut acked = BTreeSet::new();
    let mut failure = None;
    for i in 0..5000u16 {
        let (st, b) = register_persistent(&s, "full", "127.0.0.1", 1 + i, &md);
        if st == 200 {
            acked.insert(format!("127.0.0.1:{}", 1 + i));
        } else {
            failure = Some((st, b));
            break;
        }
    }
    let (st, b) = failure.expect("the disk never filled up");
    assert_eq!(st, 500, "{b}");
    assert!(
        b.starts_with("caused: the write was not persisted (no space left): ")
            && b.contains("No space left on device"),
        "a clear error that says the disk is full: {b}"
    );
    // Ephemeral traffic keeps working, reads too.
    assert_eq!(
        s.request(
            "POST",
            "/nacos/v1/ns/instance?serviceName=eph&ip=10.0.0.1&port=1",
            ""
        )
        .0,
        200
    );
    assert_eq!(
        ips(&s, "full"),
        acked,
        "exactly the acknowledged writes are visible"
    );
    // Space returns: writes resume.
    fs.resize("16m");
    let mut resumed = false;
    for attempt in 0..50u16 {
        let (st, _) = register_persistent(&s, "full", "127.0.0.2", 1 + attempt, &md);
        if st == 200 {
            acked.insert(format!("127.0.0.2:{}", 1 + attempt));
            resumed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        resumed,
        "persistent writes did not resume after space returned"
    );
    let s = s.kill_and_restart(&args);
    assert_eq!(
        ips(&s, "full"),
        acked,
        "after a restart: every acknowledged write, nothing else"
    );
}
