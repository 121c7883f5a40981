//! Reads batches of exams from the HDF5 files of a [`DatasetIndex`] as one `(B, leads, samples)`
//! f32 buffer, channels first, as the network takes them (the files store `(samples, leads)`).
//!
//! Fast path: a contiguous, uncompressed, little-endian dataset ([`Storage::Contiguous`]) is
//! mapped into memory, and row `r` is the bytes at `offset + r * row_bytes`, transposed in
//! cache-sized blocks (and float64 narrowed to f32) straight from the page cache into the output:
//! no HDF5 call, so threads never wait on the library's global lock, and no copy into a buffer
//! first (positioned reads into a buffer, measured first, were 1.4x slower). Fallback: any other
//! layout (chunked, gzip, big-endian) is read one row at a time through the HDF5 library with a
//! hyperslab selection. Both paths decode the same little-endian bytes with the same transpose,
//! so they give bit-identical results.
//!
//! A [`BatchReader`] is `Send + Sync`: several threads may read from one reader at once (see
//! [`crate::data::prefetch`]). Each thread keeps one row-sized scratch buffer.
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::h5::{self, Dtype, Storage};
use super::index::DatasetIndex;
use super::mapped;
use crate::ids::ExamId;
use crate::{Error, Result};

/// Samples per block of the transpose: a block of rows (`BLOCK * leads` values) stays in L1
/// cache while each lead's slice of it is written out contiguously.
const BLOCK: usize = 128;

thread_local! {
    /// One row as stored, reused across calls on the same thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A batch of exams read by [`BatchReader::read`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Index positions of the exams, in batch order.
    pub positions: Vec<usize>,
    /// Their exam ids.
    pub exam_ids: Vec<ExamId>,
    /// Their ages in years.
    pub ages: Vec<f32>,
    /// The tracings, `(B, n_leads, n_samples)` row-major.
    pub data: Vec<f32>,
    /// Leads per exam (12).
    pub n_leads: usize,
    /// Samples per lead (4096).
    pub n_samples: usize,
}

impl Batch {
    /// Number of exams.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether the batch has no exams.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The `(n_leads, n_samples)` tracing of exam `i` of the batch.
    pub fn exam(&self, i: usize) -> &[f32] {
        let n = self.n_leads * self.n_samples;
        &self.data[i * n..(i + 1) * n]
    }
}

/// How one HDF5 file is read.
enum Source {
    /// The file mapped into memory: a row is transposed straight out of the page cache, with
    /// no copy into a buffer first and no system call per row.
    Mapped { map: memmap2::Mmap, offset: usize },
    /// Hyperslab reads through the HDF5 library (which serialises them on its global lock).
    Library {
        _file: hdf5::File,
        ds: hdf5::Dataset,
    },
}

struct FileSource {
    path: PathBuf,
    dtype: Dtype,
    row_bytes: usize,
    n_rows: usize,
    source: Source,
}

/// Reads batches of exams of one [`DatasetIndex`]; cheap to share between threads.
pub struct BatchReader {
    files: Vec<FileSource>,
    /// Per index position: (file, row).
    location: Vec<(u16, u32)>,
    exam_ids: Vec<ExamId>,
    ages: Vec<f32>,
    n_samples: usize,
    n_leads: usize,
    /// (exam id, position), sorted by id; built on the first lookup by id.
    by_id: OnceLock<Vec<(ExamId, u32)>>,
}

impl std::fmt::Debug for BatchReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchReader")
            .field(
                "files",
                &self.files.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("exams", &self.location.len())
            .finish()
    }
}

impl BatchReader {
    /// Opens every file of `index` (a file descriptor for contiguous datasets, the HDF5 library
    /// for the others) and copies the per-exam locations, ids and ages.
    pub fn open(index: &DatasetIndex) -> Result<Self> {
        let mut files = Vec::with_capacity(index.files.len());
        for f in &index.files {
            let info = &f.info;
            info.check_row_shape(index.n_samples, index.n_leads)?;
            let source = match info.storage {
                Storage::Contiguous { offset } => {
                    let map = mapped::map_file(&info.path, offset, info.n_rows * info.row_bytes())?;
                    Source::Mapped {
                        map,
                        offset: offset as usize,
                    }
                }
                Storage::Chunked => {
                    let file = h5::open_hdf5(&info.path)?;
                    let ds = h5::dataset(&file, &info.path, &info.traces_dset)?;
                    Source::Library { _file: file, ds }
                }
            };
            files.push(FileSource {
                path: info.path.clone(),
                dtype: info.dtype,
                row_bytes: info.row_bytes(),
                n_rows: info.n_rows,
                source,
            });
        }
        Ok(BatchReader {
            files,
            location: index.exams.iter().map(|e| (e.file, e.row)).collect(),
            exam_ids: index.exams.iter().map(|e| e.exam_id).collect(),
            ages: index.exams.iter().map(|e| e.age).collect(),
            n_samples: index.n_samples,
            n_leads: index.n_leads,
            by_id: OnceLock::new(),
        })
    }

