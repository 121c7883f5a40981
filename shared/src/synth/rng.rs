//! Random streams of the generator. Every patient, exam and part has its own stream, seeded
//! from `(seed, stream kind, index)`, so that the output depends only on the cohort size, the
//! seed and the part size, never on the number of threads or the order in which work is done. Also: a fast
//! approximately normal draw for the per-sample noise, and a keyed pseudo-random permutation
//! that turns consecutive indices into unique, random-looking ids.
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The generator's random number generator.
pub(crate) type SynthRng = Xoshiro256PlusPlus;

/// What a stream is used for; part of its seed so that streams of different kinds never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Stream {
    /// Everything about a patient: exam count, ages, sex, hidden offset, outcome, exam parameters.
    Patient = 0x5041_5449,
    /// The waveform details of one exam: morphology jitter, beat times, baseline wander, noise.
    Waveform = 0x5741_5645,
    /// The row order of one HDF5 part.
    RowOrder = 0x524f_5753,
    /// The keys of the exam-id and patient-id permutations.
    Ids = 0x4944_5321,
}

/// SplitMix64 finaliser: a bijective mix of 64 bits.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of stream `kind` number `index` of a cohort generated with `seed`.
pub(crate) fn stream_seed(seed: u64, kind: Stream, index: u64) -> u64 {
    mix64(mix64(seed ^ (kind as u64).rotate_left(32)) ^ index)
}

/// A generator for stream `kind` number `index`.
pub(crate) fn stream(seed: u64, kind: Stream, index: u64) -> SynthRng {
    SynthRng::seed_from_u64(stream_seed(seed, kind, index))
}

/// Standard deviation of the sum of four independent uniform 16-bit integers.
const SUM4_SD: f32 = 37_837.23;
/// Mean of the sum of four independent uniform 16-bit integers.
const SUM4_MEAN: f32 = 131_070.0;

/// An approximately standard normal value from one 64-bit draw: the sum of its four 16-bit
/// quarters (Irwin-Hall with four terms), centred and scaled to unit variance. Its tails
/// end at about 3.5; that is enough for measurement noise and several times faster than an
/// exact normal sampler, which matters at 48,000 noise samples per exam.
#[inline]
pub(crate) fn fast_normal(rng: &mut SynthRng) -> f32 {
    let u = rng.next_u64();
    let s = (u & 0xffff) + ((u >> 16) & 0xffff) + ((u >> 32) & 0xffff) + (u >> 48);
    (s as f32 - SUM4_MEAN) * (1.0 / SUM4_SD)
}

/// A keyed pseudo-random bijection of `0..domain` (a four-round Feistel network on the
/// smallest even number of bits that covers the domain, with cycle walking back into it).
#[derive(Debug, Clone)]
pub(crate) struct IdPermutation {
    domain: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl IdPermutation {
    /// A permutation of `0..domain` (`domain >= 1`) keyed by `key`.
    pub(crate) fn new(domain: u64, key: u64) -> Self {
        let domain = domain.max(1);
        let bits = 64 - (domain - 1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let mut k = key;
        let keys = std::array::from_fn(|_| {
            k = mix64(k);
            k
        });
        IdPermutation {
            domain,
            half_bits,
            keys,
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut l, mut r) = (x >> self.half_bits, x & mask);
        for k in self.keys {
            let f = mix64(r ^ k) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half_bits) | r
    }

    /// The image of `i` (`i < domain`), also in `0..domain`.
    pub(crate) fn apply(&self, i: u64) -> u64 {
        debug_assert!(i < self.domain);
        // The network permutes 0..2^(2 half_bits), at most 4x the domain: walking the cycle
        // until it lands back in the domain keeps it a bijection and ends after a few steps.
        let mut x = self.feistel(i);
        while x >= self.domain {
            x = self.feistel(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_bijection() {
        for domain in [1u64, 2, 3, 17, 1000, 4097] {
            let p = IdPermutation::new(domain, 42);
            let mut seen = vec![false; domain as usize];
            for i in 0..domain {
                let j = p.apply(i);
                assert!(j < domain);
                assert!(!seen[j as usize], "domain {domain}: {j} hit twice");
                seen[j as usize] = true;
            }
        }
    }

    #[test]
    fn permutation_scatters_consecutive_indices() {
        let p = IdPermutation::new(9_900_000, 7);
        let ids: Vec<u64> = (0..100).map(|i| p.apply(i)).collect();
        let ascending = ids.windows(2).filter(|w| w[1] > w[0]).count();
        assert!(
            (20..80).contains(&ascending),
            "{ascending} of 99 steps ascend"
        );
    }

    #[test]
    fn fast_normal_has_unit_moments() {
        let mut rng = stream(1, Stream::Waveform, 0);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| fast_normal(&mut rng) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn streams_differ_by_kind_and_index() {
        let a = stream_seed(5, Stream::Patient, 0);
        assert_ne!(a, stream_seed(5, Stream::Patient, 1));
        assert_ne!(a, stream_seed(5, Stream::Waveform, 0));
        assert_ne!(a, stream_seed(6, Stream::Patient, 0));
        assert_eq!(a, stream_seed(5, Stream::Patient, 0));
    }
}
