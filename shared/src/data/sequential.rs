//! Reads one HDF5 file of the CODE layout front to back, in row ranges, as the seed's
//! `evaluate.py` does (`traces[start:end]`): every row, padding included, in file order, each
//! range returned as one `(B, leads, samples)` f32 buffer, channels first, as the network takes
//! it.
//!
//! The file is described by [`TracingsFile::open`] (shape, type, ids, storage). A contiguous,
//! uncompressed, little-endian dataset is mapped into memory and its rows are transposed straight
//! out of the page cache; any other layout (chunked, compressed, big-endian) is read one range at
//! a time through the HDF5 library as a hyperslab. Both paths hand the same little-endian bytes
//! to the same [`transpose_into`], so they give bit-identical results, and float64 tracings
//! (SaMi-Trop) are narrowed to f32 exactly like the batch reader does.
use std::path::Path;

use super::h5::{self, Dtype, Storage, TracingsFile};
use super::mapped;
use super::reader::transpose_into;
use crate::{Error, Result};

/// Where the rows come from.
enum Source {
    /// The whole file mapped read-only; rows start at byte `offset`.
    Mapped { map: memmap2::Mmap, offset: usize },
    /// Hyperslab reads through the HDF5 library.
    Library {
        _file: hdf5::File,
        ds: hdf5::Dataset,
    },
}

/// A reader of consecutive row ranges of one tracings dataset.
pub struct SequentialReader {
    info: TracingsFile,
    source: Source,
}

impl std::fmt::Debug for SequentialReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequentialReader")
            .field("path", &self.info.path)
            .field("traces_dset", &self.info.traces_dset)
            .field("n_rows", &self.info.n_rows)
            .field("storage", &self.info.storage)
            .finish()
    }
}

/// Whether the HDF5 file `path` has a dataset named `name`. Errors name the file when it is
/// missing, unreadable or not HDF5.
pub fn has_dataset(path: &Path, name: &str) -> Result<bool> {
    let file = h5::open_hdf5(path)?;
    Ok(file.dataset(name).is_ok())
}

impl SequentialReader {
    /// Opens `path`, checks its `traces_dset` (rank 3, float32 or float64) and reads the ids of
    /// `ids_dset` when given (see [`TracingsFile::open`] for what is refused).
    pub fn open(path: &Path, traces_dset: &str, ids_dset: Option<&str>) -> Result<Self> {
        let info = TracingsFile::open(path, traces_dset, ids_dset)?;
        let source = match info.storage {
            Storage::Contiguous { offset } => Source::Mapped {
                map: mapped::map_file(path, offset, info.n_rows * info.row_bytes())?,
                offset: offset as usize,
            },
            Storage::Chunked => {
                let file = h5::open_hdf5(path)?;
                let ds = h5::dataset(&file, path, traces_dset)?;
                Source::Library { _file: file, ds }
            }
        };
        Ok(SequentialReader { info, source })
    }

    /// What the file holds: path, shape, type, ids, storage.
    pub fn info(&self) -> &TracingsFile {
        &self.info
    }

    /// Number of rows (exams, padding included).
    pub fn n_rows(&self) -> usize {
        self.info.n_rows
    }

    /// The ids of every row, when an id dataset was asked for.
    pub fn ids(&self) -> Option<&[i64]> {
        self.info.exam_ids.as_deref()
    }

    /// Replaces `out` with rows `start..end` as `(end - start, n_leads, n_samples)` f32,
    /// row-major. `scratch` holds the range as stored on the HDF5-library path and is reused
    /// between calls (untouched on the mapped path).
    pub fn read_rows(
        &self,
        start: usize,
        end: usize,
        out: &mut Vec<f32>,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        let info = &self.info;
        if start > end || end > info.n_rows {
            return Err(Error::hdf5(
                &info.path,
                format!(
                    "rows {start}..{end} are out of range: dataset `{}` has {} rows",
                    info.traces_dset, info.n_rows
                ),
            ));
        }
        let (row_bytes, row_len) = (info.row_bytes(), info.row_len());
        let stored: &[u8] = match &self.source {
            Source::Mapped { map, offset } => {
                &map[offset + start * row_bytes..offset + end * row_bytes]
            }
            Source::Library { ds, .. } => {
                read_range_le_bytes(ds, info, start, end, scratch)?;
                scratch.as_slice()
            }
        };
        out.clear();
        out.resize((end - start) * row_len, 0.0);
        for (src, dst) in stored
            .chunks_exact(row_bytes)
            .zip(out.chunks_exact_mut(row_len))
        {
            transpose_into(src, info.dtype, dst, info.n_samples, info.n_leads);
        }
        Ok(())
    }

    /// The ranges `[k·batch_size, min((k+1)·batch_size, n_rows))` that cover the file in order,
    /// as the seed's `ceil(n_total / batch_size)` batches; `batch_size` 0 is an error.
    pub fn ranges(&self, batch_size: usize) -> Result<Vec<std::ops::Range<usize>>> {
        if batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".to_string()));
        }
        let n = self.info.n_rows;
        Ok((0..n.div_ceil(batch_size))
            .map(|k| k * batch_size..((k + 1) * batch_size).min(n))
            .collect())
    }
}

