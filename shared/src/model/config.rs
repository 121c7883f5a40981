//! The network's architecture, as the seed's `config.json` gives it: input length, filters and
//! lengths of the blocks, kernel size and dropout rate. Validation follows `resnet.py`'s own
//! errors (odd kernel, lengths that only shrink by whole factors) so that a bad configuration is
//! refused before any tensor is built.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Number of ECG leads the network reads.
pub const N_LEADS: usize = 12;

/// The architecture of a `ResNet1d`; field names are the seed's `config.json` keys (including
/// its spelling `net_seq_lengh`). [`Default`] is the published model's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Samples per lead at the input (the model only accepts exactly this length).
    pub seq_length: usize,
    /// Channels of the stem and of each residual block.
    pub net_filter_size: Vec<usize>,
    /// Samples per lead after the stem and after each residual block.
    pub net_seq_lengh: Vec<usize>,
    /// Convolution kernel size (odd).
    pub kernel_size: usize,
    /// Dropout drop probability, as PyTorch's `nn.Dropout(p)`.
    pub dropout_rate: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            seq_length: 4096,
            net_filter_size: vec![64, 128, 196, 256, 320],
            net_seq_lengh: vec![4096, 1024, 256, 64, 16],
            kernel_size: 17,
            dropout_rate: 0.8,
        }
    }
}

/// The seed's `_padding`: symmetric zero padding of a conv with stride `downsample`.
pub fn padding(downsample: usize, kernel_size: usize) -> usize {
    (kernel_size + 1).saturating_sub(downsample) / 2
}

impl ModelConfig {
    /// Checks the configuration as the seed's constructors do; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(format!("model: {msg}")));
        if self.net_filter_size.is_empty() {
            return bad("net_filter_size is empty: the network needs at least one block".into());
        }
        if self.net_filter_size.len() != self.net_seq_lengh.len() {
            return bad(format!(
                "net_filter_size has {} entries but net_seq_lengh has {}",
                self.net_filter_size.len(),
                self.net_seq_lengh.len()
            ));
        }
        if self.kernel_size == 0 || self.kernel_size.is_multiple_of(2) {
            return bad(format!(
                "kernel_size = {}: the seed's blocks accept only odd kernel sizes",
                self.kernel_size
            ));
        }
        if let Some(f) = self.net_filter_size.iter().find(|&&f| f == 0) {
            return bad(format!("net_filter_size contains {f}"));
        }
        if !(0.0..=1.0).contains(&self.dropout_rate) {
            return bad(format!(
                "dropout_rate = {} is not a probability in [0, 1]",
                self.dropout_rate
            ));
        }
        let mut n_in = self.seq_length;
        for (i, &n_out) in self.net_seq_lengh.iter().enumerate() {
            if n_out == 0 || n_out > n_in || !n_in.is_multiple_of(n_out) {
                let what = if i == 0 {
                    format!("seq_length {n_in}")
                } else {
                    format!("net_seq_lengh[{}] = {n_in}", i - 1)
                };
                return bad(format!(
                    "net_seq_lengh[{i}] = {n_out} does not divide {what}: the number of samples \
                     must shrink by a whole factor"
                ));
            }
            n_in = n_out;
        }
        Ok(())
    }

    /// The stride of the stem (index 0) and of each block (index i + 1).
    pub fn downsample(&self, layer: usize) -> usize {
        if layer == 0 {
            self.seq_length / self.net_seq_lengh[0]
        } else {
            let i = layer - 1;
            let n_in = if i == 0 {
                self.net_seq_lengh[0]
            } else {
                self.net_seq_lengh[i - 1]
            };
            n_in / self.net_seq_lengh[i]
        }
    }

    /// Inputs of the final linear layer: last filters times last length.
    pub fn lin_features(&self) -> usize {
        self.net_filter_size.last().copied().unwrap_or(0)
            * self.net_seq_lengh.last().copied().unwrap_or(0)
    }

    /// Reads the architecture from a seed-style `config.json` (an args dump: other keys such as
    /// `lr` or `folder` are ignored); a missing or mistyped key is an error naming it.
    pub fn from_config_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::checkpoint(path, format!("not valid JSON: {e}")))?;
        Self::from_json_value(&value).map_err(|msg| Error::checkpoint(path, msg))
    }

    /// The architecture from a parsed args dump; the error message names the key.
    pub fn from_json_value(value: &serde_json::Value) -> std::result::Result<Self, String> {
        let obj = value
            .as_object()
            .ok_or("config.json is not a JSON object")?;
        let get = |k: &str| obj.get(k).ok_or(format!("config.json has no key {k:?}"));
        let uint = |k: &str| -> std::result::Result<usize, String> {
            let v = get(k)?;
            v.as_u64()
                .and_then(|u| usize::try_from(u).ok())
                .ok_or(format!(
                    "config.json: {k:?} = {v} is not a non-negative integer"
                ))
        };
        let list = |k: &str| -> std::result::Result<Vec<usize>, String> {
            let v = get(k)?;
            let arr = v
                .as_array()
                .ok_or(format!("config.json: {k:?} = {v} is not a list"))?;
            arr.iter()
                .map(|x| {
                    x.as_u64()
                        .and_then(|u| usize::try_from(u).ok())
                        .ok_or(format!("config.json: {k:?} contains {x}, not an integer"))
                })
                .collect()
        };
        let dropout = get("dropout_rate")?;
        let config = Self {
            seq_length: uint("seq_length")?,
            net_filter_size: list("net_filter_size")?,
            net_seq_lengh: list("net_seq_lengh")?,
            kernel_size: uint("kernel_size")?,
            dropout_rate: dropout.as_f64().ok_or(format!(
                "config.json: \"dropout_rate\" = {dropout} is not a number"
            ))?,
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// This configuration as a JSON object with the seed's keys.
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::json!({
            "seq_length": self.seq_length,
            "net_filter_size": self.net_filter_size,
            "net_seq_lengh": self.net_seq_lengh,
            "kernel_size": self.kernel_size,
            "dropout_rate": self.dropout_rate,
        })
    }
}
