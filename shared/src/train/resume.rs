//! The training state a coordinator writes after committed steps, so that a restarted run
//! continues where it stopped, in the middle of an epoch: parameters and buffers, Adam's moments
//! and step count, the learning rate and scheduler, the epoch cursor and its running loss, the
//! history, the best validation loss, the model configuration and the data fingerprints.
//!
//! # File format
//! One safetensors file, [`STATE_FILE`] in the run folder (readable by any safetensors reader):
//! - tensor `model.<name>` for every tensor of [`TrainState::model`], with its dtype (float32,
//!   float64 or int64) and shape;
//! - tensors `adam.exp_avg.<param>` and `adam.exp_avg_sq.<param>` (float32) for every entry of
//!   the [`ParamLayout`], shaped as the entry;
//! - metadata [`STATE_KEY`]: one JSON object with every other field, the Adam step count, the
//!   order of the model's tensors and a format version. Floating-point numbers in it are JSON
//!   strings holding Rust's shortest exact form (`"0.1"`, `"1e-8"`, `"inf"`, `"NaN"`): JSON has
//!   no infinities, and parsing JSON numbers does not promise the same `f64` back. Integers are
//!   JSON numbers (up to `i64::MAX`); an absent `best_epoch` means none;
//! - metadata [`CHECKSUM_KEY`]: blake3 (hex) over a canonical encoding of every tensor (name,
//!   dtype, shape, little-endian bytes; in name order) and every other metadata entry (in key
//!   order), each part length-prefixed.
//!
//! The parameter layout itself is not stored: [`load_train_state`] asks the caller for the
//! layout of the saved [`ModelConfig`] and checks every shape against it.
//!
//! # Writing and loading
//! [`save_train_state`] writes a temporary file in the folder and syncs it, renames the current
//! file to [`PREV_STATE_FILE`], renames the temporary file to [`STATE_FILE`] and syncs the
//! folder, so a crash at any point leaves at least one complete file. [`load_train_state`] uses
//! the current file when it parses and its checksum verifies, and otherwise falls back to the
//! previous one with a warning naming the bad file and why.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::model::config::ModelConfig;
use crate::model::safetensors_io::load_safetensors;
use crate::model::state::{NamedTensor, StateDict, TensorData};
use crate::train::adam::AdamState;
use crate::train::flat::ParamLayout;
use crate::train::history::HistoryRow;
use crate::train::schedule::ReduceLrOnPlateau;
use crate::{Error, Result};

/// The current training state in a run folder.
pub const STATE_FILE: &str = "train_state.safetensors";
/// The state written before the current one, kept as a fallback.
pub const PREV_STATE_FILE: &str = "train_state.prev.safetensors";
/// Metadata key of the JSON object with every non-tensor field.
pub const STATE_KEY: &str = "ecg.train_state";
/// Metadata key of the checksum.
pub const CHECKSUM_KEY: &str = "ecg.checksum";

/// Version of the layout of [`STATE_KEY`]; a file with another version is not used.
const FORMAT_VERSION: u32 = 1;
const MODEL_PREFIX: &str = "model.";
const EXP_AVG_PREFIX: &str = "adam.exp_avg.";
const EXP_AVG_SQ_PREFIX: &str = "adam.exp_avg_sq.";

/// Everything a restarted run needs to continue exactly where the last committed step left it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// The run's identifier.
    pub run_id: String,
    /// Optimizer steps committed so far.
    pub global_step: u64,
    /// The epoch the cursor is in.
    pub epoch: u64,
    /// The next step of `epoch` to run.
    pub step_in_epoch: u64,
    /// Training loss summed over the committed steps of `epoch`.
    pub epoch_loss_sum: f64,
    /// Exams in those steps.
    pub epoch_seen: u64,
    /// Parameters and buffers as the caller gives them; names, order, dtypes and values are
    /// restored exactly.
    pub model: StateDict,
    /// Adam's state; the moments are flat vectors in the order of the parameter layout.
    pub adam: AdamState,
    /// The learning rate in use.
    pub lr: f64,
    /// The learning-rate schedule.
    pub scheduler: ReduceLrOnPlateau,
    /// One row per finished epoch.
    pub history: Vec<HistoryRow>,
    /// The best validation loss so far (`inf` before the first validation).
    pub best_valid_loss: f64,
    /// The epoch that reached `best_valid_loss`, if any.
    pub best_epoch: Option<u64>,
    /// The architecture, from which the parameter layout is rebuilt on load.
    pub model_config: ModelConfig,
    /// Fingerprints of the inputs the run depends on (e.g. `"dataset"`, `"split"`).
    pub fingerprints: BTreeMap<String, String>,
}

