//! The seed's loss on plain slices: the weighted **sum** (not mean) of squared errors
//! `sum_i w_i (y_i - p_i)^2`, its gradient with respect to the predictions `2 w_i (p_i - y_i)`,
//! and the absolute-error helpers for the MAE column of the history.
use crate::{Error, Result};

fn check_lengths(what: &str, y: &[f32], p: &[f32], w: Option<&[f32]>) -> Result<()> {
    let bad = p.len() != y.len() || w.is_some_and(|w| w.len() != y.len());
    if bad {
        return Err(Error::Training(format!(
            "{what}: {} targets, {} predictions, {} weights; expected equal lengths",
            y.len(),
            p.len(),
            w.map_or("no".to_string(), |w| w.len().to_string())
        )));
    }
    Ok(())
}

/// `sum_i w_i (y_i - p_i)^2` over targets `y`, predictions `p` and weights `w`; each term is
/// formed in `f32` as the seed does and accumulated in `f64`.
pub fn weighted_sse(y: &[f32], p: &[f32], w: &[f32]) -> Result<f64> {
    check_lengths("loss", y, p, Some(w))?;
    Ok(y.iter()
        .zip(p)
        .zip(w)
        .map(|((&y, &p), &w)| {
            let d = y - p;
            (w * d * d) as f64
        })
        .sum())
}

/// The gradient of [`weighted_sse`] with respect to the predictions, `2 w_i (p_i - y_i)`,
/// written into `grad` (same length as the inputs).
pub fn weighted_sse_grad(y: &[f32], p: &[f32], w: &[f32], grad: &mut [f32]) -> Result<()> {
    check_lengths("loss gradient", y, p, Some(w))?;
    if grad.len() != y.len() {
        return Err(Error::Training(format!(
            "loss gradient: output has {} values, expected {}",
            grad.len(),
            y.len()
        )));
    }
    for (((g, &y), &p), &w) in grad.iter_mut().zip(y).zip(p).zip(w) {
        *g = 2.0 * w * (p - y);
    }
    Ok(())
}

/// `sum_i |y_i - p_i|` in `f64`, for reducing the MAE across workers before dividing.
pub fn abs_error_sum(y: &[f32], p: &[f32]) -> Result<f64> {
    check_lengths("absolute error", y, p, None)?;
    Ok(y.iter().zip(p).map(|(&y, &p)| (y - p).abs() as f64).sum())
}

/// The mean absolute error `sum_i |y_i - p_i| / n`; `NaN` for empty inputs.
pub fn mae(y: &[f32], p: &[f32]) -> Result<f64> {
    Ok(abs_error_sum(y, p)? / y.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_a_weighted_sum() {
        // 0.5*(40-38)^2 + 2*(60-61)^2 + 1*(20-20)^2 = 2 + 2 + 0
        let y = [40.0, 60.0, 20.0];
        let p = [38.0, 61.0, 20.0];
        let w = [0.5, 2.0, 1.0];
        assert_eq!(weighted_sse(&y, &p, &w).unwrap(), 4.0);
        // Doubling the batch doubles the loss (a sum, not a mean).
        let y2 = [40.0, 60.0, 20.0, 40.0, 60.0, 20.0];
        let p2 = [38.0, 61.0, 20.0, 38.0, 61.0, 20.0];
        let w2 = [0.5, 2.0, 1.0, 0.5, 2.0, 1.0];
        assert_eq!(weighted_sse(&y2, &p2, &w2).unwrap(), 8.0);
    }

    #[test]
    fn gradient_matches_hand_values_and_finite_differences() {
        let y = [40.0f32, 60.0, 20.0];
        let p = [38.0f32, 61.0, 20.5];
        let w = [0.5f32, 2.0, 1.0];
        let mut g = [0.0f32; 3];
        weighted_sse_grad(&y, &p, &w, &mut g).unwrap();
        assert_eq!(g, [-2.0, 4.0, 1.0]);
        for i in 0..3 {
            let h = 1e-2f32;
            let mut hi = p;
            hi[i] += h;
            let mut lo = p;
            lo[i] -= h;
            let fd = (weighted_sse(&y, &hi, &w).unwrap() - weighted_sse(&y, &lo, &w).unwrap())
                / (2.0 * h as f64);
            assert!((fd - g[i] as f64).abs() < 1e-3, "{i}: {fd} vs {}", g[i]);
        }
    }

    #[test]
    fn mean_absolute_error() {
        let y = [40.0, 60.0, 20.0, 30.0];
        let p = [38.0, 61.0, 20.0, 34.0];
        assert_eq!(abs_error_sum(&y, &p).unwrap(), 7.0);
        assert_eq!(mae(&y, &p).unwrap(), 1.75);
    }

    #[test]
    fn refuses_length_mismatch() {
        let e = weighted_sse(&[1.0, 2.0], &[1.0], &[1.0, 1.0]).unwrap_err();
        assert!(e.to_string().contains("1 predictions"), "{e}");
        assert!(weighted_sse(&[1.0], &[1.0], &[]).is_err());
        assert!(weighted_sse_grad(&[1.0], &[1.0], &[1.0], &mut [0.0; 2]).is_err());
        assert!(mae(&[1.0], &[]).is_err());
    }
}
