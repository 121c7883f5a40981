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
        let k = self.next_step();
        self.state.step = k.step;
        let AdamState {
            exp_avg,
            exp_avg_sq,
            ..
        } = &mut self.state;
        // Element-wise, so the result does not depend on how the vectors are cut between threads.
        const PIECE: usize = 1 << 16;
        params
            .par_chunks_mut(PIECE)
            .zip(grad.par_chunks(PIECE))
            .zip(exp_avg.par_chunks_mut(PIECE))
            .zip(exp_avg_sq.par_chunks_mut(PIECE))
            .for_each(|(((ps, gs), ms), vs)| update(ps, gs, ms, vs, &k.coeffs));
        Ok(())
    }

    /// The scalars of the next step, for taking it piece by piece without changing the
    /// optimiser: [`Adam::step_piece`] for every piece, then [`Adam::finish_step`].
    pub fn next_step(&self) -> NextStep {
        let c = self.config;
        let step = self.state.step + 1;
        let t = step as f64;
        let bias_correction1 = 1.0 - c.beta1.powf(t);
        let bias_correction2 = 1.0 - c.beta2.powf(t);
        let step_size = c.lr / bias_correction1;
        // The Python scalars as PyTorch hands them to its f32 kernels.
        let w1 = (1.0 - c.beta1) as f32;
        NextStep {
            step,
            coeffs: Coeffs {
                w1,
                b2: c.beta2 as f32,
                one_minus_b2: (1.0 - c.beta2) as f32,
                bc2_sqrt: bias_correction2.sqrt() as f32,
                eps: c.eps as f32,
                neg_step: (-step_size) as f32,
                small_weight: w1.abs() < 0.5,
            },
        }
    }

    /// Step `k` of the values from `at` on: reads the parameters `params` and the optimiser's
    /// moments there, and writes the new parameters and moments into the `_out` slices (the
    /// optimiser keeps its state until [`Adam::finish_step`]). Bit for bit what
    /// [`Adam::step`] computes for these values.
    #[allow(clippy::too_many_arguments)]
    pub fn step_piece(
        &self,
        k: &NextStep,
        at: usize,
        params: &[f32],
        grad: &[f32],
        params_out: &mut [f32],
        exp_avg_out: &mut [f32],
        exp_avg_sq_out: &mut [f32],
    ) -> Result<()> {
        let len = grad.len();
        let fits = at.checked_add(len).is_some_and(|end| end <= self.len())
            && [
                params.len(),
                params_out.len(),
                exp_avg_out.len(),
                exp_avg_sq_out.len(),
            ]
            .iter()
            .all(|&l| l == len);
        if !fits || k.step != self.state.step + 1 {
            return Err(Error::Training(format!(
                "Adam piece: {len} values at {at} of an optimiser of {} (step {} after {})",
                self.len(),
                k.step,
                self.state.step
            )));
        }
        update_into(
            params,
            grad,
            &self.state.exp_avg[at..at + len],
            &self.state.exp_avg_sq[at..at + len],
            Out(params_out, exp_avg_out, exp_avg_sq_out),
            &k.coeffs,
        );
        Ok(())
    }

    /// Ends step `k` taken piece by piece: `exp_avg` and `exp_avg_sq`, into which every piece
    /// was written, become the optimiser's moments (and receive the previous ones, to be
    /// written again at the next step).
    pub fn finish_step(
        &mut self,
        k: NextStep,
        exp_avg: &mut Vec<f32>,
        exp_avg_sq: &mut Vec<f32>,
    ) -> Result<()> {
        if k.step != self.state.step + 1
            || exp_avg.len() != self.len()
            || exp_avg_sq.len() != self.len()
        {
            return Err(Error::Training(format!(
                "Adam: finishing step {} after {} with moments of {} and {} values for {}",
                k.step,
                self.state.step,
                exp_avg.len(),
                exp_avg_sq.len(),
                self.len()
            )));
        }
        std::mem::swap(&mut self.state.exp_avg, exp_avg);
        std::mem::swap(&mut self.state.exp_avg_sq, exp_avg_sq);
        self.state.step = k.step;
        Ok(())
    }
}

/// The scalars of one Adam step, from [`Adam::next_step`].
#[derive(Clone, Debug)]
pub struct NextStep {
    step: u64,
    coeffs: Coeffs,
}

/// The step's scalars, as the f32 kernels see them.
#[derive(Clone, Debug)]
struct Coeffs {
    w1: f32,
    b2: f32,
    one_minus_b2: f32,
    bc2_sqrt: f32,
    eps: f32,
    neg_step: f32,
    small_weight: bool,
}

/// One piece of the update in place, with the CPU's fused multiply-add instruction when it has
/// one (without it `f32::mul_add` is a library call per element, several times slower). Both
/// paths compute the same correctly rounded values.
#[allow(unsafe_code)]
fn update(ps: &mut [f32], gs: &[f32], ms: &mut [f32], vs: &mut [f32], k: &Coeffs) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: `update_fma` only requires the AVX2 and FMA instructions, which this CPU
        // has (checked just above).
        unsafe { update_fma(ps, gs, ms, vs, k) };
        return;
    }
    update_body(ps, gs, ms, vs, k);
}

