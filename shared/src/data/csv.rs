//! Reader of the exams table (`exams.csv` in CODE-15%, the internal CODE table, SaMi-Trop's
//! `exams.csv`). Columns are found **by name** (configurable, like the seed's `--age_col` and
//! `--ids_col`); the table is held column-wise because the full cohort has 2.3 M rows.
//!
//! Refused with an error naming the file (and line, column and value): a missing required
//! column, an empty table, a non-numeric id or age, a duplicate exam id. An empty age is not an
//! error: it is kept as NaN and the index counts and reports it.
use std::path::{Path, PathBuf};

use super::csv_rows;
pub(crate) use super::csv_rows::{open_with_headers, parse_int, require_column};
use crate::ids::{ExamId, PatientId};
use crate::{Error, Result};

/// Names of the columns to read. Optional columns are read when present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvColumns {
    /// Exam id column (required). CODE-15%: `exam_id`; CODE: `N_exame`.
    pub exam_id: String,
    /// Age column (required). CODE-15%: `age`; CODE: `Idade`.
    pub age: String,
    /// Patient id column. CODE-15%: `patient_id`; CODE: `N_paciente_univoco`. `None` means one
    /// patient per exam (SaMi-Trop has no patient column): the patient id is the exam id.
    pub patient_id: Option<String>,
    /// Sex column (optional, `True`/`False`/`1`/`0`; empty: not read, as for the next three).
    pub is_male: String,
    /// Death indicator column (optional; empty on all but a patient's first exam).
    pub death: String,
    /// Follow-up time column in years (optional; empty on all but a patient's first exam).
    pub timey: String,
    /// HDF5 part that holds the exam (optional, e.g. `exams_part3.hdf5`).
    pub trace_file: String,
}

impl Default for CsvColumns {
    fn default() -> Self {
        CsvColumns {
            exam_id: "exam_id".into(),
            age: "age".into(),
            patient_id: Some("patient_id".into()),
            is_male: "is_male".into(),
            death: "death".into(),
            timey: "timey".into(),
            trace_file: "trace_file".into(),
        }
    }
}

impl CsvColumns {
    /// The default names, with the optional columns switched off (empty names are never
    /// looked up): for work that needs ids and ages only, such as a split.
    pub fn ids_and_age() -> Self {
        CsvColumns {
            is_male: String::new(),
            death: String::new(),
            timey: String::new(),
            trace_file: String::new(),
            ..CsvColumns::default()
        }
    }
}

/// The exams table, one entry per CSV row, in CSV order.
#[derive(Debug, Clone, Default)]
pub struct ExamTable {
    /// The file it was read from.
    pub path: PathBuf,
    /// Exam ids (unique).
    pub exam_id: Vec<ExamId>,
    /// Patient ids.
    pub patient_id: Vec<PatientId>,
    /// Age at the exam in years; NaN where the CSV cell is empty.
    pub age: Vec<f64>,
    /// Sex, when the column exists.
    pub is_male: Option<Vec<Option<bool>>>,
    /// Death indicator, when the column exists.
    pub death: Option<Vec<Option<bool>>>,
    /// Follow-up time in years (NaN where empty), when the column exists.
    pub timey: Option<Vec<f64>>,
    /// Index into [`ExamTable::trace_files`], when the column exists.
    pub trace_file: Option<Vec<u32>>,
    /// Distinct values of the trace-file column, in order of first appearance.
    pub trace_files: Vec<String>,
}

impl ExamTable {
    /// Number of exams (CSV rows).
    pub fn len(&self) -> usize {
        self.exam_id.len()
    }

    /// Whether the table has no rows (never true for a table returned by [`ExamTable::read`]).
    pub fn is_empty(&self) -> bool {
        self.exam_id.is_empty()
    }

    /// The rows `rows` (0-based, in the given order) as a table of their own.
    pub fn select(&self, rows: &[usize]) -> ExamTable {
        fn pick<T: Clone>(v: &[T], rows: &[usize]) -> Vec<T> {
            rows.iter().map(|&r| v[r].clone()).collect()
        }
        ExamTable {
            path: self.path.clone(),
            exam_id: pick(&self.exam_id, rows),
            patient_id: pick(&self.patient_id, rows),
            age: pick(&self.age, rows),
            is_male: self.is_male.as_deref().map(|v| pick(v, rows)),
            death: self.death.as_deref().map(|v| pick(v, rows)),
            timey: self.timey.as_deref().map(|v| pick(v, rows)),
            trace_file: self.trace_file.as_deref().map(|v| pick(v, rows)),
            trace_files: self.trace_files.clone(),
        }
    }

