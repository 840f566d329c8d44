//! Process-level behaviour: expiry with test-configured short timeouts, graceful shutdown on
//! SIGTERM and SIGINT with in-flight requests finished, config file and environment.

mod common;

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

#[test]
fn sigterm_finishes_in_flight_work_and_exits_zero() {
    let mut s = Server::start(&["--shards", "2"]);
    // Hold an idle keep-alive connection open: shutdown must not wait for it forever.
    let idle = std::net::TcpStream::connect(s.addr).unwrap();
    let (st, _) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=g&ip=1.1.1.1&port=1",
        "",
    );
    assert_eq!(st, 200);
    let status = s.terminate().expect("muster exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    drop(idle);
    assert!(
        std::net::TcpStream::connect(s.addr).is_err(),
        "no longer accepting"
    );
}

#[test]
fn sigterm_waits_for_a_request_still_arriving() {
    use std::io::{Read, Write};
    let mut s = Server::start(&["--shards", "2"]);
    let body = "serviceName=late&ip=1.1.1.1&port=1";
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{}", body.len(), &body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(s.child.id() as i32, 15) };
    std::thread::sleep(Duration::from_millis(200));
    c.write_all(&body.as_bytes()[10..]).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
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
