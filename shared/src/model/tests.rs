//! Tests of the network: the seed's state-dict keys and sizes, gradients against central
//! finite differences in f64 (batch norm, linear, the whole network), training-mode
//! bookkeeping, and the flat parameter vector.
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::batchnorm::BatchNorm;
use super::dropout::RngMasks;
use super::layers::Linear;
use super::state::TensorData;
use super::{ModelConfig, ResNet1d};

fn rand_vec(rng: &mut impl Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn tiny() -> ModelConfig {
    // Stem stride 2; block 0 identity; block 1 downsample 4 with a channel change
    // (max-pool then 1x1 conv); block 2 a channel change at stride 1 (1x1 conv only).
    ModelConfig {
        seq_length: 64,
        net_filter_size: vec![3, 5, 4],
        net_seq_lengh: vec![32, 8, 8],
        kernel_size: 5,
        dropout_rate: 0.5,
    }
}

#[test]
fn default_state_dict_matches_the_seed() {
    // Key count, trainable count and parameter total are those of seed-spec section 2.
    let model = ResNet1d::new(&ModelConfig::default(), 0, &Device::Cpu).unwrap();
    let sd = model.state_dict().unwrap();
    assert_eq!(sd.len(), 72);
    assert_eq!(model.named_params().len(), 39);
    assert_eq!(model.layout().total_len(), 6_924_705);
    let shape = |n: &str| sd.get(n).unwrap().shape.clone();
    assert_eq!(shape("conv1.weight"), vec![64, 12, 17]);
    assert_eq!(shape("resblock1d_2.conv1.weight"), vec![196, 128, 17]);
    assert_eq!(
        shape("resblock1d_4.skip_connection.1.weight"),
        vec![320, 256, 1]
    );
    assert_eq!(shape("lin.weight"), vec![1, 5120]);
    assert!(sd.get("resblock1d_0.skip_connection.1.weight").is_none());
    assert!(matches!(
        sd.get("bn1.num_batches_tracked").unwrap().data,
        TensorData::I64(_)
    ));
    assert_eq!(sd.tensors()[0].name, "conv1.weight");
    assert_eq!(sd.tensors()[71].name, "lin.bias");
}

#[test]
fn skip_index_zero_when_only_channels_change() {
    let model = ResNet1d::new(&tiny(), 0, &Device::Cpu).unwrap();
    let sd = model.state_dict().unwrap();
    assert!(sd.get("resblock1d_1.skip_connection.1.weight").is_some());
    assert!(sd.get("resblock1d_2.skip_connection.0.weight").is_some());
    assert!(sd.get("resblock1d_0.skip_connection.0.weight").is_none());
}

#[test]
fn default_init_bounds_follow_fan_in() {
    let model = ResNet1d::new(&tiny(), 3, &Device::Cpu).unwrap();
    let sd = model.state_dict().unwrap();
    let w = sd
        .get("resblock1d_1.conv2.weight")
        .unwrap()
        .to_f32()
        .unwrap();
    let bound = 1.0 / ((5 * 5) as f32).sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.5 * bound));
    assert_eq!(
        sd.get("bn1.weight").unwrap().to_f32().unwrap(),
        vec![1.0; 3]
    );
    assert_eq!(
        sd.get("bn1.running_var").unwrap().to_f32().unwrap(),
        vec![1.0; 3]
    );
}

/// Central differences of `f` at `x` along coordinate `i`.
fn central(f: &mut dyn FnMut(&[f64]) -> f64, x: &[f64], i: usize, h: f64) -> f64 {
    let mut xp = x.to_vec();
    xp[i] += h;
    let mut xm = x.to_vec();
    xm[i] -= h;
    (f(&xp) - f(&xm)) / (2.0 * h)
}

fn assert_close(what: &str, analytic: f64, numeric: f64) {
    let tol = 1e-6 * (1.0 + numeric.abs());
    assert!(
        (analytic - numeric).abs() <= tol,
        "{what}: backprop {analytic} vs finite differences {numeric}"
    );
}

