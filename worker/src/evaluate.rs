//! `worker evaluate`: the seed's `evaluate.py`. Runs a trained network over every row of one
//! HDF5 file, in file order and in batches, and writes `ids,predicted_age`, one line per row
//! (padding rows included, as the seed does). Given the exams table, it also prints how well the
//! predictions agree with the true ages (MAE, RMSE, mean error, Pearson r), matching rows to the
//! table by exam id.
//!
//! Inputs are checked before the long part starts: the output folder, the model (and that its
//! input length fits the file's tracings), the HDF5 datasets and the exams table. The output is
//! written to a temporary file beside the target and renamed into place at the end, so a failure
//! never leaves a partial file.
//!
//! Layout: this file holds the command line and the prediction loop; [`output`] the CSV file;
//! [`compare`] the match against the exams table and the printed report.
pub mod compare;
pub mod output;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use ecg_shared::data::sequential::{SequentialReader, has_dataset};
use ecg_shared::model::ResNet1d;
use ecg_shared::model::config::N_LEADS;

use crate::Result;

/// The id dataset used when `--ids-dset` is not given and the file has it (CODE-15%).
pub const DEFAULT_IDS_DSET: &str = "exam_id";

/// Arguments of `worker evaluate`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The trained network: a folder holding the authors' `model.pth` and `config.json` (their
    /// published layout), a `.pth` file with `config.json` beside it, or one of our
    /// `.safetensors` checkpoints.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// HDF5 file with the tracings, (exams, samples, 12) float32 or float64. Every row is
    /// evaluated, in file order, without any preprocessing (as the seed's evaluate.py).
    #[arg(long, value_name = "FILE")]
    pub hdf5: PathBuf,
    /// HDF5 dataset whose values fill the `ids` column. Default: `exam_id` when the file has
    /// such a dataset (CODE-15%), else the row numbers 0..N-1.
    #[arg(long, value_name = "NAME", conflicts_with = "row_numbers")]
    pub ids_dset: Option<String>,
    /// Write the row numbers 0..N-1 as ids even when the file has `exam_id` (the seed's
    /// evaluate.py without --ids_dset).
    #[arg(long)]
    pub row_numbers: bool,
    /// HDF5 dataset holding the tracings.
    #[arg(long, value_name = "NAME", default_value = "tracings")]
    pub traces_dset: String,
    /// Exams per forward pass (the seed's default). Speed and memory depend on it; the
    /// predictions, in our tests, do not (the same bits for batch sizes 1, 3, 8).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Output CSV: header `ids,predicted_age`, one line per HDF5 row in file order.
    /// `predicted_age` is the network's f32 output widened to f64 and printed in the shortest
    /// form that reads back to the same value (the digits pandas writes for the seed's float64
    /// copy); it reads back to the exact f32. A NaN prediction is an empty cell, as in pandas.
    #[arg(long, value_name = "FILE", default_value = "predicted_age.csv")]
    pub output: PathBuf,
    /// Exams table with the true ages: prints MAE, RMSE, mean error (predicted - true) and
    /// Pearson r over the rows whose exam id it lists with an age. Rows with exam id 0
    /// (padding), ids absent from the table and missing ages are counted and left out. Needs
    /// an id dataset (see --ids-dset).
    #[arg(long, value_name = "FILE", conflicts_with = "row_numbers")]
    pub csv: Option<PathBuf>,
    /// Exam id column of --csv.
    #[arg(long, value_name = "NAME", default_value = "exam_id")]
    pub csv_id_col: String,
    /// Age column of --csv.
    #[arg(long, value_name = "NAME", default_value = "age")]
    pub csv_age_col: String,
}

fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a positive integer: {e}")),
    }
}

/// What the prediction loop needs from a network: its input length and evaluation-mode
/// predictions for a `(batch, 12, seq_length)` row-major buffer.
pub trait Predictor {
    /// Samples per lead the network reads.
    fn seq_length(&self) -> usize;
    /// One prediction per exam.
    fn predict(&self, x: &[f32], batch: usize) -> ecg_shared::Result<Vec<f32>>;
}

