//! The coordinator's side of training: the parameters, Adam, the batch-norm buffers, the
//! learning-rate schedule, the history and the best model; the reduction of a step's
//! contributions; the validation and test figures; and the files: `history.csv`, the best and
//! last models, `config.json`, and the full training state that a restarted coordinator
//! resumes from (`train_state.safetensors`).
use std::collections::BTreeMap;
use std::path::Path;

use ecg_proto::v1;
use ecg_shared::config::ClusterConfig;
use ecg_shared::model::batchnorm::{BnBatchStats, pool_batch_stats};
use ecg_shared::model::checkpoint::{META_EPOCH, META_VALID_LOSS, save_model};
use ecg_shared::model::state::{NamedTensor, StateDict, TensorData};
use ecg_shared::model::{Device, ResNet1d};
use ecg_shared::shm::F32Regions;
use ecg_shared::train::adam::NextStep;
use ecg_shared::train::history::{HistoryRow, ValidMetrics, write_atomic, write_history};
use ecg_shared::train::local::{config_json, files, initial_model, optimizer};
use ecg_shared::train::resume::{TrainState, load_train_state, save_train_state};
use ecg_shared::train::{Adam, ReduceLrOnPlateau, StopRule, compute_weights};

use crate::core::Contribution;
use crate::plan::Unit;
use crate::prepare::Prepared;
use crate::reduce::Job;
use crate::reduce::chunk::{ChunkOutcome, ChunkReducer, Outputs};
use crate::snapshot::ParamChunk;
use crate::store::ParamStore;
use crate::{Error, Result};
use rayon::prelude::*;

/// What one committed step did.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// Exams in the step.
    pub exams: u64,
    /// Its loss sum.
    pub loss_sum: f64,
}

/// The outcome of a validation.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The history row of the epoch.
    pub row: HistoryRow,
    /// Whether it is the best so far (the best model was saved).
    pub improved: bool,
    /// Whether the stop rule ends training after this epoch.
    pub stop: bool,
}

/// Test-split figures.
#[derive(Debug, Clone, Copy)]
pub struct TestFigures {
    /// Exams.
    pub exams: usize,
    /// Mean absolute error, years.
    pub mae: f64,
    /// Root mean squared error, years.
    pub rmse: f64,
}

/// The optimizer-side state.
pub struct Trainer {
    /// The run's configuration.
    pub cfg: ClusterConfig,
    /// The dataset and split.
    pub data: Prepared,
    /// The run id (kept across restarts).
    pub run_id: String,
    weight_of: Vec<f32>,
    valid_w: Vec<f32>,
    /// The model holding the parameters and batch-norm buffers.
    pub model: ResNet1d,
    /// The parameters of the current version, and room for the next.
    store: ParamStore,
    adam: Adam,
    /// Adam's scalars for the step in progress, and the moments it writes.
    next: Option<NextStep>,
    next_exp_avg: Vec<f32>,
    next_exp_avg_sq: Vec<f32>,
    sched: ReduceLrOnPlateau,
    stop: StopRule,
    /// Logged epochs.
    pub history: Vec<HistoryRow>,
    /// Best validation loss.
    pub best: f64,
    /// Its epoch.
    pub best_epoch: Option<u64>,
    /// Current epoch.
    pub epoch: u64,
    /// Next step of the epoch.
    pub step_in_epoch: u64,
    /// Steps committed in all.
    pub global_step: u64,
    /// Loss summed over the epoch's committed steps.
    pub epoch_loss_sum: f64,
    /// Exams in them.
    pub epoch_seen: u64,
    fingerprints: BTreeMap<String, String>,
}

