//! The ecg-cluster worker.
//!
//! Layout:
//! - [`run`]: `worker --coordinator host:port`: joins a run and works until it is over (its
//!   exchanges of one assignment in `run/exchange.rs`).
//! - [`client`]: the connection to the coordinator and what its failures mean.
//! - [`trainer`]: the network's computation of a step's units and of predictions.
//! - [`check_data`]: `worker check-data`, builds this node's dataset index and prints its
//!   fingerprint, which must equal the coordinator's for the node to take part.
//! - [`evaluate`]: `worker evaluate`, predicted ages of an HDF5 file.
//! - [`gpu_check`]: `worker gpu-check`, every op on a CUDA device against the CPU.
//! - [`bench`]: `worker bench`, the training step's throughput (CPU or CUDA).
//! - [`error`]: the crate's error type.
pub mod bench;
pub mod check_data;
pub mod client;
pub mod error;
pub mod evaluate;
pub mod gpu_check;
pub mod run;
pub mod trainer;

pub use error::{Error, Result};