impl Predictor for ResNet1d {
    fn seq_length(&self) -> usize {
        self.config().seq_length
    }

    fn predict(&self, x: &[f32], batch: usize) -> ecg_shared::Result<Vec<f32>> {
        ResNet1d::predict(self, x, batch)
    }
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    if args.batch_size == 0 {
        return Err(config_err("--batch-size must be at least 1".into()));
    }
    let out = output::PendingOutput::create(&args.output)?;
    if !args.hdf5.exists() {
        return Err(config_err(format!(
            "--hdf5 {}: no such file",
            args.hdf5.display()
        )));
    }
    let ids_dset = resolve_ids_dset(args)?;
    let model = load_model(&args.model)?;
    let reader = SequentialReader::open(&args.hdf5, &args.traces_dset, ids_dset.as_deref())?;
    check_fits(&reader, model.seq_length(), &args.model)?;
    let table = match &args.csv {
        Some(csv) => Some(compare::AgeTable::read(
            csv,
            &args.csv_id_col,
            &args.csv_age_col,
        )?),
        None => None,
    };
    tracing::info!(
        "evaluating {} rows of {} (`{}`, ids: {}) in batches of {}",
        reader.n_rows(),
        args.hdf5.display(),
        args.traces_dset,
        ids_dset
            .as_deref()
            .map_or("row numbers".to_string(), |d| format!("`{d}`")),
        args.batch_size
    );

    let started = Instant::now();
    let predictions = predict_file(&reader, &model, args.batch_size)?;
    let ids: Vec<i64> = match reader.ids() {
        Some(ids) => ids.to_vec(),
        None => (0..reader.n_rows() as i64).collect(),
    };
    out.write(&ids, &predictions)?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "wrote {} predictions to {} ({:.1} s, {:.1} exams/s)",
        predictions.len(),
        args.output.display(),
        secs,
        predictions.len() as f64 / secs.max(1e-9)
    );

    if let Some(table) = table {
        let report = compare::compare(&ids, &predictions, &table)?;
        print!("{report}");
    }
    Ok(())
}

fn config_err(msg: String) -> crate::Error {
    ecg_shared::Error::Config(msg).into()
}

/// The id dataset to read: `--ids-dset`, else `exam_id` when the file has it (unless
/// `--row-numbers`); `None` means row numbers. `--csv` needs one.
fn resolve_ids_dset(args: &Args) -> Result<Option<String>> {
    let dset = match (&args.ids_dset, args.row_numbers) {
        (Some(name), _) => Some(name.clone()),
        (None, true) => None,
        (None, false) => {
            has_dataset(&args.hdf5, DEFAULT_IDS_DSET)?.then(|| DEFAULT_IDS_DSET.to_string())
        }
    };
    if dset.is_none()
        && let Some(csv) = &args.csv
    {
        return Err(config_err(format!(
            "--csv {} matches rows to exams by id, but {} has no `{DEFAULT_IDS_DSET}` dataset: \
             name the HDF5 dataset of exam ids with --ids-dset",
            csv.display(),
            args.hdf5.display()
        )));
    }
    Ok(dset)
}

/// Loads the checkpoint at `path` (see [`Args::model`]) as a CPU network.
fn load_model(path: &Path) -> Result<ResNet1d> {
    if !path.exists() {
        return Err(config_err(format!(
            "--model {}: no such file or folder",
            path.display()
        )));
    }
    let ckpt = ecg_shared::model::load_checkpoint(path)?;
    let model = ckpt.build(&Device::Cpu)?;
    tracing::info!(
        "model {} ({:?}, seq_length {}, filters {:?})",
        ckpt.source.display(),
        ckpt.kind,
        ckpt.config.seq_length,
        ckpt.config.net_filter_size
    );
    Ok(model)
}

