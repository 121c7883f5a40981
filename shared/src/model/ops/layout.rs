//! Reading Candle CPU storages whatever their layout: a custom op receives each argument as a
//! storage plus a [`Layout`] (shape, strides, start offset), which may be a transposed, narrowed
//! or broadcast view. The kernels here work on dense row-major slices, so [`dense`] borrows the
//! data when the view is already contiguous and gathers it into a new buffer otherwise.
use std::borrow::Cow;

use candle_core::{Layout, Result, bail};

/// The elements of the view `layout` over `data`, in row-major order: borrowed when the view is
/// contiguous, gathered otherwise. `what` names the tensor in errors.
pub(crate) fn dense<'a, T: Copy>(
    data: &'a [T],
    layout: &Layout,
    what: &str,
) -> Result<Cow<'a, [T]>> {
    if let Some((start, end)) = layout.contiguous_offsets() {
        return match data.get(start..end) {
            Some(s) => Ok(Cow::Borrowed(s)),
            None => bail!(
                "{what}: contiguous view {start}..{end} lies outside its storage of {} elements",
                data.len()
            ),
        };
    }
    let dims = layout.dims();
    let strides = layout.stride();
    let count: usize = dims.iter().product();
    let mut out = Vec::with_capacity(count);
    if count == 0 {
        return Ok(Cow::Owned(out));
    }
    // Largest offset the view can reach; checked once so that the gather below cannot go out of
    // bounds (it still indexes with bounds checks).
    let last = dims
        .iter()
        .zip(strides)
        .try_fold(layout.start_offset(), |acc, (&d, &s)| {
            acc.checked_add((d - 1).checked_mul(s)?)
        });
    match last {
        Some(last) if last < data.len() => {}
        _ => bail!(
            "{what}: strided view {:?} / {:?} + {} lies outside its storage of {} elements",
            dims,
            strides,
            layout.start_offset(),
            data.len()
        ),
    }
    gather(data, dims, strides, layout.start_offset(), &mut out);
    Ok(Cow::Owned(out))
}

/// Appends the view (`dims`, `strides`, `offset`) of `data` to `out` in row-major order.
fn gather<T: Copy>(data: &[T], dims: &[usize], strides: &[usize], offset: usize, out: &mut Vec<T>) {
    match dims {
        [] => out.push(data[offset]),
        [n] => {
            if strides[0] == 1 {
                out.extend_from_slice(&data[offset..offset + n]);
            } else {
                out.extend((0..*n).map(|i| data[offset + i * strides[0]]));
            }
        }
        [n, rest @ ..] => {
            for i in 0..*n {
                gather(data, rest, &strides[1..], offset + i * strides[0], out);
            }
        }
    }
}
