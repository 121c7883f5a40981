//! The `hash` strategy: a patient's split depends only on its id, the seed and the fractions,
//! never on the other patients, so adding exams or patients to the table never moves anyone.
//!
//! The key is `blake3::derive_key` of the seed; the patient id (8 bytes, little-endian) is
//! hashed with it, the first 8 bytes of the hash (little-endian) give 53 bits of a uniform
//! number `u` in `[0, 1)`; `u < test` is test, `u < test + valid` is validation, the rest
//! training.
use super::kind::{Fractions, Split};
use crate::ids::PatientId;

/// Context string of the key derivation (changing it changes every hash split).
const CONTEXT: &str = "ecg-cluster patient split hash v1";

/// Assigns patients to splits by a keyed hash of their id.
#[derive(Debug, Clone)]
pub struct HashSplitter {
    key: [u8; 32],
    test_end: f64,
    valid_end: f64,
}

impl HashSplitter {
    /// A splitter for `seed` and `fractions` (which must be valid, see [`Fractions::new`]).
    pub fn new(seed: u32, fractions: Fractions) -> Self {
        let key = blake3::derive_key(CONTEXT, &u64::from(seed).to_le_bytes());
        HashSplitter {
            key,
            test_end: fractions.test,
            valid_end: fractions.test + fractions.valid,
        }
    }

    /// The patient's uniform number in `[0, 1)`.
    pub fn unit(&self, patient: PatientId) -> f64 {
        let h = blake3::keyed_hash(&self.key, &patient.0.to_le_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&h.as_bytes()[..8]);
        (u64::from_le_bytes(first) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// The patient's split.
    pub fn split(&self, patient: PatientId) -> Split {
        let u = self.unit(patient);
        if u < self.test_end {
            Split::Test
        } else if u < self.valid_end {
            Split::Valid
        } else {
            Split::Train
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_hold_roughly_and_seeds_differ() {
        let f = Fractions::new(0.2, 0.1).unwrap();
        let h = HashSplitter::new(0, f);
        let mut counts = [0usize; 3];
        for p in 0..20_000 {
            counts[h.split(PatientId(p)).index()] += 1;
        }
        let share = |s: Split| counts[s.index()] as f64 / 20_000.0;
        assert!((share(Split::Test) - 0.2).abs() < 0.015, "{counts:?}");
        assert!((share(Split::Valid) - 0.1).abs() < 0.015, "{counts:?}");
        let h1 = HashSplitter::new(1, f);
        let moved = (0..1000)
            .filter(|&p| h.split(PatientId(p)) != h1.split(PatientId(p)))
            .count();
        assert!(
            moved > 100,
            "a different seed gives a different split ({moved} moved)"
        );
    }

    #[test]
    fn zero_fractions_put_everyone_in_train() {
        let h = HashSplitter::new(7, Fractions::new(0.0, 0.0).unwrap());
        assert!((-50..50).all(|p| h.split(PatientId(p)) == Split::Train));
        let h = HashSplitter::new(7, Fractions::new(1.0, 0.0).unwrap());
        assert!((-50..50).all(|p| h.split(PatientId(p)) == Split::Test));
    }
}