/// Replaces `out` with rows `start..end` of a rank-3 dataset read through HDF5 as one
/// hyperslab, as little-endian bytes of the dataset's element type.
fn read_range_le_bytes(
    ds: &hdf5::Dataset,
    info: &TracingsFile,
    start: usize,
    end: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let err = |e: hdf5::Error| {
        Error::hdf5(
            &info.path,
            format!("reading rows {start}..{end} of `{}`: {e}", info.traces_dset),
        )
    };
    out.clear();
    let sel = ndarray::s![start..end, .., ..];
    match info.dtype {
        Dtype::F32 => {
            let a = ds.read_slice::<f32, _, ndarray::Ix3>(sel).map_err(err)?;
            out.extend(a.iter().flat_map(|v| v.to_le_bytes()));
        }
        Dtype::F64 => {
            let a = ds.read_slice::<f64, _, ndarray::Ix3>(sel).map_err(err)?;
            out.extend(a.iter().flat_map(|v| v.to_le_bytes()));
        }
    }
    let want = (end - start) * info.row_bytes();
    if out.len() != want {
        return Err(Error::hdf5(
            &info.path,
            format!(
                "rows {start}..{end} of `{}`: read {} bytes, expected {want}",
                info.traces_dset,
                out.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::h5write::TracingsWriter;

    /// Stored `(rows, samples, leads)` values with distinct entries.
    fn stored(rows: usize, l: usize, c: usize) -> Vec<f32> {
        (0..rows * l * c).map(|i| i as f32 * 0.25 - 3.0).collect()
    }

    fn write(dir: &Path, ids: &[i64], l: usize, c: usize) -> (std::path::PathBuf, Vec<f32>) {
        let p = dir.join("part.hdf5");
        let data = stored(ids.len(), l, c);
        let mut w = TracingsWriter::create(&p, ids.len(), l, c).unwrap();
        w.write_rows(0, ids, &data).unwrap();
        w.finish().unwrap();
        (p, data)
    }

    /// Writes the same values chunked and gzip-compressed as float64, through the library.
    fn write_chunked_f64(path: &Path, data: &[f32], shape: [usize; 3]) {
        let f = hdf5::File::create(path).unwrap();
        let v: Vec<f64> = data.iter().map(|&x| x as f64).collect();
        let arr = ndarray::Array3::from_shape_vec(shape, v).unwrap();
        f.new_dataset_builder()
            .chunk([2, shape[1], shape[2]])
            .deflate(4)
            .with_data(&arr)
            .create("signal")
            .unwrap();
    }

    fn transposed(data: &[f32], rows: std::ops::Range<usize>, l: usize, c: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for r in rows {
            for k in 0..c {
                for s in 0..l {
                    out.push(data[(r * l + s) * c + k]);
                }
            }
        }
        out
    }

    #[test]
    fn ranges_cover_every_row_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = write(dir.path(), &[5, 6, 7, 8, 0], 4, 2);
        let r = SequentialReader::open(&p, "tracings", None).unwrap();
        assert_eq!(r.ranges(2).unwrap(), vec![0..2, 2..4, 4..5]);
        assert_eq!(r.ranges(5).unwrap(), vec![0..5]);
        assert_eq!(r.ranges(9).unwrap(), vec![0..5]);
        let e = r.ranges(0).unwrap_err().to_string();
        assert!(e.contains("batch size"), "{e}");
    }

    #[test]
    fn mapped_and_library_paths_give_the_transposed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (l, c) = (6, 3);
        let ids = [11, 12, 13, 14, 0];
        let (p, data) = write(dir.path(), &ids, l, c);
        let chunked = dir.path().join("chunked.hdf5");
        write_chunked_f64(&chunked, &data, [ids.len(), l, c]);

        let mapped = SequentialReader::open(&p, "tracings", Some("exam_id")).unwrap();
        assert!(matches!(mapped.info().storage, Storage::Contiguous { .. }));
        assert_eq!(mapped.ids(), Some(&ids[..]));
        let lib = SequentialReader::open(&chunked, "signal", None).unwrap();
        assert_eq!(lib.info().storage, Storage::Chunked);
        assert_eq!(lib.info().dtype, Dtype::F64);
        assert_eq!(lib.ids(), None);

        let (mut a, mut b, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
        for range in [0..2, 2..5, 4..5, 3..3] {
            mapped
                .read_rows(range.start, range.end, &mut a, &mut scratch)
                .unwrap();
            lib.read_rows(range.start, range.end, &mut b, &mut scratch)
                .unwrap();
            let want = transposed(&data, range.clone(), l, c);
            assert_eq!(a, want, "mapped rows {range:?}");
            assert_eq!(b, want, "library rows {range:?}");
        }
    }

    #[test]
    fn out_of_range_rows_and_missing_datasets_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = write(dir.path(), &[1, 2], 4, 2);
        let r = SequentialReader::open(&p, "tracings", None).unwrap();
        let e = r
            .read_rows(1, 3, &mut Vec::new(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("part.hdf5") && e.contains("rows 1..3"), "{e}");
        let e = SequentialReader::open(&p, "signals", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("part.hdf5") && e.contains("no dataset `signals`"),
            "{e}"
        );
        assert!(has_dataset(&p, "exam_id").unwrap());
        assert!(!has_dataset(&p, "ids").unwrap());
        let e = has_dataset(&dir.path().join("nope.hdf5"), "exam_id")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.hdf5"), "{e}");
    }
}
