//! CPU kernels of the 1-D convolution on dense row-major slices: the forward pass, the input
//! gradient and the weight gradient, each as im2col tiles + gemm (a plain gemm for 1x1 stride-1
//! unpadded convolutions).
//!
//! Work is split over the batch with rayon (each sample's gemms on one thread, one column buffer
//! per task) when the batch fills the pool; otherwise samples run one after another and each gemm
//! uses the whole pool. Every kernel checks its slice lengths against the geometry.
use candle_core::{Result, bail};
use rayon::prelude::*;

use super::gemm::{MatMut, MatRef, Threads, matmul};
use super::im2col::{Geom, col2im, im2col, merge_phases, split_phases, tile_cols};
use super::scalar::Scalar;

/// Column-buffer budget of one tile: half of a core's 1 MiB L2 on the target CPU (Zen 4), which
/// measured best there (64 to 128 output positions for 64 to 128 input channels, k = 17).
const TILE_BYTES: usize = 512 << 10;

/// How a kernel splits its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Output positions per im2col tile.
    pub tile: usize,
    /// Samples in parallel (gemms single-threaded) rather than samples in sequence with
    /// multi-threaded gemms.
    pub batch_parallel: bool,
}

impl Plan {
    /// The plan for `g` with elements of type `T`; `forced_tile` (tests) fixes the tile width.
    pub fn new<T>(g: &Geom, forced_tile: Option<usize>) -> Self {
        let threads = rayon::current_num_threads();
        // Whole rounds of samples per thread, or enough samples that a partial round is cheap.
        let batch_parallel =
            threads > 1 && g.b >= threads && (g.b.is_multiple_of(threads) || g.b >= 4 * threads);
        Self {
            tile: tile_cols::<T>(g, TILE_BYTES, forced_tile),
            batch_parallel,
        }
    }

    fn threads(&self) -> Threads {
        if self.batch_parallel {
            Threads::One
        } else {
            Threads::Pool
        }
    }
}

/// One task's buffers: a column tile and one sample's stride phases.
struct Scratch<T> {
    col: Vec<T>,
    ph: Vec<T>,
}

impl<T: Scalar> Scratch<T> {
    fn new() -> Self {
        Self {
            col: Vec::new(),
            ph: Vec::new(),
        }
    }
}

fn check_len(what: &str, len: usize, want: usize) -> Result<()> {
    if len != want {
        bail!("conv1d: {what} holds {len} elements, expected {want}");
    }
    Ok(())
}

/// Runs `f(sample index, output chunk, scratch)` for every sample's output chunk of `per`
/// elements, in parallel or in sequence according to `plan`.
fn for_each_sample<T, F>(out: &mut [T], per: usize, plan: &Plan, f: F) -> Result<()>
where
    T: Scalar,
    F: Fn(usize, &mut [T], &mut Scratch<T>) -> Result<()> + Sync,
{
    if per == 0 {
        return Ok(());
    }
    if plan.batch_parallel {
        out.par_chunks_mut(per)
            .enumerate()
            .try_for_each_init(Scratch::new, |scratch, (i, o)| f(i, o, scratch))
    } else {
        let mut scratch = Scratch::new();
        out.chunks_mut(per)
            .enumerate()
            .try_for_each(|(i, o)| f(i, o, &mut scratch))
    }
}

/// The forward pass: `x` (b, c_in, l_in), `w` (c_out, c_in, k) -> (b, c_out, l_out).
pub(crate) fn forward<T: Scalar>(g: &Geom, x: &[T], w: &[T], plan: &Plan) -> Result<Vec<T>> {
    check_len("input", x.len(), g.b * g.c_in * g.l_in)?;
    check_len("weight", w.len(), g.c_out * g.col_rows())?;
    let mut out = vec![T::ZERO; g.b * g.c_out * g.l_out];
    let (threads, tile, rows) = (plan.threads(), plan.tile, g.col_rows());
    let wm = MatRef::rows(w, g.c_out, rows, rows);
    for_each_sample(&mut out, g.c_out * g.l_out, plan, |i, o, sc| {
        let xb = &x[i * g.c_in * g.l_in..][..g.c_in * g.l_in];
        if g.pointwise() {
            let om = MatMut::rows(o, g.c_out, g.l_out, g.l_out);
            let xm = MatRef::rows(xb, g.c_in, g.l_in, g.l_in);
            return matmul(om, wm, xm, false, threads);
        }
        let Scratch { col, ph } = sc;
        split_phases(g, xb, ph);
        col.resize(rows * tile, T::ZERO);
        for t0 in (0..g.l_out).step_by(tile) {
            let tn = tile.min(g.l_out - t0);
            im2col(g, ph, t0, tn, col);
            let (o, rs) = (&mut o[t0..], g.l_out);
            let om = MatMut {
                data: o,
                rows: g.c_out,
                cols: tn,
                rs,
                cs: 1,
            };
            matmul(om, wm, MatRef::rows(col, rows, tn, tn), false, threads)?;
        }
        Ok(())
    })?;
    Ok(out)
}

