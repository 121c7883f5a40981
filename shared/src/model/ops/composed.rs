//! Device-generic versions of the convolution and the training batch norm, built from Candle's
//! own tensor ops (whose gradients Candle derives): the CUDA path when the binary has no cuDNN
//! (convolution) and for every CUDA batch norm, where the statistics must stay on the device.
//! They run on any device, so the tests check them on the CPU against the custom ops.
//!
//! The convolution is an explicit im2col: the padded input is viewed as (B, C, L' / s, s) so that
//! tap `k` of every output position is one narrow of that view; the taps are stacked into
//! (B * L_out, C * K) columns and multiplied by the (C * K, C_out) weight matrix. Only 2-D
//! products: Candle's CPU matmul is wrong for a transposed left operand with a broadcast right
//! one, which this never builds.
use candle_core::{D, Result, Tensor, bail};

/// `x` (B, C_in, L) cross-correlated with `w` (C_out, C_in, K), stride, symmetric zero padding.
pub(crate) fn conv1d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, c_in, l) = x.dims3()?;
    let (c_out, c_in_w, k) = w.dims3()?;
    if c_in != c_in_w || stride == 0 || k == 0 || l + 2 * padding < k {
        bail!(
            "conv1d: input {:?}, weight {:?}, stride {stride}, padding {padding} do not fit",
            x.dims(),
            w.dims()
        );
    }
    let l_out = (l + 2 * padding - k) / stride + 1;
    // Positions read: (l_out - 1) * stride + k, rounded up to whole strides.
    let rows = ((l_out - 1) * stride + k).div_ceil(stride);
    let want = rows * stride;
    let padded = x.pad_with_zeros(D::Minus1, padding, padding)?;
    let have = l + 2 * padding;
    let padded = if have < want {
        padded.pad_with_zeros(D::Minus1, 0, want - have)?
    } else {
        padded.narrow(D::Minus1, 0, want)?
    };
    let grid = padded.reshape((b, c_in, rows, stride))?;
    let taps = (0..k)
        .map(|t| grid.narrow(2, t / stride, l_out)?.narrow(3, t % stride, 1))
        .collect::<Result<Vec<_>>>()?;
    let cols = Tensor::cat(&taps, 3)? // (b, c_in, l_out, k)
        .permute((0, 2, 1, 3))?
        .reshape((b * l_out, c_in * k))?;
    let wm = w.reshape((c_out, c_in * k))?.t()?;
    cols.matmul(&wm)?
        .reshape((b, l_out, c_out))?
        .transpose(1, 2)?
        .contiguous()
}

/// Training-mode batch norm of `x` (B, C, L) with scale `w` and shift `b` (C): returns the
/// output, the batch mean (C) and the biased batch variance (C), the statistics detached.
pub(crate) fn batch_norm_train(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (bs, c, l) = x.dims3()?;
    let n = (bs * l) as f64;
    let mean = (x.sum_keepdim(2)?.sum_keepdim(0)? / n)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = (centred.sqr()?.sum_keepdim(2)?.sum_keepdim(0)? / n)?;
    let scale = var
        .affine(1.0, eps)?
        .sqrt()?
        .recip()?
        .broadcast_mul(&w.reshape((1, c, 1))?)?;
    let y = centred
        .broadcast_mul(&scale)?
        .broadcast_add(&b.reshape((1, c, 1))?)?;
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}
