//! The predictions file of `worker evaluate`, in the seed's format: header `ids,predicted_age`,
//! one line per HDF5 row. It is created as a temporary file beside the target before any work
//! starts (so a missing folder is reported at once) and renamed over the target only once
//! complete: a failure leaves no partial file, and the temporary file is removed.
//!
//! `predicted_age` is the f32 output widened to f64 and printed in Rust's shortest form that
//! reads back to the same f64, the digits that pandas writes for the seed's float64 copy of the
//! output (e.g. `43.20000076293945`); parsing it as f64 and narrowing gives back the exact f32.
//! NaN is an empty cell (pandas' default), infinities `inf` / `-inf`.
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Result;
use ecg_shared::Error;

/// The output file, open as a temporary file in the target's folder.
#[derive(Debug)]
pub struct PendingOutput {
    target: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl PendingOutput {
    /// Checks that `target` can be written (its folder exists, it is not a folder) and opens
    /// the temporary file beside it.
    pub fn create(target: &Path) -> Result<Self> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let bad = |msg: String| -> crate::Error { Error::Config(msg).into() };
        if target.is_dir() {
            return Err(bad(format!(
                "--output {} is a folder: give a file name",
                target.display()
            )));
        }
        if !dir.is_dir() {
            return Err(bad(format!(
                "--output {}: folder {} does not exist",
                target.display(),
                dir.display()
            )));
        }
        // 0o666 less the umask, as for any file the user creates (a temporary file is 0o600).
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .prefix(".predicted_age.")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(target, e))?;
        Ok(PendingOutput {
            target: target.to_path_buf(),
            tmp,
        })
    }

    /// Writes the lines, syncs them to disk and renames the file to its target.
    pub fn write(mut self, ids: &[i64], predictions: &[f32]) -> Result<()> {
        let target = self.target.clone();
        let io = |e: std::io::Error| -> crate::Error { Error::io(&target, e).into() };
        if ids.len() != predictions.len() {
            return Err(Error::Training(format!(
                "{} ids for {} predictions",
                ids.len(),
                predictions.len()
            ))
            .into());
        }
        {
            let mut w = std::io::BufWriter::new(self.tmp.as_file_mut());
            write_csv(&mut w, ids, predictions).map_err(io)?;
            w.flush().map_err(io)?;
        }
        self.tmp.as_file().sync_all().map_err(io)?;
        self.tmp.persist(&target).map_err(|e| io(e.error))?;
        Ok(())
    }
}

/// The CSV text: header and one `id,value` line per row.
pub fn write_csv(w: &mut impl Write, ids: &[i64], predictions: &[f32]) -> std::io::Result<()> {
    writeln!(w, "ids,predicted_age")?;
    for (id, &p) in ids.iter().zip(predictions) {
        writeln!(w, "{id},{}", format_age(p))?;
    }
    Ok(())
}

/// One `predicted_age` cell (see the module documentation).
pub fn format_age(p: f32) -> String {
    if p.is_nan() {
        String::new()
    } else {
        (p as f64).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_read_back_to_the_exact_f32_with_the_seed_digits() {
        assert_eq!(format_age(43.2), "43.20000076293945");
        assert_eq!(format_age(50.0), "50");
        assert_eq!(format_age(-0.5), "-0.5");
        assert_eq!(format_age(f32::NAN), "");
        assert_eq!(format_age(f32::INFINITY), "inf");
        let mut v = 1.0e-3f32;
        while v < 1.0e4 {
            let back = format_age(v).parse::<f64>().unwrap() as f32;
            assert_eq!(back.to_bits(), v.to_bits(), "{v}");
            v = v * 1.37 + 1.0e-7;
        }
    }

    #[test]
    fn the_file_appears_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pred.csv");
        let out = PendingOutput::create(&target).unwrap();
        assert!(!target.exists(), "nothing at the target before the write");
        out.write(&[7, 0], &[1.5, 2.25]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "ids,predicted_age\n7,1.5\n0,2.25\n"
        );
        let listing = |d: &Path| std::fs::read_dir(d).unwrap().count();
        assert_eq!(listing(dir.path()), 1, "no temporary file left");

        // A failing write (lengths differ) and a dropped output leave nothing behind.
        let other = dir.path().join("other.csv");
        let e = PendingOutput::create(&other)
            .unwrap()
            .write(&[1], &[])
            .unwrap_err();
        assert!(e.to_string().contains("1 ids for 0 predictions"), "{e}");
        drop(PendingOutput::create(&other).unwrap());
        assert!(!other.exists());
        assert_eq!(listing(dir.path()), 1);
    }

    #[test]
    fn a_missing_folder_or_a_folder_target_is_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let e = PendingOutput::create(&dir.path().join("no/such/pred.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--output") && e.contains("does not exist"),
            "{e}"
        );
        let e = PendingOutput::create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("--output") && e.contains("is a folder"), "{e}");
    }
}
