//! `coordinator`: parses the command line, sets up logging and runs the chosen command.
use clap::{Parser, Subcommand};
use ecg_coordinator::commands;

/// The ecg-cluster coordinator.
///
/// With `--config cluster.toml` it indexes the dataset (CSV + HDF5), checks that they fit,
/// splits the patients into train / valid / test, writes `split.csv` to the output directory
/// and serves the run to its workers (`worker --coordinator host:port`) until it is over:
/// history.csv, best and last checkpoints, the training state, the test-split MAE. With
/// `--local` it trains in this process alone. The subcommands generate a synthetic CODE-format
/// cohort, split a CSV alone, and query a running coordinator.
#[derive(Parser, Debug)]
#[command(name = "coordinator", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: commands::run::Args,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate a synthetic cohort in the CODE-15% layout (exams.csv + exams_part{i}.hdf5).
    Synth(commands::synth::Args),
    /// Split the patients of an exams CSV into train / valid / test and write split.csv.
    Split(commands::split::Args),
    /// Ask a running coordinator where its run is and who works for it.
    Status(commands::status::Args),
}

#[allow(unsafe_code)]
fn main() -> std::process::ExitCode {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    unsafe { ecg_shared::cli::keep_candle_elementwise_on_caller() };
    ecg_shared::cli::keep_freed_memory();
    ecg_shared::cli::init_logging();
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Some(Cmd::Synth(args)) => commands::synth::run(args),
        Some(Cmd::Split(args)) => commands::split::run(args),
        Some(Cmd::Status(args)) => commands::status::run(args),
        None => commands::run::run(&cli.run),
    };
    ecg_shared::cli::exit_code(result)
}