/// The input gradient: `grad` (b, c_out, l_out), `w` (c_out, c_in, k) -> (b, c_in, l_in), that
/// is `col2im(W^T @ grad_b)` per sample (accumulated in stride phases, then merged).
pub(crate) fn grad_input<T: Scalar>(g: &Geom, grad: &[T], w: &[T], plan: &Plan) -> Result<Vec<T>> {
    check_len("output gradient", grad.len(), g.b * g.c_out * g.l_out)?;
    check_len("weight", w.len(), g.c_out * g.col_rows())?;
    let mut gx = vec![T::ZERO; g.b * g.c_in * g.l_in];
    let (threads, tile, rows) = (plan.threads(), plan.tile, g.col_rows());
    let wt = MatRef::rows(w, g.c_out, rows, rows).t();
    for_each_sample(&mut gx, g.c_in * g.l_in, plan, |i, gxb, sc| {
        let gb = &grad[i * g.c_out * g.l_out..][..g.c_out * g.l_out];
        if g.pointwise() {
            let dst = MatMut::rows(gxb, g.c_in, g.l_in, g.l_in);
            let gm = MatRef::rows(gb, g.c_out, g.l_out, g.l_out);
            return matmul(dst, wt, gm, false, threads);
        }
        let Scratch { col, ph } = sc;
        ph.clear();
        ph.resize(g.phases_size(), T::ZERO);
        col.resize(rows * tile, T::ZERO);
        for t0 in (0..g.l_out).step_by(tile) {
            let tn = tile.min(g.l_out - t0);
            let gm = MatRef {
                data: &gb[t0..],
                rows: g.c_out,
                cols: tn,
                rs: g.l_out,
                cs: 1,
            };
            matmul(MatMut::rows(col, rows, tn, tn), wt, gm, false, threads)?;
            col2im(g, col, t0, tn, ph);
        }
        merge_phases(g, ph, gxb);
        Ok(())
    })?;
    Ok(gx)
}

/// Adds one sample's weight gradient `grad_b @ col_b^T` to `acc` (c_out, c_in * k).
fn grad_weight_sample<T: Scalar>(
    g: &Geom,
    xb: &[T],
    gb: &[T],
    acc: &mut [T],
    sc: &mut Scratch<T>,
    plan: &Plan,
) -> Result<()> {
    let (threads, tile) = (plan.threads(), plan.tile);
    if g.pointwise() {
        let dst = MatMut::rows(acc, g.c_out, g.c_in, g.c_in);
        let gm = MatRef::rows(gb, g.c_out, g.l_out, g.l_out);
        return matmul(
            dst,
            gm,
            MatRef::rows(xb, g.c_in, g.l_in, g.l_in).t(),
            true,
            threads,
        );
    }
    let Scratch { col, ph } = sc;
    split_phases(g, xb, ph);
    col.resize(g.col_rows() * tile, T::ZERO);
    for t0 in (0..g.l_out).step_by(tile) {
        let tn = tile.min(g.l_out - t0);
        im2col(g, ph, t0, tn, col);
        let dst = MatMut::rows(&mut *acc, g.c_out, g.col_rows(), g.col_rows());
        let gm = MatRef {
            data: &gb[t0..],
            rows: g.c_out,
            cols: tn,
            rs: g.l_out,
            cs: 1,
        };
        matmul(
            dst,
            gm,
            MatRef::rows(col, g.col_rows(), tn, tn).t(),
            true,
            threads,
        )?;
    }
    Ok(())
}

/// The weight gradient: `x` (b, c_in, l_in), `grad` (b, c_out, l_out) -> (c_out, c_in, k), the
/// sum over samples of `grad_b @ col_b^T`.
pub(crate) fn grad_weight<T: Scalar>(g: &Geom, x: &[T], grad: &[T], plan: &Plan) -> Result<Vec<T>> {
    check_len("input", x.len(), g.b * g.c_in * g.l_in)?;
    check_len("output gradient", grad.len(), g.b * g.c_out * g.l_out)?;
    let size = g.c_out * g.col_rows();
    let (xs, gs) = (g.c_in * g.l_in, g.c_out * g.l_out);
    if !plan.batch_parallel {
        let (mut acc, mut sc) = (vec![T::ZERO; size], Scratch::new());
        for (xb, gb) in x.chunks_exact(xs).zip(grad.chunks_exact(gs)) {
            grad_weight_sample(g, xb, gb, &mut acc, &mut sc, plan)?;
        }
        return Ok(acc);
    }
    // One accumulator per rayon task, summed at the end.
    x.par_chunks_exact(xs)
        .zip(grad.par_chunks_exact(gs))
        .try_fold(
            || (vec![T::ZERO; size], Scratch::new()),
            |(mut acc, mut sc), (xb, gb)| {
                grad_weight_sample(g, xb, gb, &mut acc, &mut sc, plan)?;
                Ok::<_, candle_core::Error>((acc, sc))
            },
        )
        .map(|r| r.map(|(acc, _)| acc))
        .try_reduce(
            || vec![T::ZERO; size],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += *y;
                }
                Ok(a)
            },
        )
}