impl Trainer {
    /// A fresh run, or the run resumed from the training state in the output folder.
    pub fn start(cfg: ClusterConfig, data: Prepared) -> Result<Self> {
        let device = Device::Cpu;
        let model = initial_model(&cfg, &device)?;
        let out = cfg.output.dir.clone();
        let mut fingerprints = BTreeMap::new();
        fingerprints.insert("dataset".to_string(), data.index.fingerprint().to_string());
        fingerprints.insert("split".to_string(), data.split_fingerprint.clone());
        let ages = |ps: &[usize]| -> Vec<f64> {
            ps.iter()
                .map(|&p| f64::from(data.index.exams[p].age))
                .collect()
        };
        let mut weight_of = vec![0f32; data.index.exams.len()];
        for (&p, w) in data
            .train
            .iter()
            .zip(compute_weights(&ages(&data.train), None)?)
        {
            weight_of[p] = w;
        }
        let valid_w = compute_weights(&ages(&data.valid), None)?;
        let t = &cfg.training;
        let params = model.params_flat()?;
        let (adam, sched, stop) = optimizer(t, params.len())?;
        let mut trainer = Trainer {
            run_id: new_run_id(),
            weight_of,
            valid_w,
            model,
            store: ParamStore::private(params),
            adam,
            next: None,
            next_exp_avg: Vec::new(),
            next_exp_avg_sq: Vec::new(),
            sched,
            stop,
            history: Vec::new(),
            best: f64::INFINITY,
            best_epoch: None,
            epoch: 0,
            step_in_epoch: 0,
            global_step: 0,
            epoch_loss_sum: 0.0,
            epoch_seen: 0,
            fingerprints,
            cfg,
            data,
        };
        let layout = trainer.model.layout().clone();
        if let Some(loaded) = load_train_state(&out, |_| Ok(layout.clone()))? {
            for w in &loaded.warnings {
                tracing::warn!("{w}");
                println!("warning: {w}");
            }
            trainer.restore(loaded.state, &loaded.source)?;
            println!(
                "resuming run {} from {}: epoch {}, step {} of the epoch, {} steps done",
                trainer.run_id,
                loaded.source.display(),
                trainer.epoch,
                trainer.step_in_epoch,
                trainer.global_step
            );
        } else {
            // A fresh run's state at step 0: the first periodic checkpoint then has a previous
            // one to fall back to, should it be torn or corrupted.
            trainer.save_state()?;
        }
        write_atomic(
            &out.join(files::CONFIG),
            &config_json(trainer.model.config(), &trainer.cfg)?,
        )?;
        Ok(trainer)
    }

    fn restore(&mut self, s: TrainState, source: &Path) -> Result<()> {
        let refuse = |what: String| -> Error {
            ecg_shared::Error::checkpoint(
                source,
                format!("{what}; remove it (and the output folder's files) to start afresh"),
            )
            .into()
        };
        if &s.model_config != self.model.config() {
            return Err(refuse(format!(
                "it trains another architecture ({:?})",
                s.model_config
            )));
        }
        for (k, v) in &self.fingerprints {
            if s.fingerprints.get(k) != Some(v) {
                return Err(refuse(format!(
                    "its {k} fingerprint {} differs from this run's {v}",
                    s.fingerprints.get(k).map_or("(none)", String::as_str)
                )));
            }
        }
        let mut params = Vec::with_capacity(self.store.len());
        for e in self.model.layout().entries() {
            match s.model.get(&e.name).map(|t| &t.data) {
                Some(TensorData::F32(v)) if v.len() == e.len => params.extend_from_slice(v),
                _ => {
                    return Err(refuse(format!(
                        "it has no f32 tensor `{}` of {} values",
                        e.name, e.len
                    )));
                }
            }
        }
        let running = match s.model.get("bn.running").map(|t| &t.data) {
            Some(TensorData::F64(v)) => v.clone(),
            _ => return Err(refuse("it has no f64 tensor `bn.running`".into())),
        };
        let tracked = match s.model.get("bn.tracked").map(|t| &t.data) {
            Some(TensorData::I64(v)) => v.clone(),
            _ => return Err(refuse("it has no i64 tensor `bn.tracked`".into())),
        };
        self.model.set_params_flat(&params)?;
        self.model.set_bn_buffers(&running, &tracked)?;
        self.store.set(s.global_step, &params)?;
        self.adam = Adam::from_state(*self.adam.config(), s.adam)?;
        self.adam.set_lr(s.lr)?;
        self.sched = s.scheduler;
        self.history = s.history;
        self.best = s.best_valid_loss;
        self.best_epoch = s.best_epoch;
        self.epoch = s.epoch;
        self.step_in_epoch = s.step_in_epoch;
        self.global_step = s.global_step;
        self.epoch_loss_sum = s.epoch_loss_sum;
        self.epoch_seen = s.epoch_seen;
        self.run_id = s.run_id;
        Ok(())
    }

