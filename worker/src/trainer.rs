//! The worker's computation: the network with the coordinator's current state, the summed
//! gradient and statistics of a step's units (one training forward and backward per unit,
//! dropout masks from the unit's seed), and evaluation-mode predictions. In simulation mode
//! (for benchmarks of the exchange) the computation is replaced by a fixed delay and a random
//! gradient of the real size.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ecg_proto::v1;
use ecg_shared::data::index::DatasetIndex;
use ecg_shared::data::prefetch::Prefetcher;
use ecg_shared::data::reader::BatchReader;
use ecg_shared::faults::point as fault_point;
use ecg_shared::ids::ExamId;
use ecg_shared::model::dropout::RngMasks;
use ecg_shared::model::{ModelConfig, ResNet1d};
use ecg_shared::train::sum_into;
use ecg_shared::wire::f32_bytes;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::{Error, Result};

/// A step's result on this worker.
#[derive(Debug)]
pub struct TrainResult {
    /// The units' summed gradient, little-endian f32 (see `ecg_shared::wire`).
    pub grad: Bytes,
    /// One result per unit, in the order given.
    pub units: Vec<v1::UnitResult>,
}

/// Where the exams come from.
enum Source {
    /// The dataset on this node.
    Data {
        reader: Arc<BatchReader>,
        prefetch_threads: usize,
    },
    /// No data: a delay per unit and a random gradient (made once, shared by every step).
    Simulated { delay: Duration, grad: Bytes },
}

/// The network and its inputs.
pub struct Compute {
    model: ResNet1d,
    source: Source,
}

impl Compute {
    /// A worker computing on `index`'s data with the architecture `config`, on `device`, its
    /// convolutions in `precision`.
    pub fn new(
        config: &ModelConfig,
        index: &DatasetIndex,
        prefetch_threads: usize,
        device: &ecg_shared::model::Device,
        precision: ecg_shared::model::Precision,
    ) -> Result<Self> {
        let mut model = ResNet1d::new(config, 0, device)?;
        model.set_precision(precision)?;
        let reader = Arc::new(BatchReader::open(index)?);
        Ok(Compute {
            model,
            source: Source::Data {
                reader,
                prefetch_threads,
            },
        })
    }

    /// A worker that simulates the computation: `delay` per step and a random gradient.
    pub fn simulated(config: &ModelConfig, delay: Duration, seed: u64) -> Result<Self> {
        let model = ResNet1d::new(config, 0, &ecg_shared::model::Device::Cpu)?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let grad = f32_bytes(
            (0..model.layout().total_len())
                .map(|_| rng.random_range(-1e-3f32..1e-3))
                .collect(),
        );
        Ok(Compute {
            model,
            source: Source::Simulated { delay, grad },
        })
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.model.layout().total_len()
    }

    /// Installs a state downloaded from the coordinator (nothing to install when simulating).
    pub fn apply_state(&mut self, params: &[f32], running: &[f64], tracked: &[i64]) -> Result<()> {
        if let Source::Simulated { .. } = self.source {
            return Ok(());
        }
        self.model.set_params_flat(params)?;
        self.model.set_bn_buffers(running, tracked)?;
        Ok(())
    }

    fn positions(index: &BatchReader, ids: &[i64]) -> Result<Vec<usize>> {
        ids.iter()
            .map(|&id| {
                index.position_of(ExamId(id)).ok_or_else(|| {
                    Error::Protocol(format!(
                        "exam_id {id} is not in this node's index (the fingerprints agreed: a coordinator bug)"
                    ))
                })
            })
            .collect()
    }

    /// The summed gradient and per-unit results of `units`.
    pub fn train(&self, units: &[v1::WorkUnit]) -> Result<TrainResult> {
        match &self.source {
            Source::Simulated { delay, grad } => {
                std::thread::sleep(*delay);
                let bn = self
                    .model
                    .batch_norms()
                    .iter()
                    .map(|b| v1::BnUnitStats {
                        mean: vec![0.0; b.channels()],
                        var_unbiased: vec![1.0; b.channels()],
                        count: 16,
                    })
                    .collect::<Vec<_>>();
                Ok(TrainResult {
                    grad: grad.clone(),
                    units: units
                        .iter()
                        .map(|u| v1::UnitResult {
                            index: u.index,
                            exams: u.exam_ids.len() as u64,
                            loss_sum: 0.0,
                            abs_error_sum: 0.0,
                            bn: bn.clone(),
                        })
                        .collect(),
                })
            }
            Source::Data {
                reader,
                prefetch_threads,
            } => {
                let mut batches = Vec::with_capacity(units.len());
                for u in units {
                    if u.weights.len() != u.exam_ids.len() {
                        return Err(Error::Protocol(format!(
                            "unit {}: {} weights for {} exams",
                            u.index,
                            u.weights.len(),
                            u.exam_ids.len()
                        )));
                    }
                    batches.push(Self::positions(reader, &u.exam_ids)?);
                }
                let pf = Prefetcher::new(Arc::clone(reader), batches, 2, *prefetch_threads);
                let recycler = pf.recycler();
                let mut grad: Option<Vec<f32>> = None;
                let mut results = Vec::with_capacity(units.len());
                for (u, batch) in units.iter().zip(pf) {
                    let batch = batch?;
                    fault_point("worker.compute");
                    let mut masks = RngMasks::new(u.mask_seed);
                    let s =
                        self.model
                            .train_step(&batch.data, &batch.ages, &u.weights, &mut masks)?;
                    fault_point("worker.backward");
                    match &mut grad {
                        None => grad = Some(s.grads),
                        Some(g) => sum_into(g, &s.grads)?,
                    }
                    results.push(v1::UnitResult {
                        index: u.index,
                        exams: batch.len() as u64,
                        loss_sum: s.loss_sum,
                        abs_error_sum: s.abs_error_sum,
                        bn: s
                            .bn_stats
                            .into_iter()
                            .map(|b| v1::BnUnitStats {
                                mean: b.mean,
                                var_unbiased: b.var_unbiased,
                                count: b.count as u64,
                            })
                            .collect(),
                    });
                    recycler.recycle(batch);
                }
                let grad = grad.ok_or_else(|| Error::Protocol("a step without units".into()))?;
                Ok(TrainResult {
                    grad: f32_bytes(grad),
                    units: results,
                })
            }
        }
    }

    /// Evaluation-mode predictions of the exams `ids`, in order.
    pub fn predict(&self, ids: &[i64]) -> Result<Vec<f32>> {
        match &self.source {
            Source::Simulated { .. } => Ok(vec![50.0; ids.len()]),
            Source::Data { reader, .. } => {
                let positions = Self::positions(reader, ids)?;
                let batch = reader.read(&positions)?;
                Ok(self.model.predict(&batch.data, batch.len())?)
            }
        }
    }
}