/// A state read back by [`load_train_state`].
#[derive(Debug, Clone)]
pub struct LoadedState {
    /// The state.
    pub state: TrainState,
    /// The file it came from ([`STATE_FILE`], or [`PREV_STATE_FILE`] after a fallback).
    pub source: PathBuf,
    /// One line per file that was skipped, naming it and why (empty when the current file was
    /// used).
    pub warnings: Vec<String>,
}

/// The non-tensor part of the file, stored as JSON under [`STATE_KEY`].
#[derive(Serialize, Deserialize)]
struct Record {
    format: u32,
    run_id: String,
    global_step: u64,
    epoch: u64,
    step_in_epoch: u64,
    epoch_loss_sum: f64,
    epoch_seen: u64,
    /// The model's tensor names in the caller's order (the file sorts tensors its own way).
    model_tensors: Vec<String>,
    adam_step: u64,
    lr: f64,
    scheduler: ReduceLrOnPlateau,
    history: Vec<HistoryRow>,
    best_valid_loss: f64,
    best_epoch: Option<u64>,
    model_config: ModelConfig,
    fingerprints: BTreeMap<String, String>,
}

/// The non-tensor fields of `state`.
fn record_of(state: &TrainState) -> Record {
    Record {
        format: FORMAT_VERSION,
        run_id: state.run_id.clone(),
        global_step: state.global_step,
        epoch: state.epoch,
        step_in_epoch: state.step_in_epoch,
        epoch_loss_sum: state.epoch_loss_sum,
        epoch_seen: state.epoch_seen,
        model_tensors: state
            .model
            .tensors()
            .iter()
            .map(|t| t.name.clone())
            .collect(),
        adam_step: state.adam.step,
        lr: state.lr,
        scheduler: state.scheduler.clone(),
        history: state.history.clone(),
        best_valid_loss: state.best_valid_loss,
        best_epoch: state.best_epoch,
        model_config: state.model_config.clone(),
        fingerprints: state.fingerprints.clone(),
    }
}

/// Shape disagreements between a model state dict (tensor names prefixed with `prefix`) and the
/// layout: a layout parameter missing from the model, or of another shape.
fn model_mismatches(model: &StateDict, prefix: &str, layout: &ParamLayout) -> Vec<String> {
    let mut out = Vec::new();
    for e in layout.entries() {
        match model.get(&e.name) {
            None => out.push(format!(
                "parameter `{}` of the layout is not in the model state",
                e.name
            )),
            Some(t) if t.shape != e.shape => out.push(format!(
                "tensor `{prefix}{}` has shape {:?}, the parameter layout gives {:?}",
                e.name, t.shape, e.shape
            )),
            Some(_) => {}
        }
    }
    out
}

