//! Parity with PyTorch: our network, loaded from the committed PyTorch checkpoint of a small
//! configuration (tests/fixtures/model, written by scripts/make-model-fixtures.sh from our
//! PyTorch port of the seed's model), reproduces PyTorch's outputs in evaluation and training
//! mode (with PyTorch's dropout masks replayed), the loss, every parameter's gradient, the
//! batch-norm running statistics, and the parameters after three Adam steps.
//! Outputs to 1e-5 relative, gradients and parameters to 1e-4.
use std::path::PathBuf;

use ecg_shared::model::dropout::FixedMasks;
use ecg_shared::model::safetensors_io::load_safetensors;
use ecg_shared::model::state::{StateDict, TensorData};
use ecg_shared::model::{Device, ResNet1d, load_checkpoint};
use ecg_shared::train::{Adam, AdamConfig};

fn fixtures() -> PathBuf {
    ecg_tests::workspace_root().join("tests/fixtures/model")
}

fn parity() -> StateDict {
    load_safetensors(&fixtures().join("parity.safetensors"))
        .unwrap()
        .0
}

fn f32s(sd: &StateDict, name: &str) -> Vec<f32> {
    sd.get(name)
        .unwrap_or_else(|| panic!("fixture has no {name}"))
        .to_f32()
        .unwrap()
}

/// Dropout multipliers from PyTorch's 0/1 masks (kept values are scaled by 1 / (1 - 0.8)).
fn masks(sd: &StateDict, prefix: &str) -> FixedMasks {
    let mut m = FixedMasks::new();
    for t in sd.tensors() {
        if let Some(layer) = t.name.strip_prefix(&format!("mask.{prefix}.")) {
            let TensorData::I64(v) = &t.data else {
                panic!("{} is not an integer mask", t.name)
            };
            m.insert(
                layer,
                v.iter().map(|&b| if b != 0 { 5.0 } else { 0.0 }).collect(),
            );
        }
    }
    m
}

fn assert_rel(what: &str, ours: &[f32], theirs: &[f32], tol: f32) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= tol * scale.max(b.abs()),
            "{what}[{i}]: ours {a} vs PyTorch {b} (tolerance {tol} relative to {scale})"
        );
    }
}

fn model() -> ResNet1d {
    // The authors' layout: a folder with model.pth + config.json, here the zip container.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("model_zip.pth"),
        dir.path().join("model.pth"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    load_checkpoint(dir.path())
        .unwrap()
        .build(&Device::Cpu)
        .unwrap()
}

#[test]
fn evaluation_forward_matches_pytorch() {
    let p = parity();
    let m = model();
    let out = m.predict(&f32s(&p, "input"), 4).unwrap();
    assert_rel("out_eval", &out, &f32s(&p, "out_eval"), 1e-5);
    // The legacy container gives the same network.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("model_legacy.pth"),
        dir.path().join("model.pth"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let legacy = load_checkpoint(dir.path())
        .unwrap()
        .build(&Device::Cpu)
        .unwrap();
    assert_eq!(legacy.predict(&f32s(&p, "input"), 4).unwrap(), out);
}

#[test]
fn training_forward_loss_gradients_and_running_stats_match_pytorch() {
    let p = parity();
    let mut m = model();
    let step = m
        .train_step(
            &f32s(&p, "input"),
            &f32s(&p, "age"),
            &f32s(&p, "weight"),
            &mut masks(&p, "train"),
        )
        .unwrap();
    assert_rel("out_train", &step.predictions, &f32s(&p, "out_train"), 1e-5);
    assert_rel("loss", &[step.loss_sum as f32], &f32s(&p, "loss"), 1e-5);
    for e in m.layout().entries() {
        let theirs = f32s(&p, &format!("grad.{}", e.name));
        assert_rel(
            &format!("grad.{}", e.name),
            &step.grads[e.range()],
            &theirs,
            1e-4,
        );
    }
    m.update_batch_norms(&step.bn_stats).unwrap();
    let sd = m.state_dict().unwrap();
    let mut checked = 0;
    for t in p.tensors() {
        let Some(name) = t.name.strip_prefix("after_train.") else {
            continue;
        };
        let ours = sd.get(name).unwrap();
        match (&ours.data, &t.data) {
            (TensorData::I64(a), TensorData::I64(b)) => assert_eq!(a, b, "{name}"),
            _ => assert_rel(name, &ours.to_f32().unwrap(), &t.to_f32().unwrap(), 1e-4),
        }
        checked += 1;
    }
    assert_eq!(checked, 9 * 3);
}

#[test]
fn three_adam_steps_match_pytorch() {
    let p = parity();
    let mut m = model();
    let (x, age, w) = (f32s(&p, "input"), f32s(&p, "age"), f32s(&p, "weight"));
    let mut params = m.params_flat().unwrap();
    let mut adam = Adam::new(AdamConfig::default(), params.len()).unwrap();
    for s in 0..3 {
        let step = m
            .train_step(&x, &age, &w, &mut masks(&p, &format!("step{s}")))
            .unwrap();
        assert_rel(
            &format!("loss.step{s}"),
            &[step.loss_sum as f32],
            &f32s(&p, &format!("loss.step{s}")),
            1e-4,
        );
        adam.step(&mut params, &step.grads).unwrap();
        m.set_params_flat(&params).unwrap();
        m.update_batch_norms(&step.bn_stats).unwrap();
    }
    let sd = m.state_dict().unwrap();
    for t in sd.tensors() {
        let theirs = p.get(&format!("adam3.{}", t.name)).unwrap();
        match (&t.data, &theirs.data) {
            (TensorData::I64(a), TensorData::I64(b)) => assert_eq!(a, b, "{}", t.name),
            _ => assert_rel(
                &format!("adam3.{}", t.name),
                &t.to_f32().unwrap(),
                &theirs.to_f32().unwrap(),
                1e-4,
            ),
        }
    }
}
