//! Finding and loading a model from a path, and saving ours. A path is one of:
//! - a folder holding the authors' `model.pth` and `config.json` (their published layout);
//! - a `.pth`/`.pt` file with `config.json` beside it;
//! - one of our `.safetensors` checkpoints, whose metadata carries the architecture (a
//!   `config.json` beside it is used when the metadata has none).
//!
//! Every error names the file and, for a tensor that does not fit, the tensor.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;

use super::config::ModelConfig;
use super::resnet::ResNet1d;
use super::safetensors_io::{load_safetensors, save_safetensors};
use super::state::StateDict;
use super::torch::load_pth;
use crate::{Error, Result};

/// Metadata key of our safetensors files holding the architecture as JSON.
pub const META_CONFIG: &str = "ecg.config";
/// Metadata key of the epoch a checkpoint was written after.
pub const META_EPOCH: &str = "ecg.epoch";
/// Metadata key of the validation loss of that epoch.
pub const META_VALID_LOSS: &str = "ecg.valid_loss";

/// Which kind of file a checkpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointKind {
    /// A PyTorch `model.pth` (zip or legacy container).
    Torch,
    /// One of our safetensors files.
    Safetensors,
}

/// A checkpoint read from disk, not yet turned into a network.
#[derive(Clone, Debug)]
pub struct LoadedCheckpoint {
    /// The architecture.
    pub config: ModelConfig,
    /// Parameters and buffers.
    pub state: StateDict,
    /// The weights file.
    pub source: PathBuf,
    /// Its kind.
    pub kind: CheckpointKind,
    /// The epoch it was saved after, when recorded.
    pub epoch: Option<i64>,
    /// The validation loss it was saved with, when recorded.
    pub valid_loss: Option<f64>,
}

impl LoadedCheckpoint {
    /// The network holding these weights; a tensor that does not fit the architecture is an
    /// error naming the file and the tensor.
    pub fn build(&self, device: &Device) -> Result<ResNet1d> {
        ResNet1d::from_state_dict(&self.config, &self.state, device).map_err(|e| match e {
            Error::Training(msg) => Error::checkpoint(&self.source, msg),
            other => other,
        })
    }
}

fn beside_config(weights: &Path) -> Result<ModelConfig> {
    let dir = weights.parent().unwrap_or(Path::new("."));
    let cfg = dir.join("config.json");
    if !cfg.is_file() {
        return Err(Error::checkpoint(
            weights,
            format!(
                "no config.json beside it ({}): it gives the architecture",
                cfg.display()
            ),
        ));
    }
    ModelConfig::from_config_json(&cfg)
}

/// Reads the checkpoint at `path` (see the module documentation for what a path may be).
pub fn load_checkpoint(path: &Path) -> Result<LoadedCheckpoint> {
    if path.is_dir() {
        let pth = path.join("model.pth");
        if pth.is_file() {
            return load_torch(&pth);
        }
        return Err(Error::checkpoint(
            path,
            "folder holds no model.pth (the authors' layout is model.pth + config.json); pass \
             a .safetensors checkpoint file to use one of ours",
        ));
    }
    if !path.exists() {
        return Err(Error::checkpoint(path, "no such file or folder"));
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => load_ours(path),
        _ => load_torch(path),
    }
}

fn load_torch(pth: &Path) -> Result<LoadedCheckpoint> {
    let ckpt = load_pth(pth)?;
    let config = beside_config(pth)?;
    Ok(LoadedCheckpoint {
        config,
        state: ckpt.state_dict,
        source: pth.to_path_buf(),
        kind: CheckpointKind::Torch,
        epoch: ckpt.epoch,
        valid_loss: ckpt.valid_loss,
    })
}

fn load_ours(path: &Path) -> Result<LoadedCheckpoint> {
    let (state, meta) = load_safetensors(path)?;
    let config = match meta.get(META_CONFIG) {
        Some(json) => {
            let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
                Error::checkpoint(path, format!("metadata {META_CONFIG:?} is not JSON: {e}"))
            })?;
            ModelConfig::from_json_value(&value)
                .map_err(|m| Error::checkpoint(path, format!("metadata {META_CONFIG:?}: {m}")))?
        }
        None => beside_config(path)?,
    };
    let parse = |key: &str| meta.get(key).and_then(|v| v.parse::<f64>().ok());
    Ok(LoadedCheckpoint {
        config,
        state,
        source: path.to_path_buf(),
        kind: CheckpointKind::Safetensors,
        epoch: parse(META_EPOCH).map(|e| e as i64),
        valid_loss: parse(META_VALID_LOSS),
    })
}

/// Writes `model` as a safetensors file with the seed's tensor names (PyTorch's
/// `load_state_dict` accepts it), the architecture in its metadata and `extra` metadata
/// (epoch, validation loss, ...). Written to a temporary file, synced and renamed.
pub fn save_model(model: &ResNet1d, path: &Path, extra: &BTreeMap<String, String>) -> Result<()> {
    let mut meta = extra.clone();
    meta.insert("format".into(), "pt".into());
    meta.insert(
        META_CONFIG.into(),
        model.config().to_json_value().to_string(),
    );
    save_safetensors(path, &model.state_dict()?, &meta)
}
