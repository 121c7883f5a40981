//! `[training]` of `cluster.toml`: the seed's optimiser and schedule settings, the batch, the
//! epoch order and where training starts from.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Order in which training exams are visited in an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EpochOrder {
    /// A new permutation of the training exams every epoch, from (`seed`, epoch).
    Shuffle,
    /// The seed's order, for comparisons: windows of `batch_size` consecutive HDF5 rows (files
    /// in order), keeping the training exams of each window; the same every epoch.
    Seed,
}

/// `[training]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Maximum number of epochs (the seed: 70).
    pub epochs: u64,
    /// Exams per optimiser step.
    pub batch_size: usize,
    /// Adam's initial learning rate.
    pub lr: f64,
    /// ReduceLROnPlateau patience, in epochs.
    pub patience: u32,
    /// ReduceLROnPlateau factor.
    pub lr_factor: f64,
    /// Training stops after an epoch run with a rate below this; the scheduler's floor is
    /// `lr_factor * min_lr`.
    pub min_lr: f64,
    /// Seed of the initial weights, the epoch permutations and the dropout masks.
    pub seed: u64,
    /// `shuffle` or `seed` (see [`EpochOrder`]).
    pub order: EpochOrder,
    /// Checkpoint to start from (fine-tuning): a folder with the authors' `model.pth` and
    /// `config.json`, a `.pth` file, or one of our `.safetensors` files. Empty: fresh weights.
    /// Its architecture replaces `[model]`.
    pub init_from: PathBuf,
    /// Threads reading the next batches ahead of the model.
    pub prefetch_threads: usize,
    /// Stop after this many optimizer steps in all (the state is checkpointed; a restart with a
    /// larger value goes on); 0: no limit. For smoke tests and benchmarks.
    pub max_steps: u64,
    /// Arithmetic of the convolutions on CUDA workers: `f32` (strict, the default), `tf32` or
    /// `bf16` (mixed precision, FP32 master weights); see [`crate::model::Precision`]. CPU
    /// workers refuse anything but `f32`.
    pub precision: crate::model::Precision,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            epochs: 70,
            batch_size: 32,
            lr: 1e-3,
            patience: 7,
            lr_factor: 0.1,
            min_lr: 1e-7,
            seed: 2,
            order: EpochOrder::Shuffle,
            init_from: PathBuf::new(),
            prefetch_threads: 1,
            max_steps: 0,
            precision: crate::model::Precision::F32,
        }
    }
}
