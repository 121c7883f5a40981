//! Inspection of one HDF5 file of the CODE layout: a `tracings` dataset (N, samples, leads) of
//! float32 or float64 and, optionally, an `exam_id` dataset (N,) of integers in the same row
//! order (dataset names are configurable). [`TracingsFile::open`] checks the shape and the types
//! and finds out whether rows can be read directly from the file's bytes (a contiguous,
//! uncompressed, little-endian dataset: [`Storage::Contiguous`]) or need the HDF5 library
//! ([`Storage::Chunked`]).
//!
//! Every error names the file and what is wrong with it: not an HDF5 file, truncated, a missing
//! dataset (listing the datasets that exist), a wrong rank, shape or type, or an id dataset whose
//! length differs from the number of tracings.
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hdf5::types::{FloatSize, TypeDescriptor};

use crate::{Error, Result};

/// Element type of a tracings dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 32-bit IEEE float (CODE-15%).
    F32,
    /// 64-bit IEEE float (SaMi-Trop); converted to f32 when read.
    F64,
}

impl Dtype {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }

    /// A short name (`f32`, `f64`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
}

/// How the rows of a tracings dataset are stored, which decides how they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// One contiguous, unfiltered, little-endian block starting at byte `offset` of the file:
    /// row `r` is at `offset + r * row_bytes`, read straight from the file's bytes.
    Contiguous {
        /// Byte offset of row 0 in the file.
        offset: u64,
    },
    /// Anything else (chunked, compressed, big-endian, not yet allocated): read through the
    /// HDF5 library with hyperslab selections.
    Chunked,
}

/// What an HDF5 file of the CODE layout holds, as found by [`TracingsFile::open`].
#[derive(Debug, Clone, PartialEq)]
pub struct TracingsFile {
    /// The file.
    pub path: PathBuf,
    /// Name of the tracings dataset.
    pub traces_dset: String,
    /// Number of rows (exams, padding included).
    pub n_rows: usize,
    /// Samples per lead (4096 in CODE).
    pub n_samples: usize,
    /// Leads (12 in CODE).
    pub n_leads: usize,
    /// Element type of the tracings.
    pub dtype: Dtype,
    /// The exam id of every row, when an id dataset was asked for.
    pub exam_ids: Option<Vec<i64>>,
    /// Where the rows are.
    pub storage: Storage,
}

/// The 8-byte signature that starts an HDF5 superblock.
const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

impl TracingsFile {
    /// Opens `path` and describes its `traces_dset` (rank 3, float32 or float64) and, when
    /// `ids_dset` is given, reads the exam ids (any integer type, or floats holding integers).
    pub fn open(path: &Path, traces_dset: &str, ids_dset: Option<&str>) -> Result<Self> {
        let file = open_hdf5(path)?;
        let ds = dataset(&file, path, traces_dset)?;
        let shape = ds.shape();
        if shape.len() != 3 {
            return Err(Error::hdf5(
                path,
                format!(
                    "dataset `{traces_dset}` has shape {shape:?}: expected 3 dimensions \
                     (exams, samples, leads)"
                ),
            ));
        }
        let dtype_err = |what: String| {
            Error::hdf5(
                path,
                format!("dataset `{traces_dset}` has type {what}: expected float32 or float64"),
            )
        };
        let h5type = ds
            .dtype()
            .map_err(|e| Error::hdf5(path, format!("dataset `{traces_dset}`: {e}")))?;
        let dtype = match h5type.to_descriptor() {
            Ok(TypeDescriptor::Float(FloatSize::U4)) => Dtype::F32,
            Ok(TypeDescriptor::Float(FloatSize::U8)) => Dtype::F64,
            Ok(other) => return Err(dtype_err(other.to_string())),
            Err(e) => return Err(dtype_err(e.to_string())),
        };
        let little_endian = h5type.byte_order() == hdf5::datatype::ByteOrder::LittleEndian;
        let (n_rows, n_samples, n_leads) = (shape[0], shape[1], shape[2]);
        let plain = ds.layout() == hdf5::dataset::Layout::Contiguous && ds.filters().is_empty();
        let storage = match ds.offset() {
            Some(offset) if plain && little_endian => Storage::Contiguous { offset },
            _ => Storage::Chunked,
        };
        if let Storage::Contiguous { offset } = storage {
            let need = offset + (n_rows * n_samples * n_leads * dtype.size()) as u64;
            let len = std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .len();
            if len < need {
                return Err(Error::hdf5(
                    path,
                    format!(
                        "truncated file: dataset `{traces_dset}` ends at byte {need} but the \
                         file has {len} bytes"
                    ),
                ));
            }
        }
        let exam_ids = match ids_dset {
            None => None,
            Some(name) => Some(read_ids(&file, path, name, n_rows)?),
        };
        Ok(TracingsFile {
            path: path.to_path_buf(),
            traces_dset: traces_dset.to_string(),
            n_rows,
            n_samples,
            n_leads,
            dtype,
            exam_ids,
            storage,
        })
    }

