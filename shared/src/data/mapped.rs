//! Read-only memory mappings of input files (the tracings of contiguous HDF5 datasets, the exams
//! table). Reading through a mapping skips the copy into a buffer and the page zeroing a fresh
//! buffer costs: for the batch reader it is the difference between 2.3x and 3.3x h5py, for the
//! 235 MB CODE table about a sixth of the split's time.
//!
//! The one `unsafe` call of the project lives here. A mapping is only sound while nobody
//! truncates or rewrites the file under it; our inputs are datasets that nothing writes during a
//! run, and the size the caller needs is checked before mapping, so a short file is an error,
//! not a fault.
use std::path::Path;

use crate::{Error, Result};

/// Maps `path` read-only, after checking that it holds at least `offset + len` bytes.
#[allow(unsafe_code)]
pub(crate) fn map_file(path: &Path, offset: u64, len: usize) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let need = offset + len as u64;
    if size < need {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("truncated: bytes {offset}..{need} are needed but the file has {size}"),
            ),
        });
    }
    // SAFETY: read-only mapping of an input file that is not written while the mapping lives
    // (see the module documentation); its size was checked above.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_shorter_than_needed_is_refused_before_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.hdf5");
        std::fs::write(&p, vec![7u8; 1000]).unwrap();
        let map = map_file(&p, 200, 800).unwrap();
        assert_eq!(map.len(), 1000);
        assert!(map[200..].iter().all(|&b| b == 7));
        let e = map_file(&p, 200, 801).unwrap_err().to_string();
        assert!(
            e.contains("cut.hdf5") && e.contains("truncated") && e.contains("1000"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_file_maps_to_no_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.csv");
        std::fs::write(&p, b"").unwrap();
        assert!(map_file(&p, 0, 0).unwrap().is_empty());
    }
}
