//! `max_pool1d`: forward against a direct loop, the gradient to the first of tied maxima (and to
//! the last NaN, as PyTorch 2 does), finite differences where no ties exist, and errors.
use candle_core::{DType, Device, Result, Tensor, Var};

use super::super::maxpool::max_pool1d;
use super::{grad_pair, max_rel_err, tensor, uniform};

#[test]
fn forward_matches_the_window_maximum_for_any_layout() -> Result<()> {
    let (b, c, l, k) = (2, 3, 24, 4);
    let xv = uniform(b * c * l, 21);
    let mut want = Vec::new();
    for w in xv.chunks(k) {
        want.push(w.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    }
    let x = tensor(&xv, &[b, c, l])?;
    for dtype in [DType::F64, DType::F32] {
        let got = max_pool1d(&x.to_dtype(dtype)?, k)?;
        assert_eq!(got.dims(), [b, c, l / k]);
        let got = got.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        assert!(max_rel_err(&got, &want) < 1e-6, "{dtype:?}");
    }
    // The same values stored as (b, l, c) and viewed as (b, c, l).
    let xt = x.transpose(1, 2)?.contiguous()?.transpose(1, 2)?;
    assert!(!xt.is_contiguous());
    let got = max_pool1d(&xt, k)?.flatten_all()?.to_vec1::<f64>()?;
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn gradient_goes_to_the_first_of_tied_maxima() -> Result<()> {
    let ninf = f64::NEG_INFINITY;
    #[rustfmt::skip]
    let xv = [
        0.0, 0.0, 0.0, 0.0, // all tied: first
        1.0, 3.0, 3.0, 2.0, // tie in the middle: index 1
        -1.0, -2.0, -1.0, -1.0, // tie of negatives: index 0
        ninf, ninf, ninf, ninf, // all -inf: first
        0.5, 0.25, 0.75, 0.75, // tie at the end: index 2
    ];
    let x = Var::from_tensor(&tensor(&xv, &[1, 1, 20])?)?;
    let g = tensor(&[10.0, 20.0, 30.0, 40.0, 50.0], &[1, 1, 5])?;
    let out = max_pool1d(x.as_tensor(), 4)?;
    assert_eq!(
        out.flatten_all()?.to_vec1::<f64>()?,
        [0.0, 3.0, -1.0, ninf, 0.75]
    );
    let grads = (&out * &g)?.sum_all()?.backward()?;
    let Some(gx) = grads.get(x.as_tensor()) else {
        panic!("no gradient")
    };
    #[rustfmt::skip]
    let want = [
        10.0, 0.0, 0.0, 0.0,
        0.0, 20.0, 0.0, 0.0,
        30.0, 0.0, 0.0, 0.0,
        40.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 50.0, 0.0,
    ];
    assert_eq!(gx.flatten_all()?.to_vec1::<f64>()?, want);
    Ok(())
}

#[test]
fn nan_is_the_maximum_and_takes_the_gradient_like_pytorch() -> Result<()> {
    // PyTorch 2.x MaxPool1d on [1, nan, 2, nan | nan, 5, 6, 7]: values [nan, nan], gradient at
    // indices 3 and 4 (its CPU kernel moves to every NaN it meets).
    let nan = f64::NAN;
    let x = Var::from_tensor(&tensor(
        &[1.0, nan, 2.0, nan, nan, 5.0, 6.0, 7.0],
        &[1, 1, 8],
    )?)?;
    let out = max_pool1d(x.as_tensor(), 4)?;
    assert!(
        out.flatten_all()?
            .to_vec1::<f64>()?
            .iter()
            .all(|v| v.is_nan())
    );
    let grads = (&out * &tensor(&[1.0, 2.0], &[1, 1, 2])?)?
        .sum_all()?
        .backward()?;
    let Some(gx) = grads.get(x.as_tensor()) else {
        panic!("no gradient")
    };
    let gx = gx.flatten_all()?.to_vec1::<f64>()?;
    assert_eq!(gx, [0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0]);
    Ok(())
}

#[test]
fn gradient_matches_finite_differences_without_ties() -> Result<()> {
    for (b, c, l, k) in [(2, 3, 16, 4), (3, 2, 12, 2), (2, 2, 5, 1)] {
        let xv = uniform(b * c * l, (b * 100 + k) as u64);
        let (ga, gn) = grad_pair(&xv, &[b, c, l], |x| max_pool1d(x, k))?;
        let err = max_rel_err(&ga, &gn);
        assert!(err < 1e-7, "b{b} c{c} l{l} k{k}: error {err}");
        // Exactly one nonzero entry per window when k > 1 (r is dense): the gradient is routed,
        // not spread.
        if k > 1 {
            for w in ga.chunks(k) {
                assert_eq!(w.iter().filter(|v| **v != 0.0).count(), 1);
            }
        }
    }
    Ok(())
}

#[test]
fn bad_arguments_are_errors() -> Result<()> {
    let x = Tensor::zeros((2, 3, 10), DType::F32, &Device::Cpu)?;
    assert!(
        max_pool1d(&x, 4)
            .unwrap_err()
            .to_string()
            .contains("multiple")
    );
    assert!(
        max_pool1d(&x, 0)
            .unwrap_err()
            .to_string()
            .contains("multiple")
    );
    assert!(
        max_pool1d(&x.flatten(0, 1)?, 2)
            .unwrap_err()
            .to_string()
            .contains("(batch")
    );
    let err = max_pool1d(&x.to_dtype(DType::BF16)?, 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("BF16"), "{err}");
    Ok(())
}
