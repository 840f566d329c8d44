//! The stock Nacos Python client (nacos-sdk-python, pinned below) against a real `muster`.
//!
//! Runs `tests/clients/python_client.py --server 127.0.0.1:PORT` with the interpreter named by
//! `$MUSTER_TEST_PYTHON` (`.ci/run` sets it to a venv with the pinned package). Without that
//! variable it tries `/work/venv/bin/python`, then `python3`. A missing `nacos` module is a
//! failure, never a skip: the point of the test is that a real third-party client works.

mod common;

use common::Server;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PINNED: &str = "0.1.17";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/python_client.py"
);
/// The script bounds itself (every wait, plus a 100 s watchdog); this is the outer bound.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn python() -> String {
    if let Ok(p) = std::env::var("MUSTER_TEST_PYTHON") {
        if !p.trim().is_empty() {
            return p;
        }
    }
    if Path::new("/work/venv/bin/python").exists() {
        return "/work/venv/bin/python".to_string();
    }
    "python3".to_string()
}

fn install_hint() -> String {
    format!(
        "run `.ci/run` (it creates a venv with the pinned client and exports MUSTER_TEST_PYTHON), or \
         `pip install nacos-sdk-python=={PINNED}` into an interpreter and point MUSTER_TEST_PYTHON at it"
    )
}

/// A command with loopback-safe, quiet Python settings: no proxy may capture 127.0.0.1 traffic.
fn py_command(python: &str, cwd: &Path) -> Command {
    let mut cmd = common::loopback_command(python);
    cmd.env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(cwd);
    cmd
}

/// Fails the test unless `python` has the pinned client.
fn require_client(python: &str, work: &Path) {
    let mut probe = py_command(python, work);
    probe.args(["-c", "import nacos.client; print(nacos.client.VERSION)"]);
    let (code, out, err, _) = common::run_bounded(probe, Duration::from_secs(30));
    assert!(
        code == Some(0),
        "python module `nacos` is not importable with {python:?} (exit {code:?}): {}\n{}\n{}",
        install_hint(),
        out.trim(),
        err.trim()
    );
    assert_eq!(
        out.trim(),
        PINNED,
        "{python:?} has nacos-sdk-python {}, the test needs {PINNED}: {}",
        out.trim(),
        install_hint()
    );
}

/// Runs `script args...` against `server` and asserts a clean exit and summary.
fn run_script(python: &str, work: &Path, script: &str, args: &[&str]) {
    let mut cmd = py_command(python, work);
    cmd.arg(script).args(args);
    let (code, out, err, timed_out) = common::run_bounded(cmd, SCRIPT_TIMEOUT);
    println!("--- {script} {args:?} stdout ---\n{out}--- stderr ---\n{err}");
    assert!(
        !timed_out,
        "{script} {args:?} was killed after {SCRIPT_TIMEOUT:?}"
    );
    assert!(
        code == Some(0) && out.contains(" passed, 0 failed"),
        "{script} {args:?} exited {code:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
}

/// Persistent instances registered by the stock client are still listed after a restart.
#[test]
fn stock_python_client_persistent_instances_survive_restart() {
    let python = python();
    let work = tempfile::tempdir().expect("temp dir for the python client");
    require_client(&python, work.path());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/python_persistent.py"
    );
    let server = Server::start(&["--shards", "2"]);
    run_script(
        &python,
        work.path(),
        script,
        &["--server", &server.addr.to_string(), "--phase", "write"],
    );
    let server = server.restart(&["--shards", "2"]);
    run_script(
        &python,
        work.path(),
        script,
        &["--server", &server.addr.to_string(), "--phase", "check"],
    );
}

#[test]
fn stock_python_client() {
    let python = python();
    let work = tempfile::tempdir().expect("temp dir for the python client");
    // The client must be installed, at the pinned version: otherwise fail loudly.
    require_client(&python, work.path());

    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr.to_string();
    let mut cmd = py_command(&python, work.path());
    cmd.arg(SCRIPT).arg("--server").arg(&addr);
    let (code, out, err, timed_out) = common::run_bounded(cmd, SCRIPT_TIMEOUT);
    println!("--- python_client.py stdout ---\n{out}--- python_client.py stderr ---\n{err}");
    assert!(
        !timed_out,
        "python_client.py --server {addr} was killed after {SCRIPT_TIMEOUT:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        code == Some(0),
        "python_client.py --server {addr} exited with {code:?} (1: a check failed, 3: client missing, 4: watchdog)\n\
         stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        out.contains(" passed, 0 failed"),
        "python_client.py exited 0 without a clean summary\nstdout:\n{out}\nstderr:\n{err}"
    );
}
