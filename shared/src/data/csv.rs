//! Reader of the exams table (`exams.csv` in CODE-15%, the internal CODE table, SaMi-Trop's
//! `exams.csv`). Columns are found **by name** (configurable, like the seed's `--age_col` and
//! `--ids_col`); the table is held column-wise because the full cohort has 2.3 M rows.
//!
//! Refused with an error naming the file (and line, column and value): a missing required
//! column, an empty table, a non-numeric id or age, a duplicate exam id. An empty age is not an
//! error: it is kept as NaN and the index counts and reports it.
use std::path::{Path, PathBuf};

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
    /// Sex column (optional, `True`/`False`/`1`/`0`).
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
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .buffer_capacity(1 << 20)
            .from_reader(std::io::BufReader::with_capacity(1 << 20, file));
        let headers = rdr
            .byte_headers()
            .map_err(|e| csv_error(path, &e))?
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().trim_start_matches('\u{feff}').to_string())
            .collect::<Vec<_>>();
        if headers.iter().all(|h| h.is_empty()) {
            return Err(Error::csv(path, Some(1), "empty file: no header line"));
        }
        let find = |name: &str| headers.iter().position(|h| h == name);
        let required = |name: &str| {
            find(name).ok_or_else(|| {
                Error::csv(
                    path,
                    Some(1),
                    format!("missing column `{name}` (columns are: {})", headers.join(", ")),
                )
            })
        };
        let c_exam = required(&cols.exam_id)?;
        let c_age = required(&cols.age)?;
        let c_patient = match &cols.patient_id {
            Some(name) => Some(required(name)?),
            None => None,
        };
        let c_male = find(&cols.is_male);
        let c_death = find(&cols.death);
        let c_timey = find(&cols.timey);
        let c_trace = find(&cols.trace_file);

        let mut t = ExamTable {
            path: path.to_path_buf(),
            is_male: c_male.map(|_| Vec::new()),
            death: c_death.map(|_| Vec::new()),
            timey: c_timey.map(|_| Vec::new()),
            trace_file: c_trace.map(|_| Vec::new()),
            ..Default::default()
        };
        let mut trace_lookup: std::collections::HashMap<Vec<u8>, u32> = Default::default();
        let mut rec = csv::ByteRecord::new();
        let mut line: u64 = 1;
        loop {
            match rdr.read_byte_record(&mut rec) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(csv_error(path, &e)),
            }
            line = rec.position().map(|p| p.line()).unwrap_or(line + 1);
            let field = |c: usize, name: &str| -> Result<&[u8]> {
                rec.get(c).ok_or_else(|| {
                    Error::csv(path, Some(line), format!("row has no field for column `{name}`"))
                })
            };
            let exam = parse_int(field(c_exam, &cols.exam_id)?)
                .ok_or_else(|| bad_value(path, line, &cols.exam_id, field(c_exam, "").unwrap_or(b""), "an integer id"))?;
            let age_raw = field(c_age, &cols.age)?;
            let age = if trim(age_raw).is_empty() {
                f64::NAN
            } else {
                parse_float(age_raw)
                    .filter(|a| a.is_finite())
                    .ok_or_else(|| bad_value(path, line, &cols.age, age_raw, "a number"))?
            };
            let patient = match (c_patient, &cols.patient_id) {
                (Some(c), Some(name)) => {
                    let raw = field(c, name)?;
                    parse_int(raw).ok_or_else(|| bad_value(path, line, name, raw, "an integer id"))?
                }
                _ => exam,
            };
            t.exam_id.push(ExamId(exam));
            t.patient_id.push(PatientId(patient));
            t.age.push(age);
            if let (Some(c), Some(v)) = (c_male, t.is_male.as_mut()) {
                let raw = field(c, &cols.is_male)?;
                v.push(parse_bool(raw).map_err(|()| bad_value(path, line, &cols.is_male, raw, "a boolean"))?);
            }
            if let (Some(c), Some(v)) = (c_death, t.death.as_mut()) {
                let raw = field(c, &cols.death)?;
                v.push(parse_bool(raw).map_err(|()| bad_value(path, line, &cols.death, raw, "a boolean"))?);
            }
            if let (Some(c), Some(v)) = (c_timey, t.timey.as_mut()) {
                let raw = field(c, &cols.timey)?;
                let x = if trim(raw).is_empty() {
                    f64::NAN
                } else {
                    parse_float(raw).ok_or_else(|| bad_value(path, line, &cols.timey, raw, "a number"))?
                };
                v.push(x);
            }
            if let (Some(c), Some(v)) = (c_trace, t.trace_file.as_mut()) {
                let raw = trim(field(c, &cols.trace_file)?);
                let next = t.trace_files.len() as u32;
                let id = *trace_lookup.entry(raw.to_vec()).or_insert_with(|| {
                    t.trace_files.push(String::from_utf8_lossy(raw).into_owned());
                    next
                });
                v.push(id);
            }
        }
        if t.is_empty() {
            return Err(Error::csv(path, None, "the table has a header but no rows"));
        }
        t.check_unique_exam_ids()?;
        Ok(t)
    }

    /// Refuses duplicate exam ids, naming how many there are and the first one with its lines.
    fn check_unique_exam_ids(&self) -> Result<()> {
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        order.sort_unstable_by_key(|&i| (self.exam_id[i as usize], i));
        let mut n_dup = 0usize;
        let mut first: Option<(ExamId, u32, u32)> = None;
        for w in order.windows(2) {
            let (a, b) = (w[0] as usize, w[1] as usize);
            if self.exam_id[a] == self.exam_id[b] {
                n_dup += 1;
                if first.is_none_or(|(_, fa, _)| (a as u32) < fa) {
                    first = Some((self.exam_id[a], a as u32, b as u32));
                }
            }
        }
        match first {
            None => Ok(()),
            Some((id, a, b)) => Err(Error::csv(
                &self.path,
                None,
                format!(
                    "{n_dup} duplicate exam id(s); exam_id {id} appears on data rows {} and {}",
                    a + 1,
                    b + 1
                ),
            )),
        }
    }
}

