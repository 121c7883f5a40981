//! Agreement between predicted and true ages, as reported by `worker evaluate`: mean absolute
//! error, root mean squared error, mean error (predicted minus true: positive means the network
//! overestimates) and Pearson's correlation coefficient.
//!
//! Everything is computed in f64 with two passes: compensated (Neumaier) sums give the means,
//! then the second pass sums squared deviations from those means, so a large common offset (ages
//! around 50 differing by fractions of a year) costs no precision, unlike the one-pass
//! `Σxy − n·x̄·ȳ` formula. Pearson's r is undefined when either side is constant; it is then
//! `None`, not a NaN that would look like a number.
use crate::{Error, Result};

/// Age-prediction metrics over `n` exams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgeMetrics {
    /// Number of exams the metrics cover.
    pub n: usize,
    /// Mean absolute error in years.
    pub mae: f64,
    /// Root mean squared error in years.
    pub rmse: f64,
    /// Mean of predicted minus true age in years.
    pub mean_error: f64,
    /// Pearson correlation of predicted and true ages; `None` when either is constant (or only
    /// one exam), where the coefficient is undefined.
    pub pearson_r: Option<f64>,
}

impl std::fmt::Display for AgeMetrics {
    /// One line: `n 123, MAE 7.1234, RMSE 9.8765, mean error -0.4321, Pearson r 0.8123`, with
    /// `Pearson r nan (undefined: constant input)` when r is undefined.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n {}, MAE {:.4}, RMSE {:.4}, mean error {:.4}, ",
            self.n, self.mae, self.rmse, self.mean_error
        )?;
        match self.pearson_r {
            Some(r) => write!(f, "Pearson r {r:.4}"),
            None => write!(
                f,
                "Pearson r nan (undefined: the predicted or the true ages are constant)"
            ),
        }
    }
}

/// A sum with Neumaier's compensation: the rounding error of every addition is carried in a
/// second term, so the result is as if accumulated in (nearly) twice the precision.
#[derive(Debug, Default, Clone, Copy)]
struct CompensatedSum {
    sum: f64,
    carry: f64,
}

