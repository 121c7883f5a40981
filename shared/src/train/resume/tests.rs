//! Tests of the training state file: exact round trips, the previous file, the fallback from a
//! torn or corrupt file, and the errors (both files bad, shapes that disagree with the layout).
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::train::history::ValidMetrics;
use crate::train::schedule::PlateauConfig;

fn config() -> ModelConfig {
    ModelConfig {
        seq_length: 64,
        net_filter_size: vec![4, 8],
        net_seq_lengh: vec![16, 4],
        kernel_size: 3,
        dropout_rate: 0.8,
    }
}

fn layout_with(lin_shape: Vec<usize>) -> ParamLayout {
    ParamLayout::new([
        ("conv.weight", vec![2, 1, 3]),
        ("bn.bias", vec![2]),
        ("lin.weight", lin_shape),
    ])
    .unwrap()
}

fn layout() -> ParamLayout {
    layout_with(vec![1, 4])
}

/// The layout of [`config`]; any other configuration is refused, so a load that passes a wrong
/// configuration fails.
fn layout_of(c: &ModelConfig) -> Result<ParamLayout> {
    if *c != config() {
        return Err(Error::Config(format!("unexpected model config {c:?}")));
    }
    Ok(layout())
}

fn tensor(name: &str, shape: Vec<usize>, data: TensorData) -> NamedTensor {
    NamedTensor::new(name, shape, data).unwrap()
}

/// A model state in an order that is not name order, with float64 and int64 buffers.
fn model() -> StateDict {
    let mut sd = StateDict::new();
    let conv: Vec<f32> = (0..6).map(|i| (i as f32 - 2.5) / 3.0).collect();
    sd.push(tensor("conv.weight", vec![2, 1, 3], TensorData::F32(conv)))
        .unwrap();
    sd.push(tensor(
        "bn.bias",
        vec![2],
        TensorData::F32(vec![0.1, -1e-30]),
    ))
    .unwrap();
    let var = TensorData::F64(vec![1.0 / 3.0, 5e-324]);
    sd.push(tensor("bn.running_var", vec![2], var)).unwrap();
    sd.push(tensor(
        "bn.num_batches_tracked",
        vec![],
        TensorData::I64(vec![-7]),
    ))
    .unwrap();
    let lin = TensorData::F32(vec![f32::MAX, f32::MIN_POSITIVE, -0.0, 7.0]);
    sd.push(tensor("lin.weight", vec![1, 4], lin)).unwrap();
    sd
}

/// A state after `epochs` finished epochs (scheduler stepped with those validation losses) and
/// `global_step` steps.
fn state(epochs: usize, global_step: u64) -> TrainState {
    let valid = [3.0, 3.5, 4.0, 2.0 / 3.0];
    let plateau = PlateauConfig {
        patience: 1,
        ..Default::default()
    };
    let mut scheduler = ReduceLrOnPlateau::new(plateau, 1e-3).unwrap();
    let mut history = Vec::new();
    for (e, &v) in valid[..epochs].iter().enumerate() {
        history.push(HistoryRow {
            epoch: e as u64,
            train_loss: v * 1.1,
            valid_loss: v,
            lr: scheduler.lr(),
            metrics: ValidMetrics {
                weighted_rmse: v.sqrt(),
                weighted_mae: v / 7.0,
                rmse: 0.1 + 0.2,
                mse: 1e-300 * v,
                mae: f64::MIN_POSITIVE / 3.0,
            },
        });
        scheduler.step(v);
    }
    let n = layout().total_len();
    let best = valid[..epochs]
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1));
    TrainState {
        run_id: "run-a".into(),
        global_step,
        epoch: epochs as u64,
        step_in_epoch: 3,
        epoch_loss_sum: 0.1 + 0.2,
        epoch_seen: 96,
        model: model(),
        adam: AdamState {
            step: global_step,
            exp_avg: (0..n).map(|i| (i as f32 - 4.0) / 7.0).collect(),
            exp_avg_sq: (0..n).map(|i| f32::MIN_POSITIVE / (i + 1) as f32).collect(),
        },
        lr: scheduler.lr(),
        scheduler,
        history,
        best_valid_loss: best.map_or(f64::INFINITY, |b| *b.1),
        best_epoch: best.map(|b| b.0 as u64),
        model_config: config(),
        fingerprints: BTreeMap::from([
            ("dataset".to_string(), "blake3:0123abcd".to_string()),
            ("split".to_string(), "age-balanced seed 2".to_string()),
        ]),
    }
}

