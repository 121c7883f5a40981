//! Predicted against true ages for `worker evaluate --csv`: each HDF5 row is matched to the exams
//! table by exam id; rows that cannot be compared are counted by reason and left out (padding
//! rows with id 0, ids the table does not list, missing ages, non-finite predictions); the rest
//! go to [`age_metrics`]. The [`Report`] prints as `key: value` lines on stdout.
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ecg_shared::Error;
use ecg_shared::data::csv::{CsvColumns, ExamTable};
use ecg_shared::train::metrics::{AgeMetrics, age_metrics};

use crate::Result;

/// Exam id to age (NaN where the table's cell is empty), from an exams table.
#[derive(Debug, Clone)]
pub struct AgeTable {
    path: PathBuf,
    age_by_id: HashMap<i64, f64>,
}

impl AgeTable {
    /// Reads the columns `id_col` and `age_col` of `path` (other columns are ignored; ids must
    /// be unique, ages numeric or empty).
    pub fn read(path: &Path, id_col: &str, age_col: &str) -> Result<Self> {
        let cols = CsvColumns {
            exam_id: id_col.to_string(),
            age: age_col.to_string(),
            patient_id: None,
            ..CsvColumns::ids_and_age()
        };
        let t = ExamTable::read(path, &cols)?;
        Ok(Self::from_pairs(
            path,
            t.exam_id.iter().map(|e| e.0).zip(t.age.iter().copied()),
        ))
    }

    /// A table from (exam id, age) pairs; `path` names it in messages.
    pub fn from_pairs(path: &Path, pairs: impl IntoIterator<Item = (i64, f64)>) -> Self {
        AgeTable {
            path: path.to_path_buf(),
            age_by_id: pairs.into_iter().collect(),
        }
    }
}

/// The comparison of one file's predictions with the exams table.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The exams table.
    pub csv: PathBuf,
    /// Rows of the HDF5 file.
    pub rows: usize,
    /// Rows with exam id 0 (CODE-15% padding).
    pub padding: usize,
    /// Rows whose exam id the table does not list.
    pub not_in_csv: usize,
    /// Rows whose exam's age is empty in the table.
    pub missing_age: usize,
    /// Rows whose prediction is NaN or infinite.
    pub non_finite: usize,
    /// The metrics over the remaining rows.
    pub metrics: AgeMetrics,
}

/// Matches `ids` (one per row, with `predictions`) to `table` and computes the metrics; no row
/// left to compare is an error that says why each was left out.
pub fn compare(ids: &[i64], predictions: &[f32], table: &AgeTable) -> Result<Report> {
    let (mut padding, mut not_in_csv, mut missing_age, mut non_finite) = (0, 0, 0, 0);
    let (mut pred, mut truth) = (Vec::new(), Vec::new());
    for (&id, &p) in ids.iter().zip(predictions) {
        if id == 0 {
            padding += 1;
            continue;
        }
        match table.age_by_id.get(&id) {
            None => not_in_csv += 1,
            Some(a) if !a.is_finite() => missing_age += 1,
            Some(_) if !p.is_finite() => non_finite += 1,
            Some(&a) => {
                pred.push(p as f64);
                truth.push(a);
            }
        }
    }
    if pred.is_empty() {
        return Err(Error::Dataset(format!(
            "no row could be compared with {}: of {} rows, {padding} are padding (exam id 0), \
             {not_in_csv} have an id the table does not list, {missing_age} a missing age, \
             {non_finite} a non-finite prediction (the predictions file was written)",
            table.path.display(),
            ids.len()
        ))
        .into());
    }
    Ok(Report {
        csv: table.path.clone(),
        rows: ids.len(),
        padding,
        not_in_csv,
        missing_age,
        non_finite,
        metrics: age_metrics(&pred, &truth)?,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.metrics;
        writeln!(f, "compared with: {}", self.csv.display())?;
        writeln!(f, "rows: {}", self.rows)?;
        writeln!(f, "compared: {}", m.n)?;
        writeln!(f, "left out, padding (exam id 0): {}", self.padding)?;
        writeln!(f, "left out, id not in csv: {}", self.not_in_csv)?;
        writeln!(f, "left out, missing age: {}", self.missing_age)?;
        writeln!(f, "left out, non-finite prediction: {}", self.non_finite)?;
        writeln!(f, "MAE: {:.6} years", m.mae)?;
        writeln!(f, "RMSE: {:.6} years", m.rmse)?;
        writeln!(
            f,
            "mean error (predicted - true): {:.6} years",
            m.mean_error
        )?;
        match m.pearson_r {
            Some(r) => writeln!(f, "Pearson r: {r:.6}"),
            None => writeln!(
                f,
                "Pearson r: nan (undefined: the predicted or the true ages are constant)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_matched_by_id_and_the_others_counted_by_reason() {
        let table = AgeTable::from_pairs(
            Path::new("exams.csv"),
            [
                (10, 40.0),
                (11, 50.0),
                (12, f64::NAN),
                (13, 60.0),
                (14, 70.0),
            ],
        );
        let ids = [11, 99, 0, 12, 10, 13, 14];
        let preds = [52.0, 1.0, 3.0, 4.0, 41.0, f32::NAN, 66.0];
        let r = compare(&ids, &preds, &table).unwrap();
        assert_eq!(
            (r.rows, r.padding, r.not_in_csv, r.missing_age, r.non_finite),
            (7, 1, 1, 1, 1)
        );
        // Compared: (52, 50), (41, 40), (66, 70): errors 2, 1, -4.
        let want = age_metrics(&[52.0, 41.0, 66.0], &[50.0, 40.0, 70.0]).unwrap();
        assert_eq!(r.metrics, want);
        assert_eq!(
            (want.n, want.mae, want.mean_error),
            (3, 7.0 / 3.0, -1.0 / 3.0)
        );
        let text = r.to_string();
        assert!(text.contains("compared: 3\n"), "{text}");
        assert!(text.contains("MAE: 2.333333 years\n"), "{text}");
        assert!(text.contains("left out, id not in csv: 1\n"), "{text}");
    }

    #[test]
    fn nothing_to_compare_is_an_error_saying_why() {
        let table = AgeTable::from_pairs(Path::new("exams.csv"), [(10, 40.0)]);
        let e = compare(&[0, 5], &[1.0, 2.0], &table)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exams.csv") && e.contains("1 are padding") && e.contains("1 have an id"),
            "{e}"
        );
    }

    #[test]
    fn constant_predictions_report_r_as_undefined() {
        let table = AgeTable::from_pairs(Path::new("e.csv"), [(1, 30.0), (2, 40.0)]);
        let r = compare(&[1, 2], &[35.0, 35.0], &table).unwrap();
        assert!(r.to_string().contains("Pearson r: nan (undefined"), "{r}");
    }
}
