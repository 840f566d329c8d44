//! Operations: a restart on the same fixed port after SIGTERM or kill -9 (whatever sockets the
//! old process left), a second live server refused, log output fit for journald, and the WAL
//! recovery modes at start.
//!
//! Every test here restarts on one fixed port: port 0 hides exactly the bugs these look for.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{command_on, free_loopback_addr, read_response, run_bounded, Server};

/// How long a restarted server may take to answer. Generous for a loaded 2-core debug run;
/// the defect this guards against kept failing for about 60 s.
const SERVE_DEADLINE: Duration = Duration::from_secs(10);

/// Polls readiness on `addr` until it answers 200 or `SERVE_DEADLINE` passes; returns how long
/// it took.
fn time_to_serve(addr: SocketAddr, child: &mut std::process::Child) -> Duration {
    let start = Instant::now();
    while start.elapsed() < SERVE_DEADLINE {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the restarted server exited with {st} instead of serving {addr}");
        }
        let c = common::Client::new(addr);
        if let Some((200, _)) = c.request("GET", "/nacos/v1/console/health/readiness", "") {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the restarted server did not serve {addr} within {SERVE_DEADLINE:?}");
}

/// 32 keep-alive clients each make a request, then SIGTERM closes their connections from the
/// server side (leaving FIN_WAIT / TIME_WAIT sockets on the port); a new process binds the same
/// port at once and serves. Twice, so the second restart also meets the first one's leftovers.
#[test]
fn restart_after_sigterm_on_the_same_port_with_keep_alive_clients() {
    let addr = free_loopback_addr();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::launch_on(&addr.to_string(), dir, &["--shards", "2"], &[]);
    for restart in 0..2 {
        let mut clients: Vec<BufReader<TcpStream>> = (0..32)
            .map(|i| {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
                write!(
                    c,
                    "POST /nacos/v1/ns/instance?serviceName=ka&ip=10.0.0.{i}&port=80 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                )
                .unwrap();
                let mut r = BufReader::new(c);
                let (st, _, body) = read_response(&mut r);
                assert_eq!((st, body.as_str()), (200, "ok"));
                r
            })
            .collect();
        let st = s.terminate().expect("exits after SIGTERM");
        assert!(st.success(), "exit status {st:?}");
        // The server closed every kept-alive connection: each client reads EOF.
        for (i, c) in clients.iter_mut().enumerate() {
            let mut rest = Vec::new();
            let n = c.read_to_end(&mut rest);
            assert!(
                matches!(n, Ok(0)),
                "client {i}: expected the server's close, got {n:?}"
            );
        }
        let (addr2, dir) = s.take_dir();
        assert_eq!(addr2, addr);
        let t = Instant::now();
        s = Server::launch_on(&addr.to_string(), dir, &["--shards", "2"], &[]);
        eprintln!(
            "restart {restart} after SIGTERM: ready in {:?}",
            t.elapsed()
        );
        drop(clients);
    }
}

/// kill -9 while clients register and list over keep-alive connections; the new process binds
/// the same port at once and serves.
#[test]
fn restart_after_kill_9_under_load_on_the_same_port() {
    let addr = free_loopback_addr();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::launch_on(&addr.to_string(), dir, &["--shards", "2"], &[]);
    for round in 0..3 {
        let stop = AtomicBool::new(false);
        let answered = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for w in 0..8 {
                let (stop, answered) = (&stop, &answered);
                scope.spawn(move || {
                    let Ok(c) = TcpStream::connect(addr) else {
                        return;
                    };
                    let _ = c.set_read_timeout(Some(common::IO_TIMEOUT));
                    let mut r = BufReader::new(c);
                    for i in 0..100_000u32 {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let req = if i % 2 == 0 {
                            format!("POST /nacos/v1/ns/instance?serviceName=load{w}&ip=10.1.{w}.{}&port=80 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", i % 250)
                        } else {
                            format!("GET /nacos/v1/ns/instance/list?serviceName=load{w} HTTP/1.1\r\nHost: x\r\n\r\n")
                        };
                        if r.get_mut().write_all(req.as_bytes()).is_err() {
                            return;
                        }
                        // A read that fails is the kill; anything else must be a 200.
                        let mut line = String::new();
                        if std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            if std::io::BufRead::read_line(&mut r, &mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            if h == "\r\n" {
                                break;
                            }
                            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            let start = Instant::now();
            while answered.load(Ordering::SeqCst) < 400 && start.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = s.child.kill();
            let _ = s.child.wait();
            stop.store(true, Ordering::SeqCst);
        });
        assert!(
            answered.load(Ordering::SeqCst) >= 400,
            "round {round}: the load never got going"
        );
        let (_, dir) = s.take_dir();
        let t = Instant::now();
        s = Server::launch_on(&addr.to_string(), dir, &["--shards", "2"], &[]);
        eprintln!(
            "round {round}: restart after kill -9: ready in {:?}",
            t.elapsed()
        );
        assert_eq!(s.addr, addr);
    }
}

/// A second server on a live address is refused with a clear message and a failure status,
/// also when it has its own data dir (so the data-dir lock cannot be what stops it), and also
/// for the wildcard address of the same port.
#[test]
fn a_second_live_server_on_the_same_address_is_refused() {
    let addr = free_loopback_addr();
    let s = Server::launch_on(&addr.to_string(), tempfile::tempdir().unwrap(), &[], &[]);
    for listen in [addr.to_string(), format!("0.0.0.0:{}", addr.port())] {
        let other = tempfile::tempdir().unwrap();
        let (code, _, err, timed_out) = run_bounded(
            command_on(&listen, other.path(), &[], &[]),
            Duration::from_secs(20),
        );
        assert!(!timed_out, "the second server must exit, not serve");
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "cannot listen on {listen}: another process is already listening on {addr}"
            )),
            "{err}"
        );
    }
    // The first one still serves.
    assert_eq!(
        s.request("GET", "/nacos/v1/console/health/readiness", "").0,
        200
    );
}

/// Runs a server with stderr to a file until it is ready, then SIGTERM; returns the file.
fn stderr_of_a_run(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let addr = free_loopback_addr();
    let data = dir.path().join("data");
    let mut child = command_on(&addr.to_string(), &data, extra, &[])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    time_to_serve(addr, &mut child);
    unsafe { libc_kill(child.id() as i32, 15) };
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(child.try_wait().unwrap().is_some_and(|s| s.success()));
    std::fs::read_to_string(&log).unwrap()
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// stderr that is a file gets no ANSI escapes; the lines still say start, ready and stop.
#[test]
fn text_logs_to_a_file_carry_no_escape_bytes() {
    let text = stderr_of_a_run(&[]);
    assert!(!text.contains('\x1b'), "escape byte in:\n{text}");
    for want in ["muster starting", "muster is ready", "muster stopped"] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
}

/// `--log-format json`: one parseable JSON object per line, with level, message and fields.
#[test]
fn json_logs_are_one_object_per_line() {
    let text = stderr_of_a_run(&["--log-format", "json"]);
    let mut messages = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
        if v["fields"]["message"] == "muster is ready" {
            assert!(v["fields"]["listen"].is_string() && v["fields"]["data_dir"].is_string());
        }
    }
    for want in ["muster starting", "muster is ready", "muster stopped"] {
        assert!(messages.iter().any(|m| m == want), "{messages:?}");
    }
}

/// The last segment of `dir/raft` and the offsets of its last entry record and of every record
/// after it (the hard state written with it), found with `muster-wal dump`.
fn last_entry(data: &Path) -> (std::path::PathBuf, Vec<usize>) {
    let out = std::process::Command::new(muster_wal())
        .arg("dump")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .rposition(|l| l.contains(" entry "))
        .expect("an entry");
    let seg = lines[at].split_once('@').unwrap().0;
    let offsets = lines[at..]
        .iter()
        .map(|l| {
            let (s, rest) = l.split_once('@').unwrap();
            assert_eq!(s, seg, "the tail is in one segment");
            rest.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    (data.join("raft").join(seg), offsets)
}

fn muster_wal() -> std::path::PathBuf {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_muster"));
    let p = exe.with_file_name("muster-wal");
    assert!(
        p.exists(),
        "{} is built by cargo test --workspace",
        p.display()
    );
    p
}

/// A CRC mismatch in the final record that is not a zero sector: the default (`strict`)
/// refuses to start naming the file and offset; `--wal-recovery truncate-tail` starts, logs the
/// dropped range and keeps `.broken`; every earlier persistent instance is still there.
#[test]
fn a_corrupt_final_record_refuses_strict_and_starts_with_truncate_tail() {
    let addr = free_loopback_addr();
    let s = Server::launch_on(&addr.to_string(), tempfile::tempdir().unwrap(), &[], &[]);
    for i in 1..=5 {
        let (st, b) = s.request(
            "POST",
            &format!(
                "/nacos/v1/ns/instance?serviceName=db&ip=127.0.0.{i}&port=3306&ephemeral=false"
            ),
            "",
        );
        assert_eq!((st, b.as_str()), (200, "ok"));
    }
    let mut s = s;
    assert!(s.terminate().unwrap().success());
    let (_, dir) = s.take_dir();
    // Damage the last entry and the hard state after it (so nothing valid follows the damage),
    // inside their payloads: not a zeroed sector, so not a torn write.
    let (seg, offsets) = last_entry(dir.path());
    assert!(
        offsets.len() >= 2,
        "an entry and its hard state: {offsets:?}"
    );
    let off = offsets[0];
    let mut bytes = std::fs::read(&seg).unwrap();
    for o in &offsets {
        bytes[o + 20] ^= 0x5a;
    }
    std::fs::write(&seg, &bytes).unwrap();

    let mut strict = command_on(&addr.to_string(), dir.path(), &[], &[]);
    strict.env("RUST_LOG", "info");
    let (code, _, err, timed_out) = run_bounded(strict, Duration::from_secs(20));
    assert!(!timed_out && code == Some(1), "strict must refuse: {err}");
    let seg_name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains(seg_name)
            && err.contains(&format!("at byte {off}"))
            && err.contains("crc mismatch"),
        "{err}"
    );
    assert!(
        err.contains("refusing to start"),
        "logged as a refusal: {err}"
    );
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "a refusal changes nothing"
    );

    let mut child = command_on(
        &addr.to_string(),
        dir.path(),
        &["--wal-recovery", "truncate-tail"],
        &[],
    )
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    time_to_serve(addr, &mut child);
    let c = common::Client::new(addr);
    let (st, body) = c
        .request("GET", "/nacos/v1/ns/instance/list?serviceName=db", "")
        .unwrap();
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(
        hosts.len(),
        4,
        "the 4 earlier persistent instances survive: {body}"
    );
    unsafe { libc_kill(child.id() as i32, 15) };
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = log.join().unwrap();
    assert!(
        log.contains("dropped corrupt records at the end of the log")
            && log.contains(&format!("offset={off}"))
            && log.contains("dropped_entries="),
        "{log}"
    );
    assert!(Path::new(&format!("{}.broken", seg.display())).exists());
    assert_eq!(
        std::fs::read(format!("{}.broken", seg.display())).unwrap(),
        bytes
    );
    // The repaired log now opens in the default mode.
    let s = Server::launch_on(&addr.to_string(), dir, &[], &[]);
    assert_eq!(
        s.request("GET", "/nacos/v1/ns/instance/list?serviceName=db", "")
            .0,
        200
    );
}
