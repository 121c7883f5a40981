//! The geometry of a 1-D convolution and its column ("im2col") matrix, built one tile of output
//! positions at a time.
//!
//! For one sample `x` (C_in, L), the column matrix has a row per (input channel c, tap j) and a
//! column per output position t: `col[c * K + j, t] = x[c, t * stride + j - padding]`, zero where
//! that index falls in the padding. The convolution is then `W (C_out, C_in * K) @ col`, and the
//! input gradient is `col2im(W^T @ grad)`. Tiles of output positions keep the column buffer small
//! (a few hundred KiB) instead of materialising (C_in * K, L_out) for the whole batch.
//!
//! Each sample is first split into its zero-padded stride phases (phase r holds the padded
//! positions r, r + stride, r + 2 stride, ...): every row of the column matrix is then one
//! contiguous run of one phase, so building a tile is a series of plain copies and its adjoint a
//! series of contiguous additions, whatever the stride and padding. For stride 1 the single phase
//! is the zero-padded sample.
use candle_core::{Result, bail};

use super::scalar::Scalar;

/// Sizes of a 1-D convolution `x (b, c_in, l_in) * w (c_out, c_in, k) -> (b, c_out, l_out)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Geom {
    pub b: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub l_in: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub l_out: usize,
}

impl Geom {
    /// Validates the sizes and derives `l_out = (l_in + 2 padding - k) / stride + 1`.
    pub fn new(
        (b, c_in, l_in): (usize, usize, usize),
        (c_out, k): (usize, usize),
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        if stride == 0 {
            bail!("conv1d: stride must be at least 1");
        }
        if c_in == 0 || c_out == 0 || k == 0 || l_in == 0 {
            bail!("conv1d: empty dimension: c_in {c_in}, c_out {c_out}, kernel {k}, length {l_in}");
        }
        let Some(span) = padding.checked_mul(2).and_then(|p| p.checked_add(l_in)) else {
            bail!("conv1d: padding {padding} is too large");
        };
        if span < k {
            bail!("conv1d: kernel {k} is longer than the padded input ({l_in} + 2 x {padding})");
        }
        let l_out = (span - k) / stride + 1;
        Ok(Self {
            b,
            c_in,
            c_out,
            l_in,
            k,
            stride,
            padding,
            l_out,
        })
    }

    /// A 1x1, stride-1, unpadded convolution: the column matrix is the input itself.
    pub fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.padding == 0
    }

    /// Rows of the column matrix: `c_in * k`.
    pub fn col_rows(&self) -> usize {
        self.c_in * self.k
    }

    /// Positions per phase of the padded input: `ceil((l_in + 2 padding) / stride)`.
    pub fn phase_len(&self) -> usize {
        (self.l_in + 2 * self.padding).div_ceil(self.stride)
    }

    /// Elements of one sample's phase buffer: `stride * c_in * phase_len`.
    pub fn phases_size(&self) -> usize {
        self.stride * self.c_in * self.phase_len()
    }
}

/// Output positions per tile: the widest tile whose column buffer stays within `budget_bytes`
/// (at least 16 positions), then evened out over the tiles and rounded up to a multiple of 16.
/// `forced` (tests) overrides it.
pub(crate) fn tile_cols<T>(g: &Geom, budget_bytes: usize, forced: Option<usize>) -> usize {
    if let Some(t) = forced {
        return t.clamp(1, g.l_out.max(1));
    }
    let per_col = g.col_rows() * std::mem::size_of::<T>();
    let max_cols = (budget_bytes / per_col.max(1)).max(16);
    if g.l_out <= max_cols {
        return g.l_out.max(1);
    }
    let tiles = g.l_out.div_ceil(max_cols);
    g.l_out.div_ceil(tiles).next_multiple_of(16).min(g.l_out)
}

