//! The synthetic cohort: a dataset in exactly the CODE-15% layout (`exams.csv` plus
//! `exams_part{i}.hdf5`), whose 12-lead tracings carry a hidden biological age that also drives
//! mortality, so that the whole pipeline of the paper (train an ECG-age model, then relate the
//! ECG-age gap to death) can run on it.
//!
//! Every patient has a hidden biological-age offset; an exam's biological age is its age plus
//! that offset. The offset shapes the waveform (rate, intervals, amplitudes, axis, rhythm; see
//! [`physiology`]) and the hazard of death ([`cohort`]). `nn_predicted_age` in the CSV holds
//! the biological age, rounded to 2 decimals: it plays the role of the paper network's ECG-age,
//! as the oracle a perfect model would predict. The diagnosis columns follow from the rendered
//! parameters. Tracings are rendered with a cardiac dipole model ([`dipole`], [`render`]).
//!
//! The patients, exams and tracings depend only on the number of patients and the seed (the
//! part size only decides which part holds an exam and the row order within a part): every
//! patient and exam has its own random stream, and the rows are written in a fixed order,
//! whatever the number of threads.
//!
//! Layout:
//! - [`cohort`]: patients, ages, ids, outcomes, exam parameters, in CSV order.
//! - [`physiology`]: from biological age to ECG parameters and diagnosis labels.
//! - [`dipole`]: lead geometry and the beat template.
//! - [`render`]: a whole record (beats, rhythm, baseline wander, noise, padding).
//! - [`csv_out`]: the writer of `exams.csv`.
//! - [`pipeline`]: [`generate`], the threads and the in-order HDF5 writer.
//! - [`rng`]: the random streams and the id permutation.
use std::path::PathBuf;

pub mod cohort;
pub mod csv_out;
pub mod dipole;
pub mod physiology;
pub mod pipeline;
pub mod render;
pub mod rng;

pub use pipeline::generate;

use crate::{Error, Result};

/// Samples per HDF5 row (records are zero-padded to this length).
pub const N_SAMPLES: usize = 4096;
/// Leads per sample: I, II, III, aVR, aVL, aVF, V1..V6.
pub const N_LEADS: usize = 12;
/// Largest cohort accepted (ids and memory stay far from any limit below it).
pub const MAX_PATIENTS: u64 = 100_000_000;
/// Exams per part in CODE-15%.
pub const DEFAULT_EXAMS_PER_PART: usize = 20_000;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfig {
    /// Number of patients (each has 1-4 exams).
    pub patients: u64,
    /// Seed: the files are a function of (`patients`, `seed`, `exams_per_part`) only.
    pub seed: u64,
    /// Exams per HDF5 part (the last part holds the rest); each part has one more, padding row.
    pub exams_per_part: usize,
    /// Rendering threads (the calling thread writes).
    pub threads: usize,
    /// Replace `exams.csv` and `exams_part*.hdf5` in a non-empty output directory instead of
    /// refusing it. Other files there are left alone.
    pub overwrite: bool,
}

impl SynthConfig {
    /// `patients` patients with `seed`, CODE-sized parts, as many threads as the machine has.
    pub fn new(patients: u64, seed: u64) -> Self {
        SynthConfig {
            patients,
            seed,
            exams_per_part: DEFAULT_EXAMS_PER_PART,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            overwrite: false,
        }
    }

    /// Checks the values, naming the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_PATIENTS).contains(&self.patients) {
            return Err(Error::Config(format!(
                "synthetic cohort: patients must be within 1..={MAX_PATIENTS}, got {}",
                self.patients
            )));
        }
        if self.exams_per_part == 0 {
            return Err(Error::Config(
                "synthetic cohort: exams_per_part must be at least 1".into(),
            ));
        }
        if self.threads == 0 {
            return Err(Error::Config(
                "synthetic cohort: threads must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Where generation stands, passed to the progress callback after every block of rows written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Exams whose tracings are written.
    pub exams_done: u64,
    /// Exams in the cohort.
    pub exams_total: u64,
    /// Parts finished.
    pub parts_done: u32,
    /// Parts in the cohort.
    pub parts_total: u32,
}

/// What was generated.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    /// Patients.
    pub patients: u64,
    /// Exams (CSV rows; HDF5 rows without padding).
    pub exams: u64,
    /// Patients who died during follow-up.
    pub deaths: u64,
    /// `exams.csv`.
    pub csv: PathBuf,
    /// The HDF5 parts, in order.
    pub parts: Vec<PathBuf>,
    /// Wall-clock time of the generation, seconds.
    pub seconds: f64,
}

impl SynthSummary {
    /// Exams generated per second of wall-clock time.
    pub fn exams_per_second(&self) -> f64 {
        self.exams as f64 / self.seconds.max(1e-9)
    }
}

/// Name of HDF5 part `i`, as written in the `trace_file` column.
pub fn part_name(i: u32) -> String {
    format!("exams_part{i}.hdf5")
}
