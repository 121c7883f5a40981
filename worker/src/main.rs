//! `worker`: parses the command line, sets up logging and runs the chosen command.
use clap::{Parser, Subcommand};
use ecg_worker::{bench, check_data, evaluate, gpu_check, run};

/// The ecg-cluster worker: one process per GPU.
///
/// `worker --coordinator host:port [--gpu N | --cpu]` joins the coordinator's run, trains and
/// validates with it until the run is over. The subcommands check the data and evaluate a
/// trained network.
#[derive(Parser, Debug)]
#[command(name = "worker", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: run::Args,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Index the dataset as this node sees it and print the report and the dataset fingerprint.
    CheckData(check_data::Args),
    /// Predict the age of every exam of an HDF5 file with a trained network and write
    /// `ids,predicted_age` (the seed's evaluate.py); with --csv, also print MAE, RMSE, mean error
    /// and Pearson r against the true ages.
    Evaluate(evaluate::Args),
    /// Check every op of the network on a CUDA device against the CPU (exit status 1 on any
    /// error beyond its tolerance).
    GpuCheck(gpu_check::Args),
    /// Time the worker's training step on random exams (JSON lines, one per batch size).
    Bench(bench::Args),
}

#[allow(unsafe_code)]
fn main() -> std::process::ExitCode {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    unsafe { ecg_shared::cli::keep_candle_elementwise_on_caller() };
    ecg_shared::cli::keep_freed_memory();
    ecg_shared::cli::init_logging();
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Some(Cmd::CheckData(args)) => check_data::run(args),
        Some(Cmd::Evaluate(args)) => evaluate::run(args),
        Some(Cmd::GpuCheck(args)) => gpu_check::run(args),
        Some(Cmd::Bench(args)) => bench::run(args),
        None => run::run(&cli.run),
    };
    ecg_shared::cli::exit_code(result)
}
