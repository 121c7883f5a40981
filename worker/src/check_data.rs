//! `worker check-data`: indexes the dataset as this node sees it (the HDF5 files may be mounted
//! elsewhere than on the coordinator's node: `--data-root`) and prints the index report and the
//! dataset fingerprint. Two nodes with the same fingerprint hold the same exams, ids, ages and
//! tracings.
use std::path::PathBuf;

use ecg_shared::config::ClusterConfig;

use crate::Result;

/// Arguments of `worker check-data`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's cluster.toml.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Where the CSV and HDF5 files are on this node (overrides `data.root`).
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
}

/// Builds the index and prints its report and fingerprint.
pub fn run(args: &Args) -> Result<()> {
    let mut cfg = ClusterConfig::load(&args.config)?;
    if let Some(root) = &args.data_root {
        cfg.data.root = root.clone();
    }
    let (_, index, report) = cfg.build_index()?;
    println!("{report}");
    println!("dataset fingerprint {}", index.fingerprint());
    Ok(())
}