/// Splits one sample `x` (c_in, l_in) into its zero-padded stride phases: `ph[r][c][u]` is the
/// padded input at position `u * stride + r`, i.e. `x[c, u * stride + r - padding]` or zero.
/// Every row of the column matrix is then a contiguous run of one phase: tap `j` at output `t`
/// reads phase `j % stride` at `t + j / stride`.
pub(crate) fn split_phases<T: Scalar>(g: &Geom, x: &[T], ph: &mut Vec<T>) {
    let (s, n) = (g.stride, g.phase_len());
    ph.clear();
    ph.resize(g.phases_size(), T::ZERO);
    for r in 0..s {
        // u * s + r - padding in 0..l_in  <=>  u in lo..hi
        let lo = g.padding.saturating_sub(r).div_ceil(s);
        let hi = (g.l_in + g.padding).saturating_sub(r).div_ceil(s);
        if hi <= lo {
            continue; // the phase lies wholly in the padding
        }
        for (c, xr) in x.chunks_exact(g.l_in).enumerate().take(g.c_in) {
            let dst = &mut ph[(r * g.c_in + c) * n..][lo..hi];
            let first = lo * s + r - g.padding;
            if s == 1 {
                dst.copy_from_slice(&xr[first..first + dst.len()]);
            } else {
                for (d, v) in dst.iter_mut().zip(xr[first..].iter().step_by(s)) {
                    *d = *v;
                }
            }
        }
    }
}

/// The adjoint of [`split_phases`]: writes `gx[c, i] = ph[(i + padding) % stride][c][(i +
/// padding) / stride]` for one sample's input gradient `gx` (c_in, l_in), dropping the padding.
pub(crate) fn merge_phases<T: Scalar>(g: &Geom, ph: &[T], gx: &mut [T]) {
    let (s, n) = (g.stride, g.phase_len());
    for r in 0..s {
        let lo = g.padding.saturating_sub(r).div_ceil(s);
        let hi = (g.l_in + g.padding).saturating_sub(r).div_ceil(s);
        if hi <= lo {
            continue;
        }
        for (c, gr) in gx.chunks_exact_mut(g.l_in).enumerate().take(g.c_in) {
            let src = &ph[(r * g.c_in + c) * n..][lo..hi];
            let first = lo * s + r - g.padding;
            if s == 1 {
                gr[first..first + src.len()].copy_from_slice(src);
            } else {
                for (d, v) in gr[first..].iter_mut().step_by(s).zip(src) {
                    *d = *v;
                }
            }
        }
    }
}

/// Fills `col` (row-major `c_in * k` x `tn`) with the column matrix of one sample for output
/// positions `t0 .. t0 + tn`, from the sample's phases `ph` ([`split_phases`]).
pub(crate) fn im2col<T: Scalar>(g: &Geom, ph: &[T], t0: usize, tn: usize, col: &mut [T]) {
    let n = g.phase_len();
    for (row, dst) in col.chunks_exact_mut(tn).enumerate().take(g.col_rows()) {
        let (c, j) = (row / g.k, row % g.k);
        let start = ((j % g.stride) * g.c_in + c) * n + t0 + j / g.stride;
        dst.copy_from_slice(&ph[start..start + tn]);
    }
}

/// Adds the column matrix `col` (row-major `c_in * k` x `tn`, output positions `t0 .. t0 + tn`)
/// onto the phases `ph` it was read from: the adjoint of [`im2col`]. [`merge_phases`] then turns
/// the phases into the input gradient.
pub(crate) fn col2im<T: Scalar>(g: &Geom, col: &[T], t0: usize, tn: usize, ph: &mut [T]) {
    let n = g.phase_len();
    for (row, src) in col.chunks_exact(tn).enumerate().take(g.col_rows()) {
        let (c, j) = (row / g.k, row % g.k);
        let start = ((j % g.stride) * g.c_in + c) * n + t0 + j / g.stride;
        for (d, v) in ph[start..start + tn].iter_mut().zip(src) {
            *d += *v;
        }
    }
}
