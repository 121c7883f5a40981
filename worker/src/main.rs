//! `worker`: parses the command line, sets up logging and runs the chosen command.
use clap::{Parser, Subcommand};
use ecg_worker::check_data;

/// The ecg-cluster worker: one process per GPU.
#[derive(Parser, Debug)]
#[command(name = "worker", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Index the dataset as this node sees it and print the report and the dataset fingerprint.
    CheckData(check_data::Args),
}

fn main() -> std::process::ExitCode {
    ecg_shared::cli::init_logging();
    let result = match &Cli::parse().cmd {
        Cmd::CheckData(args) => check_data::run(args),
    };
    ecg_shared::cli::exit_code(result)
}
