//! The `file` strategy's list of pinned patients: a CSV with a patient id column (by name,
//! default `patient_id`) and optionally a `split` column. A patient may be listed on several
//! rows (CODE-15%'s `exams.csv` has one row per exam) as long as the rows agree; two different
//! splits for one patient are an error naming the patient and both lines.
use super::kind::Split;
use super::strategy::PinSpec;
use crate::data::csv::{open_with_headers, parse_int, require_column};
use crate::ids::PatientId;
use crate::{Error, Result};

/// Pinned patients with their splits, sorted by patient id, one entry per patient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinList {
    /// `(patient, split)`, increasing patient ids, no repeats.
    pub pins: Vec<(PatientId, Split)>,
}

impl PinList {
    /// Reads the CSV named by `spec`.
    pub fn read(spec: &PinSpec) -> Result<Self> {
        let path = spec.path.as_path();
        if path.as_os_str().is_empty() {
            return Err(Error::Config(
                "strategy `file` needs a pin file (--pin-file)".into(),
            ));
        }
        let (mut rdr, headers) = open_with_headers(path)?;
        let c_id = require_column(path, &headers, &spec.column)?;
        let c_split = headers.iter().position(|h| *h == spec.split_column);

        // (patient, split, line) for every row, then sorted and merged.
        let mut rows: Vec<(i64, Split, u64)> = Vec::new();
        let mut rec = csv::ByteRecord::new();
        loop {
            match rdr.read_byte_record(&mut rec) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(Error::csv(path, e.position().map(|p| p.line()), e)),
            }
            let line = rec.position().map_or(0, |p| p.line());
            let raw = rec.get(c_id).unwrap_or(b"");
            let id = parse_int(raw).ok_or_else(|| {
                Error::csv(
                    path,
                    Some(line),
                    format!(
                        "column `{}`: `{}` is not an integer id",
                        spec.column,
                        String::from_utf8_lossy(raw)
                    ),
                )
            })?;
            let split = match c_split.and_then(|c| rec.get(c)).map(|b| b.trim_ascii()) {
                None | Some(b"") => spec.split,
                Some(raw) => String::from_utf8_lossy(raw).parse::<Split>().map_err(|e| {
                    Error::csv(
                        path,
                        Some(line),
                        format!("column `{}`: {e}", spec.split_column),
                    )
                })?,
            };
            rows.push((id, split, line));
        }
        rows.sort_by_key(|&(id, _, line)| (id, line));
        let mut pins: Vec<(PatientId, Split)> = Vec::new();
        for (i, &(id, split, line)) in rows.iter().enumerate() {
            if i > 0 && rows[i - 1].0 == id {
                let (_, first, first_line) = rows[i - 1];
                if first != split {
                    return Err(Error::csv(
                        path,
                        None,
                        format!(
                            "patient {id} is pinned to {first} on line {first_line} and to {split} \
                             on line {line}"
                        ),
                    ));
                }
                continue;
            }
            pins.push((PatientId(id), split));
        }
        Ok(PinList { pins })
    }

    /// The pinned split of each patient of a sorted, distinct list of patients (`None` where
    /// not pinned), and the number of pins that match none of them.
    pub fn lookup(&self, patients: &[PatientId]) -> (Vec<Option<Split>>, usize) {
        let mut out = vec![None; patients.len()];
        let (mut i, mut matched) = (0, 0);
        for (p, slot) in patients.iter().zip(out.iter_mut()) {
            while i < self.pins.len() && self.pins[i].0 < *p {
                i += 1;
            }
            if i < self.pins.len() && self.pins[i].0 == *p {
                *slot = Some(self.pins[i].1);
                matched += 1;
            }
        }
        (out, self.pins.len() - matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn spec(path: PathBuf) -> PinSpec {
        PinSpec {
            path,
            ..Default::default()
        }
    }

    #[test]
    fn repeated_rows_merge_and_split_column_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "pins.csv",
            "exam_id,patient_id,split\n1,30,valid\n2,10,\n3,30,valid\n4,20,train\n",
        );
        let pins = PinList::read(&spec(p)).unwrap();
        assert_eq!(
            pins.pins,
            vec![
                (PatientId(10), Split::Test),
                (PatientId(20), Split::Train),
                (PatientId(30), Split::Valid)
            ]
        );
        let (found, unmatched) = pins.lookup(&[5, 10, 30, 40].map(PatientId));
        assert_eq!(found, [None, Some(Split::Test), Some(Split::Valid), None]);
        assert_eq!(unmatched, 1, "patient 20 is not in the table");
    }

    #[test]
    fn conflicts_and_bad_values_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "conflict.csv",
                "patient_id,split\n7,test\n8,train\n7,train\n",
                "patient 7 is pinned to test on line 2 and to train on line 4",
            ),
            ("nocol.csv", "id\n7\n", "missing column `patient_id`"),
            (
                "badid.csv",
                "patient_id\nseven\n",
                "`seven` is not an integer id",
            ),
            (
                "badsplit.csv",
                "patient_id,split\n7,dev\n",
                "`dev` is not a split",
            ),
        ];
        for (name, text, want) in cases {
            let err = PinList::read(&spec(write(dir.path(), name, text)))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        }
        let err = PinList::read(&PinSpec::default()).unwrap_err().to_string();
        assert!(err.contains("--pin-file"), "{err}");
    }
}
