//! The raft group across real processes (issue 15): persistent instances and configs written
//! through any member reach every member; a leader cut off from everyone, and a minority, refuse
//! persistent writes within 5 s while the majority elects a leader within 3 s and keeps
//! writing; kill -9 rounds lose no acknowledged write and leave every WAL verifiable; a member
//! that missed a compacted stretch of the log catches up by snapshot; a standalone data dir
//! becomes the first member of a cluster; and randomized schedules of kills and partitions
//! produce linearizable histories.
//!
//! Every test runs N members on 127.0.0.1..N:8848 in its own network namespace
//! (`common::cluster`), with links cut by `nft`. Instances registered here use 127.0.2.x
//! addresses, so their health probes stay on loopback.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::Rng;
use serde_json::Value;

/// This node's raft view (`extendInfo.raft` of `/v1/core/cluster/self`).
fn raft_of(addr: SocketAddr) -> Option<Value> {
    let (200, body) = get(addr, "/nacos/v1/core/cluster/self")? else {
        return None;
    };
    let v: Value = serde_json::from_str(&body).ok()?;
    Some(v["data"]["extendInfo"]["raft"].clone())
}

/// The index among `nodes` of the one that reports itself leader, if exactly one does.
fn leader(nodes: &[&Node]) -> Option<usize> {
    let leaders: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| raft_of(n.addr).is_some_and(|r| r["role"] == "LEADER"))
        .map(|(i, _)| i)
        .collect();
    (leaders.len() == 1).then(|| leaders[0])
}

fn wait_leader(nodes: &[&Node], limit: Duration) -> Option<usize> {
    let mut found = None;
    wait_until(limit, || {
        found = leader(nodes);
        found.is_some()
    });
    found
}

/// POSTs a persistent instance `ip:port` of `svc`; the status, `None` when no answer came.
fn register(addr: SocketAddr, svc: &str, ip: &str, port: u16) -> Option<u16> {
    call(
        addr,
        "POST",
        &format!("/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port={port}&ephemeral=false"),
    )
    .map(|(s, _)| s)
}

fn deregister(addr: SocketAddr, svc: &str, ip: &str, port: u16) -> Option<u16> {
    call(
        addr,
        "DELETE",
        &format!("/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port={port}&ephemeral=false"),
    )
    .map(|(s, _)| s)
}

fn publish(addr: SocketAddr, data_id: &str, content: &str) -> Option<u16> {
    call(
        addr,
        "POST",
        &format!("/nacos/v1/cs/configs?dataId={data_id}&group=G&content={content}"),
    )
    .map(|(s, _)| s)
}

fn config(addr: SocketAddr, data_id: &str, linearizable: bool) -> Option<(u16, String)> {
    let extra = if linearizable {
        "&linearizable=true"
    } else {
        ""
    };
    get(
        addr,
        &format!("/nacos/v1/cs/configs?dataId={data_id}&group=G{extra}"),
    )
}

/// Every `ip:port` `addr` lists for `svc` (healthy or not); `None` when it did not answer 200.
fn instances(addr: SocketAddr, svc: &str) -> Option<BTreeSet<String>> {
    let (200, body) = get(
        addr,
        &format!("/nacos/v1/ns/instance/list?serviceName={svc}"),
    )?
    else {
        return None;
    };
    let v: Value = serde_json::from_str(&body).ok()?;
    Some(
        v["hosts"]
            .as_array()?
            .iter()
            .map(|h| format!("{}:{}", h["ip"].as_str().unwrap_or(""), h["port"]))
            .collect(),
    )
}

fn start(n: usize) -> Vec<Node> {
    start_with(n, &[])
}

fn start_with(n: usize, extra: &[&str]) -> Vec<Node> {
    let nodes: Vec<Node> = (1..=n)
        .map(|i| Node::start_with(i, n, SECRET, extra))
        .collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    assert!(
        wait_leader(&refs, Duration::from_secs(10)).is_some(),
        "no leader among {n} fresh members"
    );
    nodes
}

