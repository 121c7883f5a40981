//! Exams grouped by patient, as dense arrays: the sorted distinct patient ids, and for each
//! patient the rows of its exams in CSV order (a CSR layout: `offsets` into `rows`). Every
//! strategy decides per patient and maps the decision back to the exams through
//! [`PatientGroups::patient_of_row`], which is what guarantees that all exams of a patient land
//! in the same split.
use crate::ids::PatientId;

/// Exams grouped by patient; patients in increasing id order (the seed's `sorted(unique(...))`).
#[derive(Debug, Clone, Default)]
pub struct PatientGroups {
    /// Distinct patient ids, increasing.
    pub patients: Vec<PatientId>,
    /// `rows[offsets[p]..offsets[p + 1]]` are the exam rows of patient `p`; length
    /// `patients.len() + 1`.
    pub offsets: Vec<u32>,
    /// Exam rows (indices into the exam table) grouped by patient, CSV order within a patient.
    pub rows: Vec<u32>,
    /// For each exam row, the index of its patient in [`PatientGroups::patients`].
    pub patient_of_row: Vec<u32>,
}

impl PatientGroups {
    /// Groups the rows of a patient-id column.
    ///
    /// # Panics
    /// When there are 2^32 rows or more (the full CODE cohort has 2.3 M).
    pub fn new(patient_id: &[PatientId]) -> Self {
        let n = patient_id.len();
        assert!(n < u32::MAX as usize, "more than 2^32 exams");
        // Sort (id, row) pairs: the rows end up grouped by patient, increasing within each.
        let mut pairs: Vec<(i64, u32)> =
            patient_id.iter().enumerate().map(|(r, p)| (p.0, r as u32)).collect();
        radix_sort_pairs(&mut pairs);
        let mut patients = Vec::new();
        let mut offsets = Vec::new();
        let mut rows = Vec::with_capacity(n);
        let mut patient_of_row = vec![0u32; n];
        for (i, &(p, r)) in pairs.iter().enumerate() {
            if i == 0 || pairs[i - 1].0 != p {
                offsets.push(i as u32);
                patients.push(PatientId(p));
            }
            rows.push(r);
            patient_of_row[r as usize] = (patients.len() - 1) as u32;
        }
        offsets.push(n as u32);
        PatientGroups { patients, offsets, rows, patient_of_row }
    }

    /// Number of distinct patients.
    pub fn len(&self) -> usize {
        self.patients.len()
    }

    /// Whether there are no patients.
    pub fn is_empty(&self) -> bool {
        self.patients.is_empty()
    }

    /// The exam rows of patient `p` (dense index), in CSV order.
    pub fn exams(&self, p: usize) -> &[u32] {
        &self.rows[self.offsets[p] as usize..self.offsets[p + 1] as usize]
    }
}

/// Stable LSD radix sort of `(key, row)` pairs by key, 16 bits a pass, skipping passes whose
/// digit is the same for every key (ids below 2^32 need two passes). Stability keeps the rows
/// of one key in increasing order, since they start that way.
fn radix_sort_pairs(v: &mut Vec<(i64, u32)>) {
    const BITS: u32 = 16;
    const BUCKETS: usize = 1 << BITS;
    // Flip the sign bit so that unsigned order is signed order.
    let key = |k: i64| (k as u64) ^ (1 << 63);
    let mut tmp = vec![(0i64, 0u32); v.len()];
    let mut counts = vec![0usize; BUCKETS];
    for shift in (0..64).step_by(BITS as usize) {
        counts.iter_mut().for_each(|c| *c = 0);
        for &(k, _) in v.iter() {
            counts[((key(k) >> shift) as usize) & (BUCKETS - 1)] += 1;
        }
        if counts.iter().any(|&c| c == v.len()) {
            continue;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            let here = *c;
            *c = sum;
            sum += here;
        }
        for &(k, r) in v.iter() {
            let d = ((key(k) >> shift) as usize) & (BUCKETS - 1);
            tmp[counts[d]] = (k, r);
            counts[d] += 1;
        }
        std::mem::swap(v, &mut tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_rows_by_sorted_patient_in_csv_order() {
        let ids = [9, -4, 9, 1 << 40, 3, -4, 9].map(PatientId);
        let g = PatientGroups::new(&ids);
        assert_eq!(g.patients, [-4, 3, 9, 1 << 40].map(PatientId));
        assert_eq!(g.exams(0), &[1, 5]);
        assert_eq!(g.exams(1), &[4]);
        assert_eq!(g.exams(2), &[0, 2, 6]);
        assert_eq!(g.exams(3), &[3]);
        assert_eq!(g.patient_of_row, [2, 0, 2, 3, 1, 0, 2]);
    }

    #[test]
    fn radix_sort_matches_a_stable_sort() {
        // A small deterministic pseudo-random sequence with repeats, negatives and large ids.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v: Vec<(i64, u32)> = (0..5000u32)
            .map(|r| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = match r % 3 {
                    0 => (x % 700) as i64,
                    1 => -((x % 50) as i64),
                    _ => (x >> 1) as i64,
                };
                (k, r)
            })
            .collect();
        let mut want = v.clone();
        want.sort_by_key(|&(k, _)| k);
        radix_sort_pairs(&mut v);
        assert_eq!(v, want);
    }
}
