//! `coordinator --config cluster.toml`: loads the configuration, indexes the dataset (CSV and
//! HDF5 joined by exam id), reports what was left out and why, prints the dataset fingerprint,
//! splits the usable exams' patients and writes `split.csv` to the output directory.
use std::path::PathBuf;

use ecg_shared::config::ClusterConfig;
use ecg_shared::split::{self, SplitReport};

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
    Ok(())
}
