//! Training-mode batch norm as one Candle custom op: the batch statistics, the normalisation and
//! the affine map in two passes over the activations (and the backward in two more), instead of
//! the dozen element-wise passes the same formula takes in Candle ops. Channels are processed in
//! parallel (rayon); sums are accumulated in `f64`.
//!
//! Forward, per channel over N = batch x length values: `mean`, biased `var`,
//! `y = (x - mean) / sqrt(var + eps) * w + b`. Backward with `xhat = (x - mean) * invstd`:
//! `db = sum g`, `dw = sum g xhat`, `dx = w invstd (g - db / N - xhat dw / N)`.
use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Per-channel statistics of one batch: mean and biased variance.
#[derive(Clone, Debug, Default)]
pub struct ChannelStats {
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Biased variance per channel (divided by N).
    pub var: Vec<f64>,
}

type Shared<T> = Arc<Mutex<Option<T>>>;

fn take<T>(slot: &Shared<T>, what: &str) -> Result<T> {
    slot.lock()
        .map_err(|_| candle_core::Error::Msg(format!("{what}: lock poisoned")))?
        .take()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: not computed")))
}

fn put<T>(slot: &Shared<T>, value: T) {
    if let Ok(mut g) = slot.lock() {
        *g = Some(value);
    }
}

/// `f32` or `f64` activations.
trait Float: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn storage(v: Vec<Self>) -> CpuStorage;
}

impl Float for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
}

impl Float for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(v)
    }
}

fn contiguous<'a, T>(data: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) if b <= data.len() => Ok(&data[a..b]),
        _ => bail!("batch norm: {what} must be contiguous"),
    }
}

/// Applies `f(c, row)` to every (batch, channel) row of length `l` of `data`, in parallel over
/// channels, and collects one result per channel.
fn per_channel<T: Sync, R: Send>(
    data: &[T],
    c: usize,
    l: usize,
    f: impl Fn(usize, &mut dyn Iterator<Item = &[T]>) -> R + Sync,
) -> Vec<R> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut rows = data.chunks_exact(l).skip(ch).step_by(c);
            f(ch, &mut rows)
        })
        .collect()
}

/// The body of `cpu_fwd` for three contiguous f32 (or f64) arguments: (x, a, b) -> self.run.
macro_rules! dispatch3 {
    ($op:expr, $s1:expr, $l1:expr, $s2:expr, $l2:expr, $s3:expr, $l3:expr, $n2:literal, $n3:literal) => {
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(x), CpuStorage::F32(a), CpuStorage::F32(b)) => $op.run(
                contiguous(x, $l1, "input")?,
                $l1,
                contiguous(a, $l2, $n2)?,
                contiguous(b, $l3, $n3)?,
            ),
            (CpuStorage::F64(x), CpuStorage::F64(a), CpuStorage::F64(b)) => $op.run(
                contiguous(x, $l1, "input")?,
                $l1,
                contiguous(a, $l2, $n2)?,
                contiguous(b, $l3, $n3)?,
            ),
            (x, _, _) => bail!(
                "{}: expects f32 or f64 tensors, got {:?}",
                $op.name(),
                x.dtype()
            ),
        }
    };
}

#[derive(Clone, Debug)]
struct BnTrain {
    eps: f64,
    stats: Shared<ChannelStats>,
}

