//! The seed's `get_splits` (`formulate_problem.py`), reproduced draw for draw so that the same
//! table and seed give the same patients in each split as the Python code with NumPy's legacy
//! `RandomState`:
//!
//! 1. patients in increasing id order; each patient's exams in CSV order;
//! 2. for each patient in that order, one representative exam drawn with `rng.choice`; the
//!    patient joins the list of the representative exam's age;
//! 3. the distinct ages of all exams (sorted) are shuffled, then each age's list is shuffled, in
//!    sorted-age order;
//! 4. the shuffled ages inside the window `16 <= age <= 85` are swept round-robin, popping one
//!    patient from the end of each non-empty list per sweep until they are all empty; then the
//!    ages outside the window the same way;
//! 5. the first `floor(test * n)` patients of that sequence are the test split, the next
//!    `floor(valid * n)` the validation split, the rest training.
//!
//! Ages are compared as the CSV's numbers (`-0` equals `0`). An exam without an age (NaN) is
//! not something the seed accepts; here all such exams share one age group placed after every
//! number and outside the window (as `np.unique` sorts and merges NaN).
//!
//! Everything is dense arrays: the only sort is the one that groups exams by patient.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::groups::PatientGroups;
use super::kind::{Fractions, Split};
use super::numpy_rng::RandomState;
use crate::{Error, Result};

/// The age window swept first (the seed's `min_age_valid`, `max_age_valid`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgeWindow {
    /// Smallest age in the window (inclusive).
    pub min: f64,
    /// Largest age in the window (inclusive).
    pub max: f64,
}

impl Default for AgeWindow {
    /// The seed's window: 16 to 85 years.
    fn default() -> Self {
        AgeWindow {
            min: 16.0,
            max: 85.0,
        }
    }
}

impl AgeWindow {
    fn contains(&self, age: f64) -> bool {
        self.min <= age && age <= self.max
    }
}

/// The result of the age-balanced algorithm, at patient level.
#[derive(Debug, Clone)]
pub struct AgeBalanced {
    /// Dense patient indices (into [`PatientGroups::patients`]) in the interleaved order of
    /// step 4: test patients first, then validation, then training.
    pub sequence: Vec<u32>,
    /// For each dense patient index, the exam row drawn as its representative.
    pub representative: Vec<u32>,
    /// Number of test, validation and training patients (in that order, the seed's order).
    pub sizes: [usize; 3],
}

impl AgeBalanced {
    /// Dense patient indices of one split, in the seed's order.
    pub fn patients(&self, split: Split) -> &[u32] {
        let [n_test, n_valid, _] = self.sizes;
        match split {
            Split::Test => &self.sequence[..n_test],
            Split::Valid => &self.sequence[n_test..n_test + n_valid],
            Split::Train => &self.sequence[n_test + n_valid..],
        }
    }

    /// The split of each dense patient index.
    pub fn split_of_patients(&self) -> Vec<Split> {
        let mut out = vec![Split::Train; self.sequence.len()];
        for split in [Split::Test, Split::Valid] {
            for &p in self.patients(split) {
                out[p as usize] = split;
            }
        }
        out
    }
}

/// A canonical key for an age: `-0` becomes `0` and every NaN the same NaN.
fn age_key(a: f64) -> u64 {
    if a.is_nan() {
        f64::NAN.to_bits()
    } else {
        (a + 0.0).to_bits()
    }
}

/// A fast hasher for the few distinct `u64` age keys (multiplicative, Fibonacci constant).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Sorted distinct ages of all exams and the rank of each exam's age among them. Whole ages
/// 0-255 (all of CODE) are looked up in a table, other values in a hash map.
fn rank_ages(ages: &[f64]) -> (Vec<f64>, Vec<u32>) {
    const NONE: u32 = u32::MAX;
    let mut whole = [NONE; 256];
    let mut other: HashMap<u64, u32, BuildHasherDefault<KeyHasher>> = HashMap::default();
    let mut distinct: Vec<f64> = Vec::new();
    let mut new_id = |key: f64| {
        distinct.push(key);
        (distinct.len() - 1) as u32
    };
    let ids: Vec<u32> = ages
        .iter()
        .map(|&a| {
            if (0.0..256.0).contains(&a) && a.fract() == 0.0 {
                let slot = &mut whole[a as usize];
                if *slot == NONE {
                    *slot = new_id(a + 0.0);
                }
                *slot
            } else {
                *other
                    .entry(age_key(a))
                    .or_insert_with(|| new_id(f64::from_bits(age_key(a))))
            }
        })
        .collect();
    let mut order: Vec<u32> = (0..distinct.len() as u32).collect();
    // The canonical NaN is positive, so total_cmp puts it after every number.
    order.sort_unstable_by(|&a, &b| distinct[a as usize].total_cmp(&distinct[b as usize]));
    let mut rank_of_id = vec![0u32; distinct.len()];
    for (rank, &id) in order.iter().enumerate() {
        rank_of_id[id as usize] = rank as u32;
    }
    let sorted = order.iter().map(|&id| distinct[id as usize]).collect();
    (
        sorted,
        ids.into_iter().map(|id| rank_of_id[id as usize]).collect(),
    )
}

