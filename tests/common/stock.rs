//! The stock Nacos clients the tests drive: nacos-sdk-python and the npm `nacos` package, at
//! pinned versions. A missing or wrong client is a failure, never a skip: the point of these
//! tests is that real third-party clients work.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// nacos-sdk-python version the Python scripts need.
pub const PYTHON_PINNED: &str = "0.1.17";
/// npm `nacos` version the Node scripts need.
pub const NODE_PINNED: &str = "2.6.3";

/// A script under `tests/clients/`.
pub fn script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The interpreter named by `$MUSTER_TEST_PYTHON` (`.ci/run` sets it to a venv with the pinned
/// package), else `/work/venv/bin/python`, else `python3`.
pub fn python() -> String {
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

fn python_hint() -> String {
    format!(
        "run `.ci/run` (it creates a venv with the pinned client and exports MUSTER_TEST_PYTHON), or \
         `pip install nacos-sdk-python=={PYTHON_PINNED}` into an interpreter and point MUSTER_TEST_PYTHON at it"
    )
}

/// A command with loopback-safe, quiet Python settings: no proxy may capture 127.0.0.1 traffic.
pub fn py_command(python: &str, cwd: &Path) -> Command {
    let mut cmd = super::loopback_command(python);
    cmd.env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(cwd);
    cmd
}

/// Fails the test unless `python` has the pinned client.
pub fn require_python_client(python: &str, work: &Path) {
    let mut probe = py_command(python, work);
    probe.args(["-c", "import nacos.client; print(nacos.client.VERSION)"]);
    let (code, out, err, _) = super::run_bounded(probe, Duration::from_secs(30));
    assert!(
        code == Some(0),
        "python module `nacos` is not importable with {python:?} (exit {code:?}): {}\n{}\n{}",
        python_hint(),
        out.trim(),
        err.trim()
    );
    assert_eq!(
        out.trim(),
        PYTHON_PINNED,
        "{python:?} has nacos-sdk-python {}, the test needs {PYTHON_PINNED}: {}",
        out.trim(),
        python_hint()
    );
}

/// Where the npm packages are: `$MUSTER_NODE_DIR`, default `target/ci-node`.
pub fn node_dir() -> PathBuf {
    match std::env::var("MUSTER_NODE_DIR") {
        Ok(d) if !d.trim().is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-node"),
    }
}

/// The `node` binary (`$MUSTER_TEST_NODE`, default `node` on PATH).
pub fn node() -> String {
    std::env::var("MUSTER_TEST_NODE")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "node".to_string())
}

/// How to install the pinned npm package into `dir`.
pub fn node_hint(dir: &Path) -> String {
    format!(
        "run `.ci/run` (it installs nacos@{NODE_PINNED} into $MUSTER_NODE_DIR, default target/ci-node), or \
         `npm install --prefix {} nacos@{NODE_PINNED}`",
        dir.display()
    )
}

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

/// Fails the test unless the pinned npm `nacos` is installed; returns its directory.
pub fn require_node_client() -> PathBuf {
    let dir = node_dir();
    match installed_version(&dir) {
        Ok(v) => assert_eq!(
            v,
            NODE_PINNED,
            "{} has nacos@{v}, the test needs nacos@{NODE_PINNED}: {}",
            dir.display(),
            node_hint(&dir)
        ),
        Err(e) => panic!(
            "the npm package `nacos` is not installed ({e}): {}",
            node_hint(&dir)
        ),
    }
    dir
}

/// A `node SCRIPT` command with the pinned packages on `NODE_PATH`.
pub fn node_command(dir: &Path, script: &str) -> Command {
    let mut cmd = super::loopback_command(&node());
    cmd.env("NODE_PATH", dir.join("node_modules"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg(script);
    cmd
}

/// Runs `cmd` (a client script) for at most `timeout` and asserts a clean exit with its
/// `N passed, 0 failed` summary. `what` names it in messages.
pub fn run_client(cmd: Command, what: &str, timeout: Duration) {
    let (code, out, err, timed_out) = super::run_bounded(cmd, timeout);
    println!("--- {what} stdout ---\n{out}--- stderr ---\n{err}");
    assert!(
        !timed_out,
        "{what} was killed after {timeout:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        code == Some(0),
        "{what} exited with {code:?} (1: a check failed, 2: usage, 3: client missing, 4: watchdog)\n\
         stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        out.contains(" passed, 0 failed"),
        "{what} exited 0 without a clean summary\nstdout:\n{out}\nstderr:\n{err}"
    );
}
