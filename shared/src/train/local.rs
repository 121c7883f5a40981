//! The single-process trainer: epochs over the training split of a `cluster.toml` run on this
//! machine, with the seed's loss, Adam, ReduceLROnPlateau and stop rule. Every epoch it
//! validates (evaluation mode, the validation split's own age-balancing weights), writes
//! `history.csv`, `model_last.safetensors` with `optimizer_last.safetensors` (Adam's moments and
//! step, the scheduler), and `model_best.safetensors` when the validation loss improves
//! (strictly, as the seed). It can start from a checkpoint (fine-tuning) and can replay the
//! seed's batch order. The distributed trainer reuses its pieces: the plan, the step, the
//! validation and the files.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use super::history::{HistoryRow, ValidMetrics, write_atomic, write_history};
use super::plan::{epoch_batches, epoch_seed};
use super::{
    Adam, AdamConfig, PlateauConfig, ReduceLrOnPlateau, StopRule, check_finite, compute_weights,
};
use crate::config::{ClusterConfig, TrainingConfig};
use crate::data::index::DatasetIndex;
use crate::data::prefetch::Prefetcher;
use crate::data::reader::BatchReader;
use crate::model::checkpoint::{META_EPOCH, META_VALID_LOSS, save_model};
use crate::model::dropout::RngMasks;
use crate::model::safetensors_io::save_safetensors;
use crate::model::state::{NamedTensor, StateDict, TensorData};
use crate::model::{ModelConfig, ResNet1d, load_checkpoint};
use crate::{Error, Result};

/// What the trainer reports while it runs.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// An epoch starts with this many steps.
    EpochStart {
        /// 0-based epoch.
        epoch: u64,
        /// Steps in it.
        steps: usize,
        /// Learning rate used.
        lr: f64,
    },
    /// A step finished.
    Step {
        /// Steps done in this epoch.
        done: usize,
        /// Running training loss per exam.
        train_loss: f64,
    },
    /// Validation starts.
    Validating {
        /// Exams to validate.
        exams: usize,
    },
    /// An epoch ended (its row of the history).
    EpochEnd(HistoryRow),
    /// Training stopped because the rate fell below `min_lr`.
    Stopped {
        /// The epoch whose rate was too low.
        epoch: u64,
        /// That rate.
        lr: f64,
    },
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Every logged epoch.
    pub history: Vec<HistoryRow>,
    /// Epoch of the best validation loss.
    pub best_epoch: Option<u64>,
    /// The best validation loss.
    pub best_valid_loss: f64,
    /// Where the outputs are.
    pub out_dir: PathBuf,
}

/// The files a run writes into its output folder.
pub mod files {
    /// The history.
    pub const HISTORY: &str = "history.csv";
    /// The architecture and training settings, with the seed's `config.json` keys.
    pub const CONFIG: &str = "config.json";
    /// Weights with the best validation loss.
    pub const BEST: &str = "model_best.safetensors";
    /// Weights after the last epoch.
    pub const LAST: &str = "model_last.safetensors";
    /// Adam's state and the scheduler after the last epoch.
    pub const OPTIMIZER: &str = "optimizer_last.safetensors";
}

/// The model a run starts from: `training.init_from` when set (its architecture wins), else
/// fresh weights of `[model]` seeded with `training.seed`.
pub fn initial_model(cfg: &ClusterConfig, device: &Device) -> Result<ResNet1d> {
    let t = &cfg.training;
    if t.init_from.as_os_str().is_empty() {
        return ResNet1d::new(&cfg.model, t.seed, device);
    }
    let ckpt = load_checkpoint(&t.init_from)?;
    if ckpt.config.seq_length != cfg.data.n_samples {
        return Err(Error::checkpoint(
            &ckpt.source,
            format!(
                "the model reads {} samples but data.n_samples is {}",
                ckpt.config.seq_length, cfg.data.n_samples
            ),
        ));
    }
    ckpt.build(device)
}