/// Refuses tracings whose rows the network cannot read.
fn check_fits(reader: &SequentialReader, seq_length: usize, model: &Path) -> Result<()> {
    let info = reader.info();
    if info.n_leads != N_LEADS || info.n_samples != seq_length {
        return Err(ecg_shared::Error::hdf5(
            &info.path,
            format!(
                "dataset `{}` has shape ({}, {}, {}) but the model {} reads (N, {seq_length}, \
                 {N_LEADS}) (exams, samples, leads): model and data do not fit",
                info.traces_dset,
                info.n_rows,
                info.n_samples,
                info.n_leads,
                model.display()
            ),
        )
        .into());
    }
    Ok(())
}

/// Predictions for every row of `reader`, in file order, `batch_size` rows per forward pass.
/// A progress bar on stderr when it is a terminal, else a log line at every tenth of the file.
pub fn predict_file(
    reader: &SequentialReader,
    model: &dyn Predictor,
    batch_size: usize,
) -> Result<Vec<f32>> {
    let n = reader.n_rows();
    let ranges = reader.ranges(batch_size)?;
    let bar = progress_bar(n);
    let (mut x, mut scratch) = (Vec::new(), Vec::new());
    let mut predictions = Vec::with_capacity(n);
    // Without a terminal: one log line each time another tenth of the file is done.
    let (mut next_log, started) = (1, Instant::now());
    for range in ranges {
        let rows = range.len();
        reader.read_rows(range.start, range.end, &mut x, &mut scratch)?;
        let p = model.predict(&x, rows)?;
        if p.len() != rows {
            return Err(ecg_shared::Error::Training(format!(
                "the model returned {} predictions for {rows} exams",
                p.len()
            ))
            .into());
        }
        predictions.extend_from_slice(&p);
        match &bar {
            Some(bar) => bar.inc(rows as u64),
            None => {
                let tenths = predictions.len() * 10 / n.max(1);
                if tenths >= next_log {
                    let secs = started.elapsed().as_secs_f64();
                    tracing::info!(
                        "{}/{n} rows evaluated ({:.1} exams/s)",
                        predictions.len(),
                        predictions.len() as f64 / secs.max(1e-9)
                    );
                    next_log = tenths + 1;
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(predictions)
}

fn progress_bar(n: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} exams  {elapsed_precise}  eta {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecg_shared::data::h5write::TracingsWriter;

    /// A stand-in network: the sum of each exam's values, in exam order.
    struct SumModel(usize);

    impl Predictor for SumModel {
        fn seq_length(&self) -> usize {
            self.0
        }
        fn predict(&self, x: &[f32], batch: usize) -> ecg_shared::Result<Vec<f32>> {
            Ok(x.chunks_exact(x.len() / batch)
                .map(|r| r.iter().sum())
                .collect())
        }
    }

    #[test]
    fn every_row_is_predicted_once_in_file_order_whatever_the_batch_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("part.hdf5");
        let (n, l) = (7usize, 4usize);
        let data: Vec<f32> = (0..n * l * N_LEADS)
            .map(|i| (i / (l * N_LEADS)) as f32)
            .collect();
        let mut w = TracingsWriter::create(&p, n, l, N_LEADS).unwrap();
        w.write_rows(0, &[1, 2, 3, 4, 5, 6, 0], &data).unwrap();
        w.finish().unwrap();
        let reader = SequentialReader::open(&p, "tracings", None).unwrap();
        let want: Vec<f32> = (0..n).map(|r| (r * l * N_LEADS) as f32).collect();
        for bs in [1, 3, 7, 100] {
            assert_eq!(
                predict_file(&reader, &SumModel(l), bs).unwrap(),
                want,
                "bs {bs}"
            );
        }
        assert!(check_fits(&reader, l, Path::new("m")).is_ok());
        let e = check_fits(&reader, 8, Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("part.hdf5") && e.contains("(N, 8, 12)"), "{e}");
    }

    #[test]
    fn batch_size_zero_is_refused_by_the_parser() {
        assert!(at_least_one("0").unwrap_err().contains("at least 1"));
        assert!(at_least_one("x").is_err());
        assert_eq!(at_least_one("32"), Ok(32));
    }
}
