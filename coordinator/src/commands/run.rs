//! `coordinator --config cluster.toml`: loads the configuration, indexes the dataset (CSV and
//! HDF5 joined by exam id), reports what was left out and why, prints the dataset fingerprint,
//! splits the usable exams' patients, writes `split.csv` to the output directory, then trains
//! the network on this machine (the single-process trainer: history.csv, checkpoints).
use std::path::PathBuf;

use ecg_shared::config::ClusterConfig;
use ecg_shared::split::{self, Split, SplitReport};
use ecg_shared::train::local::{TrainEvent, train_local};

use crate::{Error, Result};

/// Arguments of the coordinator run.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's configuration (see deploy/cluster.toml for every field). Environment variables
    /// ECG__SECTION__KEY override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    let (table, index, report) = cfg.build_index()?;
    println!("{report}");
    if index.is_empty() {
        return Err(ecg_shared::Error::Dataset(format!(
            "no usable exam: none of the {} rows of {} has a tracing and a valid age",
            table.len(),
            table.path.display()
        ))
        .into());
    }
    println!("dataset fingerprint {}", index.fingerprint());

    // The split covers the exams the run can use: those with a tracing and a valid age.
    let usable = table.select(
        &index
            .exams
            .iter()
            .map(|e| e.csv_row as usize)
            .collect::<Vec<_>>(),
    );
    let (strategy, fractions) = cfg.split_strategy()?;
    let assignment = split::assign(&usable, &strategy, cfg.split.seed, fractions)?;
    assignment.check(&usable)?;
    std::fs::create_dir_all(&cfg.output.dir)
        .map_err(|e| ecg_shared::Error::io(&cfg.output.dir, e))?;
    let split_csv = cfg.output.dir.join("split.csv");
    split::write_split_csv(&split_csv, &usable, &assignment)?;
    println!(
        "split: strategy {}, seed {}, fractions test {} valid {}",
        strategy.name(),
        cfg.split.seed,
        fractions.test,
        fractions.valid
    );
    println!("{}", SplitReport::new(&usable, &assignment));
    println!("wrote {}", split_csv.display());

    let train = assignment.rows(Split::Train);
    let valid = assignment.rows(Split::Valid);
    let t = &cfg.training;
    println!(
        "training on this machine: {} train / {} valid exams, batch {}, up to {} epochs, order {:?}{}",
        train.len(),
        valid.len(),
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
    let summary = train_local(&cfg, &index, &train, &valid, &mut |ev| match ev {
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
    });
    bar.finish_and_clear();
    let summary = summary?;
    match summary.best_epoch {
        Some(e) => println!(
            "best validation loss {:.4} at epoch {e}; outputs in {}",
            summary.best_valid_loss,
            summary.out_dir.display()
        ),
        None => println!("no epoch ran; outputs in {}", summary.out_dir.display()),
    }
    Ok(())
}
