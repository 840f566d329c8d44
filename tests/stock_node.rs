//! The stock Nacos Node client (npm `nacos`, pinned in `common/stock.rs`; its `NacosNamingClient`) against a
//! real `muster`: subscribers hear about changes through UDP push well inside the client's own
//! poll interval, and still converge through pull within one `cacheMillis` when every push
//! datagram is dropped (`--push-drop-percent 100`).
//!
//! Runs `node tests/clients/node_client.js --server 127.0.0.1:PORT --mode push|loss` with
//! `NODE_PATH=$MUSTER_NODE_DIR/node_modules` (default `target/ci-node`, where `.ci/run` installs
//! the pinned package). The script measures everything against the poll interval the client
//! itself schedules with (the `cacheMillis` the server reported), never against a wall budget.
//! A missing package is a failure, never a skip: the point is that a real third-party client works.

mod common;

use common::stock::{node_command, require_node_client, run_client, script};
use common::Server;
use std::time::Duration;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

fn run_mode(mode: &str, server_args: &[&str]) {
    let dir = require_node_client();
    let server = Server::start(server_args);
    let addr = server.addr.to_string();
    let mut cmd = node_command(&dir, &script("node_client.js"));
    cmd.args(["--server", &addr, "--mode", mode]);
    run_client(
        cmd,
        &format!("node_client.js --server {addr} --mode {mode}"),
        SCRIPT_TIMEOUT,
    );
}

#[test]
fn stock_node_client_push() {
    run_mode("push", &["--shards", "2"]);
}

#[test]
fn stock_node_client_loss() {
    run_mode("loss", &["--shards", "2", "--push-drop-percent", "100"]);
}

#[test]
fn stock_node_config_client() {
    let dir = require_node_client();
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr.to_string();
    let cache = tempfile::tempdir().expect("temp dir for the client's snapshot cache");
    let mut cmd = node_command(&dir, &script("node_config.js"));
    cmd.args(["--server", &addr, "--cache-dir"])
        .arg(cache.path());
    run_client(
        cmd,
        &format!("node_config.js --server {addr}"),
        SCRIPT_TIMEOUT,
    );
}