fn csv_error(path: &Path, e: &csv::Error) -> Error {
    let line = e.position().map(|p| p.line());
    let msg = match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("row has {len} fields, the header has {expected_len}")
        }
        _ => e.to_string(),
    };
    Error::csv(path, line, msg)
}

fn bad_value(path: &Path, line: u64, column: &str, raw: &[u8], want: &str) -> Error {
    Error::csv(
        path,
        Some(line),
        format!("column `{column}`: `{}` is not {want}", String::from_utf8_lossy(raw)),
    )
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Parses an integer id, also written as an integral float (`1169160.0`, as pandas writes ids of
/// a column that once held a NaN).
pub(crate) fn parse_int(raw: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(trim(raw)).ok()?;
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    let f = s.parse::<f64>().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

pub(crate) fn parse_float(raw: &[u8]) -> Option<f64> {
    std::str::from_utf8(trim(raw)).ok()?.parse::<f64>().ok()
}

/// `True`/`False` (pandas), `true`/`false`, `1`/`0`, `1.0`/`0.0`; empty is `None`.
pub(crate) fn parse_bool(raw: &[u8]) -> std::result::Result<Option<bool>, ()> {
    match trim(raw) {
        b"" => Ok(None),
        b"True" | b"true" | b"TRUE" | b"1" | b"1.0" => Ok(Some(true)),
        b"False" | b"false" | b"FALSE" | b"0" | b"0.0" => Ok(Some(false)),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::File::create(&p).unwrap().write_all(text.as_bytes()).unwrap();
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
        assert_eq!(t.death.as_deref(), Some(&[Some(false), None, Some(true)][..]));
        assert_eq!(t.is_male.as_deref(), Some(&[Some(true), Some(true), Some(false)][..]));
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
            ("missing.csv", "exam_id,patient_id\n1,2\n", "missing column `age`"),
            ("empty.csv", "", "empty file"),
            ("header.csv", "exam_id,age,patient_id\n", "no rows"),
            ("age.csv", "exam_id,age,patient_id\n1,40,1\n2,forty,2\n", "line 3: column `age`: `forty` is not a number"),
            ("id.csv", "exam_id,age,patient_id\n1x,40,1\n", "column `exam_id`: `1x` is not an integer id"),
            ("dup.csv", "exam_id,age,patient_id\n1,40,1\n2,41,1\n1,42,3\n", "exam_id 1 appears on data rows 1 and 3"),
            ("ragged.csv", "exam_id,age,patient_id\n1,40\n", "fields"),
        ];
        for (name, text, want) in cases {
            let p = write(&dir, name, text);
            let err = ExamTable::read(&p, &CsvColumns::default()).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: error does not name the file: {err}");
            assert!(err.contains(want), "{name}: expected `{want}` in: {err}");
        }
        let err = ExamTable::read(&dir.path().join("absent.csv"), &CsvColumns::default()).unwrap_err();
        assert!(err.to_string().contains("absent.csv"));
    }
}