fn current(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

fn previous(dir: &Path) -> PathBuf {
    dir.join(PREV_STATE_FILE)
}

/// Saves two states (`global_step` 10, then 11) and returns them.
fn save_two(dir: &Path) -> (TrainState, TrainState) {
    let (first, second) = (state(2, 10), state(3, 11));
    save_train_state(dir, &first, &layout()).unwrap();
    save_train_state(dir, &second, &layout()).unwrap();
    (first, second)
}

/// Flips one byte of the tensor data (after the 8-byte length and the JSON header).
fn flip_data_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert!(bytes.len() > 8 + header + 5, "the file has tensor data");
    bytes[8 + header + 5] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

fn truncate_half(path: &Path) {
    let bytes = fs::read(path).unwrap();
    fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

/// Writes a state file with the given tensors and a valid checksum.
fn write_crafted(dir: &Path, tensors: &StateDict, state: &TrainState) {
    let json = exact_json::to_string(&record_of(state)).unwrap();
    let mut metadata = BTreeMap::from([(STATE_KEY.to_string(), json)]);
    let sum = checksum(tensors, &metadata);
    metadata.insert(CHECKSUM_KEY.to_string(), sum);
    fs::write(current(dir), encode(tensors, metadata).unwrap()).unwrap();
}

/// `tensors` with the tensor `name` replaced by `with` (or dropped).
fn replaced(tensors: &StateDict, name: &str, with: Option<NamedTensor>) -> StateDict {
    let mut out = StateDict::new();
    for t in tensors.tensors() {
        if t.name != name {
            out.push(t.clone()).unwrap();
        } else if let Some(w) = &with {
            out.push(w.clone()).unwrap();
        }
    }
    out
}

#[test]
fn every_field_round_trips_exactly() {
    for epochs in [0, 3] {
        let dir = tempfile::tempdir().unwrap();
        let s = state(epochs, 42);
        if epochs == 0 {
            assert!(s.best_valid_loss.is_infinite() && s.best_epoch.is_none());
            assert!(s.scheduler.best().is_infinite());
        } else {
            // The scheduler has cut the rate once and holds a finite best.
            assert_eq!(s.scheduler.last_epoch(), 3);
            assert!(s.lr < 1e-3);
            assert!(s.scheduler.best().is_finite());
        }
        let path = save_train_state(dir.path(), &s, &layout()).unwrap();
        assert_eq!(path, current(dir.path()));
        let loaded = load_train_state(dir.path(), layout_of).unwrap().unwrap();
        assert_eq!(loaded.state, s);
        assert_eq!(loaded.source, path);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        // -0.0 == 0.0, so compare the sign bit of the one negative zero separately.
        let lin = loaded.state.model.get("lin.weight").unwrap();
        let TensorData::F32(v) = &lin.data else {
            panic!("lin.weight is {}", lin.data.dtype_name())
        };
        assert_eq!(v[2].to_bits(), (-0.0f32).to_bits());
    }
}

#[test]
fn file_holds_named_tensors_and_json_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(0, 1);
    save_train_state(dir.path(), &s, &layout()).unwrap();
    let (sd, metadata) = load_safetensors(&current(dir.path())).unwrap();
    let t = sd.get("model.bn.num_batches_tracked").unwrap();
    assert_eq!(
        (t.shape.clone(), t.data.clone()),
        (vec![], TensorData::I64(vec![-7]))
    );
    assert_eq!(
        sd.get("model.bn.running_var").unwrap().data.dtype_name(),
        "float64"
    );
    let m = sd.get("adam.exp_avg_sq.conv.weight").unwrap();
    assert_eq!(m.shape, vec![2, 1, 3]);
    let e = layout().get("conv.weight").unwrap().range();
    assert_eq!(m.data, TensorData::F32(s.adam.exp_avg_sq[e].to_vec()));
    assert_eq!(sd.len(), s.model.len() + 2 * layout().entries().len());
    let json: serde_json::Value = serde_json::from_str(&metadata[STATE_KEY]).unwrap();
    assert_eq!(json["best_valid_loss"], "inf");
    assert_eq!(json["scheduler"]["best"], "inf");
    assert_eq!(json["epoch_loss_sum"], "0.30000000000000004");
    assert_eq!(json["global_step"], 1);
    assert_eq!(metadata[CHECKSUM_KEY].len(), 64);
}

#[test]
fn exact_json_keeps_every_float() {
    let values = vec![
        0.1,
        1e-8,
        5e-324,
        f64::MAX,
        -f64::INFINITY,
        f64::INFINITY,
        1.0 / 3.0,
        -0.0,
    ];
    let text = exact_json::to_string(&values).unwrap();
    assert!(text.contains("\"-inf\""), "{text}");
    let back: Vec<f64> = exact_json::from_str(&text).unwrap();
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&values));
    let nan: f64 = exact_json::from_str(&exact_json::to_string(&f64::NAN).unwrap()).unwrap();
    assert!(nan.is_nan());
    let bad = exact_json::from_str::<f64>("\"one\"")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("one"), "{bad}");
}

#[test]
fn saving_twice_keeps_the_first_as_previous() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = save_two(dir.path());
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [PREV_STATE_FILE, STATE_FILE],
        "no temporary file left"
    );
    let loaded = load_train_state(dir.path(), layout_of).unwrap().unwrap();
    assert_eq!(loaded.state, second);
    // A crash between the two renames leaves only the previous file.
    fs::remove_file(current(dir.path())).unwrap();
    let loaded = load_train_state(dir.path(), layout_of).unwrap().unwrap();
    assert_eq!(loaded.state, first);
    assert_eq!(loaded.source, previous(dir.path()));
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains(STATE_FILE) && loaded.warnings[0].contains("missing"));
}

