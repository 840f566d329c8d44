//! The stock Nacos Python client (nacos-sdk-python, pinned in `common/stock.rs`) against a real `muster`.
//!
//! Runs `tests/clients/python_client.py --server 127.0.0.1:PORT` with the interpreter named by
//! `$MUSTER_TEST_PYTHON` (`.ci/run` sets it to a venv with the pinned package). Without that
//! variable it tries `/work/venv/bin/python`, then `python3`. A missing `nacos` module is a
//! failure, never a skip: the point of the test is that a real third-party client works.

mod common;

use common::stock::{py_command, python, require_python_client, run_client, script};
use common::Server;
use std::path::Path;
use std::time::Duration;

/// The script bounds itself (every wait, plus a 100 s watchdog); this is the outer bound.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `script args...` and asserts a clean exit and summary.
fn run_script(python: &str, work: &Path, name: &str, args: &[&str]) {
    let mut cmd = py_command(python, work);
    cmd.arg(script(name)).args(args);
    run_client(cmd, &format!("{name} {args:?}"), SCRIPT_TIMEOUT);
}

/// Persistent instances registered by the stock client are still listed after a restart.
#[test]
fn stock_python_client_persistent_instances_survive_restart() {
    let python = python();
    let work = tempfile::tempdir().expect("temp dir for the python client");
    require_python_client(&python, work.path());
    let server = Server::start(&["--shards", "2"]);
    run_script(
        &python,
        work.path(),
        "python_persistent.py",
        &["--server", &server.addr.to_string(), "--phase", "write"],
    );
    let server = server.restart(&["--shards", "2"]);
    run_script(
        &python,
        work.path(),
        "python_persistent.py",
        &["--server", &server.addr.to_string(), "--phase", "check"],
    );
}

#[test]
fn stock_python_client() {
    let python = python();
    let work = tempfile::tempdir().expect("temp dir for the python client");
    // The client must be installed, at the pinned version: otherwise fail loudly.
    require_python_client(&python, work.path());
    let server = Server::start(&["--shards", "2"]);
    run_script(
        &python,
        work.path(),
        "python_client.py",
        &["--server", &server.addr.to_string()],
    );
}