    /// Number of exams (index positions `0..len`).
    pub fn len(&self) -> usize {
        self.location.len()
    }

    /// Whether the index has no exams.
    pub fn is_empty(&self) -> bool {
        self.location.is_empty()
    }

    /// Samples per lead.
    pub fn n_samples(&self) -> usize {
        self.n_samples
    }

    /// Leads per exam.
    pub fn n_leads(&self) -> usize {
        self.n_leads
    }

    /// Values of one exam in the output (`n_leads * n_samples`).
    pub fn exam_len(&self) -> usize {
        self.n_leads * self.n_samples
    }

    /// Whether every file is read from a memory mapping (no HDF5 library call per batch).
    pub fn all_direct(&self) -> bool {
        self.files
            .iter()
            .all(|f| matches!(f.source, Source::Mapped { .. }))
    }

    /// Reads the exams at index positions `exams` into `out` as `(B, n_leads, n_samples)`,
    /// resizing `out` to `B * n_leads * n_samples` (its allocation is reused).
    pub fn read_batch(&self, exams: &[usize], out: &mut Vec<f32>) -> Result<()> {
        let n = self.exam_len();
        if let Some(&bad) = exams.iter().find(|&&p| p >= self.location.len()) {
            return Err(Error::Dataset(format!(
                "exam position {bad} is out of range: the index has {} exams",
                self.location.len()
            )));
        }
        if out.len() != exams.len() * n {
            out.resize(exams.len() * n, 0.0);
        }
        // Visit the rows in file order (sequential on disk when the batch is sorted or dense),
        // writing each to its slot of the batch.
        let mut order: Vec<(u16, u32, u32)> = exams
            .iter()
            .enumerate()
            .map(|(slot, &p)| (self.location[p].0, self.location[p].1, slot as u32))
            .collect();
        order.sort_unstable();
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            for &(file, row, slot) in &order {
                let src = &self.files[file as usize];
                let bytes = self.row_bytes(src, row as usize, &mut scratch)?;
                let slot = slot as usize;
                transpose_into(
                    bytes,
                    src.dtype,
                    &mut out[slot * n..(slot + 1) * n],
                    self.n_samples,
                    self.n_leads,
                );
            }
            Ok(())
        })
    }

    /// [`BatchReader::read_batch`] into a new [`Batch`] that also carries ids and ages.
    pub fn read(&self, exams: &[usize]) -> Result<Batch> {
        self.read_reusing(exams.to_vec(), Vec::new())
    }

    /// Like [`BatchReader::read`], taking the positions and reusing `data`'s allocation.
    pub fn read_reusing(&self, positions: Vec<usize>, mut data: Vec<f32>) -> Result<Batch> {
        self.read_batch(&positions, &mut data)?;
        Ok(Batch {
            exam_ids: positions.iter().map(|&p| self.exam_ids[p]).collect(),
            ages: positions.iter().map(|&p| self.ages[p]).collect(),
            positions,
            data,
            n_leads: self.n_leads,
            n_samples: self.n_samples,
        })
    }

    /// The index position of exam `id`, if the index has it.
    pub fn position_of(&self, id: ExamId) -> Option<usize> {
        let by_id = self.by_id.get_or_init(|| {
            let mut v: Vec<(ExamId, u32)> = self
                .exam_ids
                .iter()
                .enumerate()
                .map(|(i, &e)| (e, i as u32))
                .collect();
            v.sort_unstable();
            v
        });
        by_id
            .binary_search_by_key(&id, |&(e, _)| e)
            .ok()
            .map(|i| by_id[i].1 as usize)
    }

    /// Reads exams by id; an id that the index does not have is an error naming it.
    pub fn read_batch_by_id(&self, ids: &[ExamId]) -> Result<Batch> {
        let positions = ids
            .iter()
            .map(|&id| {
                self.position_of(id)
                    .ok_or_else(|| Error::Dataset(format!("exam_id {id} is not in the index")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.read_reusing(positions, Vec::new())
    }

    /// Row `row` of `src` as little-endian bytes of the stored type: a slice of the mapping,
    /// or `buf` filled through the HDF5 library.
    fn row_bytes<'a>(
        &self,
        src: &'a FileSource,
        row: usize,
        buf: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        if row >= src.n_rows {
            return Err(Error::hdf5(
                &src.path,
                format!("row {row} is out of range ({} rows)", src.n_rows),
            ));
        }
        match &src.source {
            Source::Mapped { map, offset } => {
                let at = offset + row * src.row_bytes;
                Ok(&map[at..at + src.row_bytes])
            }
            Source::Library { ds, .. } => {
                h5::read_row_le_bytes_hdf5(ds, &src.path, src.dtype, row, buf)?;
                check_len(&src.path, row, buf.len(), src.row_bytes)?;
                Ok(buf.as_slice())
            }
        }
    }
}

fn check_len(path: &Path, row: usize, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::hdf5(
            path,
            format!("row {row}: read {got} bytes, expected {want}"),
        ))
    }
}

