//! `worker gpu-check --gpu N`: every op of the network on the GPU against the CPU reference, on
//! random inputs of the full model's shapes: the convolutions (output, input and weight
//! gradients, in each precision), max-pool (exact), hashed dropout (exact), batch norm (output,
//! gradients, statistics), then a whole training step (loss, every gradient, batch-norm
//! statistics) and evaluation-mode predictions. Prints one line per check and fails when any
//! error exceeds its tolerance.
use candle_core::{DType, Device, Tensor, Var};
use ecg_shared::model::batchnorm::BatchNorm;
use ecg_shared::model::config::padding;
use ecg_shared::model::dropout::RngMasks;
use ecg_shared::model::ops::{conv1d, conv1d_tf32, max_pool1d};
use ecg_shared::model::{ModelConfig, Precision, ResNet1d};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::run::select_device;
use crate::{Error, Result};

/// Arguments of `worker gpu-check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The CUDA device to check.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub gpu: usize,
    /// Exams per batch in the checks.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub batch: usize,
}

/// Normalised errors of `got` against `want`: max |got - want| / max |want| and the relative L2
/// norm of the difference.
fn errors(got: &[f64], want: &[f64]) -> (f64, f64) {
    if got.len() != want.len() {
        return (f64::INFINITY, f64::INFINITY);
    }
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    let (mut max, mut d2, mut w2) = (0.0f64, 0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        let d = g - w;
        max = max.max(d.abs());
        d2 += d * d;
        w2 += w * w;
    }
    let rel = if w2 > 0.0 {
        (d2 / w2).sqrt()
    } else {
        d2.sqrt()
    };
    let rel = if got.iter().any(|v| !v.is_finite()) {
        f64::INFINITY
    } else {
        rel
    };
    (max / scale, rel)
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn random(shape: &[usize], seed: u64, dev: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Ok(Tensor::from_vec(v, shape, dev)?)
}

/// The checks' table and verdict.
struct Report {
    failed: usize,
    total: usize,
}

impl Report {
    fn line(&mut self, what: &str, err: f64, tol: f64) {
        let ok = err <= tol;
        self.total += 1;
        if !ok {
            self.failed += 1;
        }
        println!(
            "{what:<52} {err:>11.3e} {tol:>9.1e}  {}",
            if ok { "ok" } else { "FAIL" }
        );
    }
}

/// Output and gradients of `sum(f(a, b) * r)` with respect to `a` and `b`.
fn run2(
    f: &dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    a: &Tensor,
    b: &Tensor,
    r_seed: u64,
) -> Result<[Vec<f64>; 3]> {
    let (va, vb) = (Var::from_tensor(a)?, Var::from_tensor(b)?);
    let out = f(va.as_tensor(), vb.as_tensor())?;
    let r = random(out.dims(), r_seed, a.device())?;
    let grads = (&out * &r)?.sum_all()?.backward()?;
    let g = |v: &Var| -> Result<Vec<f64>> {
        match grads.get(v.as_tensor()) {
            Some(t) => values(t),
            None => Err(Error::Protocol("a gradient is missing".into())),
        }
    };
    Ok([values(&out)?, g(&va)?, g(&vb)?])
}

/// Tolerances (relative L2) of the convolution per precision.
fn conv_tolerance(p: Precision) -> f64 {
    match p {
        Precision::F32 => 1e-5,
        Precision::Tf32 => 5e-3,
        Precision::Bf16 => 2e-2,
    }
}

fn conv_in(
    p: Precision,
    x: &Tensor,
    w: &Tensor,
    s: usize,
    pad: usize,
) -> candle_core::Result<Tensor> {
    match p {
        Precision::F32 => conv1d(x, w, s, pad),
        Precision::Tf32 => conv1d_tf32(x, w, s, pad, true),
        Precision::Bf16 => conv1d(&x.to_dtype(DType::BF16)?, &w.to_dtype(DType::BF16)?, s, pad)?
            .to_dtype(DType::F32),
    }
}

fn check_convs(rep: &mut Report, gpu: &Device, b: usize) -> Result<()> {
    let cfg = ModelConfig::default();
    let k = cfg.kernel_size;
    // (c_in, c_out, stride, padding, length) of every convolution of the network.
    let mut shapes = vec![(
        12,
        cfg.net_filter_size[0],
        cfg.downsample(0),
        padding(cfg.downsample(0), k),
        k,
        cfg.seq_length,
    )];
    let mut c_in = cfg.net_filter_size[0];
    let mut l_in = cfg.net_seq_lengh[0];
    for (i, &c_out) in cfg.net_filter_size.iter().enumerate() {
        let ds = cfg.downsample(i + 1);
        shapes.push((c_in, c_out, 1, padding(1, k), k, l_in));
        shapes.push((c_out, c_out, ds, padding(ds, k), k, l_in));
        if c_in != c_out {
            shapes.push((c_in, c_out, 1, 0, 1, l_in / ds));
        }
        c_in = c_out;
        l_in = cfg.net_seq_lengh[i];
    }
    shapes.dedup();
    for (i, &(ci, co, s, pad, kk, l)) in shapes.iter().enumerate() {
        let x = random(&[b, ci, l], 10 + i as u64, &Device::Cpu)?;
        let w = random(&[co, ci, kk], 50 + i as u64, &Device::Cpu)?;
        let want = run2(&|x, w| conv1d(x, w, s, pad), &x, &w, 7)?;
        for p in [Precision::F32, Precision::Tf32, Precision::Bf16] {
            let (xg, wg) = (x.to_device(gpu)?, w.to_device(gpu)?);
            let got = run2(&|x, w| conv_in(p, x, w, s, pad), &xg, &wg, 7)?;
            for (j, part) in ["output", "input grad", "weight grad"].iter().enumerate() {
                let (_, rel) = errors(&got[j], &want[j]);
                rep.line(
                    &format!("conv {ci}->{co} k{kk} s{s} p{pad} L{l} {p} {part}"),
                    rel,
                    conv_tolerance(p),
                );
            }
        }
    }
    Ok(())
}

fn check_pool_dropout_bn(rep: &mut Report, gpu: &Device, b: usize) -> Result<()> {
    // Max-pool with ties (ReLU zeros) and a NaN: the winner rule must be PyTorch's, exactly.
    let x = random(&[b, 64, 1024], 3, &Device::Cpu)?.relu()?;
    let mut v = values(&x)?;
    v[5] = f64::NAN;
    let x = Tensor::from_vec(
        v.iter().map(|&a| a as f32).collect::<Vec<_>>(),
        x.dims(),
        &Device::Cpu,
    )?;
    let want = run2(&|x, _| max_pool1d(x, 4), &x, &x, 9)?;
    let got = run2(
        &|x, _| max_pool1d(x, 4),
        &x.to_device(gpu)?,
        &x.to_device(gpu)?,
        9,
    )?;
    let same = |a: &[f64], b: &[f64]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(p, q)| p == q || (p.is_nan() && q.is_nan()))
    };
    rep.line(
        "max-pool k4 output (exact, ties and NaN)",
        if same(&got[0], &want[0]) { 0.0 } else { 1.0 },
        0.0,
    );
    rep.line(
        "max-pool k4 input grad (exact)",
        if same(&got[1], &want[1]) { 0.0 } else { 1.0 },
        0.0,
    );

    // Dropout: the same keep decisions on both devices.
    let masks = RngMasks::new(42);
    for (name, p) in [
        ("resblock1d_0.dropout1", 0.8),
        ("resblock1d_3.dropout2", 0.1),
    ] {
        let shape = [b, 128, 1024];
        let m_cpu = values(&masks.mask(name, &shape, p, DType::F32, &Device::Cpu)?)?;
        let m_gpu = values(&masks.mask(name, &shape, p, DType::F32, gpu)?)?;
        rep.line(
            &format!("dropout p{p} mask (exact)"),
            if m_cpu == m_gpu { 0.0 } else { 1.0 },
            0.0,
        );
    }

    // Batch norm: the CUDA path (Candle ops) against the CPU's fused op.
    let x = random(&[b, 128, 1024], 4, &Device::Cpu)?.affine(3.0, 1.5)?;
    let run_bn = |dev: &Device| -> Result<([Vec<f64>; 3], Vec<f64>)> {
        let bn = BatchNorm::new("bn".into(), 128, DType::F32, dev)?;
        bn.weight.set(&random(&[128], 5, dev)?)?;
        let xd = x.to_device(dev)?;
        let w = bn.weight.as_tensor().clone();
        let f = |x: &Tensor, _w: &Tensor| bn.forward_train(x).map(|(y, _)| y);
        let out = run2(&f, &xd, &w, 11)?;
        let (_, s) = bn.forward_train(&xd)?;
        Ok((out, [s.mean, s.var_unbiased].concat()))
    };
    let (want, ws) = run_bn(&Device::Cpu)?;
    let (got, gs) = run_bn(gpu)?;
    rep.line("batch norm output", errors(&got[0], &want[0]).1, 1e-5);
    rep.line("batch norm input grad", errors(&got[1], &want[1]).1, 1e-4);
    rep.line("batch norm statistics", errors(&gs, &ws).1, 1e-5);
    Ok(())
}