    /// Writes the full training state (atomically, keeping the previous one).
    pub fn save_state(&self) -> Result<()> {
        let mut model = StateDict::new();
        let (running, tracked) = self.model.bn_buffers();
        for e in self.model.layout().entries() {
            model.push(NamedTensor::new(
                e.name.clone(),
                e.shape.clone(),
                TensorData::F32(self.params()[e.range()].to_vec()),
            )?)?;
        }
        model.push(NamedTensor::new(
            "bn.running",
            vec![running.len()],
            TensorData::F64(running),
        )?)?;
        model.push(NamedTensor::new(
            "bn.tracked",
            vec![tracked.len()],
            TensorData::I64(tracked),
        )?)?;
        let state = TrainState {
            run_id: self.run_id.clone(),
            global_step: self.global_step,
            epoch: self.epoch,
            step_in_epoch: self.step_in_epoch,
            epoch_loss_sum: self.epoch_loss_sum,
            epoch_seen: self.epoch_seen,
            model,
            adam: self.adam.state().clone(),
            lr: self.adam.lr(),
            scheduler: self.sched.clone(),
            history: self.history.clone(),
            best_valid_loss: self.best,
            best_epoch: self.best_epoch,
            model_config: self.model.config().clone(),
            fingerprints: self.fingerprints.clone(),
        };
        save_train_state(&self.cfg.output.dir, &state, self.model.layout())?;
        Ok(())
    }

    /// The flat parameters.
    pub fn params(&self) -> &[f32] {
        self.store.current(self.global_step)
    }

    /// Keeps the parameters in `regions` (the parameter segment) from now on: the workers on
    /// this host copy them from where Adam writes them.
    pub fn share_parameters(&mut self, regions: F32Regions) -> Result<()> {
        self.store.share(self.global_step, regions)
    }

    /// Whether the parameters lie in the parameter segment.
    pub fn parameters_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// Whether epoch `self.epoch` is to run.
    pub fn run_epoch(&self) -> bool {
        self.stop.run_epoch(self.epoch)
    }

    /// The learning rate of the current epoch (set on Adam).
    pub fn begin_epoch(&mut self) -> Result<f64> {
        let lr = self.sched.lr();
        self.adam.set_lr(lr)?;
        Ok(lr)
    }

    /// The units of a step as sent to workers: exam ids and sample weights.
    pub fn work_units(&self, units: &[Unit]) -> Vec<v1::WorkUnit> {
        units
            .iter()
            .map(|u| v1::WorkUnit {
                index: u.index,
                exam_ids: u
                    .positions
                    .iter()
                    .map(|&p| self.data.index.exams[p].exam_id.0)
                    .collect(),
                weights: u.positions.iter().map(|&p| self.weight_of[p]).collect(),
                mask_seed: u.mask_seed,
            })
            .collect()
    }

    /// Prepares the step about to be published: Adam's scalars for it, and room for the
    /// moments it writes.
    pub fn begin_step(&mut self) {
        let n = self.store.len();
        self.next = Some(self.adam.next_step());
        self.next_exp_avg.resize(n, 0.0);
        self.next_exp_avg_sq.resize(n, 0.0);
    }

