//! What a split looks like: patients and exams per split and, per split, the age histogram of
//! its exams in decades, drawn as text bars. [`SplitReport`] implements `Display` so that the
//! coordinator can print it.
use std::fmt;

use super::SplitAssignment;
use super::kind::Split;
use crate::data::csv::ExamTable;

/// Decade bins `0-9` .. `90-99`, then `100+`, then missing ages.
const N_BINS: usize = 12;
/// Width of the longest bar, in characters.
const BAR: usize = 20;

/// Counts per split (indexed by [`Split::index`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitReport {
    /// Patients per split.
    pub patients: [usize; 3],
    /// Exams per split.
    pub exams: [usize; 3],
    /// Exams per split and age bin: decades 0-9 .. 90-99 (negative ages in the first), 100+,
    /// and last the exams without an age.
    pub age_bins: [[usize; N_BINS]; 3],
    /// `file` strategy: pinned patients with no exam in the table.
    pub unmatched_pins: usize,
}

impl SplitReport {
    /// The report of `assignment` over `table`.
    pub fn new(table: &ExamTable, assignment: &SplitAssignment) -> Self {
        let mut exams = [0usize; 3];
        let mut age_bins = [[0usize; N_BINS]; 3];
        for (&s, &age) in assignment.split.iter().zip(&table.age) {
            let bin = if age.is_nan() {
                N_BINS - 1
            } else {
                ((age.max(0.0) / 10.0) as usize).min(10)
            };
            exams[s.index()] += 1;
            age_bins[s.index()][bin] += 1;
        }
        SplitReport {
            patients: assignment.patients,
            exams,
            age_bins,
            unmatched_pins: assignment.unmatched_pins,
        }
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

impl fmt::Display for SplitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_p: usize = self.patients.iter().sum();
        let total_e: usize = self.exams.iter().sum();
        writeln!(
            f,
            "{:<8}{:>12}{:>8}{:>12}{:>8}",
            "split", "patients", "", "exams", ""
        )?;
        for s in Split::ALL {
            let (p, e) = (self.patients[s.index()], self.exams[s.index()]);
            writeln!(
                f,
                "{:<8}{:>12}{:>7.1}%{:>12}{:>7.1}%",
                s.as_str(),
                thousands(p),
                percent(p, total_p),
                thousands(e),
                percent(e, total_e)
            )?;
        }
        writeln!(
            f,
            "{:<8}{:>12}{:>8}{:>12}",
            "total",
            thousands(total_p),
            "",
            thousands(total_e)
        )?;
        if self.unmatched_pins > 0 {
            writeln!(
                f,
                "pinned patients without exams in the table: {}",
                thousands(self.unmatched_pins)
            )?;
        }

        writeln!(f, "\nage at exam (share of the split's exams)")?;
        let shares: Vec<[f64; N_BINS]> = Split::ALL
            .iter()
            .map(|s| {
                std::array::from_fn(|b| percent(self.age_bins[s.index()][b], self.exams[s.index()]))
            })
            .collect();
        let top = shares
            .iter()
            .flatten()
            .copied()
            .fold(0.0f64, f64::max)
            .max(1e-9);
        write!(f, "{:<8}", "age")?;
        for s in Split::ALL {
            write!(f, "  {:<width$}", s.as_str(), width = BAR + 7)?;
        }
        writeln!(f)?;
        for b in 0..N_BINS {
            let label = match b {
                10 => "100+".to_string(),
                11 => "missing".to_string(),
                _ => format!("{}-{}", b * 10, b * 10 + 9),
            };
            if b == N_BINS - 1 && Split::ALL.iter().all(|s| self.age_bins[s.index()][b] == 0) {
                break;
            }
            write!(f, "{label:<8}")?;
            for share in &shares {
                let bar = "#".repeat((share[b] / top * BAR as f64).round() as usize);
                write!(f, "  {bar:<BAR$}{:>6.1}%", share[b])?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ExamId, PatientId};

    #[test]
    fn counts_bins_and_prints() {
        let t = ExamTable {
            exam_id: (1..=5).map(ExamId).collect(),
            patient_id: [1, 1, 2, 3, 4].map(PatientId).to_vec(),
            age: vec![5.0, 19.5, 104.0, f64::NAN, 99.0],
            ..Default::default()
        };
        let a = SplitAssignment {
            split: vec![
                Split::Train,
                Split::Train,
                Split::Test,
                Split::Valid,
                Split::Test,
            ],
            patients: [1, 1, 2],
            unmatched_pins: 0,
        };
        let r = SplitReport::new(&t, &a);
        assert_eq!(r.exams, [2, 1, 2]);
        assert_eq!(r.age_bins[Split::Train.index()][0], 1);
        assert_eq!(r.age_bins[Split::Train.index()][1], 1);
        assert_eq!(r.age_bins[Split::Test.index()][10], 1);
        assert_eq!(r.age_bins[Split::Test.index()][9], 1);
        assert_eq!(r.age_bins[Split::Valid.index()][11], 1);
        let text = r.to_string();
        assert!(text.contains("missing"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("test") && l.contains("50.0%")),
            "{text}"
        );
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
