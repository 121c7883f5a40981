//! A bit-exact port of the parts of NumPy's legacy `numpy.random.RandomState` that the seed's
//! `get_splits` uses: seeding with an integer (MT19937 `init_genrand`), the raw 32-bit stream
//! (`genrand_int32`), bounded draws by masked rejection (`random_interval`, also what
//! `randint`/`choice` do for ranges below 2^32) and the in-place Fisher–Yates `shuffle`.
//!
//! NumPy keeps this stream frozen across versions, so a given seed gives the same choices and
//! permutations here as `np.random.RandomState(seed)` does in Python. The tests compare against
//! the classic MT19937 reference outputs and against NumPy outputs recorded in
//! `tests/fixtures/split/numpy_stream.json` by `scripts/py/make_split_fixture.py`.

/// Degree of recurrence of MT19937 (words of state).
const N: usize = 624;
/// Middle word offset.
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// NumPy's legacy `RandomState`, seeded with an integer, restricted to 32-bit draws.
#[derive(Clone)]
pub struct RandomState {
    key: [u32; N],
    pos: usize,
}

impl std::fmt::Debug for RandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomState")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl RandomState {
    /// `np.random.RandomState(seed)`: MT19937 `init_genrand(seed)`. NumPy accepts seeds in
    /// `0..2^32`, which is exactly `u32`.
    pub fn new(seed: u32) -> Self {
        let mut key = [0u32; N];
        key[0] = seed;
        for i in 1..N {
            let prev = key[i - 1];
            key[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        RandomState { key, pos: N }
    }

    /// Regenerates the whole state block (`mt19937_gen`).
    fn generate(&mut self) {
        let k = &mut self.key;
        let twist = |y: u32| (y >> 1) ^ if y & 1 == 1 { MATRIX_A } else { 0 };
        for i in 0..N - M {
            let y = (k[i] & UPPER_MASK) | (k[i + 1] & LOWER_MASK);
            k[i] = k[i + M] ^ twist(y);
        }
        for i in N - M..N - 1 {
            let y = (k[i] & UPPER_MASK) | (k[i + 1] & LOWER_MASK);
            k[i] = k[i + M - N] ^ twist(y);
        }
        let y = (k[N - 1] & UPPER_MASK) | (k[0] & LOWER_MASK);
        k[N - 1] = k[M - 1] ^ twist(y);
        self.pos = 0;
    }

    /// The next raw 32-bit output (`genrand_int32`, NumPy's `next_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= N {
            self.generate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform integer in `[0, max]` (`random_interval`): with `mask` the smallest `2^b - 1`
    /// that is at least `max`, draws `next_u32() & mask` until the value is at most `max`.
    /// `max == 0` returns 0 without drawing.
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mask = u32::MAX >> max.leading_zeros();
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// The index that `rng.choice(a)` picks from a sequence of `k` elements (`randint(0, k)`):
    /// for `k == 1` it is 0 and nothing is drawn, as in NumPy. `k` must be at least 1 (NumPy
    /// raises on an empty sequence); 0 is treated like 1.
    pub fn choice_index(&mut self, k: u32) -> u32 {
        self.interval(k.saturating_sub(1))
    }

    /// `rng.shuffle(x)`: Fisher–Yates from the end, `j = interval(i)` for `i = n-1 .. 1`.
    ///
    /// # Panics
    /// When `x` has more than 2^32 elements (NumPy would switch to 64-bit draws there).
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        assert!(
            x.len() as u64 <= 1 << 32,
            "shuffle of more than 2^32 elements"
        );
        for i in (1..x.len()).rev() {
            let j = self.interval(i as u32) as usize;
            x.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_mt19937_outputs() {
        // The reference implementation's default seed and its published first outputs.
        let mut r = RandomState::new(5489);
        let got: Vec<u32> = (0..5).map(|_| r.next_u32()).collect();
        assert_eq!(
            got,
            [
                3_499_211_612,
                581_869_302,
                3_890_346_734,
                3_586_334_585,
                545_404_204
            ]
        );
        // The 10000th output for seed 5489 (C++ std::mt19937's required check value).
        let mut r = RandomState::new(5489);
        let last = (0..10_000).map(|_| r.next_u32()).last();
        assert_eq!(last, Some(4_123_659_995));
    }

    /// Replays the outputs NumPy recorded (scripts/py/make_split_fixture.py).
    #[test]
    fn matches_numpy_recorded_streams() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/split/numpy_stream.json"
        );
        let text = std::fs::read_to_string(path).expect("fixture numpy_stream.json");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let streams = doc["streams"].as_array().unwrap();
        assert!(streams.len() >= 3);
        let u32s = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        };
        for s in streams {
            let seed = s["seed"].as_u64().unwrap() as u32;
            let mut r = RandomState::new(seed);
            let raw: Vec<u32> = (0..700).map(|_| r.next_u32()).collect();
            assert_eq!(raw[..10], u32s(&s["raw_first"])[..], "seed {seed}");
            assert_eq!(raw[600..], u32s(&s["raw_600_to_700"])[..], "seed {seed}");

            let mut r = RandomState::new(seed);
            let ops = s["ops"].as_array().unwrap();
            for (i, op) in ops.iter().enumerate() {
                match op["op"].as_str().unwrap() {
                    "choice" => {
                        let k = op["k"].as_u64().unwrap() as u32;
                        let want = op["value"].as_u64().unwrap() as u32;
                        assert_eq!(
                            r.choice_index(k),
                            want,
                            "seed {seed}, op {i}: choice of {k}"
                        );
                    }
                    "shuffle" => {
                        let n = op["n"].as_u64().unwrap() as u32;
                        let mut x: Vec<u32> = (0..n).collect();
                        r.shuffle(&mut x);
                        assert_eq!(x, u32s(&op["value"]), "seed {seed}, op {i}: shuffle of {n}");
                    }
                    other => panic!("unknown op {other}"),
                }
            }
        }
    }

    #[test]
    fn interval_masks_and_rejects() {
        let mut a = RandomState::new(1);
        let mut b = RandomState::new(1);
        for max in [1u32, 2, 3, 5, 6, 7, 100, 1000, 65_535, 1 << 31, u32::MAX] {
            let v = a.interval(max);
            assert!(v <= max);
            // The same value by hand: the first masked raw output that is <= max.
            let mask = ((u64::from(max) + 1).next_power_of_two() - 1) as u32;
            let want = loop {
                let raw = b.next_u32() & mask;
                if raw <= max {
                    break raw;
                }
            };
            assert_eq!(v, want, "max {max}");
        }
    }

    #[test]
    fn choice_of_one_draws_nothing() {
        let mut a = RandomState::new(0);
        let mut b = RandomState::new(0);
        assert_eq!(a.choice_index(1), 0);
        assert_eq!(a.next_u32(), b.next_u32());
    }

    #[test]
    fn shuffle_is_a_permutation_and_consumes_draws_from_the_end() {
        let mut r = RandomState::new(42);
        let mut x: Vec<u32> = (0..1000).collect();
        r.shuffle(&mut x);
        let mut sorted = x.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(x, sorted);
        // Empty and single-element shuffles draw nothing.
        let mut a = RandomState::new(3);
        let mut b = RandomState::new(3);
        a.shuffle::<u8>(&mut []);
        a.shuffle(&mut [7u8]);
        assert_eq!(a.next_u32(), b.next_u32());
    }
}