    /// [`TracingsFile::open`], then refuses a row shape other than (`n_samples`, `n_leads`).
    pub fn open_expecting(
        path: &Path,
        traces_dset: &str,
        ids_dset: Option<&str>,
        n_samples: usize,
        n_leads: usize,
    ) -> Result<Self> {
        let f = Self::open(path, traces_dset, ids_dset)?;
        f.check_row_shape(n_samples, n_leads)?;
        Ok(f)
    }

    /// Refuses a row shape other than (`n_samples`, `n_leads`).
    pub fn check_row_shape(&self, n_samples: usize, n_leads: usize) -> Result<()> {
        if (self.n_samples, self.n_leads) != (n_samples, n_leads) {
            return Err(Error::hdf5(
                &self.path,
                format!(
                    "dataset `{}` has shape ({}, {}, {}): expected (N, {n_samples}, {n_leads}) \
                     (exams, samples, leads)",
                    self.traces_dset, self.n_rows, self.n_samples, self.n_leads
                ),
            ));
        }
        Ok(())
    }

    /// Values in one row (`n_samples * n_leads`).
    pub fn row_len(&self) -> usize {
        self.n_samples * self.n_leads
    }

    /// Bytes of one row as stored (`row_len * dtype.size()`).
    pub fn row_bytes(&self) -> usize {
        self.row_len() * self.dtype.size()
    }

    /// The base name of the file (`exams_part0.hdf5`).
    pub fn base_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Reads one row as stored, (samples, leads) row-major, each value as little-endian bytes of
    /// its own type. Meant for a few rows (checks, fingerprints); batches go through
    /// [`crate::data::reader::BatchReader`].
    pub fn read_row_le_bytes(&self, row: usize) -> Result<Vec<u8>> {
        if row >= self.n_rows {
            return Err(Error::hdf5(
                &self.path,
                format!(
                    "row {row} is out of range: dataset `{}` has {} rows",
                    self.traces_dset, self.n_rows
                ),
            ));
        }
        match self.storage {
            Storage::Contiguous { offset } => {
                let f = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
                let mut buf = vec![0u8; self.row_bytes()];
                let at = offset + (row * self.row_bytes()) as u64;
                f.read_exact_at(&mut buf, at)
                    .map_err(|e| row_read_error(&self.path, row, e))?;
                Ok(buf)
            }
            Storage::Chunked => {
                let file = open_hdf5(&self.path)?;
                let ds = dataset(&file, &self.path, &self.traces_dset)?;
                let mut buf = Vec::with_capacity(self.row_bytes());
                read_row_le_bytes_hdf5(&ds, &self.path, self.dtype, row, &mut buf)?;
                Ok(buf)
            }
        }
    }
}

/// Opens an HDF5 file read-only, telling "not an HDF5 file" and "truncated" apart.
pub(crate) fn open_hdf5(path: &Path) -> Result<hdf5::File> {
    let probe = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if !has_hdf5_signature(&probe) {
        return Err(Error::hdf5(
            path,
            "not an HDF5 file (no HDF5 signature found)",
        ));
    }
    hdf5::File::open(path).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("truncated") {
            Error::hdf5(
                path,
                format!("truncated HDF5 file (was it copied completely?): {msg}"),
            )
        } else {
            Error::hdf5(
                path,
                format!("cannot open as HDF5 (damaged or truncated?): {msg}"),
            )
        }
    })
}

/// The superblock signature is at byte 0, 512, 1024, 2048, ... (after an optional user block).
fn has_hdf5_signature(f: &std::fs::File) -> bool {
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut at = 0u64;
    let mut sig = [0u8; 8];
    while at + 8 <= len {
        if f.read_exact_at(&mut sig, at).is_ok() && &sig == HDF5_SIGNATURE {
            return true;
        }
        at = if at == 0 { 512 } else { at * 2 };
    }
    false
}