fn check_model(rep: &mut Report, gpu: &Device, b: usize) -> Result<()> {
    let cfg = ModelConfig::default();
    let cpu_model = ResNet1d::new(&cfg, 1, &Device::Cpu)?;
    let params = cpu_model.params_flat()?;
    let n = b * 12 * cfg.seq_length;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let ages: Vec<f32> = (0..b).map(|i| 30.0 + 10.0 * i as f32).collect();
    let weights = vec![1.0f32; b];
    let want = cpu_model.train_step(&x, &ages, &weights, &mut RngMasks::new(3))?;
    let want_pred = cpu_model.predict(&x, b)?;
    for p in [Precision::F32, Precision::Tf32, Precision::Bf16] {
        let mut m = ResNet1d::new(&cfg, 2, gpu)?;
        m.set_params_flat(&params)?;
        m.set_precision(p)?;
        let got = m.train_step(&x, &ages, &weights, &mut RngMasks::new(3))?;
        let tol = match p {
            Precision::F32 => 1e-4,
            Precision::Tf32 => 2e-2,
            Precision::Bf16 => 1e-1,
        };
        let loss = (got.loss_sum - want.loss_sum).abs() / want.loss_sum.abs().max(1e-30);
        rep.line(&format!("train step {p}: loss"), loss, tol);
        let g = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
        rep.line(
            &format!("train step {p}: gradient (all parameters)"),
            errors(&g(&got.grads), &g(&want.grads)).1,
            tol,
        );
        let stats = |s: &[ecg_shared::model::batchnorm::BnBatchStats]| {
            s.iter()
                .flat_map(|b| [b.mean.clone(), b.var_unbiased.clone()].concat())
                .collect::<Vec<_>>()
        };
        rep.line(
            &format!("train step {p}: batch-norm statistics"),
            errors(&stats(&got.bn_stats), &stats(&want.bn_stats)).1,
            tol,
        );
        let pred = m.predict(&x, b)?;
        rep.line(
            &format!("eval {p}: predictions"),
            errors(&g(&pred), &g(&want_pred)).1,
            tol,
        );
    }
    Ok(())
}

/// Runs the checks; an error when any fails.
pub fn run(args: &Args) -> Result<()> {
    let gpu = select_device(Some(args.gpu))?;
    let b = args.batch.max(1);
    println!(
        "{:<52} {:>11} {:>9}  verdict",
        "check (GPU against CPU)", "error", "tolerance"
    );
    let mut rep = Report {
        failed: 0,
        total: 0,
    };
    check_pool_dropout_bn(&mut rep, &gpu, b)?;
    check_convs(&mut rep, &gpu, b)?;
    check_model(&mut rep, &gpu, b)?;
    println!("{} of {} checks passed", rep.total - rep.failed, rep.total);
    if rep.failed > 0 {
        return Err(Error::Protocol(format!("{} GPU checks failed", rep.failed)));
    }
    Ok(())
}
