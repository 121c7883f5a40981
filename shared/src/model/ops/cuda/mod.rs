//! The model's own ops on CUDA devices (feature `cuda`): launching the kernels of `kernels.cu`
//! (max-pool and hashed dropout, compiled to PTX by build.rs), reading Candle's CUDA storages,
//! and, with the `cudnn` feature, the convolution through cuDNN ([`cudnn`]).
//!
//! Every kernel reads contiguous storages (the callers make their arguments contiguous) and
//! runs on the device's Candle stream, so nothing here waits for the GPU or copies to the host.
#![allow(unsafe_code)]
// Safety, for the whole module: the only unsafe operations are kernel launches and cuDNN calls.
// Each launch passes device buffers whose lengths were checked against the counts the kernel
// reads and writes (`n` elements, or `n_out * k` for the pools), on the stream that owns them;
// cudarc records the buffers' uses so that none is freed while the kernel runs.

#[cfg(feature = "cudnn")]
pub(crate) mod cudnn;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::{CudaDType, CudaDevice};
use candle_core::{CudaStorage, DType, Layout, Result, Shape, bail};
use cudarc::driver::{CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};

/// The PTX of `kernels.cu`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ecg_kernels.ptx"));
/// Module name under which the device caches the loaded PTX.
const MODULE: &str = "ecg_kernels";

fn wrap(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// The contiguous elements of `s` under `l`, as a view; errors name `what`.
pub(crate) fn view<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<CudaView<'a, T>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!(
            "{what}: must be contiguous on CUDA (dims {:?}, strides {:?})",
            l.dims(),
            l.stride()
        );
    };
    let slice = s.as_cuda_slice::<T>()?;
    if b > slice.len() {
        bail!(
            "{what}: view {a}..{b} lies outside its storage of {} elements",
            slice.len()
        );
    }
    Ok(slice.slice(a..b))
}

/// One thread per element, in blocks of 256.
fn grid(n: usize, what: &str) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(256);
    if blocks > i32::MAX as usize {
        bail!("{what}: {n} elements are too many for one launch");
    }
    Ok(LaunchConfig {
        grid_dim: (blocks.max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Element types of the kernels: `f32` and `f64`.
trait Elem: CudaDType + DeviceRepr + ValidAsZeroBits + Copy {
    const SUFFIX: &'static str;
    fn from_f32(v: f32) -> Self;
}
impl Elem for f32 {
    const SUFFIX: &'static str = "f32";
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl Elem for f64 {
    const SUFFIX: &'static str = "f64";
    fn from_f32(v: f32) -> Self {
        f64::from(v)
    }
}

fn dtype_error(op: &str, dtype: DType) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: expects f32 or f64 on CUDA, got {dtype:?}"))
}

fn maxpool_fwd_t<T: Elem>(x: &CudaStorage, lx: &Layout, k: usize) -> Result<(CudaStorage, Shape)> {
    let dev: &CudaDevice = x.device();
    let (b, c, l) = lx.shape().dims3()?;
    let n_out = b * c * (l / k);
    let xv = view::<T>(x, lx, "max_pool1d input")?;
    let mut y = dev.alloc_zeros::<T>(n_out)?;
    if n_out > 0 {
        let f =
            dev.get_or_load_custom_func(&format!("ecg_maxpool_fwd_{}", T::SUFFIX), MODULE, PTX)?;
        let (n, k32) = (n_out as u64, k as u32);
        let mut launch = f.builder();
        launch.arg(&xv).arg(&mut y).arg(&n).arg(&k32);
        unsafe { launch.launch(grid(n_out, "max_pool1d")?) }.map_err(wrap)?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(y, dev.clone()),
        Shape::from((b, c, l / k)),
    ))
}

/// Max-pool forward on CUDA: (B, C, L) -> (B, C, L / k).
pub(crate) fn maxpool_fwd(x: &CudaStorage, lx: &Layout, k: usize) -> Result<(CudaStorage, Shape)> {
    match x.dtype() {
        DType::F32 => maxpool_fwd_t::<f32>(x, lx, k),
        DType::F64 => maxpool_fwd_t::<f64>(x, lx, k),
        d => Err(dtype_error("ecg-max-pool1d", d)),
    }
}

fn maxpool_bwd_t<T: Elem>(
    x: &CudaStorage,
    lx: &Layout,
    g: &CudaStorage,
    lg: &Layout,
    k: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev: &CudaDevice = x.device();
    let (b, c, l) = lx.shape().dims3()?;
    let n_out = b * c * (l / k);
    if lg.shape().elem_count() != n_out {
        bail!(
            "max_pool1d backward: gradient {:?} does not match input {:?}",
            lg.dims(),
            lx.dims()
        );
    }
    let xv = view::<T>(x, lx, "max_pool1d input")?;
    let gv = view::<T>(g, lg, "max_pool1d gradient")?;
    let mut dx = dev.alloc_zeros::<T>(b * c * l)?;
    if n_out > 0 {
        let f =
            dev.get_or_load_custom_func(&format!("ecg_maxpool_bwd_{}", T::SUFFIX), MODULE, PTX)?;
        let (n, k32) = (n_out as u64, k as u32);
        let mut launch = f.builder();
        launch.arg(&xv).arg(&gv).arg(&mut dx).arg(&n).arg(&k32);
        unsafe { launch.launch(grid(n_out, "max_pool1d backward")?) }.map_err(wrap)?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(dx, dev.clone()),
        Shape::from((b, c, l)),
    ))
}

/// Max-pool input gradient on CUDA: arguments x (B, C, L) and grad (B, C, L / k).
pub(crate) fn maxpool_bwd(
    x: &CudaStorage,
    lx: &Layout,
    g: &CudaStorage,
    lg: &Layout,
    k: usize,
) -> Result<(CudaStorage, Shape)> {
    if x.dtype() != g.dtype() {
        bail!(
            "ecg-max-pool1d-grad: input is {:?}, gradient {:?}",
            x.dtype(),
            g.dtype()
        );
    }
    match x.dtype() {
        DType::F32 => maxpool_bwd_t::<f32>(x, lx, g, lg, k),
        DType::F64 => maxpool_bwd_t::<f64>(x, lx, g, lg, k),
        d => Err(dtype_error("ecg-max-pool1d-grad", d)),
    }
}

fn dropout_t<T: Elem>(
    x: &CudaStorage,
    lx: &Layout,
    key: u64,
    threshold: u64,
    scale: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev: &CudaDevice = x.device();
    let n = lx.shape().elem_count();
    let xv = view::<T>(x, lx, "dropout input")?;
    let mut y = dev.alloc_zeros::<T>(n)?;
    if n > 0 {
        let f = dev.get_or_load_custom_func(&format!("ecg_dropout_{}", T::SUFFIX), MODULE, PTX)?;
        let (n64, s) = (n as u64, T::from_f32(scale));
        let mut launch = f.builder();
        launch
            .arg(&xv)
            .arg(&mut y)
            .arg(&n64)
            .arg(&key)
            .arg(&threshold)
            .arg(&s);
        unsafe { launch.launch(grid(n, "dropout")?) }.map_err(wrap)?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(y, dev.clone()),
        lx.shape().clone(),
    ))
}

