//! Test harness: starts the real `muster` binary on loopback with an ephemeral port and a
//! temporary data dir, and talks to it over real sockets.
//!
//! Every wait here is bounded: a server that does not print its listening line within
//! `START_TIMEOUT` fails the test instead of hanging it.
#![allow(dead_code)]

pub mod cluster;
pub mod cs;
pub mod linear;
pub mod stock;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to print `muster listening on ADDR`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Socket timeout for every request the harness makes.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `muster` process, killed on drop.
pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
    pub data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `muster --listen 127.0.0.1:0 --data-dir <tmp>` plus `extra` arguments.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with_env(extra, &[])
    }

    /// Like [`Server::start`] with extra environment variables.
    pub fn start_with_env(extra: &[&str], envs: &[(&str, &str)]) -> Server {
        let data_dir = tempfile::tempdir().expect("create temp data dir");
        Self::launch(data_dir, extra, envs)
    }

    /// Starts `muster` on an existing data dir and waits until it is ready.
    pub fn launch(data_dir: tempfile::TempDir, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        Self::launch_on("127.0.0.1:0", data_dir, extra, envs)
    }

    /// Like [`Server::launch`] on a given `--listen` address (a fixed port for restarts).
    pub fn launch_on(
        listen: &str,
        data_dir: tempfile::TempDir,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Server {
        let mut child = command_on(listen, data_dir.path(), extra, envs)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn muster binary");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if !sent {
                    if let Some(rest) = line.strip_prefix("muster listening on ") {
                        let _ = tx.send(rest.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(a) => a.parse().expect("listening address parses"),
            Err(_) => {
                let _ = child.kill();
                match child.wait() {
                    Ok(st) if st.code().is_some() => {
                        panic!("muster exited with {st} before listening (its stderr is above)")
                    }
                    _ => panic!(
                        "muster did not report its listening address within {START_TIMEOUT:?}"
                    ),
                }
            }
        };
        let s = Server {
            addr,
            child,
            data_dir,
        };
        s.wait_ready();
        s
    }

    /// Stops this server with SIGKILL and starts a new one on the same data dir and the same
    /// port (as systemd would: the old process's sockets are still around).
    pub fn kill_and_restart(mut self, extra: &[&str]) -> Server {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (addr, dir) = self.take_dir();
        Self::launch_on(&addr.to_string(), dir, extra, &[])
    }

    /// Stops this server with SIGTERM (exit 0 expected) and starts a new one on the same dir
    /// and the same port.
    pub fn restart(mut self, extra: &[&str]) -> Server {
        let st = self.terminate().expect("muster exits after SIGTERM");
        assert!(st.success(), "exit status {st:?}");
        let (addr, dir) = self.take_dir();
        Self::launch_on(&addr.to_string(), dir, extra, &[])
    }

    /// Consumes a stopped server: its address and its data dir (kept on disk).
    pub fn take_dir(mut self) -> (SocketAddr, tempfile::TempDir) {
        let dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap());
        (self.addr, dir)
    }

    /// Waits (at most [`START_TIMEOUT`]) until readiness answers 200.
    pub fn wait_ready(&self) {
        let start = std::time::Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if self
                .request("GET", "/nacos/v1/console/health/readiness", "")
                .0
                == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("muster did not become ready within {START_TIMEOUT:?}");
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends one HTTP/1.1 request (Connection: close) and returns (status, body).
    pub fn request(&self, method: &str, path_and_query: &str, body: &str) -> (u16, String) {
        self.request_with(method, path_and_query, &[], body)
    }

    /// Like [`Server::request`] with extra headers.
    pub fn request_with(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let mut raw = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            raw.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let (status, body) = self.raw(raw.as_bytes());
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Writes `bytes` on a fresh connection and reads the whole reply until the server closes.
    /// Returns (status, body); status 0 means the server closed without a status line.
    pub fn raw(&self, bytes: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).expect("connect to muster");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        parse_response(&out)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.signal(15)
    }

    /// Sends `sig` and waits (at most 10 s) for the exit status.
    pub fn signal(&mut self, sig: i32) -> Option<std::process::ExitStatus> {
        unsafe {
            libc_kill(self.child.id() as i32, sig);
        }
        for _ in 0..200 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// A keep-alive-free client that reports failures instead of panicking (for crash tests).
pub struct Client {
    addr: SocketAddr,
}

impl Client {
    /// A client of `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr }
    }

    /// One request; `None` if the connection failed or the reply was cut short.
    pub fn request(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).ok()?;
        s.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
        let raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        s.write_all(raw.as_bytes()).ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        let (st, b) = parse_response(&out);
        (st != 0).then(|| (st, String::from_utf8_lossy(&b).into_owned()))
    }
}

/// A loopback address with a port that was free a moment ago (bound and released), for tests
/// that must restart on one fixed port.
pub fn free_loopback_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address")
}

