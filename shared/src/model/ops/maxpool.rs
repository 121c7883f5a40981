//! Non-overlapping 1-D max-pool (kernel = stride = k, no padding) as a Candle `CustomOp1`, with
//! PyTorch's `MaxPool1d` semantics in both directions.
//!
//! In each window the winner is found as PyTorch's CPU kernel does: start at the first element
//! with the value minus infinity and move to an element when it is greater than the current
//! maximum or is NaN. So without NaN the gradient goes to the FIRST maximal element (Candle's
//! stock `max` gradient goes to every tied maximum, and ties are common on zero-padded ECG
//! regions); a window holding NaN yields NaN and sends its gradient to its last NaN.
//!
//! CUDA (feature `cuda`): kernels with the same winner rule (`cuda/kernels.cu`).
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail,
};
use rayon::prelude::*;

use super::layout::dense;
use super::scalar::Scalar;

/// Max over windows of `k` samples with stride `k`: (B, C, L) -> (B, C, L / k); `L` must be a
/// multiple of `k`. `f32` or `f64`, CPU or CUDA. Differentiable: the gradient of each window goes to its
/// first maximal element, as PyTorch's `MaxPool1d`.
pub fn max_pool1d(x: &Tensor, k: usize) -> Result<Tensor> {
    let (_, _, l) = x.dims3().map_err(|_| {
        candle_core::Error::Msg(format!(
            "max_pool1d: input {:?} must be (batch, channels, length)",
            x.dims()
        ))
    })?;
    check_window(l, k)?;
    if x.device().is_cuda() {
        return x.contiguous()?.apply_op1(MaxPool1d { k });
    }
    x.apply_op1(MaxPool1d { k })
}

fn check_window(l: usize, k: usize) -> Result<()> {
    if k == 0 || !l.is_multiple_of(k) {
        bail!("max_pool1d: length {l} is not a positive multiple of the kernel {k}");
    }
    Ok(())
}

/// Offset of the winning element of `window` (PyTorch's rule, see the file docs).
fn argmax<T: Scalar>(window: &[T]) -> usize {
    let (mut best, mut at) = (T::NEG_INFINITY, 0);
    for (i, &v) in window.iter().enumerate() {
        if v > best || v.is_nan() {
            best = v;
            at = i;
        }
    }
    at
}

/// Rows (of length `l`) per rayon task: large enough that scheduling costs nothing.
fn rows_per_task(l: usize) -> usize {
    (1 << 15) / l.max(1) + 1
}

/// The forward op: argument x (B, C, L).
#[derive(Clone, Copy, Debug)]
struct MaxPool1d {
    k: usize,
}

impl MaxPool1d {
    fn run<T: Scalar>(&self, x: &[T], lx: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, l) = lx.shape().dims3()?;
        check_window(l, self.k)?;
        let x = dense(x, lx, "max_pool1d input")?;
        let lo = l / self.k;
        let mut out = vec![T::ZERO; b * c * lo];
        if lo > 0 {
            let rows = rows_per_task(l);
            out.par_chunks_mut(lo * rows)
                .zip(x.par_chunks(l * rows))
                .for_each(|(o, xr)| {
                    for (v, w) in o.iter_mut().zip(xr.chunks_exact(self.k)) {
                        *v = w[argmax(w)];
                    }
                });
        }
        Ok((T::into_storage(out), Shape::from((b, c, lo))))
    }
}

impl CustomOp1 for MaxPool1d {
    fn name(&self) -> &'static str {
        "ecg-max-pool1d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(x) => self.run::<f32>(x, l),
            CpuStorage::F64(x) => self.run::<f64>(x, l),
            other => bail!(
                "{}: expects f32 or f64, got {:?}",
                self.name(),
                other.dtype()
            ),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        check_window(l.shape().dims3()?.2, self.k)?;
        super::cuda::maxpool_fwd(s, l, self.k)
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        bail!("{}: this binary was built without CUDA", self.name())
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPool1dGrad { k: self.k },
        )?))
    }
}

/// The input gradient: arguments (x (B, C, L), grad_out (B, C, L / k)), result (B, C, L).
#[derive(Clone, Copy, Debug)]
struct MaxPool1dGrad {
    k: usize,
}

impl MaxPool1dGrad {
    fn run<T: Scalar>(
        &self,
        x: &[T],
        lx: &Layout,
        g: &[T],
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, c, l) = lx.shape().dims3()?;
        check_window(l, self.k)?;
        let lo = l / self.k;
        if lg.dims() != [b, c, lo] {
            bail!(
                "max_pool1d backward: gradient {:?} does not match input {:?}",
                lg.dims(),
                lx.dims()
            );
        }
        let (x, g) = (
            dense(x, lx, "max_pool1d input")?,
            dense(g, lg, "max_pool1d gradient")?,
        );
        let mut gx = vec![T::ZERO; b * c * l];
        if lo > 0 {
            let rows = rows_per_task(l);
            gx.par_chunks_mut(l * rows)
                .zip(x.par_chunks(l * rows))
                .zip(g.par_chunks(lo * rows))
                .for_each(|((gxr, xr), gr)| {
                    let windows = gxr.chunks_exact_mut(self.k).zip(xr.chunks_exact(self.k));
                    for ((gw, xw), &gv) in windows.zip(gr) {
                        gw[argmax(xw)] = gv;
                    }
                });
        }
        Ok((T::into_storage(gx), Shape::from((b, c, l))))
    }
}

impl CustomOp2 for MaxPool1dGrad {
    fn name(&self) -> &'static str {
        "ecg-max-pool1d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => self.run::<f32>(x, l1, g, l2),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => self.run::<f64>(x, l1, g, l2),
            (a, b) => bail!(
                "{}: expects two f32 or two f64 tensors, got {:?} and {:?}",
                self.name(),
                a.dtype(),
                b.dtype()
            ),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        check_window(l1.shape().dims3()?.2, self.k)?;
        super::cuda::maxpool_bwd(s1, l1, s2, l2, self.k)
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        bail!("{}: this binary was built without CUDA", self.name())
    }
}