/// Runs the seed's algorithm on exams grouped by patient, with `ages[row]` the age of each exam
/// row. Fails when the fractions are negative or sum to more than 1 (see [`Fractions::new`]).
pub fn age_balanced(
    groups: &PatientGroups,
    ages: &[f64],
    seed: u32,
    fractions: Fractions,
    window: AgeWindow,
) -> Result<AgeBalanced> {
    fractions.validate()?;
    if ages.len() != groups.patient_of_row.len() {
        return Err(Error::Dataset(format!(
            "age-balanced split: {} ages for {} exams",
            ages.len(),
            groups.patient_of_row.len()
        )));
    }
    let n_patients = groups.len();
    let mut rng = RandomState::new(seed);
    let (sorted_ages, age_rank) = rank_ages(ages);
    let n_ages = sorted_ages.len();

    // Step 2: representative exams, in increasing patient order.
    let mut representative = Vec::with_capacity(n_patients);
    let mut rep_age = Vec::with_capacity(n_patients);
    for p in 0..n_patients {
        let exams = groups.exams(p);
        let row = exams[rng.choice_index(exams.len() as u32) as usize];
        representative.push(row);
        rep_age.push(age_rank[row as usize]);
    }

    // Per-age lists of patients (CSR), patients appended in increasing order.
    let mut offsets = vec![0usize; n_ages + 1];
    for &a in &rep_age {
        offsets[a as usize + 1] += 1;
    }
    for a in 0..n_ages {
        offsets[a + 1] += offsets[a];
    }
    let mut fill = offsets.clone();
    let mut lists = vec![0u32; n_patients];
    for (p, &a) in rep_age.iter().enumerate() {
        lists[fill[a as usize]] = p as u32;
        fill[a as usize] += 1;
    }

    // Step 3: shuffle the ages, then each age's list in sorted-age order.
    let mut shuffled: Vec<u32> = (0..n_ages as u32).collect();
    rng.shuffle(&mut shuffled);
    for a in 0..n_ages {
        rng.shuffle(&mut lists[offsets[a]..offsets[a + 1]]);
    }

    // Step 4: round-robin over the window's ages, then over the others, popping from the end.
    let mut sequence = Vec::with_capacity(n_patients);
    let mut left: Vec<usize> = (0..n_ages).map(|a| offsets[a + 1] - offsets[a]).collect();
    for inside in [true, false] {
        let mut active: Vec<u32> = shuffled
            .iter()
            .copied()
            .filter(|&a| window.contains(sorted_ages[a as usize]) == inside)
            .filter(|&a| left[a as usize] > 0)
            .collect();
        while !active.is_empty() {
            active.retain(|&a| {
                let a = a as usize;
                left[a] -= 1;
                sequence.push(lists[offsets[a] + left[a]]);
                left[a] > 0
            });
        }
    }
    debug_assert_eq!(sequence.len(), n_patients);

    // Step 5: split sizes, as `int(s * n)`.
    let n_test = (fractions.test * n_patients as f64).floor() as usize;
    let n_valid = (fractions.valid * n_patients as f64).floor() as usize;
    let n_valid = n_valid.min(n_patients - n_test.min(n_patients));
    let n_test = n_test.min(n_patients);
    let sizes = [n_test, n_valid, n_patients - n_test - n_valid];
    Ok(AgeBalanced {
        sequence,
        representative,
        sizes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PatientId;

    #[test]
    fn ranks_merge_signed_zero_and_nan() {
        let ages = [
            40.0,
            f64::NAN,
            -0.0,
            12.5,
            0.0,
            40.0,
            f64::NAN,
            300.0,
            -2.0,
            255.0,
            -0.5,
        ];
        let (sorted, rank) = rank_ages(&ages);
        assert_eq!(sorted.len(), 8);
        assert_eq!(&sorted[..7], &[-2.0, -0.5, 0.0, 12.5, 40.0, 255.0, 300.0]);
        assert!(
            sorted[0..7]
                .iter()
                .all(|a| a.to_bits() != (-0.0f64).to_bits())
        );
        assert!(sorted[7].is_nan());
        assert_eq!(rank, [4, 7, 2, 3, 2, 4, 7, 6, 0, 5, 1]);
    }

    #[test]
    fn every_patient_once_and_sizes_follow_the_fractions() {
        // 100 patients, 1-3 exams each, ages 5..=95.
        let mut pids = Vec::new();
        let mut ages = Vec::new();
        for p in 0..100i64 {
            for e in 0..(p % 3 + 1) {
                pids.push(PatientId(1000 - p * 7));
                ages.push((5 + (p * 13 + e) % 91) as f64);
            }
        }
        let g = PatientGroups::new(&pids);
        let f = Fractions::new(0.15, 0.05).unwrap();
        let r = age_balanced(&g, &ages, 0, f, AgeWindow::default()).unwrap();
        assert_eq!(r.sizes, [15, 5, 80]);
        let mut seen = r.sequence.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<u32>>());
        for (p, &row) in r.representative.iter().enumerate() {
            assert!(
                g.exams(p).contains(&row),
                "representative of {p} is one of its exams"
            );
        }
        // Window patients come before all others in the sequence.
        let in_window =
            |p: u32| (16.0..=85.0).contains(&ages[r.representative[p as usize] as usize]);
        let first_outside = r.sequence.iter().position(|&p| !in_window(p)).unwrap();
        assert!(r.sequence[first_outside..].iter().all(|&p| !in_window(p)));
        // Another seed, another order.
        let r1 = age_balanced(&g, &ages, 1, f, AgeWindow::default()).unwrap();
        let bad = Fractions {
            test: 0.7,
            valid: 0.4,
        };
        assert!(age_balanced(&g, &ages, 0, bad, AgeWindow::default()).is_err());
        assert_ne!(r.sequence, r1.sequence);
    }
}
