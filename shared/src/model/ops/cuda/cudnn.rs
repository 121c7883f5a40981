//! The convolution and its two gradients through cuDNN (feature `cudnn`): a 1-D convolution is
//! a 2-D one of height 1 (NCHW with H = 1, filter (C_out, C_in, 1, K), padding and stride on the
//! width only). The algorithm of each direction is chosen once per shape, dtype and math mode
//! by cuDNN's heuristics and cached; the workspace is allocated per call from the stream's pool.
//!
//! Math modes: `f32` data computes in strict FP32 (`CUDNN_FMA_MATH`, no TF32) unless TF32 is
//! asked for (`CUDNN_DEFAULT_MATH`); `bf16` data uses tensor cores with FP32 accumulation; `f64`
//! is for checks. Safety of the launches: see the module above.
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::{CudaStorage, DType, Layout, Result, Shape, bail};
use cudarc::cudnn::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, CudnnDataType,
    FilterDescriptor, TensorDescriptor, sys,
};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use super::super::im2col::Geom;
use super::view;

/// What an algorithm choice depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    device: DeviceId,
    geom: Geom,
    dtype: DType,
    tf32: bool,
}

type Cache<A> = Mutex<HashMap<Key, A>>;
static FWD: std::sync::LazyLock<Cache<sys::cudnnConvolutionFwdAlgo_t>> =
    std::sync::LazyLock::new(Default::default);
static BWD_DATA: std::sync::LazyLock<Cache<sys::cudnnConvolutionBwdDataAlgo_t>> =
    std::sync::LazyLock::new(Default::default);
static BWD_FILTER: std::sync::LazyLock<Cache<sys::cudnnConvolutionBwdFilterAlgo_t>> =
    std::sync::LazyLock::new(Default::default);

/// The cached algorithm for `key`, or the one `pick` chooses (then cached).
fn algorithm<A: Copy>(
    cache: &Cache<A>,
    key: Key,
    pick: impl FnOnce() -> std::result::Result<A, cudarc::cudnn::CudnnError>,
) -> Result<A> {
    if let Some(&a) = cache.lock().map_err(|_| poisoned())?.get(&key) {
        return Ok(a);
    }
    let a = pick()?;
    cache.lock().map_err(|_| poisoned())?.insert(key, a);
    Ok(a)
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("cuDNN algorithm cache: lock poisoned".into())
}

thread_local! {
    // cuDNN handles are neither Send nor Sync: one per thread and device, bound to the device's
    // Candle stream.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream())?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// Data types of the convolution: `f32`, `f64` and `bf16` (computing in `f32`).
trait ConvElem: CudnnDataType + CudaDType + DeviceRepr + ValidAsZeroBits + Copy {
    type Compute: CudnnDataType;
    const DTYPE: DType;
    fn one() -> Self;
    fn zero() -> Self;
    fn math(tf32: bool) -> sys::cudnnMathType_t;
}

impl ConvElem for f32 {
    type Compute = f32;
    const DTYPE: DType = DType::F32;
    fn one() -> Self {
        1.0
    }
    fn zero() -> Self {
        0.0
    }
    fn math(tf32: bool) -> sys::cudnnMathType_t {
        if tf32 {
            sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        }
    }
}

impl ConvElem for f64 {
    type Compute = f64;
    const DTYPE: DType = DType::F64;
    fn one() -> Self {
        1.0
    }
    fn zero() -> Self {
        0.0
    }
    fn math(_: bool) -> sys::cudnnMathType_t {
        sys::cudnnMathType_t::CUDNN_FMA_MATH
    }
}

impl ConvElem for half::bf16 {
    type Compute = f32;
    const DTYPE: DType = DType::BF16;
    fn one() -> Self {
        half::bf16::ONE
    }
    fn zero() -> Self {
        half::bf16::ZERO
    }
    fn math(_: bool) -> sys::cudnnMathType_t {
        sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
    }
}

/// The four descriptors of one convolution.
struct Descs<T: ConvElem> {
    conv: ConvDescriptor<T::Compute>,
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    y: TensorDescriptor<T>,
}

fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("conv1d: {what} {v} is too large for cuDNN")))
}

impl<T: ConvElem> Descs<T> {
    fn new(cudnn: &Arc<Cudnn>, g: &Geom, tf32: bool) -> Result<Self> {
        let mut conv = cudnn.create_conv2d::<T::Compute>(
            [0, int(g.padding, "padding")?],
            [1, int(g.stride, "stride")?],
            [1, 1],
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )?;
        conv.set_math_type(T::math(tf32))?;
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let (b, c_in, c_out) = (
            int(g.b, "batch")?,
            int(g.c_in, "channels")?,
            int(g.c_out, "channels")?,
        );
        Ok(Self {
            x: cudnn.create_4d_tensor::<T>(nchw, [b, c_in, 1, int(g.l_in, "length")?])?,
            w: cudnn.create_4d_filter::<T>(nchw, [c_out, c_in, 1, int(g.k, "kernel")?])?,
            y: cudnn.create_4d_tensor::<T>(nchw, [b, c_out, 1, int(g.l_out, "length")?])?,
            conv,
        })
    }
}

/// A workspace of `bytes` (none for zero).
fn workspace(dev: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    Ok(if bytes > 0 {
        Some(dev.alloc_zeros::<u8>(bytes)?)
    } else {
        None
    })
}

fn key<T: ConvElem>(dev: &CudaDevice, geom: Geom, tf32: bool) -> Key {
    Key {
        device: dev.id(),
        geom,
        dtype: T::DTYPE,
        tf32,
    }
}

