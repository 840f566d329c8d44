//! Rows S2, S8 and S9 against the real binary, with failpoints armed in the server through
//! `FAILPOINTS` (a `failpoints` build: `cargo test --workspace --features failpoints`).
//!
//! - S2: the process aborts at each persistence boundary (before and after a WAL append, after
//!   the fsync before the reply, during segment rotation, around the snapshot file's rename,
//!   before a purge) while a client writes persistent instances. The restart is clean and every
//!   acknowledged write is listed. (Installing a snapshot from a leader cannot happen in a
//!   one-member group; `storage/tests/failpoints.rs` crashes that point in process.)
//! - S8: an `EIO` on a WAL write or fsync stops the node with exit status 74 (it is never
//!   retried), and the restart keeps every acknowledged write.
//! - S9: a slow fsync (300 ms a sync) changes nothing but time.
//!
//! Correctness only: no assertion on how long anything takes. Every loop is bounded in count
//! and in time.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::{Client, Server};
use serde_json::Value;

/// Small segments and frequent snapshots, so a few hundred writes rotate, snapshot and purge.
const ARGS: &[&str] = &[
    "--shards",
    "1",
    "--wal-segment-bytes",
    "65536",
    "--snapshot-entries",
    "40",
];
/// Most writes one scenario makes before its point must have fired.
const MAX_WRITES: u32 = 4000;
/// Longest one scenario may write before its point must have fired.
const MAX_WRITING: Duration = Duration::from_secs(120);
/// Exit status of a node whose disk failed (`node::raft::EXIT_DISK_FAILED`).
const EXIT_DISK_FAILED: i32 = 74;
/// SIGABRT: what `return(abort)` at a point does to the process.
const SIGABRT: i32 = 6;

/// The address of write `i` (127.0.x.y: persistent instances are probed, so loopback only).
fn instance(i: u32) -> String {
    format!(
        "127.0.{}.{}:{}",
        1 + i / 250,
        1 + i % 250,
        20_000 + i % 1000
    )
}

/// Persistent instances of `svc` listed by `s`, as `ip:port`.
fn listed(s: &Server, svc: &str) -> BTreeSet<String> {
    let (st, b) = s.request(
        "GET",
        &format!("/nacos/v1/ns/instance/list?serviceName={svc}&healthyOnly=false"),
        "",
    );
    assert_eq!(st, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    v["hosts"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .map(|h| format!("{}:{}", h["ip"].as_str().unwrap(), h["port"]))
                .collect()
        })
        .unwrap_or_default()
}

/// What one scenario saw before the server stopped.
struct Crash {
    /// The stopped server (its data dir is kept for the restart).
    server: Server,
    /// Writes answered `ok`.
    acked: BTreeSet<String>,
    /// How the process ended.
    status: ExitStatus,
}

