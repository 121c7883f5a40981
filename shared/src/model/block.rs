//! `ResBlock1d`, the seed's residual unit. Main path: conv1 (stride 1) -> bn1 -> ReLU ->
//! dropout1 -> conv2 (stride = downsample). Skip path on the previous pre-activation `y`:
//! max-pool by the downsample factor, then a 1x1 conv when the channels change (in that
//! order; the seed's `nn.Sequential` so names it `skip_connection.{0,1}`). The block returns
//! `x = dropout2(ReLU(bn2(s)))` and the new `y = s`, where `s` is the sum of both paths.
use candle_core::{DType, Device, Result, Tensor};
use rand::Rng;

use super::batchnorm::BatchNorm;
use super::config::padding;
use super::layers::Conv;
use super::ops;
use super::resnet::Mode;

/// One residual block.
#[derive(Debug)]
pub struct ResBlock1d {
    /// `resblock1d_{i}`.
    pub prefix: String,
    /// First convolution, stride 1.
    pub conv1: Conv,
    /// First batch norm.
    pub bn1: BatchNorm,
    /// Second convolution, stride = downsample.
    pub conv2: Conv,
    /// Second batch norm (after the residual sum).
    pub bn2: BatchNorm,
    /// Max-pool factor of the skip path (1: none).
    pub skip_pool: usize,
    /// 1x1 convolution of the skip path when the channels change.
    pub skip_conv: Option<Conv>,
    /// Drop probability of both dropouts.
    pub dropout_rate: f64,
}

impl ResBlock1d {
    /// A block from `c_in` to `c_out` channels that shrinks the length by `downsample`,
    /// initialised as PyTorch does (parameters drawn in registration order).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        prefix: String,
        c_in: usize,
        c_out: usize,
        downsample: usize,
        kernel: usize,
        dropout_rate: f64,
        rng: &mut impl Rng,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let p = |s: &str| format!("{prefix}.{s}");
        let conv1 = Conv::new(
            p("conv1.weight"),
            c_in,
            c_out,
            kernel,
            1,
            padding(1, kernel),
            rng,
            dtype,
            device,
        )?;
        let bn1 = BatchNorm::new(p("bn1"), c_out, dtype, device)?;
        let conv2 = Conv::new(
            p("conv2.weight"),
            c_out,
            c_out,
            kernel,
            downsample,
            padding(downsample, kernel),
            rng,
            dtype,
            device,
        )?;
        let bn2 = BatchNorm::new(p("bn2"), c_out, dtype, device)?;
        let skip_conv = if c_in != c_out {
            let index = usize::from(downsample > 1);
            let name = p(&format!("skip_connection.{index}.weight"));
            Some(Conv::new(name, c_in, c_out, 1, 1, 0, rng, dtype, device)?)
        } else {
            None
        };
        Ok(Self {
            prefix,
            conv1,
            bn1,
            conv2,
            bn2,
            skip_pool: downsample,
            skip_conv,
            dropout_rate,
        })
    }

    /// Batch norm layers in registration order.
    pub fn bns(&self) -> [&BatchNorm; 2] {
        [&self.bn1, &self.bn2]
    }

    /// Mutable batch norm layers in registration order.
    pub fn bns_mut(&mut self) -> [&mut BatchNorm; 2] {
        [&mut self.bn1, &mut self.bn2]
    }

    /// Convolutions in registration order.
    pub fn convs(&self) -> Vec<&Conv> {
        let mut v = vec![&self.conv1, &self.conv2];
        v.extend(self.skip_conv.as_ref());
        v
    }

    /// Mutable convolutions in registration order.
    pub fn convs_mut(&mut self) -> Vec<&mut Conv> {
        let mut v = vec![&mut self.conv1, &mut self.conv2];
        v.extend(self.skip_conv.as_mut());
        v
    }

    /// Runs the block on `(x, y)`.
    pub fn forward(&self, x: &Tensor, y: &Tensor, mode: &mut Mode<'_>) -> Result<(Tensor, Tensor)> {
        let mut skip = y.clone();
        if self.skip_pool > 1 {
            skip = ops::max_pool1d(&skip, self.skip_pool)?;
        }
        if let Some(conv) = &self.skip_conv {
            skip = conv.forward(&skip)?;
        }
        let h = self.conv1.forward(x)?;
        let h = mode.batch_norm(&self.bn1, &h)?.relu()?;
        let h = mode.dropout(&h, &format!("{}.dropout1", self.prefix), self.dropout_rate)?;
        let s = (self.conv2.forward(&h)? + skip)?;
        let h = mode.batch_norm(&self.bn2, &s)?.relu()?;
        let h = mode.dropout(&h, &format!("{}.dropout2", self.prefix), self.dropout_rate)?;
        Ok((h, s))
    }
}