#[test]
#[allow(clippy::needless_range_loop)]
fn batch_norm_training_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let rng = &mut Xoshiro256PlusPlus::seed_from_u64(1);
    let (b, c, l) = (3, 4, 5);
    let xs = rand_vec(rng, b * c * l);
    let r = Tensor::from_vec(rand_vec(rng, b * c * l), (b, c, l), &dev).unwrap();
    let ws = rand_vec(rng, c);
    let bs = rand_vec(rng, c);
    let loss = |x: &[f64], w: &[f64], bias: &[f64]| -> (f64, Option<[Vec<f64>; 3]>) {
        let mut bn = BatchNorm::new("bn".into(), c, DType::F64, &dev).unwrap();
        bn.weight = Var::from_slice(w, c, &dev).unwrap();
        bn.bias = Var::from_slice(bias, c, &dev).unwrap();
        let xv = Var::from_slice(x, (b, c, l), &dev).unwrap();
        let (y, _) = bn.forward_train(xv.as_tensor()).unwrap();
        let loss = (y * &r).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let get = |v: &Var| {
            g.get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        (
            loss.to_scalar().unwrap(),
            Some([get(&xv), get(&bn.weight), get(&bn.bias)]),
        )
    };
    let [gx, gw, gb] = loss(&xs, &ws, &bs).1.unwrap();
    for i in 0..xs.len() {
        let num = central(&mut |x| loss(x, &ws, &bs).0, &xs, i, 1e-5);
        assert_close(&format!("d/dx[{i}]"), gx[i], num);
    }
    for i in 0..c {
        assert_close(
            "d/dweight",
            gw[i],
            central(&mut |w| loss(&xs, w, &bs).0, &ws, i, 1e-5),
        );
        assert_close(
            "d/dbias",
            gb[i],
            central(&mut |bb| loss(&xs, &ws, bb).0, &bs, i, 1e-5),
        );
    }
}

#[test]
fn batch_norm_statistics_and_running_update() {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(
        vec![1.0f64, 2.0, 3.0, 5.0, 4.0, 4.0, 0.0, 8.0],
        (2, 2, 2),
        &dev,
    )
    .unwrap();
    let mut bn = BatchNorm::new("bn".into(), 2, DType::F64, &dev).unwrap();
    let (_, stats) = bn.forward_train(&x).unwrap();
    // Channel 0 sees 1, 2, 4, 4; channel 1 sees 3, 5, 0, 8.
    assert_eq!(stats.count, 4);
    assert!((stats.mean[0] - 2.75).abs() < 1e-12 && (stats.mean[1] - 4.0).abs() < 1e-12);
    let var0 = ((1.75f64).powi(2) + 0.75f64.powi(2) + 2.0 * 1.25f64.powi(2)) / 3.0;
    assert!((stats.var_unbiased[0] - var0).abs() < 1e-12);
    bn.update_running(&stats);
    assert!((bn.running_mean[0] - 0.275).abs() < 1e-12);
    assert!((bn.running_var[0] - (0.9 + 0.1 * var0)).abs() < 1e-12);
    assert_eq!(bn.num_batches_tracked, 1);
}

