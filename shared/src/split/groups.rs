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
        // (id, row) sorted by id, stably (so rows increase within a patient).
        let sorted = sort_rows_by_id(patient_id);
        let mut patients = Vec::new();
        let mut offsets = Vec::new();
        let mut rows = Vec::with_capacity(n);
        let mut patient_of_row = vec![0u32; n];
        for (i, (p, r)) in sorted.enumerate() {
            if patients.last() != Some(&p) {
                offsets.push(i as u32);
                patients.push(p);
            }
            rows.push(r);
            patient_of_row[r as usize] = (patients.len() - 1) as u32;
        }
        offsets.push(n as u32);
        PatientGroups {
            patients,
            offsets,
            rows,
            patient_of_row,
        }
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

/// `(id, row)` for every row, sorted by id, stably. When the ids span less than 2^32 (the usual
/// case), each row is packed with its id offset into one `u64` (`(id - min) << 32 | row`) and
/// only the id bits are radix-sorted; otherwise `(id, row)` pairs are sorted.
fn sort_rows_by_id(ids: &[PatientId]) -> Box<dyn Iterator<Item = (PatientId, u32)>> {
    let (Some(&min), Some(&max)) = (ids.iter().min(), ids.iter().max()) else {
        return Box::new(std::iter::empty());
    };
    let span = (max.0 as i128 - min.0 as i128) as u128;
    if span < 1 << 32 {
        let mut keys: Vec<u64> = ids
            .iter()
            .enumerate()
            .map(|(r, p)| ((p.0.wrapping_sub(min.0) as u64) << 32) | r as u64)
            .collect();
        let bits = 64 - (span as u64).leading_zeros();
        radix_sort_u64(&mut keys, 32, 32 + bits);
        Box::new(
            keys.into_iter()
                .map(move |k| (PatientId(min.0 + (k >> 32) as i64), k as u32)),
        )
    } else {
        let mut v: Vec<(PatientId, u32)> = ids
            .iter()
            .enumerate()
            .map(|(r, &p)| (p, r as u32))
            .collect();
        v.sort_by_key(|&(id, _)| id);
        Box::new(v.into_iter())
    }
}

/// Stable LSD radix sort of `keys` by their bits `lo..hi`, 11 bits a pass (a histogram fits
/// in the L1 cache); all histograms are counted in one read.
fn radix_sort_u64(keys: &mut Vec<u64>, lo: u32, hi: u32) {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    let passes: Vec<u32> = (lo..hi).step_by(BITS as usize).collect();
    let mut counts = vec![[0usize; BUCKETS]; passes.len()];
    for &k in keys.iter() {
        for (c, &shift) in counts.iter_mut().zip(&passes) {
            c[((k >> shift) as usize) & (BUCKETS - 1)] += 1;
        }
    }
    let mut tmp = vec![0u64; keys.len()];
    for (c, &shift) in counts.iter_mut().zip(&passes) {
        if c.contains(&keys.len()) {
            continue; // every key has the same digit here
        }
        let mut sum = 0;
        for x in c.iter_mut() {
            let here = *x;
            *x = sum;
            sum += here;
        }
        for &k in keys.iter() {
            let d = ((k >> shift) as usize) & (BUCKETS - 1);
            tmp[c[d]] = k;
            c[d] += 1;
        }
        std::mem::swap(keys, &mut tmp);
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
    fn sorted_rows_match_a_stable_sort_for_narrow_and_wide_ids() {
        // A small deterministic pseudo-random sequence with repeats and negatives.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let narrow: Vec<PatientId> = (0..5000)
            .map(|_| PatientId((next() % 70_000) as i64 - 3_000))
            .collect();
        let wide: Vec<PatientId> = (0..5000)
            .map(|r| {
                PatientId(if r % 2 == 0 {
                    (next() % 50) as i64
                } else {
                    (next() >> 1) as i64
                })
            })
            .collect();
        for ids in [narrow, wide] {
            let mut want: Vec<(PatientId, u32)> = (0..ids.len() as u32)
                .map(|r| (ids[r as usize], r))
                .collect();
            want.sort_by_key(|&(id, _)| id);
            assert_eq!(sort_rows_by_id(&ids).collect::<Vec<_>>(), want);
        }
        assert_eq!(sort_rows_by_id(&[]).count(), 0);
    }
}
