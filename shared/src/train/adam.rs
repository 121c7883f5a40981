//! Adam on one flat `f32` parameter vector, with the semantics of `torch.optim.Adam` (no AMSGrad,
//! no weight decay, minimising, the single-tensor CPU path): per step `t += 1`,
//! `m = lerp(m, g, 1 - b1)`, `v = b2 v + (1 - b2) g^2`, `p -= (lr / (1 - b1^t)) m / (sqrt(v) /
//! sqrt(1 - b2^t) + eps)`. Scalars are computed in `f64` as Python does and rounded to `f32` where
//! PyTorch multiplies them into `f32` tensors; the vector arithmetic is `f32` in PyTorch's order.
//! The state (step count and both moments) is serialisable, and a restored optimiser continues
//! bit for bit.
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Adam's hyper-parameters; [`Default`] gives PyTorch's (and the seed's) values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate (changed between steps by the scheduler).
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam's per-parameter state: PyTorch's `step`, `exp_avg` and `exp_avg_sq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// Number of steps taken.
    pub step: u64,
    /// First moment, one value per parameter.
    pub exp_avg: Vec<f32>,
    /// Second moment, one value per parameter.
    pub exp_avg_sq: Vec<f32>,
}

/// The optimiser: hyper-parameters plus state, for a flat vector of a fixed length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    config: AdamConfig,
    state: AdamState,
}

fn check_config(c: &AdamConfig) -> Result<()> {
    let ok = c.lr.is_finite()
        && c.lr >= 0.0
        && (0.0..1.0).contains(&c.beta1)
        && (0.0..1.0).contains(&c.beta2)
        && c.eps.is_finite()
        && c.eps >= 0.0;
    if !ok {
        return Err(Error::Config(format!(
            "Adam: lr {} must be >= 0, betas ({}, {}) in [0, 1), eps {} >= 0",
            c.lr, c.beta1, c.beta2, c.eps
        )));
    }
    Ok(())
}

impl Adam {
    /// A fresh optimiser (step 0, zero moments) for `n` parameters.
    pub fn new(config: AdamConfig, n: usize) -> Result<Self> {
        check_config(&config)?;
        Ok(Self {
            config,
            state: AdamState {
                step: 0,
                exp_avg: vec![0.0; n],
                exp_avg_sq: vec![0.0; n],
            },
        })
    }

    /// An optimiser that continues from a saved `state`. Refuses moments of different lengths.
    pub fn from_state(config: AdamConfig, state: AdamState) -> Result<Self> {
        check_config(&config)?;
        if state.exp_avg.len() != state.exp_avg_sq.len() {
            return Err(Error::Training(format!(
                "Adam state: exp_avg has {} values, exp_avg_sq {}",
                state.exp_avg.len(),
                state.exp_avg_sq.len()
            )));
        }
        Ok(Self { config, state })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// The state, for saving.
    pub fn state(&self) -> &AdamState {
        &self.state
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate for the following steps. Refuses a negative or non-finite rate.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        check_config(&AdamConfig { lr, ..self.config })?;
        self.config.lr = lr;
        Ok(())
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.state.exp_avg.len()
    }

    /// Whether the optimiser has no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One Adam step: updates `params` in place from the gradient `grad`. Refuses vectors whose
    /// length differs from the optimiser's, leaving everything unchanged.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32]) -> Result<()> {
        let n = self.len();
        if params.len() != n || grad.len() != n {
            return Err(Error::Training(format!(
                "Adam step: {} parameters and {} gradients for an optimiser of {n}",
                params.len(),
                grad.len()
            )));
        }
        let c = self.config;
        self.state.step += 1;
        let t = self.state.step as f64;
        let bias_correction1 = 1.0 - c.beta1.powf(t);
        let bias_correction2 = 1.0 - c.beta2.powf(t);
        let step_size = c.lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        // The Python scalars as PyTorch hands them to its f32 kernels.
        let w1 = (1.0 - c.beta1) as f32;
        let b2 = c.beta2 as f32;
        let one_minus_b2 = (1.0 - c.beta2) as f32;
        let bc2_sqrt = bias_correction2_sqrt as f32;
        let eps = c.eps as f32;
        let neg_step = (-step_size) as f32;
        let small_weight = w1.abs() < 0.5;
        let AdamState {
            exp_avg,
            exp_avg_sq,
            ..
        } = &mut self.state;
        let k = Coeffs {
            w1,
            b2,
            one_minus_b2,
            bc2_sqrt,
            eps,
            neg_step,
            small_weight,
        };
        // Element-wise, so the result does not depend on how the vectors are cut between threads.
        const PIECE: usize = 1 << 16;
        params
            .par_chunks_mut(PIECE)
            .zip(grad.par_chunks(PIECE))
            .zip(exp_avg.par_chunks_mut(PIECE))
            .zip(exp_avg_sq.par_chunks_mut(PIECE))
            .for_each(|(((ps, gs), ms), vs)| update(ps, gs, ms, vs, &k));
        Ok(())
    }
}

/// The step's scalars, as the f32 kernels see them.
struct Coeffs {
    w1: f32,
    b2: f32,
    one_minus_b2: f32,
    bc2_sqrt: f32,
    eps: f32,
    neg_step: f32,
    small_weight: bool,
}

/// One piece of the update, with the CPU's fused multiply-add instruction when it has one
/// (without it `f32::mul_add` is a library call per element, several times slower). Both paths
/// compute the same correctly rounded values.
#[allow(unsafe_code)]
fn update(ps: &mut [f32], gs: &[f32], ms: &mut [f32], vs: &mut [f32], k: &Coeffs) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: `update_fma` only requires the AVX2 and FMA instructions, which this CPU
        // has (checked just above).
        unsafe { update_fma(ps, gs, ms, vs, k) };
        return;
    }
    update_body(ps, gs, ms, vs, k);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn update_fma(ps: &mut [f32], gs: &[f32], ms: &mut [f32], vs: &mut [f32], k: &Coeffs) {
    update_body(ps, gs, ms, vs, k);
}

#[inline(always)]
fn update_body(ps: &mut [f32], gs: &[f32], ms: &mut [f32], vs: &mut [f32], k: &Coeffs) {
    for (((p, &g), m), v) in ps.iter_mut().zip(gs).zip(ms.iter_mut()).zip(vs.iter_mut()) {
        // exp_avg.lerp_(grad, 1 - beta1), as PyTorch's vectorised lerp (one fused
        // multiply-add).
        *m = if k.small_weight {
            k.w1.mul_add(g - *m, *m)
        } else {
            (k.w1 - 1.0).mul_add(g - *m, g)
        };
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        *v *= k.b2;
        *v += k.one_minus_b2 * g * g;
        // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        let denom = v.sqrt() / k.bc2_sqrt + k.eps;
        // param.addcdiv_(exp_avg, denom, value=-step_size)
        *p += k.neg_step * *m / denom;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Textbook Adam in f64, written independently of the code above.
    fn reference(p0: &[f64], grads: &[Vec<f64>], lrs: &[f64]) -> Vec<f64> {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let mut p = p0.to_vec();
        let mut m = vec![0.0; p.len()];
        let mut v = vec![0.0; p.len()];
        for (k, (g, lr)) in grads.iter().zip(lrs).enumerate() {
            let t = (k + 1) as i32;
            for i in 0..p.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let m_hat = m[i] / (1.0 - b1.powi(t));
                let v_hat = v[i] / (1.0 - b2.powi(t));
                p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
            }
        }
        p
    }

    fn grads(steps: usize, n: usize) -> Vec<Vec<f32>> {
        (0..steps)
            .map(|s| {
                (0..n)
                    .map(|i| ((s * 31 + i * 17) % 23) as f32 / 7.0 - 1.5 + 0.01 * s as f32)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn matches_f64_reference() {
        let p0: Vec<f32> = vec![0.5, -1.25, 2.0, 0.0, 3.5, -0.75, 1e-3];
        let gs = grads(6, p0.len());
        let lrs = [1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-2];
        let mut adam = Adam::new(AdamConfig::default(), p0.len()).unwrap();
        let mut p = p0.clone();
        for (g, &lr) in gs.iter().zip(&lrs) {
            adam.set_lr(lr).unwrap();
            adam.step(&mut p, g).unwrap();
        }
        let p0d: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
        let gd: Vec<Vec<f64>> = gs
            .iter()
            .map(|g| g.iter().map(|&x| x as f64).collect())
            .collect();
        let want = reference(&p0d, &gd, &lrs);
        assert_eq!(adam.state().step, 6);
        for (i, (&got, want)) in p.iter().zip(&want).enumerate() {
            let err = (got as f64 - want).abs() / want.abs().max(1e-3);
            assert!(err < 1e-6, "param {i}: {got} vs {want}");
            // and the parameter really moved
            assert_ne!(got, p0[i], "param {i}");
        }
    }

    #[test]
    fn first_step_moves_by_lr_against_the_gradient_sign() {
        let mut adam = Adam::new(AdamConfig::default(), 3).unwrap();
        let mut p = vec![1.0f32, 1.0, 1.0];
        adam.step(&mut p, &[4.0, -0.5, 0.0]).unwrap();
        assert!((p[0] - 0.999).abs() < 1e-6, "{}", p[0]);
        assert!((p[1] - 1.001).abs() < 1e-6, "{}", p[1]);
        assert_eq!(p[2], 1.0);
    }

    #[test]
    fn restored_state_continues_bit_identically() {
        let n = 9;
        let gs = grads(5, n);
        let p0: Vec<f32> = (0..n).map(|i| i as f32 * 0.3 - 1.0).collect();

        let mut straight = Adam::new(AdamConfig::default(), n).unwrap();
        let mut p1 = p0.clone();
        for g in &gs {
            straight.step(&mut p1, g).unwrap();
        }

        let mut first = Adam::new(AdamConfig::default(), n).unwrap();
        let mut p2 = p0.clone();
        for g in &gs[..2] {
            first.step(&mut p2, g).unwrap();
        }
        let json = serde_json::to_string(&first).unwrap();
        let state_json = serde_json::to_string(first.state()).unwrap();
        drop(first);
        let mut restored: Adam = serde_json::from_str(&json).unwrap();
        let state: AdamState = serde_json::from_str(&state_json).unwrap();
        let mut from_state = Adam::from_state(AdamConfig::default(), state).unwrap();
        let mut p3 = p2.clone();
        for g in &gs[2..] {
            restored.step(&mut p2, g).unwrap();
            from_state.step(&mut p3, g).unwrap();
        }
        let bits = |p: &[f32]| p.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p1), bits(&p2));
        assert_eq!(bits(&p1), bits(&p3));
        assert_eq!(restored, straight);
    }

    #[test]
    fn refuses_bad_lengths_and_config() {
        let mut adam = Adam::new(AdamConfig::default(), 2).unwrap();
        let mut p = vec![0.0f32; 3];
        let e = adam.step(&mut p, &[0.0; 3]).unwrap_err();
        assert!(e.to_string().contains("optimiser of 2"), "{e}");
        assert_eq!(adam.state().step, 0);
        assert!(adam.set_lr(f64::NAN).is_err());
        assert!(adam.set_lr(-1.0).is_err());
        assert_eq!(adam.lr(), 1e-3);
        let bad = AdamConfig {
            beta1: 1.0,
            ..AdamConfig::default()
        };
        assert!(Adam::new(bad, 2).is_err());
        let state = AdamState {
            step: 1,
            exp_avg: vec![0.0; 2],
            exp_avg_sq: vec![0.0; 3],
        };
        assert!(Adam::from_state(AdamConfig::default(), state).is_err());
    }
}