/// The seed's optimiser, schedule and stop rule for `n` parameters with the settings of `t`:
/// Adam at `lr`, ReduceLROnPlateau (factor, patience, floor `lr_factor * min_lr`), and stop
/// below `min_lr` or after `epochs`.
pub fn optimizer(t: &TrainingConfig, n: usize) -> Result<(Adam, ReduceLrOnPlateau, StopRule)> {
    let adam = Adam::new(
        AdamConfig {
            lr: t.lr,
            ..AdamConfig::default()
        },
        n,
    )?;
    let plateau = PlateauConfig {
        factor: t.lr_factor,
        patience: t.patience,
        min_lr: t.lr_factor * t.min_lr,
        ..PlateauConfig::default()
    };
    let sched = ReduceLrOnPlateau::new(plateau, t.lr)?;
    let stop = StopRule {
        min_lr: t.min_lr,
        epochs: t.epochs,
    };
    Ok((adam, sched, stop))
}

/// `config.json` of a run: the architecture with the seed's keys, and the training settings.
pub fn config_json(model: &ModelConfig, cfg: &ClusterConfig) -> Result<Vec<u8>> {
    let mut v = model.to_json_value();
    let t = &cfg.training;
    if let Some(o) = v.as_object_mut() {
        for (k, val) in [
            ("epochs", serde_json::json!(t.epochs)),
            ("seed", serde_json::json!(t.seed)),
            ("batch_size", serde_json::json!(t.batch_size)),
            ("lr", serde_json::json!(t.lr)),
            ("patience", serde_json::json!(t.patience)),
            ("min_lr", serde_json::json!(t.min_lr)),
            ("lr_factor", serde_json::json!(t.lr_factor)),
            ("traces_dset", serde_json::json!(cfg.data.traces_dset)),
            ("ids_dset", serde_json::json!(cfg.data.ids_dset)),
            ("age_col", serde_json::json!(cfg.data.age_col)),
            ("ids_col", serde_json::json!(cfg.data.exam_id_col)),
        ] {
            o.insert(k.into(), val);
        }
    }
    serde_json::to_vec_pretty(&v).map_err(|e| Error::Training(format!("config.json: {e}")))
}

fn save_optimizer(
    path: &Path,
    model: &ResNet1d,
    adam: &Adam,
    sched: &ReduceLrOnPlateau,
    epoch: u64,
) -> Result<()> {
    let mut sd = StateDict::new();
    let st = adam.state();
    for e in model.layout().entries() {
        for (prefix, v) in [("exp_avg", &st.exp_avg), ("exp_avg_sq", &st.exp_avg_sq)] {
            sd.push(NamedTensor::new(
                format!("{prefix}.{}", e.name),
                e.shape.clone(),
                TensorData::F32(v[e.range()].to_vec()),
            )?)?;
        }
    }
    let mut meta = BTreeMap::new();
    meta.insert("ecg.adam_step".into(), st.step.to_string());
    meta.insert("ecg.lr".into(), adam.lr().to_string());
    meta.insert(META_EPOCH.into(), epoch.to_string());
    meta.insert(
        "ecg.scheduler".into(),
        serde_json::to_string(sched).map_err(|e| Error::Training(e.to_string()))?,
    );
    save_safetensors(path, &sd, &meta)
}

/// Validation: evaluation-mode predictions of `valid` in batches, in order.
pub fn predict_exams(
    model: &ResNet1d,
    reader: &Arc<BatchReader>,
    exams: &[usize],
    batch_size: usize,
    threads: usize,
) -> Result<Vec<f32>> {
    let batches: Vec<Vec<usize>> = exams
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    let mut out = Vec::with_capacity(exams.len());
    let pf = Prefetcher::new(Arc::clone(reader), batches, 2, threads);
    let recycler = pf.recycler();
    for batch in pf {
        let batch = batch?;
        out.extend(model.predict(&batch.data, batch.len())?);
        recycler.recycle(batch);
    }
    Ok(out)
}