/// The device of `s` and the descriptors of the convolution `g` on it.
fn prepare<'a, T: ConvElem>(
    s: &'a CudaStorage,
    g: &Geom,
    tf32: bool,
) -> Result<(&'a CudaDevice, Descs<T>)> {
    let dev = s.device();
    let d = Descs::<T>::new(&handle(dev)?, g, tf32)?;
    Ok((dev, d))
}

fn forward_t<T: ConvElem>(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    g: Geom,
    tf32: bool,
) -> Result<CudaStorage> {
    let (dev, d) = prepare::<T>(x, &g, tf32)?;
    let op = ConvForward {
        conv: &d.conv,
        x: &d.x,
        w: &d.w,
        y: &d.y,
    };
    let algo = algorithm(&FWD, key::<T>(dev, g, tf32), || op.pick_algorithm())?;
    let mut work = workspace(dev, op.get_workspace_size(algo)?)?;
    let (xv, wv) = (
        view::<T>(x, lx, "conv1d input")?,
        view::<T>(w, lw, "conv1d weight")?,
    );
    let mut y = dev.alloc_zeros::<T>(g.b * g.c_out * g.l_out)?;
    unsafe { op.launch(algo, work.as_mut(), (T::one(), T::zero()), &xv, &wv, &mut y) }?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

fn grad_input_t<T: ConvElem>(
    gr: &CudaStorage,
    lg: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    g: Geom,
    tf32: bool,
) -> Result<CudaStorage> {
    let (dev, d) = prepare::<T>(gr, &g, tf32)?;
    let op = ConvBackwardData {
        conv: &d.conv,
        dx: &d.x,
        w: &d.w,
        dy: &d.y,
    };
    let algo = algorithm(&BWD_DATA, key::<T>(dev, g, tf32), || op.pick_algorithm())?;
    let mut work = workspace(dev, op.get_workspace_size(algo)?)?;
    let (gv, wv) = (
        view::<T>(gr, lg, "conv1d output gradient")?,
        view::<T>(w, lw, "conv1d weight")?,
    );
    let mut dx = dev.alloc_zeros::<T>(g.b * g.c_in * g.l_in)?;
    unsafe {
        op.launch(
            algo,
            work.as_mut(),
            (T::one(), T::zero()),
            &mut dx,
            &wv,
            &gv,
        )
    }?;
    Ok(CudaStorage::wrap_cuda_slice(dx, dev.clone()))
}

fn grad_weight_t<T: ConvElem>(
    x: &CudaStorage,
    lx: &Layout,
    gr: &CudaStorage,
    lg: &Layout,
    g: Geom,
    tf32: bool,
) -> Result<CudaStorage> {
    let (dev, d) = prepare::<T>(x, &g, tf32)?;
    let op = ConvBackwardFilter {
        conv: &d.conv,
        x: &d.x,
        dw: &d.w,
        dy: &d.y,
    };
    let algo = algorithm(&BWD_FILTER, key::<T>(dev, g, tf32), || op.pick_algorithm())?;
    let mut work = workspace(dev, op.get_workspace_size(algo)?)?;
    let (xv, gv) = (
        view::<T>(x, lx, "conv1d input")?,
        view::<T>(gr, lg, "conv1d output gradient")?,
    );
    let mut dw = dev.alloc_zeros::<T>(g.c_out * g.c_in * g.k)?;
    unsafe {
        op.launch(
            algo,
            work.as_mut(),
            (T::one(), T::zero()),
            &xv,
            &mut dw,
            &gv,
        )
    }?;
    Ok(CudaStorage::wrap_cuda_slice(dw, dev.clone()))
}

/// Calls `$f::<T>` for the storages' common dtype.
macro_rules! by_dtype {
    ($op:literal, $f:ident, $a:expr, $b:expr, $($rest:expr),*) => {
        match ($a.dtype(), $b.dtype()) {
            (DType::F32, DType::F32) => $f::<f32>($a, $($rest),*),
            (DType::F64, DType::F64) => $f::<f64>($a, $($rest),*),
            (DType::BF16, DType::BF16) => $f::<half::bf16>($a, $($rest),*),
            (p, q) => bail!("{}: expects two f32, f64 or bf16 tensors on CUDA, got {p:?} and {q:?}", $op),
        }
    };
}

/// The forward convolution: x (b, c_in, l_in), w (c_out, c_in, k) -> (b, c_out, l_out).
pub(crate) fn forward(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    g: Geom,
    tf32: bool,
) -> Result<(CudaStorage, Shape)> {
    let s = by_dtype!("ecg-conv1d", forward_t, x, w, lx, w, lw, g, tf32)?;
    Ok((s, Shape::from((g.b, g.c_out, g.l_out))))
}

/// The input gradient: grad_out (b, c_out, l_out), w -> (b, c_in, l_in).
pub(crate) fn grad_input(
    gr: &CudaStorage,
    lg: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    g: Geom,
    tf32: bool,
) -> Result<(CudaStorage, Shape)> {
    let s = by_dtype!(
        "ecg-conv1d-grad-input",
        grad_input_t,
        gr,
        w,
        lg,
        w,
        lw,
        g,
        tf32
    )?;
    Ok((s, Shape::from((g.b, g.c_in, g.l_in))))
}

/// The weight gradient: x, grad_out -> (c_out, c_in, k).
pub(crate) fn grad_weight(
    x: &CudaStorage,
    lx: &Layout,
    gr: &CudaStorage,
    lg: &Layout,
    g: Geom,
    tf32: bool,
) -> Result<(CudaStorage, Shape)> {
    let s = by_dtype!(
        "ecg-conv1d-grad-weight",
        grad_weight_t,
        x,
        gr,
        lx,
        gr,
        lg,
        g,
        tf32
    )?;
    Ok((s, Shape::from((g.c_out, g.c_in, g.k))))
}