    /// Reduces chunks of the step (consecutive, in order), each on its own thread: sums the
    /// uploads' pieces (in the order given: unit order) and applies Adam, writing the new
    /// parameters of the chunk where the next version is kept. The run's state does not change
    /// until [`Trainer::commit`]. One outcome per chunk, in order; each chunk made as bytes when
    /// `bytes` (some member downloads over gRPC), and with its checksum when `sums` (some
    /// member reads the parameter segment, where the parameters then are).
    pub fn reduce_chunks(
        &mut self,
        jobs: &[Job],
        bytes: bool,
        sums: bool,
    ) -> Result<Vec<ChunkOutcome>> {
        let Some(k) = &self.next else {
            return Err(Error::Server("a chunk reduced outside a step".into()));
        };
        let sums = sums && self.store.is_shared();
        let (params, next) = self.store.step(self.global_step)?;
        let ctx = ChunkReducer {
            adam: &self.adam,
            k,
            params,
            layout: self.model.layout(),
            step: self.global_step,
            bytes,
            sums,
        };
        // Each job's share of the outputs, cut in order.
        let (mut p, mut m, mut v) = (
            next,
            &mut self.next_exp_avg[..],
            &mut self.next_exp_avg_sq[..],
        );
        let mut cut = 0;
        let mut work = Vec::with_capacity(jobs.len());
        for job in jobs {
            let len = job.parts.first().map_or(0, |(_, piece)| piece.len() / 4);
            if job.parts.is_empty()
                || job.parts.iter().any(|(_, piece)| piece.len() != len * 4)
                || job.at < cut
                || job.at + len > ctx.params.len()
            {
                return Err(Error::Server(format!(
                    "chunk {} of {len} values at {}: no uploads, pieces of different sizes, or \
                     out of order",
                    job.index, job.at
                )));
            }
            let skip = job.at - cut;
            let (_, rest) = std::mem::take(&mut p).split_at_mut(skip);
            let (out_p, rest) = rest.split_at_mut(len);
            p = rest;
            let (_, rest) = std::mem::take(&mut m).split_at_mut(skip);
            let (out_m, rest) = rest.split_at_mut(len);
            m = rest;
            let (_, rest) = std::mem::take(&mut v).split_at_mut(skip);
            let (out_v, rest) = rest.split_at_mut(len);
            v = rest;
            cut = job.at + len;
            work.push((job, Outputs(out_p, out_m, out_v)));
        }
        work.into_par_iter()
            .map(|(job, out)| ctx.reduce(job, out))
            .collect()
    }

    /// Commits a complete step whose every chunk was reduced into `chunks` (the new
    /// parameters): pools the units' batch-norm statistics (in unit order), makes the new
    /// parameters and moments the state and advances the cursor.
    pub fn commit(
        &mut self,
        contributions: &[Contribution],
        chunks: &[ParamChunk],
    ) -> Result<Committed> {
        let n = self.store.len();
        let bytes: usize = chunks.iter().map(|c| c.len).sum();
        if bytes != n * 4 {
            return Err(Error::Server(format!(
                "a step reduced to {bytes} bytes for {n} parameters"
            )));
        }
        let mut outcomes: Vec<_> = contributions.iter().flat_map(|c| &c.units).collect();
        outcomes.sort_by_key(|u| u.index);
        let layers = self.model.batch_norms().len();
        let mut pooled: Vec<BnBatchStats> = Vec::with_capacity(layers);
        for l in 0..layers {
            let per_unit = outcomes.iter().filter_map(|u| u.bn.get(l));
            pooled.push(
                pool_batch_stats(per_unit).ok_or_else(|| {
                    Error::Server(format!("no batch-norm statistics for layer {l}"))
                })?,
            );
        }
        let k = self
            .next
            .take()
            .ok_or_else(|| Error::Server("a step committed twice".into()))?;
        self.adam
            .finish_step(k, &mut self.next_exp_avg, &mut self.next_exp_avg_sq)?;
        // Every chunk was reduced into the next parameters (in the current generation: the
        // chunks of a voided one were reduced again over them).
        self.store.commit();
        // The model's own copy of the parameters is brought up to date only when it is saved
        // (`finish_epoch`): copying 6.9 M values into it every step would cost more than Adam.
        self.model.update_batch_norms(&pooled)?;
        let exams: u64 = outcomes.iter().map(|u| u.exams).sum();
        let loss_sum: f64 = outcomes.iter().map(|u| u.loss_sum).sum();
        self.epoch_loss_sum += loss_sum;
        self.epoch_seen += exams;
        self.global_step += 1;
        self.step_in_epoch += 1;
        Ok(Committed { exams, loss_sum })
    }