impl CompensatedSum {
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.carry += (self.sum - t) + v;
        } else {
            self.carry += (v - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(self) -> f64 {
        self.sum + self.carry
    }
}

/// Metrics of `predicted` against `true_age` (same length, same exam order).
///
/// Refused with [`Error::Training`]: different lengths, no exams, or a non-finite value (the
/// message names its position); the caller decides beforehand which exams to leave out.
pub fn age_metrics(predicted: &[f64], true_age: &[f64]) -> Result<AgeMetrics> {
    if predicted.len() != true_age.len() {
        return Err(Error::Training(format!(
            "age metrics: {} predictions but {} true ages",
            predicted.len(),
            true_age.len()
        )));
    }
    if predicted.is_empty() {
        return Err(Error::Training(
            "age metrics: no exams to compare".to_string(),
        ));
    }
    if let Some((i, (p, t))) = predicted
        .iter()
        .zip(true_age)
        .enumerate()
        .find(|(_, (p, t))| !p.is_finite() || !t.is_finite())
    {
        return Err(Error::Training(format!(
            "age metrics: exam {i} has predicted age {p} and true age {t}: both must be finite"
        )));
    }
    let n = predicted.len() as f64;

    let (mut sp, mut st, mut se, mut sae, mut sse) = Default::default();
    for (&p, &t) in predicted.iter().zip(true_age) {
        let e = p - t;
        CompensatedSum::add(&mut sp, p);
        CompensatedSum::add(&mut st, t);
        CompensatedSum::add(&mut se, e);
        CompensatedSum::add(&mut sae, e.abs());
        CompensatedSum::add(&mut sse, e * e);
    }
    let value = |s: CompensatedSum| s.value();
    let (mean_p, mean_t) = (value(sp) / n, value(st) / n);

    let (mut spp, mut stt, mut spt) = Default::default();
    for (&p, &t) in predicted.iter().zip(true_age) {
        let (dp, dt) = (p - mean_p, t - mean_t);
        CompensatedSum::add(&mut spp, dp * dp);
        CompensatedSum::add(&mut stt, dt * dt);
        CompensatedSum::add(&mut spt, dp * dt);
    }
    let (spp, stt, spt) = (value(spp), value(stt), value(spt));
    let pearson_r = if spp > 0.0 && stt > 0.0 {
        // Rounding may push |r| a hair past 1 for exactly linear data.
        Some((spt / (spp.sqrt() * stt.sqrt())).clamp(-1.0, 1.0))
    } else {
        None
    };
    Ok(AgeMetrics {
        n: predicted.len(),
        mae: value(sae) / n,
        rmse: (value(sse) / n).sqrt(),
        mean_error: value(se) / n,
        pearson_r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn small_vectors_match_hand_computed_values() {
        // errors p - t = [1, -2, 3, 0]: MAE 6/4, MSE 14/4, mean error 2/4.
        let t = [10.0, 20.0, 30.0, 40.0];
        let p = [11.0, 18.0, 33.0, 40.0];
        let m = age_metrics(&p, &t).unwrap();
        assert_eq!(m.n, 4);
        assert_eq!(m.mae, 1.5);
        assert_eq!(m.rmse, 3.5f64.sqrt());
        assert_eq!(m.mean_error, 0.5);
        // means 25.5 and 25; deviations p: [-14.5, -7.5, 7.5, 14.5], t: [-15, -5, 5, 15].
        // Σdp·dt = 217.5 + 37.5 + 37.5 + 217.5 = 510; Σdp² = 2·210.25 + 2·56.25 = 533;
        // Σdt² = 500. r = 510 / sqrt(533 · 500).
        let r = m.pearson_r.unwrap();
        assert!(close(r, 510.0 / (533.0f64 * 500.0).sqrt(), 1e-15), "{r}");
    }

    #[test]
    fn perfect_and_anti_correlation_give_plus_and_minus_one() {
        let t = [1.0, 2.0, 4.0, 8.0];
        let p: Vec<f64> = t.iter().map(|v| 3.0 * v + 7.0).collect();
        assert_eq!(age_metrics(&p, &t).unwrap().pearson_r, Some(1.0));
        let q: Vec<f64> = t.iter().map(|v| 100.0 - 0.5 * v).collect();
        assert_eq!(age_metrics(&q, &t).unwrap().pearson_r, Some(-1.0));
    }

    #[test]
    fn constant_input_leaves_r_undefined_but_the_errors_defined() {
        let t = [30.0, 40.0, 50.0];
        let p = [45.0, 45.0, 45.0];
        let m = age_metrics(&p, &t).unwrap();
        assert_eq!(m.pearson_r, None);
        // errors 15, 5, -5.
        assert_eq!(m.mae, 25.0 / 3.0);
        assert_eq!(m.mean_error, 5.0);
        assert!(m.to_string().contains("Pearson r nan (undefined"), "{m}");
        let one = age_metrics(&[3.0], &[5.0]).unwrap();
        assert_eq!(
            (one.n, one.mae, one.mean_error, one.pearson_r),
            (1, 2.0, -2.0, None)
        );
    }

    #[test]
    fn a_large_common_offset_costs_no_precision() {
        // The same spread as the hand-computed case, shifted by 1e9 years: the one-pass formula
        // loses every digit of the variances here; the two-pass one keeps r exactly.
        let off = 1e9;
        let t = [10.0 + off, 20.0 + off, 30.0 + off, 40.0 + off];
        let p = [11.0 + off, 18.0 + off, 33.0 + off, 40.0 + off];
        let m = age_metrics(&p, &t).unwrap();
        assert!(
            close(
                m.pearson_r.unwrap(),
                510.0 / (533.0f64 * 500.0).sqrt(),
                1e-12
            ),
            "{m:?}"
        );
        assert_eq!((m.mae, m.mean_error), (1.5, 0.5));
    }

    #[test]
    fn compensated_sum_keeps_small_terms_next_to_a_large_one() {
        let mut s = CompensatedSum::default();
        s.add(1e16);
        for _ in 0..1000 {
            s.add(1.0);
        }
        s.add(-1e16);
        assert_eq!(s.value(), 1000.0);
    }

    #[test]
    fn bad_inputs_are_refused_with_the_reason() {
        let e = age_metrics(&[1.0, 2.0], &[1.0]).unwrap_err().to_string();
        assert!(e.contains("2 predictions but 1 true ages"), "{e}");
        let e = age_metrics(&[], &[]).unwrap_err().to_string();
        assert!(e.contains("no exams"), "{e}");
        let e = age_metrics(&[1.0, f64::NAN], &[1.0, 2.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("exam 1") && e.contains("NaN"), "{e}");
    }
}
