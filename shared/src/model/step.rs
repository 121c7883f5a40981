//! One training step's arithmetic on a worker: the training-mode forward of a batch, the
//! seed's loss (sum over the batch of `w_i (age_i - pred_i)^2`), its gradient by backprop, and
//! the batch-norm statistics seen, returned as plain host values so that a caller can apply
//! them locally or send them to the coordinator to be summed with other workers'.
use candle_core::{DType, Tensor};

use super::batchnorm::BnBatchStats;
use super::config::N_LEADS;
use super::dropout::MaskSource;
use super::resnet::{Mode, ResNet1d};
use crate::{Error, Result};

/// What one batch contributed.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The batch's loss: sum of `w_i (age_i - pred_i)^2`.
    pub loss_sum: f64,
    /// Sum over the batch of `|age_i - pred_i|` (for the MAE).
    pub abs_error_sum: f64,
    /// Gradient of `loss_sum`, flat in the model's layout order.
    pub grads: Vec<f32>,
    /// Batch-norm statistics of every layer, in registration order.
    pub bn_stats: Vec<BnBatchStats>,
    /// Predictions (training mode).
    pub predictions: Vec<f32>,
}

impl ResNet1d {
    /// Forward (training mode, masks from `masks`) and backward on `batch` exams `x` laid out
    /// (batch, 12, seq_length), with true `ages` and sample `weights`. Parameters and
    /// running statistics are not changed.
    pub fn train_step(
        &self,
        x: &[f32],
        ages: &[f32],
        weights: &[f32],
        masks: &mut dyn MaskSource,
    ) -> Result<StepOutput> {
        let batch = ages.len();
        let len = self.config().seq_length;
        if weights.len() != batch || x.len() != batch * N_LEADS * len || batch == 0 {
            return Err(Error::Training(format!(
                "train step: {} ages, {} weights and {} input values do not describe one batch \
                 of ({N_LEADS}, {len}) exams",
                ages.len(),
                weights.len(),
                x.len()
            )));
        }
        let dev = self.device();
        let x = Tensor::from_slice(x, (batch, N_LEADS, len), dev)?;
        let mut mode = Mode::train(masks);
        let pred = self.forward(&x, &mut mode)?.flatten_all()?;
        let bn_stats = mode.into_stats()?;
        let y = Tensor::from_slice(ages, batch, dev)?.to_dtype(self.dtype())?;
        let w = Tensor::from_slice(weights, batch, dev)?.to_dtype(self.dtype())?;
        let diff = (&y - &pred)?;
        let loss = (diff.sqr()? * &w)?.sum_all()?;
        crate::faults::point("worker.forward");
        let grads = loss.backward()?;
        let predictions = pred.detach().to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let abs_error_sum = ages
            .iter()
            .zip(&predictions)
            .map(|(&a, &p)| f64::from((a - p).abs()))
            .sum();
        Ok(StepOutput {
            loss_sum: loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            abs_error_sum,
            grads: self.grads_flat(&grads)?,
            bn_stats,
            predictions,
        })
    }
}