#[test]
#[allow(clippy::needless_range_loop)]
fn linear_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let rng = &mut Xoshiro256PlusPlus::seed_from_u64(2);
    let (b, n_in, n_out) = (3, 7, 2);
    let xs = rand_vec(rng, b * n_in);
    let ws = rand_vec(rng, n_out * n_in);
    let r = Tensor::from_vec(rand_vec(rng, b * n_out), (b, n_out), &dev).unwrap();
    let f = |x: &[f64], w: &[f64]| -> (f64, Vec<f64>, Vec<f64>) {
        let mut lin = Linear::new(
            n_in,
            n_out,
            &mut Xoshiro256PlusPlus::seed_from_u64(0),
            DType::F64,
            &dev,
        )
        .unwrap();
        lin.weight = Var::from_slice(w, (n_out, n_in), &dev).unwrap();
        let xv = Var::from_slice(x, (b, n_in), &dev).unwrap();
        let loss = (lin.forward(xv.as_tensor()).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        let get = |v: &Var| {
            g.get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        (loss.to_scalar().unwrap(), get(&xv), get(&lin.weight))
    };
    let (_, gx, gw) = f(&xs, &ws);
    for i in 0..xs.len() {
        assert_close("d/dx", gx[i], central(&mut |x| f(x, &ws).0, &xs, i, 1e-5));
    }
    for i in 0..ws.len() {
        assert_close("d/dw", gw[i], central(&mut |w| f(&xs, w).0, &ws, i, 1e-5));
    }
}

#[test]
fn whole_network_gradients_match_finite_differences() {
    // Training mode (batch statistics, dropout with the same masks each time), batch 3, f64.
    let dev = Device::Cpu;
    let cfg = tiny();
    let model = ResNet1d::new_with_dtype(&cfg, 5, DType::F64, &dev).unwrap();
    let rng = &mut Xoshiro256PlusPlus::seed_from_u64(9);
    let batch = 3;
    let x: Vec<f32> = (0..batch * 12 * 64)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let ages = [40.0f32, 55.0, 71.0];
    let weights = [1.0f32, 0.5, 2.0];
    let base = model.params_flat().unwrap();
    // params_flat rounds to f32, so evaluate around the rounded point.
    model.set_params_flat(&base).unwrap();
    let out = model
        .train_step(&x, &ages, &weights, &mut RngMasks::new(11))
        .unwrap();
    let loss_at = |p: &[f64]| -> f64 {
        let vars = model.layout().entries().iter().zip(model_vars(&model));
        for (e, v) in vars {
            let t = Tensor::from_slice(&p[e.range()], v.dims(), &dev).unwrap();
            v.set(&t).unwrap();
        }
        model
            .train_step(&x, &ages, &weights, &mut RngMasks::new(11))
            .unwrap()
            .loss_sum
    };
    let p0: Vec<f64> = base.iter().map(|&v| f64::from(v)).collect();
    let mut checked = 0;
    for e in model.layout().entries() {
        // Three coordinates of every parameter tensor.
        for k in [0, e.len / 2, e.len - 1] {
            let i = e.offset + k;
            let num = central(&mut |p| loss_at(p), &p0, i, 1e-6);
            let ana = f64::from(out.grads[i]);
            let tol = 1e-4 * (1.0 + num.abs());
            assert!(
                (ana - num).abs() <= tol,
                "{}[{k}]: backprop {ana} vs finite differences {num}",
                e.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 3 * 20);
}

fn model_vars(model: &ResNet1d) -> Vec<Var> {
    let named = model.named_params();
    model
        .layout()
        .entries()
        .iter()
        .map(|e| named.iter().find(|(n, _)| *n == e.name).unwrap().1.clone())
        .collect()
}

#[test]
fn flat_parameters_round_trip_in_name_order() {
    let model = ResNet1d::new(&tiny(), 4, &Device::Cpu).unwrap();
    let flat = model.params_flat().unwrap();
    let names: Vec<&str> = model
        .layout()
        .entries()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    let shifted: Vec<f32> = flat.iter().map(|v| v + 1.0).collect();
    model.set_params_flat(&shifted).unwrap();
    assert_eq!(model.params_flat().unwrap(), shifted);
    let e = model.layout().get("lin.bias").unwrap();
    let sd = model.state_dict().unwrap();
    assert_eq!(
        sd.get("lin.bias").unwrap().to_f32().unwrap(),
        shifted[e.range()].to_vec()
    );
    assert!(model.set_params_flat(&flat[1..]).is_err());
}

#[test]
fn eval_mode_is_deterministic_and_train_mode_updates_nothing_by_itself() {
    let mut model = ResNet1d::new(&tiny(), 6, &Device::Cpu).unwrap();
    let x: Vec<f32> = (0..2 * 12 * 64)
        .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
        .collect();
    let a = model.predict(&x, 2).unwrap();
    let step = model
        .train_step(&x, &[50.0, 60.0], &[1.0, 1.0], &mut RngMasks::new(1))
        .unwrap();
    assert_eq!(model.predict(&x, 2).unwrap(), a);
    assert_eq!(step.bn_stats.len(), 1 + 2 * 3);
    model.update_batch_norms(&step.bn_stats).unwrap();
    assert_ne!(model.predict(&x, 2).unwrap(), a);
    assert_eq!(model.batch_norms()[0].num_batches_tracked, 1);
    assert!(model.predict(&x[1..], 2).is_err());
}

#[test]
fn strict_state_dict_loading_names_the_tensor() {
    let model = ResNet1d::new(&tiny(), 7, &Device::Cpu).unwrap();
    let sd = model.state_dict().unwrap();
    let back = ResNet1d::from_state_dict(&tiny(), &sd, &Device::Cpu).unwrap();
    assert_eq!(back.params_flat().unwrap(), model.params_flat().unwrap());
    let mut other = tiny();
    other.net_filter_size[1] = 6;
    let err = ResNet1d::from_state_dict(&other, &sd, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("resblock1d_1.conv1.weight"), "{err}");
    let mut fewer = super::state::StateDict::new();
    for t in sd.tensors().iter().filter(|t| t.name != "bn1.bias") {
        fewer.push(t.clone()).unwrap();
    }
    let err = ResNet1d::from_state_dict(&tiny(), &fewer, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing tensor \"bn1.bias\""), "{err}");
}
