//! The `muster` server binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match muster::config::Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("muster: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match muster::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("muster: {e}");
            ExitCode::FAILURE
        }
    }
}
