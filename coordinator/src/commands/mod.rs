//! The coordinator's commands. Each module holds its clap arguments and its `run`.
//!
//! - [`run`]: `coordinator --config cluster.toml`, the coordinator itself.
//! - [`synth`]: `coordinator synth`, the synthetic CODE-format cohort.
//! - [`split`]: `coordinator split`, a patient-level split written to `split.csv`.

pub mod run;
pub mod split;
pub mod synth;