/// Starts a server with `FAILPOINTS=failpoints` and registers persistent instances one at a
/// time until the process ends; fails if it is still running after [`MAX_WRITES`] writes or
/// [`MAX_WRITING`].
fn write_until_stopped(failpoints: &str) -> Crash {
    let mut server = Server::start_with_env(ARGS, &[("FAILPOINTS", failpoints)]);
    let client = Client::new(server.addr);
    let mut acked = BTreeSet::new();
    let start = Instant::now();
    for i in 0..MAX_WRITES {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Crash {
                server,
                acked,
                status,
            };
        }
        assert!(
            start.elapsed() < MAX_WRITING,
            "{failpoints}: still running after {i} writes in {MAX_WRITING:?}"
        );
        let addr = instance(i);
        let (ip, port) = addr.split_once(':').unwrap();
        let path =
            format!("/nacos/v1/ns/instance?serviceName=crash&ip={ip}&port={port}&ephemeral=false");
        if let Some((200, body)) = client.request("POST", &path, "") {
            assert_eq!(body, "ok");
            acked.insert(addr);
        }
    }
    // The server may be dying right after the last write: give it a bounded moment.
    for _ in 0..100 {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Crash {
                server,
                acked,
                status,
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{failpoints}: the point never stopped the server ({MAX_WRITES} writes)");
}

/// Restarts on the crashed server's data dir without failpoints and checks that every
/// acknowledged write is listed and that the node takes writes again.
fn restart_keeps_every_ack(crash: Crash, what: &str) {
    assert!(
        !crash.acked.is_empty(),
        "{what}: nothing was acknowledged first"
    );
    eprintln!(
        "{what}: {} writes acknowledged, then {:?}",
        crash.acked.len(),
        crash.status
    );
    let (_, dir) = crash.server.take_dir();
    let s = Server::launch(dir, ARGS, &[]);
    let got = listed(&s, "crash");
    let lost: Vec<_> = crash.acked.difference(&got).collect();
    assert!(
        lost.is_empty(),
        "{what}: acknowledged writes lost: {lost:?}"
    );
    let (st, b) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=crash&ip=127.0.0.1&port=1&ephemeral=false",
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (200, "ok"),
        "{what}: writes after the restart"
    );
}

/// S2: abort at each persistence boundary, restart, nothing acknowledged is lost. The append
/// and sync points are hit by every write, so they fire after some writes were acknowledged.
#[test]
fn abort_at_each_persistence_boundary_loses_no_acknowledged_write() {
    for point in [
        "wal::before_append=60*off->return(abort)",
        "wal::after_append=60*off->return(abort)",
        "wal::before_sync=30*off->return(abort)",
        "wal::after_sync=30*off->return(abort)",
        "wal::rotate::before_rename=return(abort)",
        "snapshot::before_rename=return(abort)",
        "snapshot::after_rename=return(abort)",
        "wal::purge::before_remove=return(abort)",
    ] {
        let crash = write_until_stopped(point);
        assert_eq!(
            crash.status.signal(),
            Some(SIGABRT),
            "{point}: ended by {:?}, not at the point",
            crash.status
        );
        restart_keeps_every_ack(crash, point);
    }
}

/// S8: an EIO from a WAL write or fsync stops the node (exit 74) instead of retrying the fsync
/// or reopening the log; the restart keeps every acknowledged write.
#[test]
fn eio_on_write_or_fsync_stops_the_node() {
    for point in [
        "wal::before_append=60*off->return(eio)",
        "wal::before_sync=30*off->return(eio)",
    ] {
        let crash = write_until_stopped(point);
        assert_eq!(
            crash.status.code(),
            Some(EXIT_DISK_FAILED),
            "{point}: ended by {:?}",
            crash.status
        );
        restart_keeps_every_ack(crash, point);
    }
}

/// S9: with every fsync 300 ms slow, writes are still acknowledged only when durable: after a
/// kill -9 each acknowledged write is listed, and lists are answered while syncs are slow.
#[test]
fn slow_fsync_keeps_writes_correct() {
    let mut s = Server::start_with_env(ARGS, &[("FAILPOINTS", "wal::before_sync=sleep(300)")]);
    let mut acked = BTreeSet::new();
    for i in 0..8 {
        let addr = instance(i);
        let (ip, port) = addr.split_once(':').unwrap();
        let (st, b) = s.request(
            "POST",
            &format!("/nacos/v1/ns/instance?serviceName=crash&ip={ip}&port={port}&ephemeral=false"),
            "",
        );
        assert_eq!((st, b.as_str()), (200, "ok"));
        acked.insert(addr);
        assert_eq!(listed(&s, "crash"), acked);
    }
    // kill -9, then a new process on the same data dir (on a fresh port: a port given up can
    // be taken by another test's server in between).
    let _ = s.child.kill();
    let _ = s.child.wait();
    let (_, dir) = s.take_dir();
    let s = Server::launch(dir, ARGS, &[]);
    assert_eq!(listed(&s, "crash"), acked);
}
