//! A published state version: the flat parameters already cut into the little-endian chunks
//! that GetState streams (shared by every download, never copied again), and the batch-norm
//! buffers.
use bytes::Bytes;
use ecg_shared::model::ResNet1d;
use ecg_shared::wire::{f32_bytes, f32_chunks};

/// One state version, ready to send.
#[derive(Debug)]
pub struct Snapshot {
    /// The version: optimizer steps committed (or `BEST_VERSION`).
    pub version: u64,
    /// Number of f32 parameters.
    pub n_params: u64,
    /// Chunks of the parameter vector with their byte offsets.
    pub chunks: Vec<(u64, Bytes)>,
    /// Batch-norm running means and variances (see `ResNet1d::bn_buffers`).
    pub bn_running: Vec<f64>,
    /// Batches tracked by each batch-norm layer.
    pub bn_tracked: Vec<i64>,
}

impl Snapshot {
    /// The snapshot of `params` and `model`'s batch-norm buffers as version `version`.
    pub fn new(version: u64, params: Vec<f32>, model: &ResNet1d, chunk_bytes: usize) -> Self {
        let (bn_running, bn_tracked) = model.bn_buffers();
        Snapshot {
            version,
            n_params: params.len() as u64,
            chunks: f32_chunks(f32_bytes(params), chunk_bytes),
            bn_running,
            bn_tracked,
        }
    }

    /// The state made of parameter chunks already cut (`chunk_bytes` apart) and `model`'s
    /// batch-norm buffers, as version `version`.
    pub fn from_chunks(
        version: u64,
        n_params: usize,
        chunks: Vec<Bytes>,
        model: &ResNet1d,
        chunk_bytes: usize,
    ) -> Self {
        let (bn_running, bn_tracked) = model.bn_buffers();
        Snapshot {
            version,
            n_params: n_params as u64,
            chunks: chunks
                .into_iter()
                .enumerate()
                .map(|(j, c)| ((j * chunk_bytes) as u64, c))
                .collect(),
            bn_running,
            bn_tracked,
        }
    }

    /// The same state under another version number.
    pub fn relabel(&self, version: u64) -> Self {
        Snapshot {
            version,
            n_params: self.n_params,
            chunks: self.chunks.clone(),
            bn_running: self.bn_running.clone(),
            bn_tracked: self.bn_tracked.clone(),
        }
    }
}
