//! Code that both ecg-cluster binaries need: the `cluster.toml` schema, the CODE-format dataset
//! layer (CSV, HDF5, index, fast batch reads), the patient-level splits and the synthetic cohort.
//!
//! Layout:
//! - [`cli`]: logging set-up and exit codes shared by the binaries.
//! - [`config`]: the `cluster.toml` schema, environment overrides and validation.
//! - [`data`]: `exams.csv` and HDF5 readers, the joined [`data::index::DatasetIndex`] and its
//!   fingerprint, the batch reader and its prefetcher.
//! - [`split`]: patient-level train/valid/test splits (`age-balanced`, `hash`, `file`) and
//!   `split.csv`.
//! - [`synth`]: the synthetic CODE-format cohort generator.
//! - [`train`]: the training arithmetic on flat `f32` vectors: sample weights, loss, Adam,
//!   the learning-rate schedule and the stop rule.
//! - [`model`]: the ECG-age network (`ResNet1d`) in Candle with our own conv op, PyTorch and
//!   safetensors checkpoints, the training step.
//! - [`wire`]: float vectors as byte chunks for the network, and their reassembly.
//! - [`shm`]: shared-memory segments for the chunks of a worker on the coordinator's host.
//! - [`ids`]: newtypes for exam and patient ids.
//! - [`faults`]: named fault points for fault-injection tests (off unless asked for).
//! - [`error`]: the crate's error type.
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod data;
pub mod error;
pub mod faults;
pub mod ids;
pub mod model;
pub mod shm;
pub mod split;
pub mod synth;
pub mod train;
pub mod wire;

pub use error::{Error, Result};
