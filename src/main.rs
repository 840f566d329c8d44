//! The `muster` server binary.

use std::io::IsTerminal;
use std::process::ExitCode;

use muster::settings::{Config, LogFormat};

fn main() -> ExitCode {
    // A failpoints build (tests only) arms the points named in `FAILPOINTS`; a release build has
    // no failpoint code at all.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("muster: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    match muster::server::run(config.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(
                listen = %config.listen,
                data_dir = %config.data_dir.display(),
                "refusing to start: {e}"
            );
            eprintln!("muster: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` or the `log` setting: text with ANSI colour only
/// when stderr is a terminal (journald and log shippers store the bytes as they are), or one
/// JSON object per line.
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
