//! Writer of the synthetic `exams.csv`: the 15 CODE-15% columns in their physical order,
//! booleans as `True`/`False` (as pandas writes them), `death` and `timey` empty on all but a
//! patient's first exam, `nn_predicted_age` with two decimals.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::cohort::ExamPlan;
use crate::{Error, Result};

/// The header of `exams.csv`, in the physical order of CODE-15%.
pub const CSV_COLUMNS: [&str; 15] = [
    "exam_id",
    "age",
    "is_male",
    "nn_predicted_age",
    "1dAVb",
    "RBBB",
    "LBBB",
    "SB",
    "ST",
    "AF",
    "patient_id",
    "death",
    "timey",
    "normal_ecg",
    "trace_file",
];

/// `exams.csv` being written.
pub(crate) struct CsvOut {
    path: PathBuf,
    out: BufWriter<File>,
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

impl CsvOut {
    /// Creates (truncates) `path` and writes the header.
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut w = CsvOut {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 16, file),
        };
        let header = CSV_COLUMNS.join(",");
        writeln!(w.out, "{header}").map_err(|e| Error::io(path, e))?;
        Ok(w)
    }

    /// Writes the row of `e`, whose tracing is in the part named `trace_file`.
    pub(crate) fn write(&mut self, e: &ExamPlan, trace_file: &str) -> Result<()> {
        let d = &e.labels;
        let (death, timey) = match e.outcome {
            Some(o) => (py_bool(o.death).to_string(), o.timey.to_string()),
            None => (String::new(), String::new()),
        };
        writeln!(
            self.out,
            "{},{},{},{:.2},{},{},{},{},{},{},{},{},{},{},{}",
            e.exam_id,
            e.age,
            py_bool(e.is_male),
            e.bio_age,
            py_bool(d.avb1),
            py_bool(d.rbbb),
            py_bool(d.lbbb),
            py_bool(d.sb),
            py_bool(d.st),
            py_bool(d.af),
            e.patient_id,
            death,
            timey,
            py_bool(d.normal()),
            trace_file,
        )
        .map_err(|err| Error::io(&self.path, err))
    }

    /// Flushes and closes the file.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::csv::{CsvColumns, ExamTable};
    use crate::synth::cohort::Cohort;

    #[test]
    fn the_project_reader_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exams.csv");
        let exams: Vec<ExamPlan> = Cohort::new(50, 4).exams().collect();
        let mut w = CsvOut::create(&path).unwrap();
        for e in &exams {
            w.write(e, "exams_part0.hdf5").unwrap();
        }
        w.finish().unwrap();

        let t = ExamTable::read(&path, &CsvColumns::default()).unwrap();
        assert_eq!(t.len(), exams.len());
        let death = t.death.as_ref().unwrap();
        let timey = t.timey.as_ref().unwrap();
        for (i, e) in exams.iter().enumerate() {
            assert_eq!(t.exam_id[i].0, e.exam_id);
            assert_eq!(t.patient_id[i].0, e.patient_id);
            assert_eq!(t.age[i], e.age as f64);
            assert_eq!(death[i], e.outcome.map(|o| o.death));
            assert_eq!(timey[i].is_nan(), e.outcome.is_none());
        }
        assert_eq!(t.trace_files, vec!["exams_part0.hdf5".to_string()]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("exam_id,age,is_male,nn_predicted_age,1dAVb,RBBB,LBBB,SB,ST,AF,"));
        assert!(text.lines().skip(1).all(|l| l.split(',').count() == 15));
    }
}