    /// Reads `path` with the given column names.
    pub fn read(path: &Path, cols: &CsvColumns) -> Result<Self> {
        let bytes = super::mapped::map_file(path, 0, 0)?;
        let t = if memchr::memchr(b'"', &bytes).is_some() {
            csv_rows::parse_quoted(path, cols, &bytes)?
        } else {
            let header_end = bytes
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(bytes.len());
            let header = bytes[..header_end]
                .strip_suffix(b"\r")
                .unwrap_or(&bytes[..header_end]);
            let plan = csv_rows::Plan::new(path, &csv_rows::header_names(header), cols)?;
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8);
            let body = (header_end + 1).min(bytes.len());
            csv_rows::parse_plain(path, &plan, &bytes, body, threads)?.into_table(path, &plan)
        };
        if t.is_empty() {
            return Err(Error::csv(path, None, "the table has a header but no rows"));
        }
        t.check_unique_exam_ids()?;
        Ok(t)
    }

    /// Refuses duplicate exam ids, naming how many there are and the first one with its lines.
    fn check_unique_exam_ids(&self) -> Result<()> {
        let mut ids: Vec<i64> = self.exam_id.iter().map(|e| e.0).collect();
        ids.sort_unstable();
        let n_dup = ids.windows(2).filter(|w| w[0] == w[1]).count();
        if n_dup == 0 {
            return Ok(());
        }
        // Rare: find the duplicate that appears first, and its two rows.
        let mut first_row: std::collections::HashMap<ExamId, usize> = Default::default();
        for (row, &id) in self.exam_id.iter().enumerate() {
            if let Some(&a) = first_row.get(&id) {
                return Err(Error::csv(
                    &self.path,
                    None,
                    format!(
                        "{n_dup} duplicate exam id(s); exam_id {id} appears on data rows {} and {}",
                        a + 1,
                        row + 1
                    ),
                ));
            }
            first_row.insert(id, row);
        }
        unreachable!("a duplicate was counted")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    #[test]
    fn reads_columns_by_name_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "exams.csv",
            "trace_file,age,patient_id,death,exam_id,timey,is_male\n\
             exams_part1.hdf5,54,7,False,101,3.5,True\n\
             exams_part0.hdf5,55,7,,102,,True\n\
             exams_part1.hdf5,,9,True,103.0,1.25,False\n",
        );
        let t = ExamTable::read(&p, &CsvColumns::default()).unwrap();
        assert_eq!(t.exam_id, vec![ExamId(101), ExamId(102), ExamId(103)]);
        assert_eq!(t.patient_id, vec![PatientId(7), PatientId(7), PatientId(9)]);
        assert_eq!(&t.age[..2], &[54.0, 55.0]);
        assert!(t.age[2].is_nan(), "an empty age is kept as missing");
        assert_eq!(
            t.death.as_deref(),
            Some(&[Some(false), None, Some(true)][..])
        );
        assert_eq!(
            t.is_male.as_deref(),
            Some(&[Some(true), Some(true), Some(false)][..])
        );
        assert_eq!(t.trace_files, vec!["exams_part1.hdf5", "exams_part0.hdf5"]);
        assert_eq!(t.trace_file.as_deref(), Some(&[0, 1, 0][..]));
        let ty = t.timey.unwrap();
        assert_eq!(ty[0], 3.5);
        assert!(ty[1].is_nan());
    }

    #[test]
    fn configurable_names_and_no_patient_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "code.csv", "N_exame,Idade\n5,40\n6,41\n");
        let cols = CsvColumns {
            exam_id: "N_exame".into(),
            age: "Idade".into(),
            patient_id: None,
            ..Default::default()
        };
        let t = ExamTable::read(&p, &cols).unwrap();
        assert_eq!(t.patient_id, vec![PatientId(5), PatientId(6)]);
        assert!(t.death.is_none() && t.trace_file.is_none());
    }

    #[test]
    fn bad_tables_are_refused_with_file_line_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "missing.csv",
                "exam_id,patient_id\n1,2\n",
                "missing column `age`",
            ),
            ("empty.csv", "", "empty file"),
            ("header.csv", "exam_id,age,patient_id\n", "no rows"),
            (
                "age.csv",
                "exam_id,age,patient_id\n1,40,1\n2,forty,2\n",
                "line 3: column `age`: `forty` is not a number",
            ),
            (
                "id.csv",
                "exam_id,age,patient_id\n1x,40,1\n",
                "column `exam_id`: `1x` is not an integer id",
            ),
            (
                "dup.csv",
                "exam_id,age,patient_id\n1,40,1\n2,41,1\n1,42,3\n",
                "exam_id 1 appears on data rows 1 and 3",
            ),
            ("ragged.csv", "exam_id,age,patient_id\n1,40\n", "fields"),
        ];
        for (name, text, want) in cases {
            let p = write(&dir, name, text);
            let err = ExamTable::read(&p, &CsvColumns::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(name),
                "{name}: error does not name the file: {err}"
            );
            assert!(err.contains(want), "{name}: expected `{want}` in: {err}");
        }
        let err =
            ExamTable::read(&dir.path().join("absent.csv"), &CsvColumns::default()).unwrap_err();
        assert!(err.to_string().contains("absent.csv"));
    }
    /// A table big enough to be cut into chunks, with every optional column.
    fn big_table(rows: usize, quoted: bool) -> String {
        let q = |s: String| if quoted { format!("\"{s}\"") } else { s };
        let mut t = String::from("exam_id,age,patient_id,is_male,death,timey,trace_file\n");
        for i in 0..rows {
            let age = if i % 97 == 0 {
                String::new()
            } else {
                (16 + i % 80).to_string()
            };
            let death = ["True", "False", ""][i % 3];
            let timey = if i % 3 == 2 {
                String::new()
            } else {
                format!("{}.25", i % 7)
            };
            let part = format!("exams_part{}.hdf5", (i * 7919) % 13);
            t.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                q((1000 + i).to_string()),
                q(age),
                q((i / 3).to_string()),
                if i % 2 == 0 { "True" } else { "False" },
                death,
                timey,
                q(part)
            ));
        }
        t
    }

    fn same(a: &ExamTable, b: &ExamTable) {
        assert_eq!(a.exam_id, b.exam_id);
        assert_eq!(a.patient_id, b.patient_id);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.age), bits(&b.age));
        assert_eq!(
            bits(a.timey.as_deref().unwrap()),
            bits(b.timey.as_deref().unwrap())
        );
        assert_eq!(a.is_male, b.is_male);
        assert_eq!(a.death, b.death);
        let names = |t: &ExamTable| -> Vec<String> {
            t.trace_file
                .as_deref()
                .unwrap()
                .iter()
                .map(|&i| t.trace_files[i as usize].clone())
                .collect()
        };
        assert_eq!(names(a), names(b));
    }

    #[test]
    fn chunked_plain_parse_equals_the_quoted_parse() {
        let dir = tempfile::tempdir().unwrap();
        let rows = 120_000; // about 5 MB: cut into chunks
        let plain = write(&dir, "plain.csv", &big_table(rows, false));
        let quoted = write(&dir, "quoted.csv", &big_table(rows, true));
        assert!(std::fs::metadata(&plain).unwrap().len() > 4 << 20);
        let cols = CsvColumns::default();
        let a = ExamTable::read(&plain, &cols).unwrap();
        let b = ExamTable::read(&quoted, &cols).unwrap();
        assert_eq!(a.len(), rows);
        same(&a, &b);
        // Explicitly several chunks, including more chunks than needed.
        let bytes = std::fs::read(&plain).unwrap();
        let header_end = bytes.iter().position(|&x| x == b'\n').unwrap();
        let names = csv_rows::header_names(&bytes[..header_end]);
        let plan = csv_rows::Plan::new(&plain, &names, &cols).unwrap();
        for threads in [1, 3, 7] {
            let t = csv_rows::parse_plain(&plain, &plan, &bytes, header_end + 1, threads)
                .unwrap()
                .into_table(&plain, &plan);
            same(&t, &a);
        }
    }

    #[test]
    fn an_error_deep_in_a_big_table_names_its_true_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = big_table(120_000, false);
        // Data row 100,000 is on line 100,001; break its age.
        let start = text.match_indices('\n').nth(100_000 - 1).unwrap().0 + 1;
        let comma = start + text[start..].find(',').unwrap();
        text.insert(comma + 1, 'x');
        let p = write(&dir, "deep.csv", &text);
        let e = ExamTable::read(&p, &CsvColumns::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 100001: column `age`"), "{e}");
    }
}
