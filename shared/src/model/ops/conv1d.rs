//! 1-D convolution (PyTorch `Conv1d` without bias: cross-correlation, any stride, symmetric zero
//! padding) as a Candle `CustomOp2` with its own backward pass.
//!
//! Candle 0.11.1's stock `conv1d` computes a wrong weight gradient for batches larger than one
//! and a slow input gradient when padded, so the model uses [`conv1d`] instead. The forward op
//! [`Conv1d`] returns, in `bwd`, the input gradient through [`Conv1dGradInput`] and the weight
//! gradient through [`Conv1dGradWeight`], two further custom ops without a backward of their own
//! (no second derivatives). All three run the CPU kernels of `conv1d_cpu` on `f32` or `f64` and
//! accept arguments of any layout.
//!
//! CUDA: with the `cudnn` feature the three ops run cuDNN's forward, backward-data and
//! backward-filter convolutions (`cuda::cudnn`); a CUDA build without cuDNN computes the
//! convolution from Candle ops instead (`composed::conv1d`: im2col and cuBLAS products, gradients
//! by Candle's autograd), never through Candle's stock conv1d and its wrong weight gradient.
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};

use super::conv1d_cpu::{Plan, forward, grad_input, grad_weight};
use super::im2col::Geom;
use super::layout::dense;
use super::scalar::Scalar;

/// `x` (B, C_in, L) cross-correlated with `w` (C_out, C_in, K), stride `stride`, `padding` zeros
/// on both sides: (B, C_out, (L + 2 padding - K) / stride + 1). No bias. `f32` or `f64`, CPU.
///
/// Differentiable in both arguments (input and weight gradients checked against finite
/// differences). Errors on shapes that disagree, a zero stride, a kernel longer than the padded
/// input, and mixed or unsupported dtypes (`bf16` only on CUDA).
pub fn conv1d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv1d_tiled(x, w, stride, padding, None, false)
}

/// [`conv1d`] allowing TensorFloat-32 products for `f32` tensors on CUDA (cuDNN); on the CPU
/// `tf32` changes nothing.
pub fn conv1d_tf32(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    tf32: bool,
) -> Result<Tensor> {
    conv1d_tiled(x, w, stride, padding, None, tf32)
}

/// [`conv1d`] with a forced im2col tile width (tests exercise several tiles on small inputs).
pub(crate) fn conv1d_tiled(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    tile: Option<usize>,
    tf32: bool,
) -> Result<Tensor> {
    let (Ok(xd), Ok(wd)) = (x.dims3(), w.dims3()) else {
        bail!(
            "conv1d: input {:?} must be (batch, channels, length) and weight {:?} (out, in, kernel)",
            x.dims(),
            w.dims()
        );
    };
    if xd.1 != wd.1 {
        bail!(
            "conv1d: input has {} channels, weight {:?} expects {}",
            xd.1,
            w.dims(),
            wd.1
        );
    }
    if x.dtype() != w.dtype() {
        bail!(
            "conv1d: input is {:?}, weight is {:?}",
            x.dtype(),
            w.dtype()
        );
    }
    Geom::new(xd, (wd.0, wd.2), stride, padding)?;
    let op = Conv1d {
        stride,
        padding,
        tile,
        tf32,
    };
    if x.device().is_cuda() {
        if !cfg!(feature = "cudnn") {
            return super::composed::conv1d(x, w, stride, padding);
        }
        return x.contiguous()?.apply_op2(&w.contiguous()?, op);
    }
    x.apply_op2(w, op)
}

/// Error for a dtype pair an op does not accept.
fn dtype_error(op: &str, a: &CpuStorage, b: &CpuStorage) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{op}: expects two f32 or two f64 tensors, got {:?} and {:?}",
        a.dtype(),
        b.dtype()
    ))
}

/// Error for a CUDA tensor in a build without cuDNN (`conv1d` never builds these ops there).
#[cfg(not(feature = "cudnn"))]
fn no_cudnn(op: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{op}: this binary was built without cuDNN (feature `cudnn`)"
    ))
}

/// Calls `$run::<f32>` or `$run::<f64>` on the two storages' data, or errors.
macro_rules! dispatch2 {
    ($self:ident, $run:ident, $s1:ident, $l1:ident, $s2:ident, $l2:ident) => {
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => $self.$run::<f32>(a, $l1, b, $l2),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => $self.$run::<f64>(a, $l1, b, $l2),
            (a, b) => Err(dtype_error($self.name(), a, b)),
        }
    };
}

/// The convolution's forward op: arguments (x, w).
#[derive(Clone, Copy, Debug)]
struct Conv1d {
    stride: usize,
    padding: usize,
    tile: Option<usize>,
    #[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
    tf32: bool,
}

impl Conv1d {
    /// The sizes of the arguments x (lx) and w (lw), checked against each other.
    fn geom(&self, lx: &Layout, lw: &Layout) -> Result<Geom> {
        let (wd, xd) = (lw.shape().dims3()?, lx.shape().dims3()?);
        if xd.1 != wd.1 {
            bail!(
                "conv1d: input has {} channels, weight {:?} expects {}",
                xd.1,
                lw.dims(),
                wd.1
            );
        }
        Geom::new(xd, (wd.0, wd.2), self.stride, self.padding)
    }

