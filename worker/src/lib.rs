//! The ecg-cluster worker.
//!
//! Layout:
//! - [`check_data`]: `worker check-data`, builds this node's dataset index and prints its
//!   fingerprint, which must equal the coordinator's for the node to take part.
//! - [`error`]: the crate's error type.
pub mod check_data;
pub mod error;
pub mod evaluate;

pub use error::{Error, Result};