/// Opens dataset `name`, or fails listing the datasets that the file has.
pub(crate) fn dataset(file: &hdf5::File, path: &Path, name: &str) -> Result<hdf5::Dataset> {
    file.dataset(name).map_err(|e| {
        let mut names = Vec::new();
        list_datasets(file, &mut names, 0);
        if names.is_empty() {
            // A file without any dataset is more likely damaged than written without them.
            return Error::hdf5(
                path,
                format!(
                    "no dataset `{name}`, and no dataset can be listed: is the file damaged? \
                     ({e})"
                ),
            );
        }
        Error::hdf5(
            path,
            format!(
                "no dataset `{name}` (datasets in the file: {})",
                names.join(", ")
            ),
        )
    })
}

fn list_datasets(group: &hdf5::Group, out: &mut Vec<String>, depth: usize) {
    if let Ok(ds) = group.datasets() {
        out.extend(
            ds.iter()
                .map(|d| d.name().trim_start_matches('/').to_string()),
        );
    }
    if depth < 4
        && let Ok(groups) = group.groups()
    {
        for g in groups {
            list_datasets(&g, out, depth + 1);
        }
    }
}

/// Replaces `out` with row `row` of a rank-3 dataset read through HDF5, as little-endian bytes
/// of its element type `dtype` (the layout the direct path reads from the file).
pub(crate) fn read_row_le_bytes_hdf5(
    ds: &hdf5::Dataset,
    path: &Path,
    dtype: Dtype,
    row: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    match dtype {
        Dtype::F32 => out.extend(
            read_row_hdf5::<f32>(ds, path, row)?
                .iter()
                .flat_map(|v| v.to_le_bytes()),
        ),
        Dtype::F64 => out.extend(
            read_row_hdf5::<f64>(ds, path, row)?
                .iter()
                .flat_map(|v| v.to_le_bytes()),
        ),
    }
    Ok(())
}

/// Reads row `row` of a rank-3 dataset through HDF5, in the dataset's own element type.
fn read_row_hdf5<T: hdf5::H5Type + Copy>(
    ds: &hdf5::Dataset,
    path: &Path,
    row: usize,
) -> Result<Vec<T>> {
    let arr = ds
        .read_slice_2d::<T, _>((row, .., ..))
        .map_err(|e| Error::hdf5(path, format!("reading row {row} of `{}`: {e}", ds.name())))?;
    Ok(arr.iter().copied().collect())
}

pub(crate) fn row_read_error(path: &Path, row: usize, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::hdf5(
            path,
            format!("truncated file: row {row} lies past the end of the file"),
        )
    } else {
        Error::hdf5(path, format!("reading row {row}: {e}"))
    }
}

/// Reads the id dataset: rank 1, length `n_rows`, integers (any width) or integral floats.
fn read_ids(file: &hdf5::File, path: &Path, name: &str, n_rows: usize) -> Result<Vec<i64>> {
    let ds = dataset(file, path, name)?;
    let shape = ds.shape();
    if shape.len() != 1 {
        return Err(Error::hdf5(
            path,
            format!("dataset `{name}` has shape {shape:?}: expected (N,)"),
        ));
    }
    if shape[0] != n_rows {
        return Err(Error::hdf5(
            path,
            format!(
                "dataset `{name}` has {} ids but the tracings have {n_rows} rows",
                shape[0]
            ),
        ));
    }
    let read_err = |e: hdf5::Error| Error::hdf5(path, format!("reading dataset `{name}`: {e}"));
    let desc = ds
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(read_err)?;
    match desc {
        TypeDescriptor::Integer(_) => ds.read_raw::<i64>().map_err(read_err),
        TypeDescriptor::Unsigned(_) => {
            let raw = ds.read_raw::<u64>().map_err(read_err)?;
            raw.iter()
                .enumerate()
                .map(|(i, &v)| {
                    i64::try_from(v).map_err(|_| {
                        Error::hdf5(
                            path,
                            format!("dataset `{name}`, row {i}: id {v} does not fit in i64"),
                        )
                    })
                })
                .collect()
        }
        TypeDescriptor::Float(_) => {
            let raw = ds.read_raw::<f64>().map_err(read_err)?;
            raw.iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
                        Ok(v as i64)
                    } else {
                        Err(Error::hdf5(
                            path,
                            format!("dataset `{name}`, row {i}: {v} is not an integer id"),
                        ))
                    }
                })
                .collect()
        }
        other => Err(Error::hdf5(
            path,
            format!("dataset `{name}` has type {other}: expected integer ids"),
        )),
    }
}
