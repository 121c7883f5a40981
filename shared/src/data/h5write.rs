//! Writer of HDF5 files in the CODE-15% layout: `tracings` (N, samples, leads) f32, stored
//! contiguously (so that readers can take rows straight from the file's bytes), and `exam_id` (N,) i64, the same row
//! order. Rows are written in blocks, so a 20,000-exam part (3.9 GB) never sits in memory.
use std::path::{Path, PathBuf};

use hdf5::plist::dataset_create::FillTime;

use crate::{Error, Result};

/// An HDF5 file being written; every row must be written once before [`TracingsWriter::finish`].
pub struct TracingsWriter {
    path: PathBuf,
    file: hdf5::File,
    tracings: hdf5::Dataset,
    exam_id: hdf5::Dataset,
    n_rows: usize,
    n_samples: usize,
    n_leads: usize,
    rows_written: usize,
}

impl TracingsWriter {
    /// Creates (truncates) `path` with datasets `tracings` (n_rows, n_samples, n_leads) f32 and
    /// `exam_id` (n_rows,) i64.
    pub fn create(path: &Path, n_rows: usize, n_samples: usize, n_leads: usize) -> Result<Self> {
        let err = |e: hdf5::Error| Error::hdf5(path, e);
        // No object timestamps: the same rows give the same bytes (reproducible cohorts).
        let file = hdf5::File::with_options()
            .with_fcpl(|p| p.obj_track_times(false))
            .create(path)
            .map_err(err)?;
        // Fill values are never written: every row is written by the caller (checked in
        // `finish`), so pre-filling would only double the I/O.
        let tracings = file
            .new_dataset::<f32>()
            .no_chunk()
            .fill_time(FillTime::Never)
            .shape([n_rows, n_samples, n_leads])
            .create("tracings")
            .map_err(err)?;
        let exam_id = file
            .new_dataset::<i64>()
            .no_chunk()
            .shape([n_rows])
            .create("exam_id")
            .map_err(err)?;
        Ok(TracingsWriter {
            path: path.to_path_buf(),
            file,
            tracings,
            exam_id,
            n_rows,
            n_samples,
            n_leads,
            rows_written: 0,
        })
    }

    /// Writes rows `start_row .. start_row + ids.len()`: `data` holds those rows as
    /// (rows, n_samples, n_leads), row-major.
    pub fn write_rows(&mut self, start_row: usize, ids: &[i64], data: &[f32]) -> Result<()> {
        let rows = ids.len();
        let row_len = self.n_samples * self.n_leads;
        if data.len() != rows * row_len || start_row + rows > self.n_rows {
            return Err(Error::hdf5(
                &self.path,
                format!(
                    "write of {rows} rows at row {start_row} with {} values does not fit \
                     ({} rows of {row_len} values)",
                    data.len(),
                    self.n_rows
                ),
            ));
        }
        if rows == 0 {
            return Ok(());
        }
        let err = |e: hdf5::Error| Error::hdf5(&self.path, e);
        let block = ndarray::ArrayView3::from_shape((rows, self.n_samples, self.n_leads), data)
            .map_err(|e| Error::hdf5(&self.path, e))?;
        self.tracings
            .write_slice(block, ndarray::s![start_row..start_row + rows, .., ..])
            .map_err(err)?;
        self.exam_id
            .write_slice(ids, ndarray::s![start_row..start_row + rows])
            .map_err(err)?;
        self.rows_written += rows;
        Ok(())
    }

    /// Checks that every row was written and closes the file.
    pub fn finish(self) -> Result<()> {
        if self.rows_written != self.n_rows {
            return Err(Error::hdf5(
                &self.path,
                format!("{} of {} rows written", self.rows_written, self.n_rows),
            ));
        }
        self.file.flush().map_err(|e| Error::hdf5(&self.path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_contiguous_tracings_and_ids_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("part.hdf5");
        let (n, l, c) = (3usize, 8usize, 2usize);
        let data: Vec<f32> = (0..n * l * c).map(|i| i as f32 * 0.5).collect();
        let mut w = TracingsWriter::create(&p, n, l, c).unwrap();
        w.write_rows(0, &[11, 12], &data[..2 * l * c]).unwrap();
        w.write_rows(2, &[0], &data[2 * l * c..]).unwrap();
        w.finish().unwrap();

        let f = hdf5::File::open(&p).unwrap();
        let t = f.dataset("tracings").unwrap();
        assert_eq!(t.shape(), vec![n, l, c]);
        assert!(t.offset().is_some(), "tracings must be contiguous");
        assert_eq!(t.read_raw::<f32>().unwrap(), data);
        assert_eq!(
            f.dataset("exam_id").unwrap().read_raw::<i64>().unwrap(),
            vec![11, 12, 0]
        );
    }

    #[test]
    fn same_rows_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let p = dir.path().join(name);
            let mut w = TracingsWriter::create(&p, 2, 4, 3).unwrap();
            w.write_rows(0, &[5, 0], &[1.5; 24]).unwrap();
            w.finish().unwrap();
            std::fs::read(p).unwrap()
        };
        let a = write("a.hdf5");
        // HDF5 object timestamps have a one-second resolution: let the clock move on, so that
        // a timestamp, if there were one, would differ.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(a, write("b.hdf5"), "no timestamps in the file");
    }

    #[test]
    fn refuses_misfit_writes_and_unwritten_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("part.hdf5");
        let mut w = TracingsWriter::create(&p, 2, 4, 1).unwrap();
        let e = w.write_rows(1, &[1, 2], &[0.0; 8]).unwrap_err().to_string();
        assert!(e.contains("part.hdf5") && e.contains("does not fit"), "{e}");
        w.write_rows(0, &[1], &[0.0; 4]).unwrap();
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains("1 of 2 rows written"), "{e}");
    }
}