/// The `muster` command on `data_dir` (listening on 127.0.0.1:0), stderr inherited.
pub fn command(data_dir: &std::path::Path, extra: &[&str], envs: &[(&str, &str)]) -> Command {
    command_on("127.0.0.1:0", data_dir, extra, envs)
}

/// The `muster` command on `data_dir` listening on `listen`, stderr inherited.
pub fn command_on(
    listen: &str,
    data_dir: &std::path::Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_muster"));
    c.arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    c
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Splits a raw HTTP/1.1 response into (status, body), de-chunking if needed.
/// The `ip`s of a list answer's `hosts`, sorted.
#[allow(dead_code)]
/// splitmix64: a small deterministic generator, so a random test replays from its seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The `muster-wal` binary next to the server's (built first when missing).
pub fn muster_wal() -> std::path::PathBuf {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_muster"));
    let path = exe.with_file_name("muster-wal");
    if !path.exists() {
        let st = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "muster-wal"])
            .status()
            .expect("run cargo build -p muster-wal");
        assert!(st.success());
    }
    path
}

pub fn host_ips(list: &serde_json::Value) -> Vec<String> {
    let mut ips: Vec<String> = list["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["ip"].as_str().expect("ip").to_string())
        .collect();
    ips.sort();
    ips
}

pub fn parse_response(out: &[u8]) -> (u16, Vec<u8>) {
    let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, out.to_vec());
    };
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = out[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[(eol + 2 + n + 2).min(b.len())..];
    }
    out
}

/// Runs `cmd` to completion, or kills it after `timeout`. Returns (exit code, stdout, stderr,
/// timed out). Output is drained on threads so a chatty child cannot block on a full pipe.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> (Option<i32>, String, String, bool) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {cmd:?}: {e} (`.ci/run` installs the test clients)")
        });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let start = std::time::Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the child") {
            break Some(st);
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    (status.and_then(|s| s.code()), stdout, stderr, timed_out)
}

/// `program` with no proxy variables (a proxy must never capture 127.0.0.1 traffic), stdin
/// closed: the base command for the stock-client scripts.
pub fn loopback_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null());
    cmd
}

/// Reads one response with a `Content-Length` from a keep-alive stream: (status, head lines
/// lower-cased, body).
pub fn read_response(r: &mut impl std::io::BufRead) -> (u16, Vec<String>, String) {
    let mut status = 0;
    let mut lines = Vec::new();
    let mut len = 0;
    for _ in 0..64 {
        let mut line = String::new();
        r.read_line(&mut line).expect("response head");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(rest) = l.strip_prefix("HTTP/1.1 ") {
            status = rest[..3].parse().unwrap();
        } else if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
        lines.push(l.to_ascii_lowercase());
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("response body");
    (status, lines, String::from_utf8(body).unwrap())
}

/// A tmpfs mounted for one test and unmounted on drop (the temp dir holding the mount point
/// is removed after the unmount).
#[allow(dead_code)]
pub struct Tmpfs(pub std::path::PathBuf, tempfile::TempDir);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `768k`); needs root.
    #[allow(dead_code)]
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .status()
            .expect("run mount (the disk-full test needs root to mount a small tmpfs)");
        assert!(
            st.success(),
            "mounting a {size} tmpfs failed: the test needs root"
        );
        Tmpfs(mnt, dir)
    }

    /// Changes its size (e.g. to give space back).
    #[allow(dead_code)]
    pub fn resize(&self, size: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// CPU time process `pid` has used so far (user + system), in clock ticks (`/proc/PID/stat`).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("comm in /proc/PID/stat") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