fn dtype_and_bytes(data: &TensorData) -> (Dtype, Vec<u8>) {
    match data {
        TensorData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::F64(v) => (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
    }
}

/// blake3 (hex) over every tensor of `tensors` (name order) and every entry of `metadata`
/// except [`CHECKSUM_KEY`] (key order). Every variable-length part is preceded by its length,
/// so that no two different contents share an encoding.
fn checksum(tensors: &StateDict, metadata: &BTreeMap<String, String>) -> String {
    fn part(h: &mut blake3::Hasher, bytes: &[u8]) {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let mut h = blake3::Hasher::new();
    part(&mut h, b"ecg train state checksum v1");
    let mut sorted: Vec<&NamedTensor> = tensors.tensors().iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    h.update(&(sorted.len() as u64).to_le_bytes());
    for t in sorted {
        let (dtype, bytes) = dtype_and_bytes(&t.data);
        part(&mut h, t.name.as_bytes());
        part(&mut h, format!("{dtype:?}").as_bytes());
        h.update(&(t.shape.len() as u64).to_le_bytes());
        for &d in &t.shape {
            h.update(&(d as u64).to_le_bytes());
        }
        part(&mut h, &bytes);
    }
    let meta: Vec<_> = metadata
        .iter()
        .filter(|(k, _)| *k != CHECKSUM_KEY)
        .collect();
    h.update(&(meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        part(&mut h, k.as_bytes());
        part(&mut h, v.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The file's tensors: the model's under `model.`, the moments cut by the layout under `adam.`.
fn file_tensors(state: &TrainState, layout: &ParamLayout) -> Result<StateDict> {
    let mut sd = StateDict::new();
    for t in state.model.tensors() {
        sd.push(NamedTensor {
            name: format!("{MODEL_PREFIX}{}", t.name),
            shape: t.shape.clone(),
            data: t.data.clone(),
        })?;
    }
    for e in layout.entries() {
        for (prefix, flat) in [
            (EXP_AVG_PREFIX, &state.adam.exp_avg),
            (EXP_AVG_SQ_PREFIX, &state.adam.exp_avg_sq),
        ] {
            let data = TensorData::F32(flat[e.range()].to_vec());
            sd.push(NamedTensor::new(
                format!("{prefix}{}", e.name),
                e.shape.clone(),
                data,
            )?)?;
        }
    }
    Ok(sd)
}

/// Refuses a state that does not fit `layout`; the message names the tensor.
fn check_state(state: &TrainState, layout: &ParamLayout) -> Result<()> {
    for (what, v) in [
        ("adam.exp_avg", &state.adam.exp_avg),
        ("adam.exp_avg_sq", &state.adam.exp_avg_sq),
    ] {
        if v.len() != layout.total_len() {
            return Err(Error::Training(format!(
                "training state: {what} has {} values, the parameter layout has {}",
                v.len(),
                layout.total_len()
            )));
        }
    }
    let bad = model_mismatches(&state.model, "", layout);
    if !bad.is_empty() {
        return Err(Error::Training(format!(
            "training state does not fit the parameter layout: {}",
            bad.join("; ")
        )));
    }
    Ok(())
}

/// The safetensors bytes of `tensors` with string `metadata`.
fn encode(
    tensors: &StateDict,
    metadata: BTreeMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    let buffers: Vec<(Dtype, Vec<u8>)> = tensors
        .tensors()
        .iter()
        .map(|t| dtype_and_bytes(&t.data))
        .collect();
    let mut views = Vec::with_capacity(buffers.len());
    for (t, (dtype, bytes)) in tensors.tensors().iter().zip(&buffers) {
        let view = TensorView::new(*dtype, t.shape.clone(), bytes)
            .map_err(|e| format!("tensor `{}`: {e}", t.name))?;
        views.push((t.name.as_str(), view));
    }
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// Syncs the folder so that the renames in it are durable; file systems that cannot sync a
/// folder say so with `InvalidInput` or `Unsupported`, which is not an error here.
fn sync_dir(dir: &Path) -> Result<()> {
    let result = File::open(dir).and_then(|d| d.sync_all());
    match result {
        Err(e) if !matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Unsupported) => {
            Err(Error::io(dir, e))
        }
        _ => Ok(()),
    }
}

/// Writes `state` to `dir/`[`STATE_FILE`] (creating `dir` if needed), keeping the file it
/// replaces as [`PREV_STATE_FILE`]; returns the path written. The Adam moments are cut into
/// tensors by `layout`. Refuses moments whose length is not the layout's, and a model state
/// that lacks a layout parameter or holds one of another shape (the error names the tensor).
pub fn save_train_state(dir: &Path, state: &TrainState, layout: &ParamLayout) -> Result<PathBuf> {
    check_state(state, layout)?;
    let path = dir.join(STATE_FILE);
    let prev = dir.join(PREV_STATE_FILE);
    let tensors = file_tensors(state, layout)?;
    let record = record_of(state);
    let json = exact_json::to_string(&record)
        .map_err(|e| Error::checkpoint(&path, format!("cannot encode `{STATE_KEY}`: {e}")))?;
    let mut metadata = BTreeMap::from([(STATE_KEY.to_string(), json)]);
    let sum = checksum(&tensors, &metadata);
    metadata.insert(CHECKSUM_KEY.to_string(), sum);
    let bytes = encode(&tensors, metadata).map_err(|e| Error::checkpoint(&path, e))?;

    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".{STATE_FILE}.tmp{}", std::process::id()));
    let written = File::create(&tmp).and_then(|mut f| {
        let (head, tail) = bytes.split_at(bytes.len() / 2);
        f.write_all(head)?;
        crate::faults::point("coord.checkpoint_write");
        f.write_all(tail)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    match fs::rename(&path, &prev) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(&path, e));
        }
        _ => {}
    }
    crate::faults::point("coord.checkpoint_rename");
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&path, e));
    }
    sync_dir(dir)?;
    remove_stale_temporaries(dir);
    Ok(path)
}

