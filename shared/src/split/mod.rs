//! Patient-level train / valid / test splits of the exams table. Every strategy decides per
//! patient and maps the decision to the patient's exams, so all exams of a patient are in one
//! split and every exam is in exactly one.
//!
//! Layout:
//! - [`kind`]: [`Split`] and the [`Fractions`] (test, valid; train gets the rest).
//! - [`strategy`]: [`SplitStrategy`] (`age-balanced`, `hash`, `file`) and [`PinSpec`].
//! - [`groups`]: exams grouped by sorted patient id (dense CSR arrays).
//! - [`numpy_rng`]: NumPy's legacy `RandomState` stream, bit-exact.
//! - [`age_balanced`]: the seed's `get_splits`, draw for draw.
//! - [`hash`]: keyed hash of the patient id, stable when patients are added.
//! - [`pinned`]: the `file` strategy's list of pinned patients.
//! - [`output`]: `split.csv`, written and read back.
//! - [`report`]: patients, exams and age histogram per split.
pub mod age_balanced;
pub mod groups;
pub mod hash;
pub mod kind;
pub mod numpy_rng;
pub mod output;
pub mod pinned;
pub mod report;
pub mod strategy;

pub use kind::{Fractions, Split};
pub use output::{SplitFile, read_split_csv, write_split_csv};
pub use report::SplitReport;
pub use strategy::{PinSpec, SplitStrategy};

use crate::data::csv::ExamTable;
use crate::{Error, Result};
use groups::PatientGroups;

/// The split of every exam, aligned with the rows of the [`ExamTable`] it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitAssignment {
    /// Split of each exam row.
    pub split: Vec<Split>,
    /// Number of patients in each split, indexed by [`Split::index`].
    pub patients: [usize; 3],
    /// `file` strategy: pinned patients that have no exam in the table (0 otherwise).
    pub unmatched_pins: usize,
}

impl SplitAssignment {
    /// Spreads per-patient splits (dense indices of `groups`) over the exam rows.
    pub fn from_patients(groups: &PatientGroups, per_patient: &[Split]) -> Self {
        let mut patients = [0usize; 3];
        for s in per_patient {
            patients[s.index()] += 1;
        }
        let split = groups
            .patient_of_row
            .iter()
            .map(|&p| per_patient[p as usize])
            .collect();
        SplitAssignment {
            split,
            patients,
            unmatched_pins: 0,
        }
    }

    /// Number of exams in each split, indexed by [`Split::index`].
    pub fn exams(&self) -> [usize; 3] {
        let mut n = [0usize; 3];
        for s in &self.split {
            n[s.index()] += 1;
        }
        n
    }

    /// Rows (exam indices) of one split, in CSV order.
    pub fn rows(&self, split: Split) -> Vec<usize> {
        self.split
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == split)
            .map(|(r, _)| r)
            .collect()
    }

    /// Checks that the assignment fits `table`: one split per row, all exams of a patient in
    /// the same split. Returns the per-split patient counts.
    pub fn check(&self, table: &ExamTable) -> Result<[usize; 3]> {
        if self.split.len() != table.len() {
            return Err(Error::Dataset(format!(
                "the split has {} exams, {} has {}",
                self.split.len(),
                table.path.display(),
                table.len()
            )));
        }
        let groups = PatientGroups::new(&table.patient_id);
        let mut patients = [0usize; 3];
        for p in 0..groups.len() {
            let rows = groups.exams(p);
            let first = self.split[rows[0] as usize];
            if let Some(&r) = rows.iter().find(|&&r| self.split[r as usize] != first) {
                return Err(Error::Dataset(format!(
                    "patient {} is in two splits: exam {} in {first}, exam {} in {}",
                    groups.patients[p],
                    table.exam_id[rows[0] as usize],
                    table.exam_id[r as usize],
                    self.split[r as usize]
                )));
            }
            patients[first.index()] += 1;
        }
        Ok(patients)
    }
}

/// Splits the patients of `table` with `strategy`, `seed` and `fractions`.
///
/// `age-balanced` reproduces the seed's `get_splits` with `RandomState(seed)`; `hash` and `file`
/// key their hash with `seed`.
pub fn assign(
    table: &ExamTable,
    strategy: &SplitStrategy,
    seed: u32,
    fractions: Fractions,
) -> Result<SplitAssignment> {
    fractions.validate()?;
    let groups = PatientGroups::new(&table.patient_id);
    let mut unmatched_pins = 0;
    let per_patient: Vec<Split> = match strategy {
        SplitStrategy::AgeBalanced => {
            let window = age_balanced::AgeWindow::default();
            age_balanced::age_balanced(&groups, &table.age, seed, fractions, window)?
                .split_of_patients()
        }
        SplitStrategy::Hash => {
            let h = hash::HashSplitter::new(seed, fractions);
            groups.patients.iter().map(|&p| h.split(p)).collect()
        }
        SplitStrategy::File(spec) => {
            let pins = pinned::PinList::read(spec)?;
            let (found, unmatched) = pins.lookup(&groups.patients);
            unmatched_pins = unmatched;
            let h = hash::HashSplitter::new(seed, fractions);
            groups
                .patients
                .iter()
                .zip(found)
                .map(|(&p, f)| f.unwrap_or_else(|| h.split(p)))
                .collect()
        }
    };
    let mut out = SplitAssignment::from_patients(&groups, &per_patient);
    out.unmatched_pins = unmatched_pins;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ExamId, PatientId};

    fn table(patients: &[i64]) -> ExamTable {
        ExamTable {
            exam_id: (0..patients.len() as i64)
                .map(|e| ExamId(e + 100))
                .collect(),
            patient_id: patients.iter().map(|&p| PatientId(p)).collect(),
            age: patients.iter().map(|&p| (p % 90) as f64).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn every_strategy_keeps_patients_whole() {
        let pids: Vec<i64> = (0..600).map(|i| (i * 37) % 250).collect();
        let t = table(&pids);
        let f = Fractions::new(0.2, 0.1).unwrap();
        for s in [SplitStrategy::AgeBalanced, SplitStrategy::Hash] {
            let a = assign(&t, &s, 3, f).unwrap();
            assert_eq!(a.check(&t).unwrap(), a.patients, "{s}");
            assert_eq!(a.patients.iter().sum::<usize>(), 250);
            assert_eq!(a.exams().iter().sum::<usize>(), 600);
        }
        let a = assign(&t, &SplitStrategy::AgeBalanced, 3, f).unwrap();
        assert_eq!(a.patients[Split::Test.index()], 50);
        assert_eq!(a.patients[Split::Valid.index()], 25);
    }

    #[test]
    fn check_refuses_a_patient_in_two_splits() {
        let t = table(&[1, 2, 1]);
        let a = SplitAssignment {
            split: vec![Split::Train, Split::Test, Split::Valid],
            patients: [1, 1, 1],
            unmatched_pins: 0,
        };
        let err = a.check(&t).unwrap_err().to_string();
        assert!(err.contains("patient 1 is in two splits"), "{err}");
    }

    #[test]
    fn bad_fractions_are_refused() {
        let t = table(&[1, 2]);
        let f = Fractions {
            test: 0.8,
            valid: 0.5,
        };
        assert!(assign(&t, &SplitStrategy::Hash, 0, f).is_err());
    }
}
