//! `coordinator split`: reads the exams CSV, splits its patients into train / valid / test with
//! one of the three strategies, writes `split.csv` (`exam_id,patient_id,split`, one row per exam
//! in CSV order) and prints a report (patients, exams and age histogram per split).
//!
//! ```text
//! coordinator split --csv exams.csv --strategy age-balanced --seed 0 --fractions 0.15,0.05 --out split.csv
//! ```
use std::path::PathBuf;
use std::time::Instant;

use ecg_shared::data::csv::{CsvColumns, ExamTable};
use ecg_shared::split::{
    Fractions, PinSpec, Split, SplitReport, SplitStrategy, assign, write_split_csv,
};

use crate::{Error, Result};

/// Strategy names on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyArg {
    /// The seed's algorithm (formulate_problem.py), same result as NumPy's RandomState(seed).
    AgeBalanced,
    /// Keyed hash of the patient id: a patient never moves when patients are added.
    Hash,
    /// Patients listed in --pin-file are pinned; the others are split by `hash`.
    File,
}

/// Arguments of `coordinator split`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The exams CSV (CODE layout: columns found by name).
    #[arg(long)]
    pub csv: PathBuf,
    /// Split strategy.
    #[arg(long, value_enum, default_value = "age-balanced")]
    pub strategy: StrategyArg,
    /// Seed: NumPy RandomState seed for age-balanced, hash key for hash and file.
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Fractions of patients `TEST,VALID`; training gets the rest (the seed's --splits).
    #[arg(long, default_value = "0.15,0.05", value_parser = parse_fractions)]
    pub fractions: Fractions,
    /// Where to write split.csv.
    #[arg(long, default_value = "split.csv")]
    pub out: PathBuf,
    /// Exam id column of the CSV.
    #[arg(long, default_value = "exam_id")]
    pub exam_id_col: String,
    /// Age column of the CSV.
    #[arg(long, default_value = "age")]
    pub age_col: String,
    /// Patient id column of the CSV; empty for a table without one (one patient per exam).
    #[arg(long, default_value = "patient_id")]
    pub patient_id_col: String,
    /// For --strategy file: CSV listing the pinned patients (e.g. CODE-15%'s exams.csv); a
    /// `split` column, if present, gives each patient's split.
    #[arg(long)]
    pub pin_file: Option<PathBuf>,
    /// For --strategy file: the pin file's patient id column.
    #[arg(long, default_value = "patient_id")]
    pub pin_col: String,
    /// For --strategy file: the split of pinned patients without a `split` cell.
    #[arg(long, default_value = "test", value_parser = parse_split)]
    pub pin_split: Split,
}

fn parse_fractions(s: &str) -> std::result::Result<Fractions, String> {
    s.parse().map_err(|e| shared_message(&e))
}

fn parse_split(s: &str) -> std::result::Result<Split, String> {
    s.parse().map_err(|e| shared_message(&e))
}

/// The message of a shared error without its `config:` prefix (clap adds its own context).
fn shared_message(e: &ecg_shared::Error) -> String {
    match e {
        ecg_shared::Error::Config(msg) => msg.clone(),
        other => other.to_string(),
    }
}

impl Args {
    /// The library strategy these arguments describe.
    fn strategy(&self) -> Result<SplitStrategy> {
        match (self.strategy, &self.pin_file) {
            (StrategyArg::File, Some(path)) => Ok(SplitStrategy::File(PinSpec {
                path: path.clone(),
                column: self.pin_col.clone(),
                split: self.pin_split,
                ..PinSpec::default()
            })),
            (StrategyArg::File, None) => Err(Error::Arg {
                arg: "--pin-file",
                msg: "--strategy file needs a CSV of pinned patients".into(),
            }),
            (_, Some(path)) => Err(Error::Arg {
                arg: "--pin-file",
                msg: format!("{} is only used with --strategy file", path.display()),
            }),
            (StrategyArg::AgeBalanced, None) => Ok(SplitStrategy::AgeBalanced),
            (StrategyArg::Hash, None) => Ok(SplitStrategy::Hash),
        }
    }

    fn columns(&self) -> CsvColumns {
        CsvColumns {
            exam_id: self.exam_id_col.clone(),
            age: self.age_col.clone(),
            patient_id: (!self.patient_id_col.is_empty()).then(|| self.patient_id_col.clone()),
            // The split needs ids and ages only: leave the optional columns unread.
            ..CsvColumns::ids_and_age()
        }
    }
}

/// Runs `coordinator split`.
pub fn run(args: &Args) -> Result<()> {
    let strategy = args.strategy()?;
    let t0 = Instant::now();
    let table = ExamTable::read(&args.csv, &args.columns())?;
    let t_read = t0.elapsed();
    let assignment = assign(&table, &strategy, args.seed, args.fractions)?;
    let t_split = t0.elapsed() - t_read;
    write_split_csv(&args.out, &table, &assignment)?;
    let t_write = t0.elapsed() - t_read - t_split;

    println!(
        "{}: {} exams; strategy {strategy}, seed {}, fractions test {} valid {} (train the rest)\n",
        args.csv.display(),
        table.len(),
        args.seed,
        args.fractions.test,
        args.fractions.valid
    );
    println!("{}", SplitReport::new(&table, &assignment));
    println!(
        "wrote {} (read {:.3} s, split {:.3} s, write {:.3} s)",
        args.out.display(),
        t_read.as_secs_f64(),
        t_split.as_secs_f64(),
        t_write.as_secs_f64()
    );
    Ok(())
}