/// Trains on `train` (index positions), validating on `valid`, writing into `cfg.output.dir`.
pub fn train_local(
    cfg: &ClusterConfig,
    index: &DatasetIndex,
    train: &[usize],
    valid: &[usize],
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainSummary> {
    if train.is_empty() || valid.is_empty() {
        return Err(Error::Training(format!(
            "{} training and {} validation exams: both splits need exams",
            train.len(),
            valid.len()
        )));
    }
    let t = &cfg.training;
    let device = Device::Cpu;
    let model = initial_model(cfg, &device)?;
    let out = &cfg.output.dir;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_atomic(&out.join(files::CONFIG), &config_json(model.config(), cfg)?)?;

    let reader = Arc::new(BatchReader::open(index)?);
    let ages =
        |ps: &[usize]| -> Vec<f64> { ps.iter().map(|&p| f64::from(index.exams[p].age)).collect() };
    let mut weight_of = vec![0f32; index.exams.len()];
    for (&p, w) in train.iter().zip(compute_weights(&ages(train), None)?) {
        weight_of[p] = w;
    }
    let valid_w = compute_weights(&ages(valid), None)?;
    let valid_age: Vec<f32> = valid.iter().map(|&p| index.exams[p].age).collect();

    let mut model = model;
    let mut params = model.params_flat()?;
    let (mut adam, mut sched, stop) = optimizer(t, params.len())?;
    let mut history = Vec::new();
    let mut best = f64::INFINITY;
    let mut best_epoch = None;
    let mut epoch = 0u64;
    while stop.run_epoch(epoch) {
        let lr = sched.lr();
        adam.set_lr(lr)?;
        let batches = epoch_batches(t.order, index, train, t.batch_size, t.seed, epoch);
        on_event(TrainEvent::EpochStart {
            epoch,
            steps: batches.len(),
            lr,
        });
        let step_seed = epoch_seed(t.seed, epoch);
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        let pf = Prefetcher::new(Arc::clone(&reader), batches, 2, t.prefetch_threads);
        let recycler = pf.recycler();
        for (step, batch) in pf.enumerate() {
            let batch = batch?;
            let w: Vec<f32> = batch.positions.iter().map(|&p| weight_of[p]).collect();
            let mut masks = RngMasks::new(epoch_seed(step_seed, step as u64));
            let s = model.train_step(&batch.data, &batch.ages, &w, &mut masks)?;
            if !s.loss_sum.is_finite() {
                return Err(Error::Training(format!(
                    "epoch {epoch}, step {step}: the loss is {} (exams {:?}...)",
                    s.loss_sum,
                    &batch.exam_ids[..batch.exam_ids.len().min(3)]
                )));
            }
            check_finite(
                &format!("epoch {epoch}, step {step}: gradient"),
                model.layout(),
                &s.grads,
            )?;
            adam.step(&mut params, &s.grads)?;
            model.set_params_flat(&params)?;
            model.update_batch_norms(&s.bn_stats)?;
            loss_sum += s.loss_sum;
            seen += batch.len();
            recycler.recycle(batch);
            on_event(TrainEvent::Step {
                done: step + 1,
                train_loss: loss_sum / seen as f64,
            });
        }
        on_event(TrainEvent::Validating { exams: valid.len() });
        let pred = predict_exams(&model, &reader, valid, t.batch_size, t.prefetch_threads)?;
        let valid_loss = valid_age
            .iter()
            .zip(&pred)
            .zip(&valid_w)
            .map(|((&a, &p), &w)| f64::from(w) * (f64::from(a) - f64::from(p)).powi(2))
            .sum::<f64>()
            / valid.len() as f64;
        let mut meta = BTreeMap::new();
        meta.insert(META_EPOCH.to_string(), epoch.to_string());
        meta.insert(META_VALID_LOSS.to_string(), valid_loss.to_string());
        if valid_loss < best {
            best = valid_loss;
            best_epoch = Some(epoch);
            save_model(&model, &out.join(files::BEST), &meta)?;
        }
        save_model(&model, &out.join(files::LAST), &meta)?;
        save_optimizer(&out.join(files::OPTIMIZER), &model, &adam, &sched, epoch)?;
        if stop.stop_after(lr) {
            on_event(TrainEvent::Stopped { epoch, lr });
            break;
        }
        let row = HistoryRow {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            valid_loss,
            lr,
            metrics: ValidMetrics::compute(&valid_age, &pred, &valid_w),
        };
        history.push(row.clone());
        write_history(&out.join(files::HISTORY), &history)?;
        on_event(TrainEvent::EpochEnd(row));
        sched.step(valid_loss);
        epoch += 1;
    }
    Ok(TrainSummary {
        history,
        best_epoch,
        best_valid_loss: best,
        out_dir: out.clone(),
    })
}