/// Transposes one stored row, `(samples, leads)` little-endian `dtype`, into `dst`
/// `(leads, samples)` f32.
pub fn transpose_into(src: &[u8], dtype: Dtype, dst: &mut [f32], n_samples: usize, n_leads: usize) {
    let f32_le = |b: &[u8; 4]| f32::from_le_bytes(*b);
    let f64_le = |b: &[u8; 8]| f64::from_le_bytes(*b) as f32;
    // The CODE lead count as a constant lets the compiler drop the bounds checks.
    match (dtype, n_leads) {
        (Dtype::F32, 12) => transpose_blocked::<4>(src, dst, n_samples, 12, f32_le),
        (Dtype::F32, _) => transpose_blocked::<4>(src, dst, n_samples, n_leads, f32_le),
        (Dtype::F64, 12) => transpose_blocked::<8>(src, dst, n_samples, 12, f64_le),
        (Dtype::F64, _) => transpose_blocked::<8>(src, dst, n_samples, n_leads, f64_le),
    }
}

/// Blocked transpose: for each block of `BLOCK` samples (in L1), each lead's run of values is
/// written contiguously. `S` is the element size and `decode` turns its bytes into f32.
#[inline(always)]
fn transpose_blocked<const S: usize>(
    src: &[u8],
    dst: &mut [f32],
    n_samples: usize,
    n_leads: usize,
    decode: impl Fn(&[u8; S]) -> f32,
) {
    let stride = n_leads * S;
    debug_assert_eq!(src.len(), n_samples * stride);
    debug_assert_eq!(dst.len(), n_samples * n_leads);
    let mut s0 = 0;
    while s0 < n_samples {
        let s1 = (s0 + BLOCK).min(n_samples);
        let rows = &src[s0 * stride..s1 * stride];
        for (lead, lane) in dst.chunks_exact_mut(n_samples).enumerate() {
            let out = &mut lane[s0..s1];
            for (x, r) in out.iter_mut().zip(rows.chunks_exact(stride)) {
                let mut b = [0u8; S];
                b.copy_from_slice(&r[lead * S..lead * S + S]);
                *x = decode(&b);
            }
        }
        s0 = s1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_and_prefetcher_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<BatchReader>();
        send::<crate::data::prefetch::Prefetcher>();
        send::<Batch>();
    }

    #[test]
    fn transpose_matches_the_definition_for_both_types_and_odd_sizes() {
        for &(l, c) in &[(4096usize, 12usize), (300, 12), (7, 3), (129, 1)] {
            let vals: Vec<f64> = (0..l * c).map(|i| (i as f64) * 0.37 - 11.0).collect();
            let b32: Vec<u8> = vals
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect();
            let b64: Vec<u8> = vals.iter().flat_map(|&v| v.to_le_bytes()).collect();
            let mut d32 = vec![0f32; l * c];
            let mut d64 = vec![0f32; l * c];
            transpose_into(&b32, Dtype::F32, &mut d32, l, c);
            transpose_into(&b64, Dtype::F64, &mut d64, l, c);
            for s in 0..l {
                for k in 0..c {
                    assert_eq!(
                        d32[k * l + s],
                        vals[s * c + k] as f32,
                        "f32 ({l},{c}) at s={s} c={k}"
                    );
                    assert_eq!(
                        d64[k * l + s],
                        vals[s * c + k] as f32,
                        "f64 ({l},{c}) at s={s} c={k}"
                    );
                }
            }
        }
    }
}