/// Hashed dropout on CUDA: `x * m` with the multiplier of element `i` decided by
/// `super::super::dropout::keep` (the CPU rule) from `key`, `threshold` and `scale`.
pub(crate) fn dropout(
    x: &CudaStorage,
    lx: &Layout,
    key: u64,
    threshold: u64,
    scale: f32,
) -> Result<(CudaStorage, Shape)> {
    match x.dtype() {
        DType::F32 => dropout_t::<f32>(x, lx, key, threshold, scale),
        DType::F64 => dropout_t::<f64>(x, lx, key, threshold, scale),
        d => Err(dtype_error("ecg-dropout", d)),
    }
}

thread_local! {
    // Page-locked staging buffer of the gradient copies, grown to the largest asked for.
    static PINNED: std::cell::RefCell<Option<cudarc::driver::PinnedHostSlice<f32>>> =
        const { std::cell::RefCell::new(None) };
}

/// The elements of the `f32` CUDA tensor `t` on the host, in one copy through a page-locked
/// buffer (about twice the bandwidth of a copy into pageable memory).
pub(crate) fn to_host_f32(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cuda(cs) = &*storage else {
        drop(storage);
        return t.flatten_all()?.to_vec1::<f32>();
    };
    let src = view::<f32>(cs, layout, "device-to-host copy")?;
    let n = src.len();
    let stream = cs.device().cuda_stream();
    PINNED.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|b| b.len() < n) {
            // Plain page-locked memory (flags 0): write-combined memory is slow to read back.
            *slot = Some(
                unsafe { stream.context().alloc_pinned_with_flags::<f32>(n.max(1), 0) }
                    .map_err(wrap)?,
            );
        }
        let Some(buf) = slot.as_mut() else {
            bail!("device-to-host copy: no staging buffer");
        };
        stream.memcpy_dtoh(&src, buf).map_err(wrap)?;
        Ok(buf.as_slice().map_err(wrap)?[..n].to_vec())
    })
}
