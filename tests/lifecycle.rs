//! Process-level behaviour: expiry with test-configured short timeouts, graceful shutdown on
//! SIGTERM and SIGINT with in-flight requests finished, config file and environment.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;

fn hosts(s: &Server, svc: &str) -> Vec<serde_json::Value> {
    let (_, b) = s.request(
        "GET",
        &format!("/nacos/v1/ns/instance/list?serviceName={svc}"),
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    v["hosts"].as_array().cloned().unwrap_or_default()
}

#[test]
fn instances_expire_when_beats_stop() {
    let s = Server::start(&[
        "--shards",
        "2",
        "--heartbeat-timeout-ms",
        "600",
        "--ip-delete-timeout-ms",
        "1200",
    ]);
    let (st, _) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=e&ip=1.1.1.1&port=1",
        "",
    );
    assert_eq!(st, 200);
    let (st, _) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=e&ip=2.2.2.2&port=1",
        "",
    );
    assert_eq!(st, 200);
    // Keep 2.2.2.2 beating; let 1.1.1.1 lapse.
    let start = Instant::now();
    let mut saw_unhealthy = false;
    while start.elapsed() < Duration::from_secs(5) {
        s.request(
            "PUT",
            "/nacos/v1/ns/instance/beat?serviceName=e&ip=2.2.2.2&port=1",
            "",
        );
        let h = hosts(&s, "e");
        if h.iter()
            .any(|x| x["ip"] == "1.1.1.1" && x["healthy"] == false)
        {
            saw_unhealthy = true;
        }
        if h.len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        saw_unhealthy,
        "1.1.1.1 should be unhealthy between 600 and 1200 ms"
    );
    let h = hosts(&s, "e");
    assert_eq!(h.len(), 1, "1.1.1.1 should be gone: {h:?}");
    assert_eq!(h[0]["ip"], "2.2.2.2");
    let (_, m) = s.request("GET", "/metrics", "");
    assert!(
        m.lines()
            .any(|l| l.starts_with("muster_instance_expirations_total") && l.ends_with(" 1")),
        "{m}"
    );
}

