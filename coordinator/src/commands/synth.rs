//! `coordinator synth`: writes a synthetic cohort in the CODE-15% layout (`exams.csv` and
//! `exams_part{i}.hdf5`) with [`ecg_shared::synth::generate`], shows a progress bar on a
//! terminal and prints a short summary.
//!
//! ```text
//! coordinator synth --out data/synth --patients 10000 --seed 1 [--exams-per-part 20000] [--threads 2] [--force]
//! ```
use std::path::{Path, PathBuf};

use ecg_shared::synth::{self, MAX_PATIENTS, SynthConfig, SynthSummary};

use crate::{Error, Result};

/// Arguments of `coordinator synth`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory (created if missing; must be empty unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of patients (1-4 exams each, 1.48 on average).
    #[arg(long)]
    pub patients: u64,
    /// Seed: the same --patients, --seed and --exams-per-part give the same data, whatever --threads.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Exams per HDF5 part (CODE-15% has 20,000); each part also ends with a padding row.
    #[arg(long, default_value_t = synth::DEFAULT_EXAMS_PER_PART)]
    pub exams_per_part: usize,
    /// Rendering threads [default: the number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Use a non-empty output directory: replace its exams.csv and exams_part*.hdf5.
    #[arg(long)]
    pub force: bool,
}

impl Args {
    /// The generator's configuration, or the argument that cannot be used.
    fn config(&self) -> Result<SynthConfig> {
        if !(1..=MAX_PATIENTS).contains(&self.patients) {
            let msg = format!("must be within 1..={MAX_PATIENTS}, got {}", self.patients);
            return Err(Error::Arg {
                arg: "--patients",
                msg,
            });
        }
        if self.exams_per_part == 0 {
            return Err(Error::Arg {
                arg: "--exams-per-part",
                msg: "must be at least 1".into(),
            });
        }
        let mut cfg = SynthConfig::new(self.patients, self.seed);
        cfg.exams_per_part = self.exams_per_part;
        cfg.overwrite = self.force;
        match self.threads {
            Some(0) => Err(Error::Arg {
                arg: "--threads",
                msg: "must be at least 1".into(),
            }),
            Some(t) => Ok(SynthConfig { threads: t, ..cfg }),
            None => Ok(cfg),
        }
    }
}

/// Refuses an output path that is a file, or a non-empty directory without --force.
fn check_out_dir(out: &Path, force: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        let msg = format!("{} exists and is not a directory", out.display());
        return Err(Error::Arg { arg: "--out", msg });
    }
    if out.is_dir() && !force {
        let mut entries = std::fs::read_dir(out).map_err(|e| ecg_shared::Error::io(out, e))?;
        if entries.next().is_some() {
            let msg = format!(
                "{} is not empty; pass --force to replace its exams.csv and exams_part*.hdf5",
                out.display()
            );
            return Err(Error::Arg { arg: "--out", msg });
        }
    }
    Ok(())
}

/// Runs `coordinator synth`.
pub fn run(args: &Args) -> Result<()> {
    let cfg = args.config()?;
    check_out_dir(&args.out, args.force)?;
    let bar = super::progress_bar(
        "{spinner} synth [{elapsed_precise}] {wide_bar} {pos}/{len} exams ({per_sec}, eta {eta}) {msg}",
    );
    let summary = synth::generate(&cfg, &args.out, |p| {
        bar.set_length(p.exams_total);
        bar.set_position(p.exams_done);
        bar.set_message(format!("part {}/{}", p.parts_done, p.parts_total));
    });
    bar.finish_and_clear();
    let summary = summary?;
    print_summary(&summary, cfg.threads);
    Ok(())
}

fn print_summary(s: &SynthSummary, threads: usize) {
    let deaths_pct = 100.0 * s.deaths as f64 / s.patients as f64;
    println!(
        "synthetic cohort: {} patients, {} exams in {} parts, {} deaths ({deaths_pct:.1} % of patients)",
        s.patients,
        s.exams,
        s.parts.len(),
        s.deaths
    );
    println!(
        "generated in {:.2} s: {:.0} exams/s on {threads} rendering threads",
        s.seconds,
        s.exams_per_second()
    );
    println!("csv:   {}", s.csv.display());
    match s.parts.as_slice() {
        [] => {}
        [only] => println!("parts: {}", only.display()),
        [first, .., last] => println!("parts: {} .. {}", first.display(), last.display()),
    }
}
