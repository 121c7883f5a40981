//! `split.csv`: `exam_id,patient_id,split`, one row per exam in the exams table's order. It is
//! written to a temporary file next to the target and renamed, so a reader never sees half a
//! file; it is read back (columns by name) to resume a run with the same split.
use std::io::Write;
use std::path::{Path, PathBuf};

use super::SplitAssignment;
use super::kind::Split;
use crate::data::csv::{ExamTable, open_with_headers, parse_int, require_column};
use crate::ids::{ExamId, PatientId};
use crate::{Error, Result};

/// Writes `split.csv` for `table` and its `assignment` at `path` (atomically: temporary file,
/// then rename).
pub fn write_split_csv(path: &Path, table: &ExamTable, assignment: &SplitAssignment) -> Result<()> {
    if assignment.split.len() != table.len() {
        return Err(Error::Dataset(format!(
            "{}: the split has {} exams, the table {}",
            path.display(),
            assignment.split.len(),
            table.len()
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = write_rows(&tmp, table, assignment)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_rows(tmp: &Path, table: &ExamTable, assignment: &SplitAssignment) -> Result<()> {
    let io = |e| Error::io(tmp, e);
    let file = std::fs::File::create(tmp).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    w.write_all(b"exam_id,patient_id,split\n").map_err(io)?;
    let mut buf = itoa::Buffer::new();
    let mut line = Vec::with_capacity(64);
    for ((e, p), s) in table
        .exam_id
        .iter()
        .zip(&table.patient_id)
        .zip(&assignment.split)
    {
        line.clear();
        line.extend_from_slice(buf.format(e.0).as_bytes());
        line.push(b',');
        line.extend_from_slice(buf.format(p.0).as_bytes());
        line.push(b',');
        line.extend_from_slice(s.as_str().as_bytes());
        line.push(b'\n');
        w.write_all(&line).map_err(io)?;
    }
    let file = w.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?;
    file.sync_all().map_err(io)
}

/// The contents of a `split.csv`, column-wise, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitFile {
    /// The file it was read from.
    pub path: PathBuf,
    /// Exam ids.
    pub exam_id: Vec<ExamId>,
    /// Patient ids.
    pub patient_id: Vec<PatientId>,
    /// Splits.
    pub split: Vec<Split>,
}

/// Reads a `split.csv` (columns `exam_id`, `patient_id`, `split`, found by name).
pub fn read_split_csv(path: &Path) -> Result<SplitFile> {
    let (mut rdr, headers) = open_with_headers(path)?;
    let col = |name: &str| require_column(path, &headers, name);
    let (c_exam, c_patient, c_split) = (col("exam_id")?, col("patient_id")?, col("split")?);
    let mut out = SplitFile {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(Error::csv(path, e.position().map(|p| p.line()), e)),
        }
        let line = rec.position().map(|p| p.line());
        let field = |c: usize| rec.get(c).unwrap_or(b"");
        let id = |c: usize, name: &str| {
            parse_int(field(c)).ok_or_else(|| {
                let raw = String::from_utf8_lossy(field(c)).into_owned();
                Error::csv(
                    path,
                    line,
                    format!("column `{name}`: `{raw}` is not an integer id"),
                )
            })
        };
        out.exam_id.push(ExamId(id(c_exam, "exam_id")?));
        out.patient_id.push(PatientId(id(c_patient, "patient_id")?));
        let split = String::from_utf8_lossy(field(c_split))
            .parse::<Split>()
            .map_err(|e| Error::csv(path, line, format!("column `split`: {e}")))?;
        out.split.push(split);
    }
    Ok(out)
}

impl SplitFile {
    /// The split of each row of `table`, looked up by exam id. Every exam of the table must be
    /// in the file with the same patient, the file must have no other exams, and all exams of a
    /// patient must be in one split.
    pub fn align(&self, table: &ExamTable) -> Result<SplitAssignment> {
        let err = |msg: String| Error::Dataset(format!("{}: {msg}", self.path.display()));
        let mut by_exam: Vec<(ExamId, u32)> = self
            .exam_id
            .iter()
            .enumerate()
            .map(|(i, &e)| (e, i as u32))
            .collect();
        by_exam.sort_unstable();
        if let Some(w) = by_exam.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(err(format!("exam {} is listed twice", w[0].0)));
        }
        let mut split = Vec::with_capacity(table.len());
        for (&e, &p) in table.exam_id.iter().zip(&table.patient_id) {
            let i = by_exam.binary_search_by_key(&e, |&(x, _)| x).map_err(|_| {
                err(format!(
                    "exam {e} of {} is not in the split",
                    table.path.display()
                ))
            })?;
            let i = by_exam[i].1 as usize;
            if self.patient_id[i] != p {
                return Err(err(format!(
                    "exam {e} belongs to patient {} here and to patient {p} in {}",
                    self.patient_id[i],
                    table.path.display()
                )));
            }
            split.push(self.split[i]);
        }
        if self.exam_id.len() != table.len() {
            return Err(err(format!(
                "{} exams are not in {}",
                self.exam_id.len() - table.len(),
                table.path.display()
            )));
        }
        let mut a = SplitAssignment {
            split,
            patients: [0; 3],
            unmatched_pins: 0,
        };
        a.patients = a.check(table)?;
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::{Fractions, SplitStrategy, assign};

    fn table() -> ExamTable {
        ExamTable {
            path: "exams.csv".into(),
            exam_id: [11, 12, 13, 14, 15].map(ExamId).to_vec(),
            patient_id: [3, 1, 3, 2, -5].map(PatientId).to_vec(),
            age: vec![40.0, 50.0, 41.0, 70.0, 10.0],
            ..Default::default()
        }
    }

    #[test]
    fn writes_reads_and_aligns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("split.csv");
        let t = table();
        let a = assign(
            &t,
            &SplitStrategy::Hash,
            0,
            Fractions::new(0.4, 0.2).unwrap(),
        )
        .unwrap();
        write_split_csv(&path, &t, &a).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "exam_id,patient_id,split");
        assert_eq!(lines[5], format!("15,-5,{}", a.split[4]));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        let back = read_split_csv(&path).unwrap();
        assert_eq!(back.exam_id, t.exam_id);
        assert_eq!(
            back.align(&t).unwrap(),
            SplitAssignment {
                unmatched_pins: 0,
                ..a
            }
        );
    }

    #[test]
    fn align_refuses_files_that_do_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let t = table();
        let cases = [
            (
                "missing.csv",
                "exam_id,patient_id,split\n11,3,test\n12,1,train\n",
                "exam 13 of exams.csv is not in the split",
            ),
            (
                "moved.csv",
                "exam_id,patient_id,split\n11,3,test\n12,1,train\n13,3,train\n14,2,train\n15,-5,test\n",
                "patient 3 is in two splits",
            ),
            (
                "other.csv",
                "exam_id,patient_id,split\n11,4,test\n12,1,train\n13,3,test\n14,2,train\n15,-5,test\n",
                "exam 11 belongs to patient 4",
            ),
            (
                "extra.csv",
                "split,exam_id,patient_id\ntest,11,3\ntrain,12,1\ntest,13,3\ntrain,14,2\ntest,15,-5\ntest,16,9\n",
                "1 exams are not in",
            ),
        ];
        for (name, text, want) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let err = read_split_csv(&p)
                .and_then(|f| f.align(&t))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, "exam_id,patient_id,split\n11,3,holdout\n").unwrap();
        let err = read_split_csv(&p).unwrap_err().to_string();
        assert!(
            err.contains("bad.csv") && err.contains("line 2") && err.contains("`holdout`"),
            "{err}"
        );
    }
}