/// The sum over shards of a per-shard metric.
fn metric_sum(s: &Server, name: &str) -> u64 {
    let (_, m) = s.request("GET", "/metrics", "");
    m.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn the_mass_expiry_guard_pauses_removals_when_most_beats_stop() {
    let s = Server::start(&[
        "--shards",
        "1",
        "--heartbeat-timeout-ms",
        "1500",
        "--ip-delete-timeout-ms",
        "3000",
    ]);
    for i in 0..20 {
        let (st, _) = s.request(
            "POST",
            &format!("/nacos/v1/ns/instance?serviceName=g&ip=10.9.0.{i}&port=1"),
            "",
        );
        assert_eq!(st, 200);
    }
    let beat = |range: std::ops::Range<u32>| {
        for i in range {
            s.request(
                "PUT",
                &format!("/nacos/v1/ns/instance/beat?serviceName=g&ip=10.9.0.{i}&port=1"),
                "",
            );
        }
    };
    // 16 of 20 stop beating at once. Well past the 3 s delete timeout, all 20 are still
    // listed and the guard's metric says why. (Timeouts are long enough that a slow, loaded
    // machine still beats the other 4 in time.)
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(5000) {
        beat(16..20);
        std::thread::sleep(Duration::from_millis(100));
    }
    let h = hosts(&s, "g");
    assert_eq!(h.len(), 20, "{h:?}");
    assert!(h.iter().filter(|x| x["healthy"] == false).count() >= 16);
    assert_eq!(metric_sum(&s, "muster_expiry_paused"), 1);
    assert!(metric_sum(&s, "muster_expiry_deferred_total") >= 16);
    assert_eq!(metric_sum(&s, "muster_instance_expirations_total"), 0);
    // The beats come back: everything is healthy, the guard lifts, nothing was removed.
    let start = Instant::now();
    let mut healthy = 0;
    while start.elapsed() < Duration::from_secs(10) {
        beat(0..20);
        healthy = hosts(&s, "g")
            .iter()
            .filter(|x| x["healthy"] == true)
            .count();
        if healthy == 20 && metric_sum(&s, "muster_expiry_paused") == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(healthy, 20);
    assert_eq!(metric_sum(&s, "muster_expiry_paused"), 0);
    assert_eq!(metric_sum(&s, "muster_instance_expirations_total"), 0);
}

/// Polls (every 10 ms, at most `within`) until connecting to `s` is refused: every shard has
/// dropped its listener, and so has begun shutdown. Fails if `s` exits first.
fn wait_until_refused(s: &mut Server, within: Duration) {
    let start = Instant::now();
    for _ in 0..10_000 {
        assert!(
            s.child.try_wait().unwrap().is_none(),
            "muster exited while a request was still in flight"
        );
        // Refused, not merely unanswered: a listener that is kept but no longer accepted from
        // would let connects time out once its backlog is full.
        match TcpStream::connect_timeout(&s.addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {}
        }
        assert!(
            start.elapsed() < within,
            "muster still accepts connections {within:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("muster still accepts connections after 10000 attempts");
}

/// Reads the interim `100 Continue` (and nothing more) from `c`.
fn read_continue(c: &mut TcpStream) {
    let want = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0u8; want.len()];
    c.read_exact(&mut got)
        .expect("100 Continue before the body is read");
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

#[test]
fn sigterm_finishes_in_flight_work_and_exits_zero() {
    let mut s = Server::start(&["--shards", "2"]);
    // An idle keep-alive connection, known to the server (it has answered on it): shutdown must
    // close it at once rather than wait for it.
    let mut idle = TcpStream::connect(s.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        idle,
        "GET /nacos/v1/console/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let (st, _, _) = common::read_response(&mut BufReader::new(idle.try_clone().unwrap()));
    assert_eq!(st, 200);
    // In flight at SIGTERM: a persistent register (a raft write with fdatasync) whose head is
    // read (the server answered `100 Continue`) and whose body is half sent.
    let body = "serviceName=inflight&ip=127.0.0.1&port=1&ephemeral=false";
    let half = body.len() / 2;
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{}", body.len(), &body[..half]).unwrap();
    read_continue(&mut c);
    unsafe { libc::kill(s.child.id() as i32, 15) };
    // While the request is in flight the process drains: it no longer accepts...
    wait_until_refused(&mut s, Duration::from_secs(10));
    // ...and has closed the idle connection, without an answer.
    let mut rest = Vec::new();
    assert_eq!(
        idle.read_to_end(&mut rest).map_err(|e| e.kind()),
        Ok(0),
        "the idle connection is closed at shutdown: {}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "muster exited with a request in flight"
    );
    // The rest of the body arrives: the request is answered in full, and the connection
    // closes after it.
    c.write_all(&body.as_bytes()[half..]).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).expect("the answer, then close");
    let (st, b) = common::parse_response(&out);
    assert_eq!(
        (st, String::from_utf8_lossy(&b).into_owned()),
        (200, "ok".to_string()),
        "the in-flight request is answered in full"
    );
    let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(head.contains("connection: close"), "{head}");
    let status = s.terminate().expect("muster exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    // The work was finished, not only answered: the write is durable.
    let dir = std::mem::replace(&mut s.data_dir, tempfile::tempdir().unwrap());
    drop(s);
    let s = Server::launch(dir, &["--shards", "2"], &[]);
    let h = hosts(&s, "inflight");
    assert_eq!(
        h.len(),
        1,
        "the in-flight persistent register survives: {h:?}"
    );
    assert_eq!(
        (h[0]["ip"].as_str(), h[0]["port"].as_u64()),
        (Some("127.0.0.1"), Some(1))
    );
}

#[test]
fn sigterm_waits_for_a_request_still_arriving() {
    let mut s = Server::start(&["--shards", "2"]);
    let body = "serviceName=late&ip=1.1.1.1&port=1";
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // One write: a whole keep-alive request, then the head and 10 body bytes of the next. The
    // answer to the first shows that the server has read from the connection, so the second,
    // which came in the same segment, has begun when SIGTERM arrives.
    write!(c, "GET /nacos/v1/console/health/liveness HTTP/1.1\r\nHost: x\r\n\r\nPOST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{}", body.len(), &body[..10]).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let (st, _, b) = common::read_response(&mut r);
    assert_eq!((st, b.as_str()), (200, "OK"));
    unsafe { libc::kill(s.child.id() as i32, 15) };
    wait_until_refused(&mut s, Duration::from_secs(10));
    c.write_all(&body.as_bytes()[10..]).unwrap();
    let mut out = Vec::new();
    let _ = r.read_to_end(&mut out);
    let (st, b) = common::parse_response(&out);
    assert_eq!(
        (st, String::from_utf8_lossy(&b).into_owned()),
        (200, "ok".to_string())
    );
    let status = s.signal(15).expect("muster exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigint_exits_zero() {
    let mut s = Server::start(&["--shards", "1"]);
    let status = s.signal(2).expect("muster exits after SIGINT");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn config_file_and_environment_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("muster.toml");
    std::fs::write(&path, "shards = 1\nheartbeat_interval_ms = 1234\n").unwrap();
    let s = Server::start_with_env(
        &["--config", path.to_str().unwrap()],
        &[("MUSTER_HEARTBEAT_INTERVAL_MS", "999")],
    );
    let (_, b) = s.request("GET", "/nacos/v1/ns/operator/switches", "");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        v["clientBeatInterval"], 1234,
        "the file beats the environment"
    );
    let (_, m) = s.request("GET", "/metrics", "");
    assert!(m.contains("muster_services{shard=\"0\"}") && !m.contains("shard=\"1\""));
}

#[test]
fn a_second_server_on_a_port_in_use_refuses_to_start() {
    let s = Server::start(&["--shards", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args([
            "--listen",
            &s.addr.to_string(),
            "--shards",
            "1",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: 100 polls of 100 ms.
    let mut status = None;
    for _ in 0..100 {
        status = second.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = second.kill();
        panic!("a second server bound {} and kept running", s.addr);
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("another process is already listening"),
        "{err}"
    );
    // The first one still serves.
    assert_eq!(s.request("GET", "/nacos/v1/ns/operator/metrics", "").0, 200);
}

#[test]
fn bad_config_is_a_clear_startup_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["--shards", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards must be 1..=1024"));
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--shards",
        "--config",
        "--heartbeat-timeout-ms",
        "--max-connections",
        "--max-body-bytes",
        "--idle-timeout-ms",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}
