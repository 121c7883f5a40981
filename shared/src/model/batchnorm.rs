//! `BatchNorm1d` with PyTorch's semantics: in training, normalise with the batch's statistics
//! over (batch, length) and return them so that the running averages can be updated (here, or
//! after a reduction over workers); in evaluation, use the running averages. eps 1e-5, momentum
//! 0.1, running variance updated with the unbiased batch variance.
use candle_core::{DType, Device, Result, Tensor, Var};

use super::bn_op::batch_norm_train;
use super::ops::composed;

/// PyTorch's default `eps`.
pub const BN_EPS: f64 = 1e-5;
/// PyTorch's default `momentum`.
pub const BN_MOMENTUM: f64 = 0.1;

/// The statistics one training forward saw in one batch-norm layer: per channel mean and
/// unbiased variance over `count` values (batch x length).
#[derive(Clone, Debug, PartialEq)]
pub struct BnBatchStats {
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel unbiased variance (divided by `count - 1`).
    pub var_unbiased: Vec<f64>,
    /// Values per channel (batch size times length).
    pub count: usize,
}

/// One layer's statistics as a training forward leaves them: on the host (the CPU's fused op),
/// or still on the device (CUDA), to be copied with every other layer's in one transfer by
/// [`materialize`].
#[derive(Debug, Clone)]
pub enum PendingStats {
    /// Already host values.
    Host(BnBatchStats),
    /// Device tensors: per-channel mean and biased variance over `count` values.
    Device {
        /// Mean (C).
        mean: Tensor,
        /// Biased variance (C).
        var: Tensor,
        /// Values per channel.
        count: usize,
    },
}

fn unbias(count: usize) -> f64 {
    if count > 1 {
        count as f64 / (count - 1) as f64
    } else {
        f64::NAN
    }
}

/// The host statistics of every layer, in order: one device-to-host copy for all the layers
/// whose statistics are still on a device.
pub fn materialize(pending: Vec<PendingStats>) -> Result<Vec<BnBatchStats>> {
    let on_device: Vec<Tensor> = pending
        .iter()
        .flat_map(|p| match p {
            PendingStats::Device { mean, var, .. } => {
                vec![mean.to_dtype(DType::F64), var.to_dtype(DType::F64)]
            }
            PendingStats::Host(_) => Vec::new(),
        })
        .collect::<Result<_>>()?;
    let values = if on_device.is_empty() {
        Vec::new()
    } else {
        Tensor::cat(&on_device, 0)?.to_vec1::<f64>()?
    };
    let mut at = 0;
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        out.push(match p {
            PendingStats::Host(s) => s,
            PendingStats::Device { mean, count, .. } => {
                let c = mean.elem_count();
                let (m, v) = (&values[at..at + c], &values[at + c..at + 2 * c]);
                at += 2 * c;
                let u = unbias(count);
                BnBatchStats {
                    mean: m.to_vec(),
                    var_unbiased: v.iter().map(|v| v * u).collect(),
                    count,
                }
            }
        });
    }
    Ok(out)
}

/// One batch-norm layer: affine parameters (trainable) and running statistics (buffers).
#[derive(Debug)]
pub struct BatchNorm {
    /// Name prefix, e.g. `resblock1d_0.bn1`.
    pub prefix: String,
    /// Scale (`.weight`).
    pub weight: Var,
    /// Shift (`.bias`).
    pub bias: Var,
    /// Running mean (`.running_mean`), f64 on the host so that updates do not drift.
    pub running_mean: Vec<f64>,
    /// Running variance (`.running_var`).
    pub running_var: Vec<f64>,
    /// Number of training batches seen (`.num_batches_tracked`).
    pub num_batches_tracked: i64,
}

impl BatchNorm {
    /// A fresh layer as PyTorch initialises it: weight 1, bias 0, mean 0, variance 1.
    pub fn new(prefix: String, channels: usize, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self {
            prefix,
            weight: Var::ones(channels, dtype, device)?,
            bias: Var::zeros(channels, dtype, device)?,
            running_mean: vec![0.0; channels],
            running_var: vec![1.0; channels],
            num_batches_tracked: 0,
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.running_mean.len()
    }

    /// Normalises `x` (B, C, L) with the batch statistics, differentiably (our fused op on the
    /// CPU, Candle ops on a GPU), and returns the statistics it used.
    pub fn forward_train(&self, x: &Tensor) -> Result<(Tensor, BnBatchStats)> {
        let (y, s) = self.forward_train_pending(x)?;
        let s = materialize(vec![s])?
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("batch norm: no statistics".into()))?;
        Ok((y, s))
    }

