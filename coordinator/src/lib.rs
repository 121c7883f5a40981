//! The ecg-cluster coordinator: the gRPC service that owns a run's parameters, optimizer state
//! and epoch plan, and the subcommands around it.
//!
//! Layout:
//! - [`commands`]: the command line (`--config`, `synth`, `split`) and its arguments.
//! - [`prepare`]: index, split and `split.csv`, before any training.
//! - [`plan`]: the epoch plan: steps and their units.
//! - [`trainer`]: parameters, Adam, schedule, reduction, validation figures, checkpoints.
//! - [`core`]: members, the step and the prediction round in progress, published states.
//! - [`hub`]: the core shared between the handlers and the driver, and how they wake.
//! - [`snapshot`]: a published state version, ready to stream.
//! - [`segments`]: shared memory with the workers on the coordinator's host.
//! - [`store`]: where the parameters of the current version and the next are kept.
//! - [`service`]: the gRPC handlers and the token check.
//! - [`guard`]: counts and logs the refusals made by the transport (oversized messages).
//! - [`driver`]: the run's loop of steps, validations and the test.
//! - [`server`]: binding, serving (with health and metrics) and shutdown.
//! - [`metrics`]: the Prometheus `/metrics` endpoint.
//! - [`error`]: the crate's error type and its mapping to gRPC statuses.
pub mod commands;
pub mod core;
pub mod driver;
pub mod error;
pub mod guard;
pub mod hub;
pub mod metrics;
pub mod plan;
pub mod prepare;
pub mod reduce;
pub mod segments;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod trainer;

pub use error::{Error, Result};
