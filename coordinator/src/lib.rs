//! The ecg-cluster coordinator.
//!
//! Layout:
//! - [`commands`]: the subcommands (`synth`, `split`) and their arguments.
//! - [`error`]: the crate's error type.
pub mod commands;
pub mod error;

pub use error::{Error, Result};
