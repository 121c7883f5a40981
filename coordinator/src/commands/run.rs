//! `coordinator --config cluster.toml`: loads the configuration, checks the output folder, the
//! token file and the listen addresses, indexes the dataset (CSV and HDF5 joined by exam id),
//! reports what was left out and why, prints the dataset fingerprint, splits the usable exams'
//! patients, loads the starting checkpoint or the previous run's state, and only then writes
//! `split.csv`; then serves the run to its workers (or, with `--local`, trains in this process
//! alone) until it ends, printing the test-split MAE and where the outputs are. Bad input stops
//! it before it writes anything.
use std::path::PathBuf;

use ecg_shared::config::ClusterConfig;
use ecg_shared::train::local::{TrainEvent, files, train_local};

use crate::prepare::{check_output_dir, check_serving, prepare};
use crate::server::run_cluster;
use crate::trainer::{TEST_PREDICTIONS, Trainer};
use crate::{Error, Result};

/// Arguments of the coordinator run.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's configuration (see deploy/cluster.toml for every field). Environment variables
    /// ECG__SECTION__KEY override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Train in this process alone, without workers (the single-process trainer).
    #[arg(long)]
    pub local: bool,
}

/// Runs the coordinator with `args`.
pub fn run(args: &Args) -> Result<()> {
    let Some(path) = &args.config else {
        return Err(Error::Arg {
            arg: "--config",
            msg: "missing: give a cluster.toml, or a subcommand (see --help)".into(),
        });
    };
    let cfg = ClusterConfig::load(path)?;
    // Everything that can be checked is checked before the first file is written.
    check_output_dir(&cfg)?;
    if !args.local {
        check_serving(&cfg)?;
    }
    let data = prepare(&cfg)?;
    let t = &cfg.training;
    println!(
        "training: {} train / {} valid / {} test exams, batch {}, up to {} epochs, order {:?}{}",
        data.train.len(),
        data.valid.len(),
        data.test.len(),
        t.batch_size,
        t.epochs,
        t.order,
        if t.init_from.as_os_str().is_empty() {
            String::new()
        } else {
            format!(", starting from {}", t.init_from.display())
        }
    );
    let bar = super::progress_bar(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} steps ({per_sec}, eta {eta}) {msg}",
    );
    let mut on_event = |ev: TrainEvent| match ev {
        TrainEvent::EpochStart { epoch, steps, lr } => {
            bar.reset();
            bar.set_length(steps as u64);
            bar.set_prefix(format!("epoch {epoch} lr {lr:.0e}"));
        }
        TrainEvent::Step { done, train_loss } => {
            bar.set_position(done as u64);
            bar.set_message(format!("train loss {train_loss:.2}"));
        }
        TrainEvent::Validating { exams } => bar.set_message(format!("validating {exams} exams")),
        TrainEvent::EpochEnd(row) => {
            bar.suspend(|| {
                println!(
                    "epoch {:>3}  train loss {:>10.4}  valid loss {:>10.4}  valid MAE {:>7.3} y  lr {:.1e}",
                    row.epoch, row.train_loss, row.valid_loss, row.metrics.mae, row.lr
                )
            });
        }
        TrainEvent::Stopped { epoch, lr } => bar.suspend(|| {
            println!(
                "stopping after epoch {epoch}: learning rate {lr:.1e} is below training.min_lr"
            )
        }),
    };
    let out = cfg.output.dir.clone();
    if args.local {
        data.write_split()?;
        println!("training on this machine, without workers");
        let summary = train_local(&cfg, &data.index, &data.train, &data.valid, &mut on_event);
        bar.finish_and_clear();
        let summary = summary?;
        match summary.best_epoch {
            Some(e) => println!(
                "best validation loss {:.4} at epoch {e}; outputs in {}",
                summary.best_valid_loss,
                out.display()
            ),
            None => println!("no epoch ran; outputs in {}", out.display()),
        }
        return Ok(());
    }
    let split_csv = data.split_csv.clone();
    // The checkpoints (initial weights, a previous run's state) are loaded and checked first.
    let trainer = Trainer::start(cfg, data)?;
    trainer.data.write_split()?;
    let outcome = run_cluster(trainer, &mut on_event);
    bar.finish_and_clear();
    let outcome = outcome?;
    println!(
        "run over: {} ({} steps)",
        outcome.reason, outcome.global_step
    );
    if let (Some(s), Some(r)) = (outcome.median_step_seconds, outcome.median_reduce_seconds) {
        println!(
            "median step {:.2} ms; summing and Adam, as the gradients arrived, {:.2} ms",
            s * 1e3,
            r * 1e3
        );
    }
    if let Some([during, published, early]) = outcome.downloads {
        println!(
            "state downloads: {during} streamed while their step was reduced, {published} of a \
             committed version, {early} ended early"
        );
    }
    if let Some([up, down]) = outcome.shared_memory_bytes
        && up + down > 0
    {
        println!(
            "shared memory: {up} bytes of gradients and {down} bytes of parameters passed \
             through it"
        );
    }
    if let Some((e, loss)) = outcome.best {
        println!("best validation loss {loss:.4} at epoch {e}");
    }
    if let Some(t) = outcome.test {
        println!(
            "test split: MAE {:.3} years, RMSE {:.3} years over {} exams (best model)",
            t.mae, t.rmse, t.exams
        );
    }
    println!("outputs in {}:", out.display());
    for f in [
        files::BEST,
        files::LAST,
        files::HISTORY,
        TEST_PREDICTIONS,
        ecg_shared::train::resume::STATE_FILE,
    ] {
        let p = out.join(f);
        if p.exists() {
            println!("  {}", p.display());
        }
    }
    println!("  {}", split_csv.display());
    Ok(())
}
