//! The cluster test harness: N real `muster` processes on 127.0.0.1..N:8848 inside a private
//! network namespace, with links cut by `nft` drop rules on address pairs.
//!
//! A test re-executes its test binary for itself under `unshare -n` ([`in_netns`]; root; CI
//! installs `nftables`), brings `lo` up there and runs. Nodes bind their outgoing peer
//! connections to their own member address, so one address pair is exactly one link; the
//! test's own requests come from [`CLIENT_IP`], which no rule names. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Marks the re-executed child: it is inside the namespace.
pub const IN_NETNS: &str = "MUSTER_TEST_IN_NETNS";
pub const SECRET: &str = "cluster-test-secret-0123456789abcdef";
/// The address test requests come from.
pub const CLIENT_IP: &str = "127.0.0.100";
/// Peer ping period of the test nodes, in ms.
pub const PING_MS: u64 = 200;

/// Runs `test` inside a fresh network namespace: re-executes this binary under `unshare -n`
/// for the named test and asserts that it passed there. Returns true in the child, which then
/// runs the test body.
pub fn in_netns(test: &str) -> bool {
    in_netns_for(test, Duration::from_secs(120))
}

/// [`in_netns`] with a time limit other than 120 s.
pub fn in_netns_for(test: &str, limit: Duration) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        let st = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip link set lo up failed");
        return true;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new("unshare");
    cmd.arg("-n")
        .arg("--")
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(IN_NETNS, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (code, out, err, timed_out) = super::run_bounded(cmd, limit);
    println!("{out}");
    eprintln!("{err}");
    assert!(
        !timed_out,
        "{test} in the namespace did not finish in {limit:?}"
    );
    assert_eq!(code, Some(0), "{test} failed inside the network namespace");
    assert!(
        out.contains("1 passed"),
        "{test} did not run in the namespace:\n{out}"
    );
    false
}

/// One cluster node.
pub struct Node {
    pub addr: SocketAddr,
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    /// Extra server arguments.
    pub extra: Vec<String>,
}

pub fn member(i: usize) -> SocketAddr {
    format!("127.0.0.{i}:8848").parse().unwrap()
}

pub fn members(n: usize) -> String {
    (1..=n)
        .map(|i| member(i).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Node {
    /// Starts node `i` of an `n`-member cluster with `secret`.
    pub fn start(i: usize, n: usize, secret: &str) -> Node {
        Self::start_with(i, n, secret, &[])
    }

    /// [`Node::start`] with extra server arguments.
    pub fn start_with(i: usize, n: usize, secret: &str, extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let mut node = Node {
            addr: member(i),
            child: None,
            dir,
            log,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.spawn(n, secret);
        node
    }

    pub fn spawn(&mut self, n: usize, secret: &str) {
        let stderr = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_muster"))
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--shards", "1", "--members", &members(n)])
            .args(["--member-ping-ms", &PING_MS.to_string()])
            .args(&self.extra)
            .env("MUSTER_CLUSTER_SECRET", secret)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn muster");
        self.child = Some(child);
        // Bounded, and generous: a member that finds no peer waits 5 s for one before it
        // starts empty, and a loaded CI machine runs two of these clusters at once.
        let ready = wait_until(Duration::from_secs(40), || {
            get(self.addr, "/nacos/v1/console/health/readiness").is_some_and(|(s, _)| s == 200)
        });
        assert!(ready, "node {} not ready:\n{}", self.addr, self.log_text());
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The states this node reports for every member, by address.
    pub fn states(&self) -> Vec<(String, String)> {
        let Some((200, body)) = get(self.addr, "/nacos/v1/core/cluster/nodes") else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["address"].as_str().unwrap().to_string(),
                    m["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn state_of(&self, other: SocketAddr) -> Option<String> {
        let want = other.to_string();
        self.states()
            .into_iter()
            .find(|(a, _)| *a == want)
            .map(|(_, s)| s)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A GET from [`CLIENT_IP`]; `None` when the connection fails.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    call(addr, "GET", path)
}

/// Polls `f` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub fn nft(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run nft (install nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft failed on:\n{script}");
}

/// Drops every packet between `a` and `b`, both ways.
pub fn cut(a: SocketAddr, b: SocketAddr) {
    let (a, b) = (a.ip(), b.ip());
    nft(&format!(
        "table inet muster_test {{\n chain out {{ type filter hook output priority 0; policy accept;\n  ip saddr {a} ip daddr {b} drop\n  ip saddr {b} ip daddr {a} drop\n }}\n}}\n"
    ));
}

pub fn heal() {
    nft("delete table inet muster_test\n");
}

pub fn all_up(nodes: &[Node]) -> bool {
    nodes.iter().all(|n| {
        let s = n.states();
        s.len() == nodes.len() && s.iter().all(|(_, st)| st == "UP")
    })
}

pub fn n_up(a: &Node, b: &Node) -> bool {
    a.state_of(b.addr).as_deref() == Some("UP") && b.state_of(a.addr).as_deref() == Some("UP")
}

/// A request from [`CLIENT_IP`]; `None` when the connection fails.
pub fn call(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    call_with(addr, method, path, "")
}

/// [`call`] with extra header lines (each ending in `\r\n`).
pub fn call_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> Option<(u16, String)> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    let from: SocketAddr = format!("{CLIENT_IP}:0").parse().unwrap();
    sock.bind(&from.into()).ok()?;
    sock.connect_timeout(&addr.into(), Duration::from_secs(2))
        .ok()?;
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(8))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let (status, body) = super::parse_response(&out);
    (status != 0).then(|| (status, String::from_utf8_lossy(&body).into_owned()))
}

/// The ips `node` lists for service `svc`.
pub fn listed(node: &Node, svc: &str) -> Vec<String> {
    let Some((200, body)) = get(
        node.addr,
        &format!("/nacos/v1/ns/instance/list?serviceName={svc}"),
    ) else {
        return Vec::new();
    };
    super::host_ips(&serde_json::from_str(&body).unwrap())
}
