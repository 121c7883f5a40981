//! The seed's sample weights (`compute_weights(ages, max_weight=inf)`): every distinct age gets
//! the same total weight, `w_i = N / (K * count(age_i))` with `K` distinct ages counted by exact
//! equality, optionally clipped at a maximum and rescaled to sum to `N` again.
use std::collections::HashMap;

use crate::{Error, Result};

/// The seed's age-balancing weights for `ages`, in the same order.
///
/// Follows the seed's arithmetic in `f64` (raw `1 / count`, normalised to sum 1, times `N`) and
/// rounds to `f32` at the end. With `max_weight` (`None` = no cap, the seed's default of
/// infinity), weights are clipped at `max_weight` and rescaled so that they sum to `N`.
/// Ages must be finite (an empty age cannot be weighted); `max_weight` must be positive.
pub fn compute_weights(ages: &[f64], max_weight: Option<f64>) -> Result<Vec<f32>> {
    if let Some(i) = ages.iter().position(|a| !a.is_finite()) {
        return Err(Error::Training(format!(
            "sample weights: age at row {i} is {}, expected a finite number",
            ages[i]
        )));
    }
    if let Some(m) = max_weight.filter(|m| m.is_nan() || *m <= 0.0) {
        return Err(Error::Config(format!(
            "sample weights: max_weight {m} must be positive"
        )));
    }
    let n = ages.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    // Exact equality of values: -0.0 and 0.0 compare equal, so key them together.
    let key = |a: f64| if a == 0.0 { 0u64 } else { a.to_bits() };
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for &a in ages {
        *counts.entry(key(a)).or_insert(0) += 1;
    }
    let raw: Vec<f64> = ages.iter().map(|&a| 1.0 / counts[&key(a)] as f64).collect();
    let total: f64 = raw.iter().sum();
    let mut w: Vec<f64> = raw.iter().map(|r| n as f64 * (r / total)).collect();
    if let Some(m) = max_weight.filter(|m| m.is_finite()) {
        w.iter_mut().for_each(|x| *x = x.min(m));
        let s: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x = n as f64 * *x / s);
    }
    Ok(w.into_iter().map(|x| x as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_values() {
        let w = compute_weights(&[30.0, 30.0, 40.0], None).unwrap();
        assert_eq!(w, vec![0.75, 0.75, 1.5]);
        // 4 rows, 2 distinct ages (one with 3 rows): 4 / (2*3) and 4 / (2*1).
        let w = compute_weights(&[50.0, 20.0, 50.0, 50.0], None).unwrap();
        let expect = [4.0 / 6.0, 2.0, 4.0 / 6.0, 4.0 / 6.0];
        for (a, b) in w.iter().zip(expect) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn sums_to_n_and_balances_ages() {
        let ages: Vec<f64> = (0..97).map(|i| ((i * 7919) % 13) as f64 + 18.0).collect();
        let w = compute_weights(&ages, None).unwrap();
        let sum: f64 = w.iter().map(|&x| x as f64).sum();
        assert!((sum - 97.0).abs() < 1e-4, "sum {sum}");
        // Every distinct age carries the same total weight N / K.
        let mut per_age: HashMap<u64, f64> = HashMap::new();
        for (a, x) in ages.iter().zip(&w) {
            *per_age.entry(a.to_bits()).or_insert(0.0) += *x as f64;
        }
        let k = per_age.len() as f64;
        for t in per_age.values() {
            assert!((t - 97.0 / k).abs() < 1e-4, "{t}");
        }
    }

    #[test]
    fn exact_equality_and_signed_zero() {
        // 30.0 and 30.000001 are different ages; 0.0 and -0.0 are the same.
        let w = compute_weights(&[30.0, 30.000001, 0.0, -0.0], None).unwrap();
        assert_eq!(w, vec![4.0 / 3.0, 4.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]);
    }

    #[test]
    fn cap_clips_and_rescales() {
        // Uncapped: [0.75, 0.75, 1.5]; cap 1.0 gives [0.75, 0.75, 1.0] (sum 2.5), times 3/2.5.
        let w = compute_weights(&[30.0, 30.0, 40.0], Some(1.0)).unwrap();
        assert_eq!(w, vec![0.9, 0.9, 1.2]);
        let sum: f32 = w.iter().sum();
        assert!((sum - 3.0).abs() < 1e-6);
        // An infinite or large cap changes nothing.
        let a = compute_weights(&[30.0, 30.0, 40.0], Some(f64::INFINITY)).unwrap();
        let b = compute_weights(&[30.0, 30.0, 40.0], Some(10.0)).unwrap();
        assert_eq!(a, vec![0.75, 0.75, 1.5]);
        assert_eq!(b, a);
    }

    #[test]
    fn refuses_bad_input() {
        let e = compute_weights(&[30.0, f64::NAN], None).unwrap_err();
        assert!(e.to_string().contains("row 1"), "{e}");
        assert!(compute_weights(&[30.0], Some(0.0)).is_err());
        assert!(compute_weights(&[30.0], Some(f64::NAN)).is_err());
        assert!(compute_weights(&[], None).unwrap().is_empty());
    }
}