/// Runs `muster-wal verify` on a node's data dir.
fn verify_wal(node: &Node) {
    let out = std::process::Command::new(common::muster_wal())
        .arg("verify")
        .arg(node.dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "muster-wal verify failed on {}: {}{}",
        node.addr,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn persistent_writes_and_configs_through_any_member_reach_every_member() {
    if !in_netns("persistent_writes_and_configs_through_any_member_reach_every_member") {
        return;
    }
    let nodes = start(3);
    let refs: Vec<&Node> = nodes.iter().collect();
    // Exactly one leader, and every member agrees on it and on the term.
    let l = wait_leader(&refs, Duration::from_secs(5)).unwrap();
    let views: Vec<Value> = nodes.iter().map(|n| raft_of(n.addr).unwrap()).collect();
    assert!(
        wait_until(Duration::from_secs(3), || {
            let views: Vec<Value> = nodes.iter().map(|n| raft_of(n.addr).unwrap()).collect();
            views
                .iter()
                .all(|v| v["leader"] == views[l]["leader"] && v["term"] == views[l]["term"])
        }),
        "members disagree on the leader: {views:?}"
    );
    for (i, n) in nodes.iter().enumerate() {
        let port = 9000 + i as u16;
        assert_eq!(register(n.addr, "db", "127.0.2.1", port), Some(200));
        // The member that answered reads its own write at once.
        assert!(
            instances(n.addr, "db")
                .unwrap()
                .contains(&format!("127.0.2.1:{port}")),
            "{} does not list the write it acknowledged",
            n.addr
        );
        assert_eq!(
            publish(n.addr, &format!("c{i}"), &format!("v{i}")),
            Some(200)
        );
        assert_eq!(
            config(n.addr, &format!("c{i}"), false).unwrap(),
            (200, format!("v{i}"))
        );
    }
    let want: BTreeSet<String> = (0..3).map(|i| format!("127.0.2.1:{}", 9000 + i)).collect();
    for n in &nodes {
        assert!(
            wait_until(Duration::from_secs(1), || instances(n.addr, "db").as_ref()
                == Some(&want)),
            "{} lists {:?}, want {want:?}",
            n.addr,
            instances(n.addr, "db")
        );
        for i in 0..3 {
            // A linearizable read sees every acknowledged write, on any member.
            assert_eq!(
                config(n.addr, &format!("c{i}"), true).unwrap(),
                (200, format!("v{i}"))
            );
        }
    }
    // Services holding both kinds: persistent instances through raft, ephemeral ones through
    // Distro, and every member lists both well inside a verify round (2 s): a committed op
    // does not move a service's Distro version, so no member refuses the responsible one's
    // replica.
    for k in 0..6u16 {
        let svc = format!("mixed{k}");
        assert_eq!(register(nodes[0].addr, &svc, "127.0.2.20", 1), Some(200));
        let eph = format!("/nacos/v1/ns/instance?serviceName={svc}&ip=127.0.2.21&port=2");
        assert_eq!(call(nodes[1].addr, "POST", &eph).map(|r| r.0), Some(200));
    }
    for k in 0..6u16 {
        let want: BTreeSet<String> = ["127.0.2.20:1", "127.0.2.21:2"].map(String::from).into();
        for n in &nodes {
            assert!(
                wait_until(Duration::from_millis(700), || instances(
                    n.addr,
                    &format!("mixed{k}")
                )
                .as_ref()
                    == Some(&want)),
                "{} lists {:?} for mixed{k}",
                n.addr,
                instances(n.addr, &format!("mixed{k}"))
            );
        }
    }
    // A deregistration goes the same way.
    assert_eq!(
        deregister(nodes[1].addr, "db", "127.0.2.1", 9000),
        Some(200)
    );
    for n in &nodes {
        assert!(wait_until(Duration::from_secs(1), || instances(
            n.addr, "db"
        )
        .is_some_and(|s| s.len() == 2 && !s.contains("127.0.2.1:9000"))));
    }
    // The group shows in cluster/nodes: three voters, one leader.
    let (200, body) = get(nodes[0].addr, "/nacos/v1/core/cluster/nodes").unwrap() else {
        panic!()
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    let meta =
        &v["data"][0]["extendInfo"]["raftMetaData"]["metaDataMap"]["naming_persistent_service"];
    assert_eq!(
        meta["raftGroupMember"].as_array().unwrap().len(),
        3,
        "{meta}"
    );
    assert!(
        meta["leader"].as_str().unwrap().ends_with(":7848"),
        "{meta}"
    );
    for n in &nodes {
        verify_wal(n);
    }
}

#[test]
fn an_isolated_leader_refuses_writes_and_the_majority_elects_another() {
    if !in_netns("an_isolated_leader_refuses_writes_and_the_majority_elects_another") {
        return;
    }
    let nodes = start(3);
    let refs: Vec<&Node> = nodes.iter().collect();
    let l = wait_leader(&refs, Duration::from_secs(5)).unwrap();
    let old = &nodes[l];
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.addr != old.addr).collect();
    let term0 = raft_of(old.addr).unwrap()["term"].as_u64().unwrap();
    for n in &rest {
        cut(old.addr, n.addr);
    }
    let cut_at = Instant::now();
    // The cut-off leader refuses a persistent write within 5 s, saying why.
    let t = Instant::now();
    let refused = call(
        old.addr,
        "POST",
        "/nacos/v1/ns/instance?serviceName=iso&ip=127.0.2.9&port=1&ephemeral=false",
    )
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(refused.0, 503, "{refused:?}");
    assert!(refused.1.contains("no raft leader"), "{refused:?}");
    // Ephemeral writes keep working on the cut-off side (AP and CP are independent).
    assert_eq!(
        call(
            old.addr,
            "POST",
            "/nacos/v1/ns/instance?serviceName=eph&ip=127.0.2.8&port=1"
        )
        .map(|r| r.0),
        Some(200)
    );
    // The other two elect a leader within 3 s of the cut, in a higher term.
    let new = wait_leader(&rest, Duration::from_secs(3));
    assert!(
        new.is_some(),
        "no new leader {:?} after the cut",
        cut_at.elapsed()
    );
    let term1 = raft_of(rest[new.unwrap()].addr).unwrap()["term"]
        .as_u64()
        .unwrap();
    assert!(term1 > term0, "term {term1} after {term0}");
    for (i, n) in rest.iter().enumerate() {
        assert_eq!(
            register(n.addr, "maj", "127.0.2.2", 100 + i as u16),
            Some(200)
        );
    }
    // The old leader no longer claims to lead (check-quorum), and after the heal it follows
    // and holds the majority's writes, but never the one it refused.
    assert!(wait_until(Duration::from_secs(3), || raft_of(old.addr)
        .is_some_and(|r| r["role"] != "LEADER")));
    heal();
    let want: BTreeSet<String> = ["127.0.2.2:100", "127.0.2.2:101"].map(String::from).into();
    assert!(wait_until(Duration::from_secs(5), || instances(
        old.addr, "maj"
    )
    .as_ref()
        == Some(&want)));
    assert!(instances(old.addr, "iso").is_none_or(|s| s.is_empty()));
    assert_eq!(register(old.addr, "healed", "127.0.2.3", 1), Some(200));
    for n in &nodes {
        assert!(wait_until(Duration::from_secs(1), || instances(
            n.addr, "healed"
        )
        .is_some_and(|s| s.len() == 1)));
    }
    // Pre-vote: the healed member did not depose the majority's leader.
    let term2 = raft_of(rest[0].addr).unwrap()["term"].as_u64().unwrap();
    assert_eq!(term2, term1, "the healed member forced a new term");
}

#[test]
fn a_minority_of_five_refuses_writes_and_the_majority_keeps_writing() {
    if !in_netns("a_minority_of_five_refuses_writes_and_the_majority_keeps_writing") {
        return;
    }
    let nodes = start(5);
    let refs: Vec<&Node> = nodes.iter().collect();
    let l = wait_leader(&refs, Duration::from_secs(5)).unwrap();
    // The minority holds the leader and one other member.
    let minority: Vec<usize> = vec![l, (l + 1) % 5];
    let majority: Vec<usize> = (0..5).filter(|i| !minority.contains(i)).collect();
    for &a in &minority {
        for &b in &majority {
            cut(nodes[a].addr, nodes[b].addr);
        }
    }
    let t = Instant::now();
    for &m in &minority {
        let r = register(nodes[m].addr, "split", "127.0.2.4", 1);
        assert_eq!(
            r,
            Some(503),
            "minority member {} answered {r:?}",
            nodes[m].addr
        );
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let maj: Vec<&Node> = majority.iter().map(|&i| &nodes[i]).collect();
    assert!(wait_leader(&maj, Duration::from_secs(3)).is_some());
    for (k, n) in maj.iter().enumerate() {
        assert_eq!(
            register(n.addr, "split", "127.0.2.5", k as u16 + 1),
            Some(200)
        );
    }
    heal();
    for n in &nodes {
        assert!(
            wait_until(Duration::from_secs(5), || instances(n.addr, "split")
                .is_some_and(
                    |s| s.len() == 3 && s.iter().all(|i| i.starts_with("127.0.2.5:"))
                )),
            "{} lists {:?}",
            n.addr,
            instances(n.addr, "split")
        );
    }
}

/// Writers that register persistent instances and publish configs through every member
/// until stopped, recording what was acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addrs: &[SocketAddr]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let threads = addrs
            .iter()
            .enumerate()
            .map(|(w, &addr)| {
                let (stop, acked) = (stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let mut k = 0u16;
                    while !stop.load(Ordering::Relaxed) && k < 20_000 {
                        k += 1;
                        let svc = format!("k{w}");
                        if register(addr, &svc, "127.0.2.6", k) == Some(200) {
                            acked.lock().unwrap().push((svc, format!("127.0.2.6:{k}")));
                        }
                        let id = format!("w{w}-{k}");
                        if publish(addr, &id, "x") == Some(200) {
                            acked.lock().unwrap().push(("config".into(), id));
                        }
                        if k.is_multiple_of(8) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            threads,
        }
    }

    fn finish(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

/// Every acknowledged write is on `node`, within `limit`.
fn holds_all(node: &Node, acked: &[(String, String)], limit: Duration) {
    let mut want: std::collections::BTreeMap<&str, BTreeSet<&str>> = Default::default();
    for (k, v) in acked {
        want.entry(k.as_str()).or_default().insert(v.as_str());
    }
    let ok = wait_until(limit, || {
        want.iter().all(|(k, vs)| {
            if *k == "config" {
                vs.iter()
                    .all(|id| config(node.addr, id, false).is_some_and(|r| r.0 == 200))
            } else {
                instances(node.addr, k).is_some_and(|have| vs.iter().all(|v| have.contains(*v)))
            }
        })
    });
    assert!(ok, "{} lost an acknowledged write", node.addr);
}

#[test]
fn kill_9_rounds_lose_no_acknowledged_write() {
    if !in_netns_for(
        "kill_9_rounds_lose_no_acknowledged_write",
        Duration::from_secs(300),
    ) {
        return;
    }
    let mut nodes = start(3);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let load = Load::start(&addrs);
    let mut rng = Rng(0x5eed_0015);
    for round in 0..20 {
        let refs: Vec<&Node> = nodes.iter().collect();
        let l = wait_leader(&refs, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("round {round}: no leader"));
        // Even rounds kill the leader, odd ones a follower.
        let victim = if round % 2 == 0 {
            l
        } else {
            (l + 1 + rng.below(2) as usize) % 3
        };
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        nodes[victim].kill();
        std::thread::sleep(Duration::from_millis(rng.below(500)));
        nodes[victim].spawn(3, SECRET);
    }
    let acked = load.finish();
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    println!("{} acknowledged writes over 20 kill rounds", acked.len());
    for n in &nodes {
        holds_all(n, &acked, Duration::from_secs(10));
    }
    for n in &mut nodes {
        n.kill();
        verify_wal(n);
    }
}

#[test]
fn a_member_behind_a_compacted_log_catches_up_by_snapshot() {
    if !in_netns("a_member_behind_a_compacted_log_catches_up_by_snapshot") {
        return;
    }
    let mut nodes = start_with(3, &["--snapshot-entries", "50"]);
    nodes[2].kill();
    let a = nodes[0].addr;
    for k in 0..300u16 {
        assert_eq!(register(a, "snap", "127.0.2.7", k + 1), Some(200));
    }
    assert_eq!(publish(a, "snapcfg", "after"), Some(200));
    nodes[2].spawn(3, SECRET);
    assert!(
        wait_until(Duration::from_secs(10), || instances(nodes[2].addr, "snap")
            .is_some_and(|s| s.len() == 300)),
        "the restarted member lists {:?} instances",
        instances(nodes[2].addr, "snap").map(|s| s.len())
    );
    assert_eq!(
        config(nodes[2].addr, "snapcfg", false).unwrap(),
        (200, "after".into())
    );
    let log = nodes[2].log_text();
    assert!(
        log.contains("installed a snapshot from the leader"),
        "no snapshot was installed:\n{log}"
    );
    verify_wal(&nodes[2]);
}

#[test]
fn a_standalone_data_dir_becomes_the_first_member_of_a_cluster() {
    if !in_netns("a_standalone_data_dir_becomes_the_first_member_of_a_cluster") {
        return;
    }
    // A standalone server with persistent data.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut solo = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["--listen", "127.0.0.1:8848", "--shards", "1", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || get(
        member(1),
        "/nacos/v1/console/health/readiness"
    )
    .is_some_and(|r| r.0 == 200)));
    for k in 1..=5 {
        assert_eq!(register(member(1), "old", "127.0.2.8", k), Some(200));
    }
    assert_eq!(publish(member(1), "oldcfg", "kept"), Some(200));
    solo.kill().unwrap();
    solo.wait().unwrap();
    // The same data dir, now listed as one of three members; the other two join.
    let log = dir.path().join("stderr.log");
    let mut first = Node {
        addr: member(1),
        child: None,
        dir,
        log,
        extra: Vec::new(),
    };
    first.spawn(3, SECRET);
    assert!(first.log_text().contains("converted a standalone data dir"));
    let others: Vec<Node> = (2..=3)
        .map(|i| Node::start_with(i, 3, SECRET, &["--raft-join"]))
        .collect();
    // The leader adds them one at a time; each catches up.
    for n in std::iter::once(&first).chain(&others) {
        assert!(
            wait_until(Duration::from_secs(15), || instances(n.addr, "old")
                .is_some_and(|s| s.len() == 5)
                && config(n.addr, "oldcfg", false)
                    .is_some_and(|r| r == (200, "kept".into()))),
            "{} did not catch up:\n{}\nthe first member's log:\n{}",
            n.addr,
            n.log_text(),
            first.log_text()
        );
    }
    assert!(wait_until(Duration::from_secs(5), || raft_of(first.addr)
        .is_some_and(|r| r["role"] == "LEADER")));
    // The membership is published once a raft tick (100 ms): wait for the third voter.
    let all_voters = || {
        let Some((200, body)) = get(first.addr, "/nacos/v1/core/cluster/nodes") else {
            return None;
        };
        let v: Value = serde_json::from_str(&body).ok()?;
        let all = v["data"]
            .as_array()?
            .iter()
            .all(|m| m["extendInfo"]["raft"]["voter"] == true);
        Some((all, v))
    };
    assert!(
        wait_until(Duration::from_secs(3), || all_voters()
            .is_some_and(|(all, _)| all)),
        "{:?}",
        all_voters()
    );
    // Writes now need two of three.
    assert_eq!(register(others[1].addr, "new", "127.0.2.8", 9), Some(200));
}

/// A member's linearizable read of config `data_id`.
fn linear_get(
    addr: SocketAddr,
    data_id: &str,
) -> common::linear::Outcome<common::linear::ConfigRet> {
    use common::linear::{ConfigRet, Outcome};
    match config(addr, data_id, true) {
        Some((200, t)) => Outcome::Ok(ConfigRet::Found(t)),
        Some((404, _)) => Outcome::Ok(ConfigRet::NotFound),
        _ => Outcome::Unknown,
    }
}

/// A member's linearizable read of service `svc`'s persistent instances.
fn linear_read(addr: SocketAddr, svc: &str) -> common::linear::Outcome<common::linear::ServiceRet> {
    use common::linear::{Outcome, ServiceRet};
    let path = format!("/nacos/v1/ns/instance/list?serviceName={svc}&linearizable=true");
    let Some((200, body)) = get(addr, &path) else {
        return Outcome::Unknown;
    };
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return Outcome::Unknown;
    };
    let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
    Outcome::Ok(ServiceRet::members(hosts.iter().map(|h| {
        format!("{}:{}", h["ip"].as_str().unwrap_or(""), h["port"])
    })))
}

/// One fault of a schedule, applied while the clients run.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// kill -9 a member, restart it after the given ms.
    Kill(usize, u64),
    /// Cut a member from the others for the given ms.
    Isolate(usize, u64),
    /// Cut the leader from the others for the given ms.
    IsolateLeader(u64),
    /// Cut one link for the given ms.
    Link(usize, usize, u64),
}

#[test]
fn randomized_kills_and_partitions_keep_histories_linearizable() {
    use common::linear::{
        ConfigOp, ConfigRegister, ConfigRet, History, Limits, Outcome, ServiceOp, ServiceRet,
        ServiceSet,
    };
    let schedules: u64 = std::env::var("MUSTER_LINEAR_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // A schedule takes about 3 s (up to 2.5 s of fault, then a leader to settle).
    if !in_netns_for(
        "randomized_kills_and_partitions_keep_histories_linearizable",
        Duration::from_secs(120 + 10 * schedules),
    ) {
        return;
    }
    let mut nodes = start(3);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let (mut ops_total, mut unknown_total) = (0usize, 0usize);
    for schedule in 0..schedules {
        let seed = 0x11ea_0000 + schedule;
        let mut rng = Rng(seed);
        let fault = match rng.below(4) {
            0 => Fault::Kill(rng.below(3) as usize, 200 + rng.below(800)),
            1 => Fault::Isolate(rng.below(3) as usize, 500 + rng.below(2000)),
            2 => Fault::IsolateLeader(500 + rng.below(2000)),
            _ => {
                let a = rng.below(3) as usize;
                Fault::Link(
                    a,
                    (a + 1 + rng.below(2) as usize) % 3,
                    500 + rng.below(2000),
                )
            }
        };
        let configs: Arc<History<ConfigOp, ConfigRet>> = Arc::new(History::new());
        let services: Arc<History<ServiceOp, ServiceRet>> = Arc::new(History::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (cfg_key, svc) = (format!("lin{schedule}"), format!("lin{schedule}"));
        let clients: Vec<_> = (0..3)
            .map(|c| {
                let (configs, services, stop) = (configs.clone(), services.clone(), stop.clone());
                let (addr, cfg_key, svc) = (addrs[c], cfg_key.clone(), svc.clone());
                let mut rng = Rng(seed ^ (c as u64 + 1) << 32);
                std::thread::spawn(move || {
                    for i in 0..400 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match rng.below(6) {
                            0 => {
                                let v = format!("c{c}n{i}");
                                configs.record(c, &cfg_key, ConfigOp::Publish(v.clone()), || {
                                    Outcome::of_write(publish(addr, &cfg_key, &v), ConfigRet::Done)
                                });
                            }
                            1 => {
                                configs.record(c, &cfg_key, ConfigOp::Get, || {
                                    linear_get(addr, &cfg_key)
                                });
                            }
                            2 | 3 => {
                                let port = 1 + rng.below(4) as u16;
                                let member = format!("127.0.2.9:{port}");
                                let op = if rng.below(3) == 0 {
                                    ServiceOp::Deregister(member)
                                } else {
                                    ServiceOp::Register(member)
                                };
                                services.record(c, &svc, op.clone(), || {
                                    let status = match op {
                                        ServiceOp::Deregister(_) => {
                                            deregister(addr, &svc, "127.0.2.9", port)
                                        }
                                        _ => register(addr, &svc, "127.0.2.9", port),
                                    };
                                    Outcome::of_write(status, ServiceRet::Done)
                                });
                            }
                            _ => {
                                services
                                    .record(c, &svc, ServiceOp::Read, || linear_read(addr, &svc));
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200 + rng.below(500)));
        match fault {
            Fault::Kill(i, ms) => {
                nodes[i].kill();
                std::thread::sleep(Duration::from_millis(ms));
                nodes[i].spawn(3, SECRET);
            }
            Fault::Isolate(i, ms) => {
                for j in (0..3).filter(|&j| j != i) {
                    cut(addrs[i], addrs[j]);
                }
                std::thread::sleep(Duration::from_millis(ms));
                heal();
            }
            Fault::IsolateLeader(ms) => {
                let refs: Vec<&Node> = nodes.iter().collect();
                if let Some(l) = leader(&refs) {
                    for j in (0..3).filter(|&j| j != l) {
                        cut(addrs[l], addrs[j]);
                    }
                    std::thread::sleep(Duration::from_millis(ms));
                    heal();
                }
            }
            Fault::Link(a, b, ms) => {
                cut(addrs[a], addrs[b]);
                std::thread::sleep(Duration::from_millis(ms));
                heal();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        let count = |u: bool| {
            let c = configs
                .ops()
                .iter()
                .filter(|o| (o.outcome == Outcome::Unknown) == u)
                .count();
            let s = services
                .ops()
                .iter()
                .filter(|o| (o.outcome == Outcome::Unknown) == u)
                .count();
            c + s
        };
        let (known, unknown) = (count(false), count(true));
        println!("schedule {schedule} (seed {seed:#x}): {fault:?}, {known} ops answered, {unknown} unknown");
        ops_total += known + unknown;
        unknown_total += unknown;
        let r = configs.check(&ConfigRegister, Limits::default());
        r.assert_no_violation();
        let r = services.check(&ServiceSet, Limits::default());
        r.assert_no_violation();
        let refs: Vec<&Node> = nodes.iter().collect();
        assert!(
            wait_leader(&refs, Duration::from_secs(10)).is_some(),
            "schedule {schedule}: no leader after the fault"
        );
    }
    println!(
        "{schedules} schedules, {ops_total} operations ({unknown_total} unknown), all linearizable"
    );
    for n in &mut nodes {
        n.kill();
        verify_wal(n);
    }
}

/// PUTs a member list to `addr`'s admin endpoint with `secret` in the header.
fn set_members(addr: SocketAddr, list: &str, secret: &str) -> Option<(u16, String)> {
    call_with(
        addr,
        "PUT",
        &format!("/nacos/v1/core/cluster/members?members={list}"),
        &format!("Muster-Cluster-Secret: {secret}\r\n"),
    )
}

/// How many voters `addr` reports in its raft group.
fn voters(addr: SocketAddr) -> usize {
    let Some((200, body)) = get(addr, "/nacos/v1/core/cluster/nodes") else {
        return 0;
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"][0]["extendInfo"]["raftMetaData"]["metaDataMap"]["naming_persistent_service"]
        ["raftGroupMember"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn membership_grows_3_to_5_and_shrinks_back_under_write_load() {
    if !in_netns_for(
        "membership_grows_3_to_5_and_shrinks_back_under_write_load",
        Duration::from_secs(180),
    ) {
        return;
    }
    let mut nodes = start(3);
    let first: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    // The admin endpoint wants the cluster secret.
    let refused = set_members(first[0], &members(5), "not-the-secret").unwrap();
    assert_eq!(refused.0, 403, "{refused:?}");
    assert_eq!(voters(first[0]), 3);
    let load = Load::start(&first);
    std::thread::sleep(Duration::from_millis(500));
    // Grow: two fresh members wait to be added; every old member learns the new list.
    for i in 4..=5 {
        nodes.push(Node::start_with(i, 5, SECRET, &["--raft-join"]));
    }
    for &a in &first {
        let (status, body) = set_members(a, &members(5), SECRET).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        wait_until(Duration::from_secs(20), || voters(first[0]) == 5),
        "the group did not grow to 5: {} voters",
        voters(first[0])
    );
    for n in &nodes[3..] {
        assert!(
            wait_until(Duration::from_secs(10), || n
                .log_text()
                .contains("installed a snapshot from the leader")),
            "{} did not start from a snapshot:\n{}",
            n.addr,
            n.log_text()
        );
        assert_eq!(
            register(
                n.addr,
                "grown",
                "127.0.2.10",
                n.addr.ip().to_string().len() as u16
            ),
            Some(200)
        );
    }
    // Shrink back: the old three drop the new two.
    for &a in &first {
        assert_eq!(set_members(a, &members(3), SECRET).unwrap().0, 200);
    }
    assert!(
        wait_until(Duration::from_secs(20), || voters(first[0]) == 3),
        "the group did not shrink to 3: {} voters",
        voters(first[0])
    );
    let acked = load.finish();
    assert!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    for n in &nodes[..3] {
        holds_all(n, &acked, Duration::from_secs(10));
    }
    // A removed member refuses persistent writes and says why.
    let removed = &nodes[3];
    assert!(
        wait_until(Duration::from_secs(5), || {
            let r = call(
                removed.addr,
                "POST",
                "/nacos/v1/ns/instance?serviceName=gone&ip=127.0.2.11&port=1&ephemeral=false",
            );
            r.is_some_and(|(s, b)| s == 503 && b.contains("not in the raft group"))
        }),
        "the removed member still takes writes:\n{}",
        removed.log_text()
    );
    // The remaining three still commit.
    assert_eq!(register(first[1], "after", "127.0.2.12", 1), Some(200));
    // muster-wal shows the conf changes in a member's log (read-only, the server may run).
    let out = std::process::Command::new(common::muster_wal())
        .arg("dump")
        .arg(nodes[0].dir.path().join("data"))
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{dump}");
    for id in [4, 5].map(|i| muster::cluster::Members::raft_id(member(i))) {
        assert!(
            dump.contains(&format!("change=add_node {id}"))
                || dump.contains(&format!("change=remove_node {id}")),
            "no conf change for {id} in the dump:\n{dump}"
        );
    }
    let metrics = get(first[0], "/metrics").map(|r| r.1).unwrap_or_default();
    assert!(metrics.contains("muster_raft_voters 3"), "{metrics}");
    for n in &nodes[..3] {
        verify_wal(n);
    }
}

#[test]
fn sighup_reloads_cluster_conf_and_the_leader_adds_the_new_member() {
    if !in_netns("sighup_reloads_cluster_conf_and_the_leader_adds_the_new_member") {
        return;
    }
    // Member 1 alone, its members from cluster.conf.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("cluster.conf");
    std::fs::write(&conf, format!("{}\n", member(1))).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args([
            "--listen",
            &member(1).to_string(),
            "--shards",
            "1",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--cluster-conf")
        .arg(&conf)
        .args(["--member-ping-ms", &PING_MS.to_string()])
        .env("MUSTER_CLUSTER_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ready = wait_until(Duration::from_secs(20), || {
        get(member(1), "/nacos/v1/console/health/readiness").is_some_and(|r| r.0 == 200)
    });
    assert!(
        ready,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(wait_until(Duration::from_secs(5), || raft_of(member(1))
        .is_some_and(|r| r["role"] == "LEADER")));
    assert_eq!(register(member(1), "hup", "127.0.2.13", 1), Some(200));
    let second = Node::start_with(2, 2, SECRET, &["--raft-join"]);
    // Not a voter yet: it refuses persistent writes, saying so.
    let r = call(
        second.addr,
        "POST",
        "/nacos/v1/ns/instance?serviceName=hup&ip=127.0.2.13&port=2&ephemeral=false",
    )
    .unwrap();
    assert_eq!(r.0, 503, "{r:?}");
    assert!(r.1.contains("not in the raft group"), "{r:?}");
    std::fs::write(&conf, format!("{}\n{}\n", member(1), member(2))).unwrap();
    let st = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        wait_until(Duration::from_secs(15), || voters(member(1)) == 2
            && instances(second.addr, "hup").is_some_and(|s| s.len() == 1)),
        "member 2 was not added:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(register(second.addr, "hup", "127.0.2.13", 2), Some(200));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_long_poll_on_one_member_is_woken_by_a_publish_on_another() {
    if !in_netns("a_long_poll_on_one_member_is_woken_by_a_publish_on_another") {
        return;
    }
    let nodes = start(3);
    assert_eq!(publish(nodes[0].addr, "watched", "v1"), Some(200));
    let md5 = muster::consensus::config::md5_hex("v1");
    // Every member holds the config before the poll starts, so the poll waits.
    for n in &nodes {
        assert!(wait_until(Duration::from_secs(2), || config(
            n.addr, "watched", false
        )
        .is_some_and(|r| r == (200, "v1".into()))));
    }
    let listener = nodes[2].addr;
    let held = std::thread::spawn(move || {
        let started = Instant::now();
        let line = format!("watched%02G%02{md5}%01");
        let r = call_with(
            listener,
            "POST",
            &format!("/nacos/v1/cs/configs/listener?Listening-Configs={line}"),
            "Long-Pulling-Timeout: 30000\r\n",
        );
        (r, started.elapsed())
    });
    assert!(wait_until(Duration::from_secs(5), || get(
        listener, "/metrics"
    )
    .is_some_and(|(_, m)| m
        .lines()
        .any(|l| l == "muster_config_held_polls 1"))));
    assert_eq!(publish(nodes[0].addr, "watched", "v2"), Some(200));
    let (r, took) = held.join().unwrap();
    let (status, body) = r.expect("the held poll was answered");
    assert_eq!(status, 200);
    assert_eq!(body, "watched%02G%01\n", "woken with the changed key");
    assert!(
        took < Duration::from_secs(10),
        "answered after {took:?}, not when woken"
    );
}
