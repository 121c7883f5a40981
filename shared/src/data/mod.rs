//! The CODE-format dataset layer.
//!
//! Layout:
//! - [`csv`]: the exams table, columns by name.
//! - [`h5`]: HDF5 files of the CODE layout: inspection (shape, dtype, contiguous offset) and the
//!   reader side; [`h5write`]: the writer used by the synthetic generator and the tests.
//! - [`index`]: the join of CSV and HDF5 by `exam_id`, its report and its fingerprint.
//! - [`reader`]: batches of exams as `(B, 12, 4096)` f32, straight from the page cache (memory
//!   mapping) where the layout allows.
//! - [`prefetch`]: a prefetching iterator over batches, on its own threads.

pub mod csv;
mod csv_rows;
pub mod h5;
pub mod h5write;
pub mod index;
mod mapped;
pub mod prefetch;
pub mod reader;
pub mod sequential;
