//! Safe wrapper over the `gemm` crate's matrix product, the one place where the ops call unsafe
//! code. [`matmul`] takes strided matrix views over Rust slices, checks that every element the
//! product touches lies inside its slice and that no two destination elements share memory, and
//! only then calls `gemm::gemm`.
use candle_core::{Result, bail};

use super::scalar::Scalar;

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// A writable strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Debug)]
pub(crate) struct MatMut<'a, T> {
    pub data: &'a mut [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// Row-major view of `rows` x `cols` elements with row stride `rs` (columns contiguous).
    pub fn rows(data: &'a [T], rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose of this view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

impl<'a, T> MatMut<'a, T> {
    /// Row-major view of `rows` x `cols` elements with row stride `rs` (columns contiguous).
    pub fn rows(data: &'a mut [T], rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }
}

/// Whether the gemm may split its work over rayon's threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    /// On the calling thread only (the caller parallelises at a coarser level).
    One,
    /// On all of rayon's current pool.
    Pool,
}

/// The largest offset of a `rows` x `cols` view with strides `rs`, `cs`, or `None` on overflow.
/// Only called with `rows, cols >= 1`.
fn last_offset(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)
}

/// Checks that a view lies inside a slice of `len` elements.
fn check_bounds(
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<()> {
    match last_offset(rows, cols, rs, cs) {
        Some(last) if last < len => Ok(()),
        _ => {
            bail!("gemm: {what} view {rows}x{cols} strides ({rs}, {cs}) exceeds its {len} elements")
        }
    }
}

/// Whether the elements (i, j), i < rows, j < cols, of a view with strides `rs`, `cs` occupy
/// pairwise distinct offsets. Sufficient condition, exact for the layouts used here: the
/// dimensions of extent > 1 sorted by stride, each stride is at least the extent of the previous
/// one times its stride (and the smallest is non-zero).
fn is_injective(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    let mut dims: Vec<(usize, usize)> = [(rows, rs), (cols, cs)]
        .into_iter()
        .filter(|&(n, _)| n > 1)
        .collect();
    dims.sort_by_key(|&(_, s)| s);
    let mut span = 1usize; // offsets covered so far: a multiple of the smallest stride
    for (n, s) in dims {
        if s < span {
            return false;
        }
        span = match s.checked_mul(n) {
            Some(v) => v,
            None => return false,
        };
    }
    true
}

/// `dst = lhs @ rhs`, or `dst += lhs @ rhs` when `accumulate`, for `f32` / `f64` strided views.
///
/// Errors (never panics) when the shapes disagree, a view reaches outside its slice, or the
/// destination view maps two elements to one offset.
pub(crate) fn matmul<T: Scalar>(
    dst: MatMut<'_, T>,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    accumulate: bool,
    threads: Threads,
) -> Result<()> {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if lhs.rows != m || rhs.cols != n || rhs.rows != k {
        bail!(
            "gemm: shapes disagree: dst {}x{}, lhs {}x{}, rhs {}x{}",
            dst.rows,
            dst.cols,
            lhs.rows,
            lhs.cols,
            rhs.rows,
            rhs.cols
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    check_bounds("dst", dst.data.len(), m, n, dst.rs, dst.cs)?;
    if !is_injective(m, n, dst.rs, dst.cs) {
        bail!(
            "gemm: dst view {m}x{n} strides ({}, {}) overlaps itself",
            dst.rs,
            dst.cs
        );
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = T::ZERO;
                }
            }
        }
        return Ok(());
    }
    check_bounds("lhs", lhs.data.len(), m, k, lhs.rs, lhs.cs)?;
    check_bounds("rhs", rhs.data.len(), k, n, rhs.rs, rhs.cs)?;
    let signed = |s: usize| {
        isize::try_from(s)
            .map_err(|_| candle_core::Error::Msg(format!("gemm: stride {s} too large")))
    };
    let (d_rs, d_cs) = (signed(dst.rs)?, signed(dst.cs)?);
    let (l_rs, l_cs) = (signed(lhs.rs)?, signed(lhs.cs)?);
    let (r_rs, r_cs) = (signed(rhs.rs)?, signed(rhs.cs)?);
    let parallelism = match threads {
        Threads::Pool if rayon::current_num_threads() > 1 => {
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => gemm::Parallelism::None,
    };
    // SAFETY: `gemm::gemm` computes dst[i, j] = (accumulate ? dst[i, j] : 0) + sum_p lhs[i, p] *
    // rhs[p, j] for i < m, j < n, p < k, reading lhs at i*l_rs + p*l_cs, rhs at p*r_rs + j*r_cs
    // and writing dst at i*d_rs + j*d_cs from the given base pointers.
    // - Every such offset is in bounds: `check_bounds` verified the largest one of each view
    //   (all strides are non-negative, so the largest offset is at (rows-1, cols-1)), and
    //   m, n, k >= 1 here.
    // - `dst` is borrowed mutably, so it cannot alias `lhs` or `rhs`; `is_injective` verified
    //   that distinct (i, j) map to distinct offsets, so the threads gemm may use write disjoint
    //   elements.
    // - `T` is `f32` or `f64` (the sealed `Scalar` trait), types gemm supports (it panics on
    //   others); `alpha` is only read when `read_dst` is true, and dst is initialised memory.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            d_cs,
            d_rs,
            accumulate,
            lhs.data.as_ptr(),
            l_cs,
            l_rs,
            rhs.data.as_ptr(),
            r_cs,
            r_rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}