    /// The validation exams' ids, cut into prediction tasks.
    pub fn tasks(&self, positions: &[usize]) -> Vec<Vec<i64>> {
        positions
            .chunks(self.cfg.cluster.predict_batch.max(1))
            .map(|c| {
                c.iter()
                    .map(|&p| self.data.index.exams[p].exam_id.0)
                    .collect()
            })
            .collect()
    }

    /// Ends the epoch with the validation predictions (in validation order): history row,
    /// checkpoints, schedule; moves the cursor to the next epoch.
    pub fn finish_epoch(&mut self, pred: &[f32], lr: f64) -> Result<Validated> {
        let valid = &self.data.valid;
        let valid_age: Vec<f32> = valid
            .iter()
            .map(|&p| self.data.index.exams[p].age)
            .collect();
        let valid_loss = valid_age
            .iter()
            .zip(pred)
            .zip(&self.valid_w)
            .map(|((&a, &p), &w)| f64::from(w) * (f64::from(a) - f64::from(p)).powi(2))
            .sum::<f64>()
            / valid.len().max(1) as f64;
        let out = self.cfg.output.dir.clone();
        self.model
            .set_params_flat(self.store.current(self.global_step))?;
        let mut meta = BTreeMap::new();
        meta.insert(META_EPOCH.to_string(), self.epoch.to_string());
        meta.insert(META_VALID_LOSS.to_string(), valid_loss.to_string());
        let improved = valid_loss < self.best;
        if improved {
            self.best = valid_loss;
            self.best_epoch = Some(self.epoch);
            save_model(&self.model, &out.join(files::BEST), &meta)?;
        }
        save_model(&self.model, &out.join(files::LAST), &meta)?;
        let row = HistoryRow {
            epoch: self.epoch,
            train_loss: self.epoch_loss_sum / self.epoch_seen.max(1) as f64,
            valid_loss,
            lr,
            metrics: ValidMetrics::compute(&valid_age, pred, &self.valid_w),
        };
        let stop = self.stop.stop_after(lr);
        if !stop {
            self.history.push(row.clone());
            write_history(&out.join(files::HISTORY), &self.history)?;
            self.sched.step(valid_loss);
        }
        self.epoch += 1;
        self.step_in_epoch = 0;
        self.epoch_loss_sum = 0.0;
        self.epoch_seen = 0;
        Ok(Validated {
            row,
            improved,
            stop,
        })
    }

    /// Test-split figures from its predictions (in test order), and `test_predictions.csv`.
    pub fn finish_test(&self, pred: &[f32]) -> Result<TestFigures> {
        let test = &self.data.test;
        let mut csv = String::from("exam_id,age,predicted_age\n");
        let (mut abs, mut sq) = (0.0f64, 0.0f64);
        for (&p, &y) in test.iter().zip(pred) {
            let e = &self.data.index.exams[p];
            let d = f64::from(y) - f64::from(e.age);
            abs += d.abs();
            sq += d * d;
            csv.push_str(&format!("{},{},{}\n", e.exam_id.0, e.age, y));
        }
        write_atomic(&self.cfg.output.dir.join(TEST_PREDICTIONS), csv.as_bytes())?;
        let n = test.len().max(1) as f64;
        Ok(TestFigures {
            exams: test.len(),
            mae: abs / n,
            rmse: (sq / n).sqrt(),
        })
    }
}

/// Predictions of the test split with the best model.
pub const TEST_PREDICTIONS: &str = "test_predictions.csv";

fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let h = blake3::hash(
        &[
            now.to_le_bytes().as_slice(),
            &std::process::id().to_le_bytes(),
        ]
        .concat(),
    );
    h.to_hex()[..16].to_string()
}
