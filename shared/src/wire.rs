//! Float vectors as they travel between coordinator and workers: little-endian IEEE-754 bytes
//! cut into chunks with their byte offsets, and the assembler that puts received chunks back
//! into a vector, refusing any chunk that is out of order, misaligned, or beyond the announced
//! length. The conversions are plain memory copies (the in-memory layout of `f32` on the
//! little-endian machines we build for is the wire layout).
use bytes::Bytes;

#[cfg(target_endian = "big")]
compile_error!("the wire format is little-endian: big-endian hosts would need a byte swap here");

use crate::{Error, Result};

/// `all` (little-endian floats, as [`f32_bytes`] makes them) cut into chunks of at most
/// `chunk_bytes` bytes (a multiple of 4), with the byte offset of each. The chunks are views of
/// `all` (no copy).
pub fn f32_chunks(all: Bytes, chunk_bytes: usize) -> Vec<(u64, Bytes)> {
    let per = (chunk_bytes / 4).max(1) * 4;
    (0..all.len())
        .step_by(per)
        .map(|at| (at as u64, all.slice(at..(at + per).min(all.len()))))
        .collect()
}

/// `values` as one block of little-endian bytes (no copy).
pub fn f32_bytes(values: Vec<f32>) -> Bytes {
    Bytes::from_owner(F32Bytes(values))
}

/// Adds the little-endian floats `data` to `out`, value by value (`data` has `out.len()`).
pub fn add_le_f32(out: &mut [f32], data: &[u8]) {
    for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
        *o += f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Copies the little-endian floats `data` into `out` (`data` has `out.len()`).
pub fn copy_le_f32(out: &mut [f32], data: &[u8]) {
    bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(data);
}

/// A float vector seen as its bytes.
struct F32Bytes(Vec<f32>);

impl AsRef<[u8]> for F32Bytes {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// Receives the chunks of one vector of a known length, in order.
#[derive(Debug)]
pub struct F32Assembler {
    /// `expected` values, the first `filled` of them received.
    values: Vec<f32>,
    filled: usize,
    expected: usize,
    what: &'static str,
}

impl F32Assembler {
    /// An assembler for `n` values into `buffer`, reused as it is: a buffer of `n` values from
    /// an earlier vector is overwritten in place, without an allocation or a fill.
    pub fn new(n: usize, mut buffer: Vec<f32>, what: &'static str) -> Self {
        buffer.resize(n, 0.0);
        F32Assembler {
            values: buffer,
            filled: 0,
            expected: n,
            what,
        }
    }

    /// Appends the chunk at byte `offset`; it must start where the previous one ended.
    pub fn push(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.push_with(offset, data.len(), |to| {
            to.copy_from_slice(data);
            Ok(())
        })
    }

    /// Appends a chunk of `len` bytes at byte `offset`, written by `fill` in place (as
    /// [`F32Assembler::push`] checks it).
    pub fn push_with(
        &mut self,
        offset: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let at = (self.filled * 4) as u64;
        if offset != at {
            return Err(Error::Training(format!(
                "{}: chunk at byte {offset}, expected byte {at}",
                self.what
            )));
        }
        if !len.is_multiple_of(4) || self.filled + len / 4 > self.expected {
            return Err(Error::Training(format!(
                "{}: a chunk of {len} bytes at byte {offset} does not fit {} values",
                self.what, self.expected
            )));
        }
        let at = self.filled;
        fill(bytemuck::cast_slice_mut::<f32, u8>(
            &mut self.values[at..at + len / 4],
        ))?;
        self.filled += len / 4;
        Ok(())
    }

    /// Values received so far.
    pub fn received(&self) -> usize {
        self.filled
    }

    /// The vector, once every value has arrived.
    pub fn finish(self) -> Result<Vec<f32>> {
        if self.filled != self.expected {
            return Err(Error::Training(format!(
                "{}: {} of {} values arrived",
                self.what, self.filled, self.expected
            )));
        }
        Ok(self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_exactly_and_bad_chunks_are_refused() {
        let v: Vec<f32> = (0..1001).map(|i| i as f32 * 0.5 - 3.0).collect();
        let chunks = f32_chunks(f32_bytes(v.clone()), 400);
        assert_eq!(chunks.len(), 11);
        assert!(chunks.iter().all(|(_, b)| b.len() <= 400));
        let mut a = F32Assembler::new(v.len(), Vec::new(), "test");
        for (off, b) in &chunks {
            a.push(*off, b).expect("in order");
        }
        assert_eq!(a.finish().expect("complete"), v);

        let mut a = F32Assembler::new(v.len(), Vec::new(), "test");
        let err = a
            .push(chunks[1].0, &chunks[1].1)
            .expect_err("skips a chunk");
        assert!(err.to_string().contains("expected byte 0"), "{err}");
        a.push(0, &[1, 2, 3]).expect_err("misaligned");
        let mut short = F32Assembler::new(2, Vec::new(), "test");
        short.push(0, &[0; 12]).expect_err("too long");
        short.push(0, &[0; 4]).expect("fits");
        let err = short.finish().expect_err("incomplete");
        assert!(err.to_string().contains("1 of 2"), "{err}");

        // A buffer of an earlier vector is overwritten in place; a chunk whose fill fails
        // leaves the position where it was.
        let old = vec![7.0f32; v.len()];
        let ptr = old.as_ptr();
        let mut a = F32Assembler::new(v.len(), old, "test");
        a.push_with(0, 400, |_| Err(Error::Training("torn".into())))
            .expect_err("the fill failed");
        assert_eq!(a.received(), 0);
        for (off, b) in &chunks {
            a.push(*off, b).expect("in order");
        }
        let again = a.finish().expect("complete");
        assert_eq!(again, v);
        assert_eq!(again.as_ptr(), ptr, "no new allocation");
    }
}
