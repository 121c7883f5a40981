//! The two weight layers of the network besides batch norm: a bias-free `Conv1d` (through our
//! own [`super::ops::conv1d`]) and the final `Linear`, plus PyTorch's default initialisation of
//! both (`kaiming_uniform_(a = sqrt(5))`, i.e. uniform in `+-1/sqrt(fan_in)`).
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;

use super::ops;
use super::precision::Precision;

/// Uniform values in `[-bound, bound)` of `shape`, drawn from `rng`.
pub fn uniform_var(
    rng: &mut impl Rng,
    shape: &[usize],
    bound: f64,
    dtype: DType,
    device: &Device,
) -> Result<Var> {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Var::from_tensor(&Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
}

/// A `Conv1d` without bias: weight (C_out, C_in, K), a stride and symmetric zero padding.
#[derive(Debug)]
pub struct Conv {
    /// Full name of the weight, e.g. `resblock1d_1.conv2.weight`.
    pub name: String,
    /// The weight.
    pub weight: Var,
    /// Stride.
    pub stride: usize,
    /// Zeros added on each side.
    pub padding: usize,
    /// The arithmetic of the convolution (f32 unless set on a CUDA model).
    pub precision: Precision,
}

impl Conv {
    /// A convolution initialised as PyTorch does.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        rng: &mut impl Rng,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / ((c_in * kernel) as f64).sqrt();
        Ok(Self {
            name,
            weight: uniform_var(rng, &[c_out, c_in, kernel], bound, dtype, device)?,
            stride,
            padding,
            precision: Precision::F32,
        })
    }

    /// Applies the convolution to `x` (B, C_in, L), in [`Conv::precision`]: for `bf16` the
    /// input and weight are rounded to bfloat16 and the output comes back in `x`'s dtype (the
    /// gradients flow back through the same casts, so the weight's gradient is `x`'s dtype).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        match self.precision {
            Precision::F32 => ops::conv1d(x, w, self.stride, self.padding),
            Precision::Tf32 => ops::conv1d_tf32(x, w, self.stride, self.padding, true),
            Precision::Bf16 => ops::conv1d(
                &x.to_dtype(DType::BF16)?,
                &w.to_dtype(DType::BF16)?,
                self.stride,
                self.padding,
            )?
            .to_dtype(x.dtype()),
        }
    }
}

/// The head: `x W^T + b` on the flattened features.
#[derive(Debug)]
pub struct Linear {
    /// Weight (out, in), `lin.weight`.
    pub weight: Var,
    /// Bias (out), `lin.bias`.
    pub bias: Var,
}

impl Linear {
    /// A linear layer initialised as PyTorch does.
    pub fn new(
        n_in: usize,
        n_out: usize,
        rng: &mut impl Rng,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (n_in as f64).sqrt();
        Ok(Self {
            weight: uniform_var(rng, &[n_out, n_in], bound, dtype, device)?,
            bias: uniform_var(rng, &[n_out], bound, dtype, device)?,
        })
    }

    /// Applies the layer to `x` (B, in).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        x.matmul(&w.t()?)?.broadcast_add(self.bias.as_tensor())
    }
}
