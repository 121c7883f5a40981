//! The parameter segment's regions as f32 slices, written by one owner.
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{HEADER, Segment, padded};
use crate::{Error, Result};

/// The write access to a segment's regions, as f32 values, taken once: from then on the
/// segment's own writes are refused, so the slices lent here are written by nothing else in
/// this process (other processes map such a segment read-only).
#[derive(Debug)]
pub struct F32Regions {
    seg: Arc<Segment>,
    /// Values in each region.
    n: usize,
}

impl F32Regions {
    /// Takes the write access to `seg`, whose regions then hold `n` values each.
    pub fn take(seg: Arc<Segment>, n: usize) -> Result<Self> {
        if !seg.writable || n * 4 > seg.region {
            return Err(Error::Training(format!(
                "{}: not a writable segment with room for {n} values a region",
                seg.path.display()
            )));
        }
        if seg.taken.swap(true, Ordering::AcqRel) {
            return Err(Error::Training(format!(
                "{}: its write access was taken already",
                seg.path.display()
            )));
        }
        Ok(F32Regions { seg, n })
    }

    /// Values in each region.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the regions hold no values.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The start of region `r` (modulo the number of regions), as f32.
    fn base(&self, r: usize) -> *mut f32 {
        let r = r % self.seg.regions;
        // SAFETY: HEADER + r * padded(region) + n * 4 <= the mapping's length (`take` checked
        // n * 4 <= region); the offset is a multiple of the page size, so the pointer is
        // aligned for f32.
        unsafe {
            self.seg
                .map
                .as_mut_ptr()
                .add(HEADER + r * padded(self.seg.region))
                .cast()
        }
    }

    /// Region `r` (modulo the number of regions).
    pub fn region(&self, r: usize) -> &[f32] {
        // SAFETY: `base` holds `n` aligned f32 of the live mapping (kept by `seg`); it is
        // written only through `&mut self` (see the type's comment), so not while this borrow
        // lives.
        unsafe { std::slice::from_raw_parts(self.base(r), self.n) }
    }

    /// Region `r` to write.
    pub fn region_mut(&mut self, r: usize) -> &mut [f32] {
        // SAFETY: as `region`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.base(r), self.n) }
    }

    /// Region `read` to read and region `write` to write, at once (they must differ).
    pub fn split(&mut self, read: usize, write: usize) -> Result<(&[f32], &mut [f32])> {
        let regions = self.seg.regions;
        if read % regions == write % regions {
            return Err(Error::Training(format!(
                "region {read} cannot be read while region {write} is written: the same one"
            )));
        }
        // SAFETY: two distinct regions (checked above) of the live mapping; `&mut self` makes
        // these the only borrows.
        Ok(unsafe {
            (
                std::slice::from_raw_parts(self.base(read), self.n),
                std::slice::from_raw_parts_mut(self.base(write), self.n),
            )
        })
    }
}
