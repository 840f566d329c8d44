//! The stock Nacos Node client (npm `nacos`, pinned below; its `NacosNamingClient`) against a
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

use common::Server;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PINNED: &str = "2.6.3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/node_client.js");
/// The script bounds every wait itself (plus an 80 s watchdog); this is the outer bound.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

fn node_dir() -> PathBuf {
    match std::env::var("MUSTER_NODE_DIR") {
        Ok(d) if !d.trim().is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-node"),
    }
}

fn node() -> String {
    std::env::var("MUSTER_TEST_NODE")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "node".to_string())
}

fn install_hint(dir: &Path) -> String {
    format!(
        "run `.ci/run` (it installs nacos@{PINNED} into $MUSTER_NODE_DIR, default target/ci-node), or \
         `npm install --prefix {} nacos@{PINNED}`",
        dir.display()
    )
}

/// The installed `nacos` version, or why there is none.
fn installed_version(dir: &Path) -> Result<String, String> {
    let manifest = dir.join("node_modules/nacos/package.json");
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    json["version"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{}: no version", manifest.display()))
}

/// Starts a server with `server_args` and runs the script against it in `mode`.
fn run_mode(mode: &str, server_args: &[&str]) {
    let dir = node_dir();
    match installed_version(&dir) {
        Ok(v) => assert_eq!(
            v,
            PINNED,
            "{} has nacos@{v}, the test needs nacos@{PINNED}: {}",
            dir.display(),
            install_hint(&dir)
        ),
        Err(e) => panic!(
            "the npm package `nacos` is not installed ({e}): {}",
            install_hint(&dir)
        ),
    }

    let server = Server::start(server_args);
    let addr = server.addr.to_string();
    let mut cmd = common::loopback_command(&node());
    cmd.env("NODE_PATH", dir.join("node_modules"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg(SCRIPT)
        .args(["--server", &addr, "--mode", mode]);
    let (code, out, err, timed_out) = common::run_bounded(cmd, SCRIPT_TIMEOUT);
    println!("--- node_client.js --mode {mode} stdout ---\n{out}--- stderr ---\n{err}");
    assert!(
        !timed_out,
        "node_client.js --server {addr} --mode {mode} was killed after {SCRIPT_TIMEOUT:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        code == Some(0),
        "node_client.js --server {addr} --mode {mode} exited with {code:?} \
         (1: a check failed, 2: usage, 3: nacos missing — {}, 4: watchdog)\nstdout:\n{out}\nstderr:\n{err}",
        install_hint(&dir)
    );
    assert!(
        out.contains(" passed, 0 failed"),
        "node_client.js exited 0 without a clean summary\nstdout:\n{out}\nstderr:\n{err}"
    );
}

/// Register and deregister reach the subscribe listener through push, in under a quarter of
/// the client's poll interval, inside the client's push receiver.
#[test]
fn stock_node_client_push() {
    run_mode("push", &["--shards", "2"]);
}

/// Every push datagram dropped: the listener still fires within 1.5 x cacheMillis via pull, no
/// push reaches the client and nothing is acked.
#[test]
fn stock_node_client_loss() {
    run_mode("loss", &["--shards", "2", "--push-drop-percent", "100"]);
}

/// The config client (`NacosConfigClient`): publish, get, get missing, subscribe woken by the
/// server's long poll, remove (`tests/clients/node_config.js`).
#[test]
fn stock_node_config_client() {
    let dir = node_dir();
    match installed_version(&dir) {
        Ok(v) => assert_eq!(
            v,
            PINNED,
            "{} has nacos@{v}: {}",
            dir.display(),
            install_hint(&dir)
        ),
        Err(e) => panic!(
            "the npm package `nacos` is not installed ({e}): {}",
            install_hint(&dir)
        ),
    }
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr.to_string();
    let cache = tempfile::tempdir().expect("temp dir for the client's snapshot cache");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/node_config.js");
    let mut cmd = common::loopback_command(&node());
    cmd.env("NODE_PATH", dir.join("node_modules"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg(script)
        .args(["--server", &addr, "--cache-dir"])
        .arg(cache.path());
    let (code, out, err, timed_out) = common::run_bounded(cmd, SCRIPT_TIMEOUT);
    println!("--- node_config.js stdout ---\n{out}--- stderr ---\n{err}");
    assert!(
        !timed_out,
        "node_config.js was killed after {SCRIPT_TIMEOUT:?}"
    );
    assert!(
        code == Some(0) && out.contains(" passed, 0 failed"),
        "node_config.js --server {addr} exited with {code:?} (1: a check failed, 3: nacos missing, \
         4: watchdog)\nstdout:\n{out}\nstderr:\n{err}"
    );
}