impl BnTrain {
    fn run<T: Float>(&self, x: &[T], lx: &Layout, w: &[T], b: &[T]) -> Result<(CpuStorage, Shape)> {
        let (nb, c, l) = lx.shape().dims3()?;
        let n = (nb * l) as f64;
        let moments = per_channel(x, c, l, |_, rows| {
            let rows: Vec<&[T]> = rows.collect();
            let sum: f64 = rows.iter().flat_map(|r| r.iter()).map(|v| v.to_f64()).sum();
            let mean = sum / n;
            let ss: f64 = rows
                .iter()
                .flat_map(|r| r.iter())
                .map(|v| (v.to_f64() - mean).powi(2))
                .sum();
            (mean, ss / n)
        });
        let (mean, var): (Vec<f64>, Vec<f64>) = moments.into_iter().unzip();
        let coef: Vec<(T, T)> = (0..c)
            .map(|ch| {
                let invstd = 1.0 / (var[ch] + self.eps).sqrt();
                let scale = w[ch].to_f64() * invstd;
                (
                    T::from_f64(scale),
                    T::from_f64(b[ch].to_f64() - mean[ch] * scale),
                )
            })
            .collect();
        let mut y: Vec<T> = x.to_vec();
        y.par_chunks_mut(l.max(1)).enumerate().for_each(|(r, row)| {
            let (s, t) = coef[r % c];
            for v in row {
                *v = T::from_f64(v.to_f64() * s.to_f64() + t.to_f64());
            }
        });
        put(&self.stats, ChannelStats { mean, var });
        Ok((T::storage(y), Shape::from((nb, c, l))))
    }
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "ecg-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch3!(self, s1, l1, s2, l2, s3, l3, "weight", "bias")
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = self
            .stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch norm: lock poisoned".into()))?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("batch norm: no forward statistics".into()))?;
        let sums = Arc::new(Mutex::new(None));
        let op = BnTrainGrad {
            eps: self.eps,
            stats,
            sums: Arc::clone(&sums),
        };
        let dx = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        let (dw, db): (Vec<f64>, Vec<f64>) = take(&sums, "batch norm gradient")?;
        let c = dw.len();
        let dw = Tensor::from_vec(dw, c, x.device())?.to_dtype(x.dtype())?;
        let db = Tensor::from_vec(db, c, x.device())?.to_dtype(x.dtype())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

#[derive(Clone, Debug)]
struct BnTrainGrad {
    eps: f64,
    stats: ChannelStats,
    sums: Shared<(Vec<f64>, Vec<f64>)>,
}

impl BnTrainGrad {
    fn run<T: Float>(&self, x: &[T], lx: &Layout, w: &[T], g: &[T]) -> Result<(CpuStorage, Shape)> {
        let (nb, c, l) = lx.shape().dims3()?;
        let n = (nb * l) as f64;
        let invstd: Vec<f64> = self
            .stats
            .var
            .iter()
            .map(|v| 1.0 / (v + self.eps).sqrt())
            .collect();
        let mean = &self.stats.mean;
        // Per channel: sum g and sum g * xhat, reading x and g row by row.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut sg, mut sgx) = (0.0, 0.0);
                for bi in 0..nb {
                    let at = (bi * c + ch) * l;
                    for (xv, gv) in x[at..at + l].iter().zip(&g[at..at + l]) {
                        let gv = gv.to_f64();
                        sg += gv;
                        sgx += gv * (xv.to_f64() - mean[ch]) * invstd[ch];
                    }
                }
                (sg, sgx)
            })
            .collect();
        let mut dx: Vec<T> = vec![T::from_f64(0.0); x.len()];
        dx.par_chunks_mut(l.max(1))
            .enumerate()
            .for_each(|(r, row)| {
                let ch = r % c;
                let at = r * l;
                let k = w[ch].to_f64() * invstd[ch];
                let (db_n, dw_n) = (sums[ch].0 / n, sums[ch].1 / n);
                for (i, v) in row.iter_mut().enumerate() {
                    let xhat = (x[at + i].to_f64() - mean[ch]) * invstd[ch];
                    *v = T::from_f64(k * (g[at + i].to_f64() - db_n - xhat * dw_n));
                }
            });
        put(
            &self.sums,
            sums.into_iter().map(|(sg, sgx)| (sgx, sg)).unzip(),
        );
        Ok((T::storage(dx), Shape::from((nb, c, l))))
    }
}

impl CustomOp3 for BnTrainGrad {
    fn name(&self) -> &'static str {
        "ecg-batch-norm-train-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch3!(self, s1, l1, s2, l2, s3, l3, "weight", "gradient")
    }
}

/// Training-mode batch norm of `x` (B, C, L) with scale `w` (C) and shift `b` (C):
/// differentiable in all three, and returns the batch's per-channel statistics.
pub fn batch_norm_train(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
) -> Result<(Tensor, ChannelStats)> {
    let (_, c, _) = x.dims3()?;
    if w.dims() != [c] || b.dims() != [c] {
        bail!(
            "batch norm: {c} channels but weight {:?} and bias {:?}",
            w.dims(),
            b.dims()
        );
    }
    let stats = Arc::new(Mutex::new(None));
    let op = BnTrain {
        eps,
        stats: Arc::clone(&stats),
    };
    let y = x
        .contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, op)?;
    let s = stats
        .lock()
        .map_err(|_| candle_core::Error::Msg("batch norm: lock poisoned".into()))?
        .clone()
        .ok_or_else(|| candle_core::Error::Msg("batch norm: no statistics".into()))?;
    Ok((y, s))
}
