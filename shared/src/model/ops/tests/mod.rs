//! Tests of the model's own ops: forward against direct-loop references written here, gradients
//! against central finite differences in f64, max-pool tie and NaN semantics as PyTorch, and the
//! `gemm` wrapper's refusals. Shapes are tiny; every case is listed explicitly.
use candle_core::{Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

mod composed;
mod conv1d;
mod gemm;
mod maxpool;

/// `n` values uniform in [-1, 1) from `seed`.
fn uniform(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// An f64 CPU tensor of `shape` filled from `data`.
fn tensor(data: &[f64], shape: &[usize]) -> Result<Tensor> {
    Tensor::from_slice(data, shape, &Device::Cpu)
}

/// The largest |a - b| / max(1, |b|) over two equally long sequences (panics on a length
/// mismatch, which is itself a failure).
fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// Central finite differences of `f` at `at`, one coordinate at a time.
fn finite_diff(at: &[f64], eps: f64, f: impl Fn(&[f64]) -> Result<f64>) -> Result<Vec<f64>> {
    let mut p = at.to_vec();
    let mut out = Vec::with_capacity(at.len());
    for i in 0..at.len() {
        p[i] = at[i] + eps;
        let up = f(&p)?;
        p[i] = at[i] - eps;
        let down = f(&p)?;
        p[i] = at[i];
        out.push((up - down) / (2.0 * eps));
    }
    Ok(out)
}

/// The gradient of `sum(op(v) * r)` with respect to `v` through Candle's backward, and the
/// same by finite differences; `op` maps a tensor of `shape` to the output that `r` weights.
fn grad_pair(
    v: &[f64],
    shape: &[usize],
    op: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let var = Var::from_tensor(&tensor(v, shape)?)?;
    let out = op(var.as_tensor())?;
    let r = Tensor::from_vec(uniform(out.elem_count(), 99), out.dims(), &Device::Cpu)?;
    let grads = (&out * &r)?.sum_all()?.backward()?;
    let analytic = match grads.get(var.as_tensor()) {
        Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
        None => candle_core::bail!("no gradient reached the variable"),
    };
    let numeric = finite_diff(v, 1e-6, |p| {
        let o = op(&tensor(p, shape)?)?;
        (&o * &r)?.sum_all()?.to_scalar::<f64>()
    })?;
    Ok((analytic, numeric))
}
