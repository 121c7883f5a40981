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

/// The variable Candle reads, once, to size the thread pool of its element-wise operations.
pub const CANDLE_THREADS_VAR: &str = "CANDLE_NUM_THREADS";

/// Runs Candle's element-wise operations on the calling thread, unless the user set
/// `CANDLE_NUM_THREADS`. Candle 0.11 otherwise fans them out to a pool of its own whose threads
/// spin while they wait, and which competes for the cores with the rayon threads of our
/// convolutions: on 2 cores that made a small network's training steps about 5x slower (see
/// bench/model.sh for the full-size figures).
///
/// # Safety
/// It sets an environment variable, which is only sound while no other thread can read the
/// environment: call it first thing in `main`, before any thread is started.
#[allow(unsafe_code)]
pub unsafe fn keep_candle_elementwise_on_caller() {
    if std::env::var_os(CANDLE_THREADS_VAR).is_none() {
        // SAFETY: the caller guarantees that the process has a single thread.
        unsafe { std::env::set_var(CANDLE_THREADS_VAR, "1") };
    }
}
