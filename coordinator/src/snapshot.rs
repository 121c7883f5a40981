//! A published state version: the flat parameters cut into the chunks that GetState streams,
//! each as little-endian bytes (shared by every download, never copied again) and/or its
//! checksum where the version lies in the parameter segment, and the batch-norm buffers.
use bytes::Bytes;
use ecg_shared::model::ResNet1d;
use ecg_shared::shm::checksum;
use ecg_shared::wire::{f32_bytes, f32_chunks};

/// One chunk of a state version's parameters, as it can be sent.
#[derive(Debug, Clone)]
pub struct ParamChunk {
    /// Its length in bytes.
    pub len: usize,
    /// Its bytes (little-endian f32), for downloads over gRPC; `None` when no member needed
    /// them when it was made.
    pub data: Option<Bytes>,
    /// Its checksum in the parameter segment's region of its version, when it lies there.
    pub shared_sum: Option<u64>,
}

/// One state version, ready to send.
#[derive(Debug)]
pub struct Snapshot {
    /// The version: optimizer steps committed (or `BEST_VERSION`).
    pub version: u64,
    /// Number of f32 parameters.
    pub n_params: u64,
    /// Chunks of the parameter vector with their byte offsets.
    pub chunks: Vec<(u64, ParamChunk)>,
    /// Batch-norm running means and variances (see `ResNet1d::bn_buffers`).
    pub bn_running: Vec<f64>,
    /// Batches tracked by each batch-norm layer.
    pub bn_tracked: Vec<i64>,
}

impl Snapshot {
    /// The snapshot of `params` and `model`'s batch-norm buffers as version `version`; with
    /// `shared`, the parameters also lie in the parameter segment's region of the version.
    pub fn new(
        version: u64,
        params: Vec<f32>,
        model: &ResNet1d,
        chunk_bytes: usize,
        shared: bool,
    ) -> Self {
        let (bn_running, bn_tracked) = model.bn_buffers();
        Snapshot {
            version,
            n_params: params.len() as u64,
            chunks: f32_chunks(f32_bytes(params), chunk_bytes)
                .into_iter()
                .map(|(offset, data)| {
                    let chunk = ParamChunk {
                        len: data.len(),
                        shared_sum: shared.then(|| checksum(&data)),
                        data: Some(data),
                    };
                    (offset, chunk)
                })
                .collect(),
            bn_running,
            bn_tracked,
        }
    }

    /// Whether every chunk has its bytes (it can be sent over gRPC).
    pub fn has_bytes(&self) -> bool {
        self.chunks.iter().all(|(_, c)| c.data.is_some())
    }

    /// The state made of reduced parameter chunks (`chunk_bytes` apart) and `model`'s
    /// batch-norm buffers, as version `version`.
    pub fn from_chunks(
        version: u64,
        n_params: usize,
        chunks: Vec<ParamChunk>,
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
}