    fn run<T: Scalar>(
        &self,
        x: &[T],
        lx: &Layout,
        w: &[T],
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(lx, lw)?;
        let (x, w) = (
            dense(x, lx, "conv1d input")?,
            dense(w, lw, "conv1d weight")?,
        );
        let out = forward(&g, &x, &w, &Plan::new::<T>(&g, self.tile))?;
        Ok((T::into_storage(out), Shape::from((g.b, g.c_out, g.l_out))))
    }
}

impl CustomOp2 for Conv1d {
    fn name(&self) -> &'static str {
        "ecg-conv1d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch2!(self, run, s1, l1, s2, l2)
    }

    /// cuDNN's forward convolution.
    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        super::cuda::cudnn::forward(s1, l1, s2, l2, self.geom(l1, l2)?, self.tf32)
    }

    #[cfg(not(feature = "cudnn"))]
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        Err(no_cudnn(self.name()))
    }

    /// Input and weight gradients, each only for an argument that takes part in the graph.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, l_in) = x.dims3()?;
        let (_, _, k) = w.dims3()?;
        let gx = if x.track_op() {
            let op = Conv1dGradInput {
                stride: self.stride,
                padding: self.padding,
                l_in,
                tile: self.tile,
                tf32: self.tf32,
            };
            Some(grad.contiguous()?.apply_op2_no_bwd(w, &op)?)
        } else {
            None
        };
        let gw = if w.track_op() {
            let op = Conv1dGradWeight {
                stride: self.stride,
                padding: self.padding,
                k,
                tile: self.tile,
                tf32: self.tf32,
            };
            Some(x.apply_op2_no_bwd(&grad.contiguous()?, &op)?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// The input gradient: arguments (grad_out, w), result (B, C_in, l_in).
#[derive(Clone, Copy, Debug)]
struct Conv1dGradInput {
    stride: usize,
    padding: usize,
    l_in: usize,
    tile: Option<usize>,
    #[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
    tf32: bool,
}

impl Conv1dGradInput {
    /// The forward convolution's sizes, from the output gradient (lg) and the weight (lw).
    fn geom(&self, lg: &Layout, lw: &Layout) -> Result<Geom> {
        let ((b, c_out, l_out), (c_out_w, c_in, k)) = (lg.shape().dims3()?, lw.shape().dims3()?);
        let g = Geom::new(
            (b, c_in, self.l_in),
            (c_out_w, k),
            self.stride,
            self.padding,
        )?;
        if c_out != c_out_w || l_out != g.l_out {
            bail!(
                "conv1d backward: output gradient {:?} does not match {g:?}",
                lg.dims()
            );
        }
        Ok(g)
    }

    fn run<T: Scalar>(
        &self,
        gr: &[T],
        lg: &Layout,
        w: &[T],
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(lg, lw)?;
        let (gr, w) = (
            dense(gr, lg, "conv1d output gradient")?,
            dense(w, lw, "conv1d weight")?,
        );
        let gx = grad_input(&g, &gr, &w, &Plan::new::<T>(&g, self.tile))?;
        Ok((T::into_storage(gx), Shape::from((g.b, g.c_in, g.l_in))))
    }
}

impl CustomOp2 for Conv1dGradInput {
    fn name(&self) -> &'static str {
        "ecg-conv1d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch2!(self, run, s1, l1, s2, l2)
    }

    /// cuDNN's backward-data convolution.
    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        super::cuda::cudnn::grad_input(s1, l1, s2, l2, self.geom(l1, l2)?, self.tf32)
    }

    #[cfg(not(feature = "cudnn"))]
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        Err(no_cudnn(self.name()))
    }
}

/// The weight gradient: arguments (x, grad_out), result (C_out, C_in, k).
#[derive(Clone, Copy, Debug)]
struct Conv1dGradWeight {
    stride: usize,
    padding: usize,
    k: usize,
    tile: Option<usize>,
    #[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
    tf32: bool,
}

impl Conv1dGradWeight {
    /// The forward convolution's sizes, from the input (lx) and the output gradient (lg).
    fn geom(&self, lx: &Layout, lg: &Layout) -> Result<Geom> {
        let (xd, (b, c_out, l_out)) = (lx.shape().dims3()?, lg.shape().dims3()?);
        let g = Geom::new(xd, (c_out, self.k), self.stride, self.padding)?;
        if b != g.b || l_out != g.l_out {
            bail!(
                "conv1d backward: output gradient {:?} does not match {g:?}",
                lg.dims()
            );
        }
        Ok(g)
    }

    fn run<T: Scalar>(
        &self,
        x: &[T],
        lx: &Layout,
        gr: &[T],
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(lx, lg)?;
        let (x, gr) = (
            dense(x, lx, "conv1d input")?,
            dense(gr, lg, "conv1d output gradient")?,
        );
        let gw = grad_weight(&g, &x, &gr, &Plan::new::<T>(&g, self.tile))?;
        Ok((T::into_storage(gw), Shape::from((g.c_out, g.c_in, g.k))))
    }
}

impl CustomOp2 for Conv1dGradWeight {
    fn name(&self) -> &'static str {
        "ecg-conv1d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch2!(self, run, s1, l1, s2, l2)
    }

    /// cuDNN's backward-filter convolution.
    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        super::cuda::cudnn::grad_weight(s1, l1, s2, l2, self.geom(l1, l2)?, self.tf32)
    }

    #[cfg(not(feature = "cudnn"))]
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        Err(no_cudnn(self.name()))
    }
}
