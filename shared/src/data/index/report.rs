//! The report of [`super::DatasetIndex::build`]: how many CSV rows and HDF5 rows were used,
//! and how many were left out for each reason, with a few examples of each.
use std::fmt;
use std::path::PathBuf;

use crate::ids::ExamId;

/// Examples kept per category.
const EXAMPLES: usize = 5;

/// A count with the first few examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally<T> {
    /// How many.
    pub count: usize,
    /// The first few (at most 5).
    pub examples: Vec<T>,
}

impl<T> Default for Tally<T> {
    fn default() -> Self {
        Tally {
            count: 0,
            examples: Vec::new(),
        }
    }
}

impl<T> Tally<T> {
    pub(super) fn add(&mut self, item: T) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(item);
        }
    }
}

/// A row of an HDF5 file, by base name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRef {
    /// Base name of the file.
    pub file: String,
    /// Row in the file.
    pub row: u32,
}

impl fmt::Display for RowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} row {}", self.file, self.row)
    }
}

/// What [`super::DatasetIndex::build`] found. Each CSV row is counted once: usable, or excluded for
/// the first reason that applies in the order no tracing, missing age, age out of range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexReport {
    /// The CSV file.
    pub csv_path: PathBuf,
    /// Rows of the CSV.
    pub csv_rows: usize,
    /// Number of HDF5 files.
    pub files: usize,
    /// Rows of all HDF5 files, padding included.
    pub hdf5_rows: usize,
    /// Exams in the index.
    pub usable: usize,
    /// The usable age range, years, inclusive.
    pub age_range: (f64, f64),
    /// CSV exams that no HDF5 file holds (excluded).
    pub csv_not_in_hdf5: Tally<ExamId>,
    /// CSV exams without an age (excluded).
    pub missing_age: Tally<ExamId>,
    /// CSV exams whose age is outside [`IndexReport::age_range`] (excluded).
    pub age_out_of_range: Tally<ExamId>,
    /// HDF5 rows whose exam id is not in the CSV (unused).
    pub hdf5_not_in_csv: Tally<ExamId>,
    /// HDF5 rows with exam id 0 (padding, unused).
    pub padding_rows: Tally<RowRef>,
    /// Padding rows whose tracing is not all zeros (unused, but suspicious).
    pub padding_not_zero: Tally<RowRef>,
    /// Exams found in another file than the CSV's `trace_file` names (used: the join is by id).
    pub wrong_trace_file: Tally<ExamId>,
    /// `trace_file` values naming none of the HDF5 files given, with the number of CSV exams
    /// without a tracing that name each (sorted by name): parts missing here.
    pub absent_files: Vec<(String, usize)>,
}

impl IndexReport {
    /// CSV rows left out of the index.
    pub fn excluded(&self) -> usize {
        self.csv_not_in_hdf5.count + self.missing_age.count + self.age_out_of_range.count
    }

    /// [`IndexReport::absent_files`] as text: `exams_part3.hdf5 (1204 exams), ...`.
    pub fn absent_files_text(&self) -> String {
        self.absent_files
            .iter()
            .map(|(name, n)| format!("{name} ({n} exams)"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn tally_line<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    t: &Tally<T>,
) -> fmt::Result {
    write!(f, "\n  {what}: {}", t.count)?;
    if !t.examples.is_empty() {
        let ex = t
            .examples
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let more = if t.count > t.examples.len() {
            ", ..."
        } else {
            ""
        };
        write!(f, " (e.g. {ex}{more})")?;
    }
    Ok(())
}

impl fmt::Display for IndexReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dataset index: {} usable exams of {} rows in {}; {} HDF5 file(s) with {} rows",
            self.usable,
            self.csv_rows,
            self.csv_path.display(),
            self.files,
            self.hdf5_rows
        )?;
        tally_line(f, "excluded, no HDF5 row", &self.csv_not_in_hdf5)?;
        if !self.absent_files.is_empty() {
            write!(
                f,
                "\n    of which in HDF5 files that trace_file names but that are not here: {}",
                self.absent_files_text()
            )?;
        }
        tally_line(f, "excluded, missing age", &self.missing_age)?;
        let (lo, hi) = self.age_range;
        tally_line(
            f,
            &format!("excluded, age outside [{lo}, {hi}]"),
            &self.age_out_of_range,
        )?;
        tally_line(
            f,
            "HDF5 rows not in the CSV (unused)",
            &self.hdf5_not_in_csv,
        )?;
        tally_line(f, "padding rows (exam_id 0)", &self.padding_rows)?;
        tally_line(
            f,
            "padding rows that are not all zeros",
            &self.padding_not_zero,
        )?;
        tally_line(
            f,
            "exams in another file than trace_file says",
            &self.wrong_trace_file,
        )
    }
}