#[test]
fn flipped_data_byte_falls_back_to_previous() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = save_two(dir.path());
    flip_data_byte(&current(dir.path()));
    let loaded = load_train_state(dir.path(), layout_of).unwrap().unwrap();
    assert_eq!(loaded.state, first);
    assert_eq!(loaded.source, previous(dir.path()));
    assert_eq!(loaded.warnings.len(), 1);
    let w = &loaded.warnings[0];
    let cur = current(dir.path()).display().to_string();
    assert!(w.starts_with(&cur) && w.contains("checksum"), "{w}");
}

#[test]
fn edited_metadata_falls_back_to_previous() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = save_two(dir.path());
    let path = current(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"run-a").unwrap();
    bytes[at + 4] = b'b';
    fs::write(&path, bytes).unwrap();
    let loaded = load_train_state(dir.path(), layout_of).unwrap().unwrap();
    assert_eq!(loaded.state, first);
    assert!(
        loaded.warnings[0].contains("checksum"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn truncated_current_falls_back_to_previous() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = save_two(dir.path());
    truncate_half(&current(dir.path()));
    let loaded = load_train_state(dir.path(), layout_of).unwrap().unwrap();
    assert_eq!(loaded.state, first);
    assert_eq!(loaded.source, previous(dir.path()));
    let w = &loaded.warnings[0];
    assert!(
        w.starts_with(&current(dir.path()).display().to_string()),
        "{w}"
    );
}

#[test]
fn missing_tensor_falls_back_to_previous() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = save_two(dir.path());
    let tensors = file_tensors(&second, &layout()).unwrap();
    let key = "adam.exp_avg.bn.bias";
    write_crafted(dir.path(), &replaced(&tensors, key, None), &second);
    let loaded = load_train_state(dir.path(), layout_of).unwrap().unwrap();
    assert_eq!(loaded.state, first);
    assert!(loaded.warnings[0].contains(key), "{:?}", loaded.warnings);
}

#[test]
fn both_files_corrupt_is_an_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    save_two(dir.path());
    truncate_half(&current(dir.path()));
    flip_data_byte(&previous(dir.path()));
    let err = load_train_state(dir.path(), layout_of)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&current(dir.path()).display().to_string()),
        "{err}"
    );
    assert!(
        err.contains(&previous(dir.path()).display().to_string()),
        "{err}"
    );
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn no_files_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_train_state(dir.path(), layout_of).unwrap().is_none());
    let absent = dir.path().join("not-yet");
    assert!(load_train_state(&absent, layout_of).unwrap().is_none());
}

#[test]
fn layout_shape_disagreement_is_an_error_naming_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    save_two(dir.path());
    let err = load_train_state(dir.path(), |_: &ModelConfig| Ok(layout_with(vec![4, 1])))
        .unwrap_err()
        .to_string();
    for name in [
        "`model.lin.weight`",
        "`adam.exp_avg.lin.weight`",
        "`adam.exp_avg_sq.lin.weight`",
    ] {
        assert!(err.contains(name), "{name} in {err}");
    }
    assert!(err.contains("[1, 4]") && err.contains("[4, 1]"), "{err}");
    assert!(err.contains(STATE_FILE), "{err}");
}

#[test]
fn wrong_adam_shape_is_an_error_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (_, second) = save_two(dir.path());
    let tensors = file_tensors(&second, &layout()).unwrap();
    let key = "adam.exp_avg_sq.lin.weight";
    let flat = tensors.get(key).unwrap().data.clone();
    let wrong = tensor(key, vec![4], flat);
    write_crafted(dir.path(), &replaced(&tensors, key, Some(wrong)), &second);
    let err = load_train_state(dir.path(), layout_of)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("`{key}` has shape [4]")), "{err}");
    assert!(!err.contains("model.lin.weight"), "{err}");
}

#[test]
fn layout_errors_propagate() {
    let dir = tempfile::tempdir().unwrap();
    save_two(dir.path());
    let err = load_train_state(dir.path(), |_: &ModelConfig| {
        Err(Error::Config("no layout for this config".into()))
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("no layout for this config"), "{err}");
}

#[test]
fn save_refuses_a_state_that_does_not_fit_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(1, 1);
    s.adam.exp_avg.pop();
    let err = save_train_state(dir.path(), &s, &layout())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("adam.exp_avg ") && err.contains("values"),
        "{err}"
    );

    let s = state(1, 1);
    let err = save_train_state(dir.path(), &s, &layout_with(vec![4, 1]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`lin.weight` has shape [1, 4]"), "{err}");

    let mut s = state(1, 1);
    s.model = replaced(&s.model, "bn.bias", None);
    let err = save_train_state(dir.path(), &s, &layout())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`bn.bias`"), "{err}");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn a_save_removes_the_temporary_file_a_killed_writer_left() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join(format!(".{STATE_FILE}.tmp999999"));
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let other = dir.path().join("history.csv");
    std::fs::write(&other, b"epoch\n").unwrap();
    save_train_state(dir.path(), &state(1, 3), &layout()).unwrap();
    assert!(!stale.exists(), "the stale temporary file is gone");
    assert!(other.exists(), "other files stay");
}
