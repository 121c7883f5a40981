//! What every ecg-cluster binary does around its command: logging to stderr (level from
//! `RUST_LOG`, default `info`) and turning the command's result into an exit code with the
//! error printed on one line.
use std::fmt::Display;
use std::process::ExitCode;

/// Sets up `tracing` to write to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Success, or the error printed as `error: …` and exit code 1.
pub fn exit_code<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