/// Removes the temporary files that writers killed mid-write left behind (best effort).
fn remove_stale_temporaries(dir: &Path) {
    let prefix = format!(".{STATE_FILE}.tmp");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Why one file could not be used.
enum Problem {
    /// The file is missing, torn or corrupt: the next file is tried.
    Unusable(String),
    /// The file is intact but does not fit the caller (layout): loading stops.
    Fatal(Error),
}

fn unusable(msg: impl Into<String>) -> Problem {
    Problem::Unusable(msg.into())
}

/// The message of `e` without the file name (the caller prefixes it).
fn reason(e: Error) -> String {
    match e {
        Error::Checkpoint { msg, .. } => msg,
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Reads and checks one state file.
fn read_state(
    path: &Path,
    layout_of: &impl Fn(&ModelConfig) -> Result<ParamLayout>,
) -> std::result::Result<TrainState, Problem> {
    let (sd, metadata) = load_safetensors(path).map_err(|e| unusable(reason(e)))?;
    let stored = metadata
        .get(CHECKSUM_KEY)
        .ok_or_else(|| unusable(format!("metadata has no `{CHECKSUM_KEY}`")))?;
    let computed = checksum(&sd, &metadata);
    if *stored != computed {
        return Err(unusable(format!(
            "checksum mismatch (stored {stored}, computed {computed}): the file is corrupt"
        )));
    }
    let json = metadata
        .get(STATE_KEY)
        .ok_or_else(|| unusable(format!("metadata has no `{STATE_KEY}`")))?;
    let r: Record =
        exact_json::from_str(json).map_err(|e| unusable(format!("metadata `{STATE_KEY}`: {e}")))?;
    if r.format != FORMAT_VERSION {
        return Err(unusable(format!(
            "format version {} in `{STATE_KEY}`, this build reads version {FORMAT_VERSION}",
            r.format
        )));
    }
    let layout = layout_of(&r.model_config).map_err(Problem::Fatal)?;

    let mut expected = BTreeSet::new();
    let mut model = StateDict::new();
    for name in &r.model_tensors {
        let key = format!("{MODEL_PREFIX}{name}");
        let t = sd
            .get(&key)
            .ok_or_else(|| unusable(format!("tensor `{key}` is missing")))?;
        NamedTensor::new(name.as_str(), t.shape.clone(), t.data.clone())
            .and_then(|t| model.push(t))
            .map_err(|e| unusable(format!("tensor `{key}`: {}", reason(e))))?;
        expected.insert(key);
    }
    let mut mismatches = model_mismatches(&model, MODEL_PREFIX, &layout);
    let mut exp_avg = Vec::with_capacity(layout.total_len());
    let mut exp_avg_sq = Vec::with_capacity(layout.total_len());
    for e in layout.entries() {
        for (prefix, flat) in [
            (EXP_AVG_PREFIX, &mut exp_avg),
            (EXP_AVG_SQ_PREFIX, &mut exp_avg_sq),
        ] {
            let key = format!("{prefix}{}", e.name);
            let t = sd
                .get(&key)
                .ok_or_else(|| unusable(format!("tensor `{key}` is missing")))?;
            if t.shape != e.shape {
                mismatches.push(format!(
                    "tensor `{key}` has shape {:?}, the parameter layout gives {:?}",
                    t.shape, e.shape
                ));
                continue;
            }
            match &t.data {
                TensorData::F32(v) => flat.extend_from_slice(v),
                other => {
                    return Err(unusable(format!(
                        "tensor `{key}` is {}, expected float32",
                        other.dtype_name()
                    )));
                }
            }
            expected.insert(key);
        }
    }
    if !mismatches.is_empty() {
        return Err(Problem::Fatal(Error::checkpoint(
            path,
            format!(
                "the state does not fit the parameter layout of its model config: {}",
                mismatches.join("; ")
            ),
        )));
    }
    if let Some(t) = sd.tensors().iter().find(|t| !expected.contains(&t.name)) {
        return Err(unusable(format!("unexpected tensor `{}`", t.name)));
    }
    Ok(TrainState {
        run_id: r.run_id,
        global_step: r.global_step,
        epoch: r.epoch,
        step_in_epoch: r.step_in_epoch,
        epoch_loss_sum: r.epoch_loss_sum,
        epoch_seen: r.epoch_seen,
        model,
        adam: AdamState {
            step: r.adam_step,
            exp_avg,
            exp_avg_sq,
        },
        lr: r.lr,
        scheduler: r.scheduler,
        history: r.history,
        best_valid_loss: r.best_valid_loss,
        best_epoch: r.best_epoch,
        model_config: r.model_config,
        fingerprints: r.fingerprints,
    })
}

/// Reads the training state of the run folder `dir`. `layout_of` gives the parameter layout of
/// the saved model configuration; every model parameter and Adam tensor must have its shape.
///
/// - [`STATE_FILE`] is used when it parses, its checksum verifies and nothing is missing.
/// - Otherwise [`PREV_STATE_FILE`] is tried; using it adds a warning (also logged) naming the
///   skipped file and why.
/// - `Ok(None)` when neither file exists (a fresh run).
/// - An error naming each file and its problem when files exist but none can be used; an error
///   naming the tensor when an intact file disagrees with the layout (that is not corruption,
///   so no fallback); `layout_of`'s own error as it is.
pub fn load_train_state(
    dir: &Path,
    layout_of: impl Fn(&ModelConfig) -> Result<ParamLayout>,
) -> Result<Option<LoadedState>> {
    let mut problems: Vec<(PathBuf, String)> = Vec::new();
    let mut any_exists = false;
    for path in [dir.join(STATE_FILE), dir.join(PREV_STATE_FILE)] {
        match fs::metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                problems.push((path, "missing".into()));
                continue;
            }
            Err(e) => {
                any_exists = true;
                problems.push((path, format!("cannot be read: {e}")));
                continue;
            }
            Ok(_) => any_exists = true,
        }
        match read_state(&path, &layout_of) {
            Ok(state) => {
                let warnings: Vec<String> = problems
                    .iter()
                    .map(|(bad, why)| format!("{}: {why}; using {}", bad.display(), path.display()))
                    .collect();
                for w in &warnings {
                    tracing::warn!("training state {w}");
                }
                return Ok(Some(LoadedState {
                    state,
                    source: path,
                    warnings,
                }));
            }
            Err(Problem::Unusable(why)) => problems.push((path, why)),
            Err(Problem::Fatal(e)) => return Err(e),
        }
    }
    if !any_exists {
        return Ok(None);
    }
    let list: Vec<String> = problems
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.display()))
        .collect();
    Err(Error::checkpoint(
        dir,
        format!("no usable training state: {}", list.join("; ")),
    ))
}

mod exact_json;

#[cfg(test)]
mod tests;
