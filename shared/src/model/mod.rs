//! The ECG-age network and its checkpoints.
//!
//! Layout:
//! - [`config`]: the architecture (`config.json` keys) and its validation.
//! - [`ops`]: our own Candle ops (conv1d, max-pool) with forward and backward.
//! - [`layers`], [`batchnorm`], [`dropout`], [`block`], [`resnet`]: the seed's `ResNet1d`
//!   with its parameter names, training and evaluation modes.
//! - [`bn_op`]: training-mode batch norm as one fused op with its backward.
//! - [`weights`]: state-dict export and strict import.
//! - [`step`]: one training step's loss, gradient and batch statistics.
//! - [`state`]: host-side named tensors, the currency between the model and files.
//! - [`torch`]: PyTorch `model.pth` files (zip and legacy containers).
//! - [`safetensors_io`]: our checkpoints as safetensors.
//! - [`checkpoint`]: finding and loading a model from a path, saving ours.
pub mod batchnorm;
pub mod block;
pub mod bn_op;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod dropout;
pub mod layers;
pub mod ops;
pub mod precision;
pub mod resnet;
pub mod safetensors_io;
pub mod state;
pub mod step;
pub mod torch;
pub mod weights;

/// The device type the network runs on (re-exported so that callers need not depend on Candle).
pub use candle_core::Device;
pub use checkpoint::{LoadedCheckpoint, load_checkpoint};
pub use config::ModelConfig;
pub use precision::Precision;
pub use resnet::{Mode, ResNet1d};
pub use state::StateDict;

#[cfg(test)]
mod tests;