    /// As [`BatchNorm::forward_train`], leaving a GPU's statistics on the device.
    pub fn forward_train_pending(&self, x: &Tensor) -> Result<(Tensor, PendingStats)> {
        let (b, _, l) = x.dims3()?;
        let count = b * l;
        let (w, bias) = (self.weight.as_tensor(), self.bias.as_tensor());
        if !x.device().is_cpu() {
            let (y, mean, var) = composed::batch_norm_train(x, w, bias, BN_EPS)?;
            return Ok((y, PendingStats::Device { mean, var, count }));
        }
        let (y, s) = batch_norm_train(x, w, bias, BN_EPS)?;
        let u = unbias(count);
        let stats = BnBatchStats {
            var_unbiased: s.var.iter().map(|v| v * u).collect(),
            mean: s.mean,
            count,
        };
        Ok((y, PendingStats::Host(stats)))
    }

    /// Normalises `x` (B, C, L) with the running statistics (evaluation mode).
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, _) = x.dims3()?;
        let w = self
            .weight
            .as_tensor()
            .detach()
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let b = self
            .bias
            .as_tensor()
            .detach()
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let mut scale = Vec::with_capacity(c);
        let mut shift = Vec::with_capacity(c);
        for i in 0..c {
            let s = w[i] / (self.running_var[i] + BN_EPS).sqrt();
            scale.push(s);
            shift.push(b[i] - self.running_mean[i] * s);
        }
        let dev = x.device();
        let scale = Tensor::from_vec(scale, (1, c, 1), dev)?.to_dtype(x.dtype())?;
        let shift = Tensor::from_vec(shift, (1, c, 1), dev)?.to_dtype(x.dtype())?;
        x.broadcast_mul(&scale)?.broadcast_add(&shift)
    }

    /// Folds one batch's statistics into the running averages, as PyTorch does after each
    /// training forward.
    pub fn update_running(&mut self, stats: &BnBatchStats) {
        for i in 0..self.channels().min(stats.mean.len()) {
            self.running_mean[i] =
                (1.0 - BN_MOMENTUM) * self.running_mean[i] + BN_MOMENTUM * stats.mean[i];
            self.running_var[i] =
                (1.0 - BN_MOMENTUM) * self.running_var[i] + BN_MOMENTUM * stats.var_unbiased[i];
        }
        self.num_batches_tracked += 1;
    }
}

/// The statistics of several disjoint batches of one layer, pooled as if computed over their
/// union: the count-weighted mean, and the unbiased variance from the summed squared deviations
/// (within each batch and of each batch's mean from the pooled mean). Batches are folded in the
/// order given, so the result is the same on every machine. `None` for no batches.
pub fn pool_batch_stats<'a>(
    batches: impl IntoIterator<Item = &'a BnBatchStats>,
) -> Option<BnBatchStats> {
    let batches: Vec<&BnBatchStats> = batches.into_iter().collect();
    let first = batches.first()?;
    if batches.len() == 1 {
        return Some((*first).clone());
    }
    let channels = first.mean.len();
    let count: usize = batches.iter().map(|b| b.count).sum();
    let n = count as f64;
    let mut mean = vec![0.0; channels];
    for b in &batches {
        for (m, &bm) in mean.iter_mut().zip(&b.mean) {
            *m += bm * b.count as f64 / n;
        }
    }
    let mut var_unbiased = vec![0.0; channels];
    for b in &batches {
        let k = b.count as f64;
        for c in 0..channels.min(b.mean.len()) {
            let within = b.var_unbiased[c] * (k - 1.0).max(0.0);
            let d = b.mean[c] - mean[c];
            var_unbiased[c] += within + k * d * d;
        }
    }
    for v in &mut var_unbiased {
        *v /= (n - 1.0).max(1.0);
    }
    Some(BnBatchStats {
        mean,
        var_unbiased,
        count,
    })
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    fn stats_of(values: &[Vec<f64>]) -> BnBatchStats {
        // values[c] = the channel's values.
        let count = values[0].len();
        let mean: Vec<f64> = values
            .iter()
            .map(|v| v.iter().sum::<f64>() / count as f64)
            .collect();
        let var_unbiased = values
            .iter()
            .zip(&mean)
            .map(|(v, m)| v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (count as f64 - 1.0))
            .collect();
        BnBatchStats {
            mean,
            var_unbiased,
            count,
        }
    }

    #[test]
    fn pooled_statistics_equal_those_of_the_union() {
        let a = vec![vec![1.0, 2.0, 4.0], vec![-1.0, 0.5, 3.0]];
        let b = vec![vec![10.0, -2.0], vec![7.0, 7.5]];
        let union: Vec<Vec<f64>> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| [&x[..], &y[..]].concat())
            .collect();
        let pooled = pool_batch_stats([&stats_of(&a), &stats_of(&b)]).expect("two batches");
        let direct = stats_of(&union);
        assert_eq!(pooled.count, 5);
        for c in 0..2 {
            assert!((pooled.mean[c] - direct.mean[c]).abs() < 1e-12);
            assert!((pooled.var_unbiased[c] - direct.var_unbiased[c]).abs() < 1e-12);
        }
        assert_eq!(pool_batch_stats([&stats_of(&a)]), Some(stats_of(&a)));
        assert_eq!(pool_batch_stats(std::iter::empty()), None);
    }
}