/// The update of one piece written elsewhere: the new values of `ps`, `ms` and `vs` go to
/// `out`'s three slices (same arithmetic as [`update`]).
#[allow(unsafe_code)]
fn update_into(ps: &[f32], gs: &[f32], ms: &[f32], vs: &[f32], out: Out<'_>, k: &Coeffs) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: `update_into_avx512` only requires AVX-512F (with its FMA), which this CPU
        // has (checked just above).
        unsafe { update_into_avx512(ps, gs, ms, vs, out, k) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: as in `update`.
        unsafe { update_into_fma(ps, gs, ms, vs, out, k) };
        return;
    }
    update_into_body(ps, gs, ms, vs, out, k);
}

/// Where [`update_into`] writes: parameters, first and second moments.
struct Out<'a>(&'a mut [f32], &'a mut [f32], &'a mut [f32]);

#[cfg(target_arch = "x86_64")]
fn has_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn update_fma(ps: &mut [f32], gs: &[f32], ms: &mut [f32], vs: &mut [f32], k: &Coeffs) {
    update_body(ps, gs, ms, vs, k);
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn update_into_avx512(ps: &[f32], gs: &[f32], ms: &[f32], vs: &[f32], out: Out<'_>, k: &Coeffs) {
    update_into_body(ps, gs, ms, vs, out, k);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn update_into_fma(ps: &[f32], gs: &[f32], ms: &[f32], vs: &[f32], out: Out<'_>, k: &Coeffs) {
    update_into_body(ps, gs, ms, vs, out, k);
}

#[inline(always)]
fn update_body(ps: &mut [f32], gs: &[f32], ms: &mut [f32], vs: &mut [f32], k: &Coeffs) {
    for (((p, &g), m), v) in ps.iter_mut().zip(gs).zip(ms.iter_mut()).zip(vs.iter_mut()) {
        (*p, *m, *v) = element(*p, g, *m, *v, k);
    }
}

#[inline(always)]
fn update_into_body(ps: &[f32], gs: &[f32], ms: &[f32], vs: &[f32], out: Out<'_>, k: &Coeffs) {
    let Out(po, mo, vo) = out;
    let ins = ps.iter().zip(gs).zip(ms).zip(vs);
    let outs = po.iter_mut().zip(mo.iter_mut()).zip(vo.iter_mut());
    for ((((&p, &g), &m), &v), ((po, mo), vo)) in ins.zip(outs) {
        (*po, *mo, *vo) = element(p, g, m, v, k);
    }
}

/// Adam for one value: the new parameter, first and second moment.
#[inline(always)]
fn element(mut p: f32, g: f32, m: f32, mut v: f32, k: &Coeffs) -> (f32, f32, f32) {
    // exp_avg.lerp_(grad, 1 - beta1), as PyTorch's vectorised lerp (one fused multiply-add).
    let m = if k.small_weight {
        k.w1.mul_add(g - m, m)
    } else {
        (k.w1 - 1.0).mul_add(g - m, g)
    };
    // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    v *= k.b2;
    v += k.one_minus_b2 * g * g;
    // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    let denom = v.sqrt() / k.bc2_sqrt + k.eps;
    // param.addcdiv_(exp_avg, denom, value=-step_size)
    p += k.neg_step * m / denom;
    (p, m, v)
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
    fn a_step_taken_piece_by_piece_is_the_whole_step_bit_for_bit() {
        let n = 1000;
        let gs = grads(4, n);
        let p0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut whole = Adam::new(AdamConfig::default(), n).unwrap();
        let mut pieces = whole.clone();
        let mut p1 = p0.clone();
        let mut p2 = p0;
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        for g in &gs {
            whole.step(&mut p1, g).unwrap();
            let k = pieces.next_step();
            let mut out = vec![0.0; n];
            for at in (0..n).step_by(300) {
                let end = (at + 300).min(n);
                let (o, mo, vo) = (&mut out[at..end], &mut m[at..end], &mut v[at..end]);
                pieces
                    .step_piece(&k, at, &p2[at..end], &g[at..end], o, mo, vo)
                    .unwrap();
            }
            // Until it is finished, the step has not changed the optimiser.
            assert_eq!(pieces.state().step, whole.state().step - 1);
            pieces.finish_step(k, &mut m, &mut v).unwrap();
            p2 = out;
        }
        let bits = |p: &[f32]| p.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p1), bits(&p2));
        assert_eq!(pieces, whole);
        let k = pieces.next_step();
        let mut o = vec![0.0; 10];
        let e = pieces
            .step_piece(
                &k,
                995,
                &p2[..10],
                &gs[0][..10],
                &mut o,
                &mut [0.0; 10],
                &mut [0.0; 10],
            )
            .unwrap_err();
        assert!(e.to_string().contains("10 values at 995"), "{e}");
        let stale = pieces.next_step();
        pieces.finish_step(k, &mut m, &mut v).unwrap();
        assert!(pieces.finish_step(stale, &mut m, &mut v).is_err());
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
