//! Upgrade: a data directory written by the previous on-disk format (version 1, before
//! state-machine domains) opens in this version and answers exactly as the old server did.
//!
//! `tests/data/server-v1/` was written by the server at commit 5417c98 (format 1): persistent
//! services with settings and a cluster, 16 persistent instances, two deregistered, one
//! disabled, a snapshot at index 20 (`--snapshot-entries 10`) and a log tail after it.
//! `tests/data/server-v1-expected/` holds that server's answers (host lists without the
//! probe-driven `healthy`/`valid` flags, sorted by ip).

mod common;

use std::path::Path;

use common::Server;
use serde_json::Value;

fn copy_fixture() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/server-v1/raft");
    let dir = tempfile::tempdir().unwrap();
    let raft = dir.path().join("raft");
    std::fs::create_dir_all(&raft).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, raft.join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn expected(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/server-v1-expected")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The hosts of a list answer without the probe-driven flags, sorted by (ip, port).
fn hosts(s: &Server, query: &str) -> Value {
    let (st, body) = s.request("GET", &format!("/nacos/v1/ns/instance/list?{query}"), "");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut hosts: Vec<Value> = v["hosts"].as_array().unwrap().clone();
    for h in &mut hosts {
        let m = h.as_object_mut().unwrap();
        m.remove("healthy");
        m.remove("valid");
    }
    hosts.sort_by_key(|h| (h["ip"].as_str().unwrap().to_string(), h["port"].as_u64()));
    Value::Array(hosts)
}

fn service(s: &Server, query: &str) -> Value {
    let (st, body) = s.request("GET", &format!("/nacos/v1/ns/service?{query}"), "");
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

const MYSQL: &str = "serviceName=mysql";
const REDIS: &str = "serviceName=redis&groupName=cache&namespaceId=dev";

fn assert_answers_as_the_old_server(s: &Server) {
    assert_eq!(hosts(s, MYSQL), expected("mysql.hosts.json"));
    assert_eq!(hosts(s, REDIS), expected("redis.hosts.json"));
    assert_eq!(service(s, MYSQL), expected("mysql.service.json"));
    assert_eq!(service(s, REDIS), expected("redis.service.json"));
}

#[test]
fn a_format_1_data_dir_opens_and_answers_as_before() {
    let s = Server::launch(copy_fixture(), &["--shards", "2"], &[]);
    assert_answers_as_the_old_server(&s);

    // New writes land beside the old records (format-2 events), and a restart reads both,
    // through a new snapshot (a domain container) as well.
    let (st, b) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=pg&ip=127.0.2.1&port=5432&ephemeral=false",
        "",
    );
    assert_eq!((st, b.as_str()), (200, "ok"));
    let s = s.restart(&["--shards", "1", "--snapshot-entries", "1"]);
    assert_answers_as_the_old_server(&s);
    let (st, b) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=pg&ip=127.0.2.2&port=5432&ephemeral=false",
        "",
    );
    assert_eq!((st, b.as_str()), (200, "ok"));
    let s = s.restart(&["--shards", "2"]);
    assert_answers_as_the_old_server(&s);
    let pg = hosts(&s, "serviceName=pg");
    let ips: Vec<&str> = pg
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["127.0.2.1", "127.0.2.2"]);
}
