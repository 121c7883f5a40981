//! `conv1d`: forward against a direct-loop reference and Candle's stock forward, for every
//! (kernel, stride, padding) the model uses, batches of 1 to 3 (both threading plans), single and
//! multiple im2col tiles and non-contiguous arguments; both gradients against finite differences.
use candle_core::{DType, Device, Result, Tensor};

use super::super::conv1d::{conv1d, conv1d_tiled};
use super::{grad_pair, max_rel_err, tensor, uniform};

/// (kernel, stride, padding) of the model's convolutions.
const CASES: [(usize, usize, usize); 4] = [(17, 1, 8), (17, 4, 7), (17, 2, 8), (1, 1, 0)];

/// Direct-loop cross-correlation: x (b, ci, l), w (co, ci, k) -> (b, co, l_out).
fn naive(
    x: &[f64],
    (b, ci, l): (usize, usize, usize),
    w: &[f64],
    (co, k): (usize, usize),
    s: usize,
    p: usize,
) -> Vec<f64> {
    let l_out = (l + 2 * p - k) / s + 1;
    let mut out = vec![0.0; b * co * l_out];
    for n in 0..b {
        for o in 0..co {
            for t in 0..l_out {
                let mut acc = 0.0;
                for c in 0..ci {
                    for j in 0..k {
                        let i = (t * s + j) as isize - p as isize;
                        if i >= 0 && (i as usize) < l {
                            acc += x[(n * ci + c) * l + i as usize] * w[(o * ci + c) * k + j];
                        }
                    }
                }
                out[(n * co + o) * l_out + t] = acc;
            }
        }
    }
    out
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

#[test]
fn forward_matches_the_direct_loop_for_every_model_shape() -> Result<()> {
    let (ci, co, l) = (3, 5, 37);
    for (case, &(k, s, p)) in CASES.iter().enumerate() {
        for b in [1, 2, 3] {
            let seed = (case * 10 + b) as u64;
            let (xv, wv) = (uniform(b * ci * l, seed), uniform(co * ci * k, seed + 100));
            let want = naive(&xv, (b, ci, l), &wv, (co, k), s, p);
            for dtype in [DType::F64, DType::F32] {
                let x = tensor(&xv, &[b, ci, l])?.to_dtype(dtype)?;
                let w = tensor(&wv, &[co, ci, k])?.to_dtype(dtype)?;
                for tile in [None, Some(4), Some(7)] {
                    let got = conv1d_tiled(&x, &w, s, p, tile, false)?;
                    assert_eq!(got.dims(), [b, co, (l + 2 * p - k) / s + 1]);
                    assert_eq!(got.dtype(), dtype);
                    let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                    let err = max_rel_err(&values(&got)?, &want);
                    assert!(
                        err < tol,
                        "k{k} s{s} p{p} b{b} {dtype:?} tile {tile:?}: error {err}"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn non_contiguous_arguments_give_the_same_result() -> Result<()> {
    let (b, ci, co, l) = (2, 4, 3, 29);
    for &(k, s, p) in &CASES {
        let (xv, wv) = (uniform(b * ci * l, 7), uniform(co * ci * k, 8));
        let want = naive(&xv, (b, ci, l), &wv, (co, k), s, p);
        // x stored as (b, l, ci) and w as (k, ci, co), then viewed as (b, ci, l) / (co, ci, k).
        let x = tensor(&xv, &[b, ci, l])?
            .transpose(1, 2)?
            .contiguous()?
            .transpose(1, 2)?;
        let w = tensor(&wv, &[co, ci, k])?
            .permute((2, 1, 0))?
            .contiguous()?
            .permute((2, 1, 0))?;
        assert!(!x.is_contiguous() && (k == 1 || !w.is_contiguous()));
        let err = max_rel_err(&values(&conv1d(&x, &w, s, p)?)?, &want);
        assert!(err < 1e-12, "k{k} s{s} p{p}: error {err}");
        // A narrowed view (offset into its storage) of a longer input.
        let wide = tensor(&uniform(b * ci * (l + 5), 9), &[b, ci, l + 5])?;
        let narrow = wide.narrow(2, 3, l)?;
        let dense = narrow.contiguous()?;
        let (a, c) = (conv1d(&narrow, &w, s, p)?, conv1d(&dense, &w, s, p)?);
        assert_eq!(values(&a)?, values(&c)?, "k{k} s{s} p{p}: narrowed view");
    }
    Ok(())
}

#[test]
fn forward_agrees_with_candle_stock_conv1d() -> Result<()> {
    let (b, ci, co, l) = (3, 6, 4, 64);
    for &(k, s, p) in &CASES {
        let x = Tensor::randn(0f32, 1.0, (b, ci, l), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (co, ci, k), &Device::Cpu)?;
        let ours = values(&conv1d(&x, &w, s, p)?)?;
        let stock = values(&x.conv1d(&w, p, s, 1, 1)?)?;
        let err = max_rel_err(&ours, &stock);
        assert!(err < 1e-4, "k{k} s{s} p{p}: error {err}");
    }
    Ok(())
}

#[test]
fn input_and_weight_gradients_match_finite_differences() -> Result<()> {
    let (ci, co) = (3, 4);
    for (case, &(k, s, p)) in CASES.iter().enumerate() {
        let l = if k == 1 { 9 } else { 20 };
        for (b, tile) in [(2, None), (3, Some(3)), (1, None)] {
            let seed = 1000 + (case * 10 + b) as u64;
            let (xv, wv) = (uniform(b * ci * l, seed), uniform(co * ci * k, seed + 1));
            let (xs, ws) = ([b, ci, l], [co, ci, k]);
            let w = tensor(&wv, &ws)?;
            let (ga, gn) = grad_pair(&xv, &xs, |x| conv1d_tiled(x, &w, s, p, tile, false))?;
            let err = max_rel_err(&ga, &gn);
            assert!(
                err < 1e-7,
                "input gradient k{k} s{s} p{p} b{b} tile {tile:?}: error {err}"
            );
            let x = tensor(&xv, &xs)?;
            let (ga, gn) = grad_pair(&wv, &ws, |w| conv1d_tiled(&x, w, s, p, tile, false))?;
            let err = max_rel_err(&ga, &gn);
            assert!(
                err < 1e-7,
                "weight gradient k{k} s{s} p{p} b{b} tile {tile:?}: error {err}"
            );
        }
    }
    Ok(())
}

#[test]
fn every_small_geometry_matches_the_reference_in_both_directions() -> Result<()> {
    // Lengths shorter than the stride, phases wholly in the padding, kernels as long as the
    // padded input: the edge cases of the stride-phase split.
    let (b, ci, co) = (2, 2, 3);
    let mut checked = 0;
    for l in 1..=6 {
        for k in 1..=4 {
            for s in 1..=4 {
                for p in 0..=2 {
                    let (xv, wv) = (uniform(b * ci * l, 31), uniform(co * ci * k, 32));
                    let (x, w) = (tensor(&xv, &[b, ci, l])?, tensor(&wv, &[co, ci, k])?);
                    if l + 2 * p < k {
                        assert!(conv1d(&x, &w, s, p).is_err(), "l{l} k{k} s{s} p{p}");
                        continue;
                    }
                    let want = naive(&xv, (b, ci, l), &wv, (co, k), s, p);
                    let err = max_rel_err(&values(&conv1d(&x, &w, s, p)?)?, &want);
                    assert!(err < 1e-12, "forward l{l} k{k} s{s} p{p}: error {err}");
                    let (ga, gn) = grad_pair(&xv, &[b, ci, l], |x| conv1d(x, &w, s, p))?;
                    let err = max_rel_err(&ga, &gn);
                    assert!(
                        err < 1e-7,
                        "input gradient l{l} k{k} s{s} p{p}: error {err}"
                    );
                    let (ga, gn) = grad_pair(&wv, &[co, ci, k], |w| conv1d(&x, w, s, p))?;
                    let err = max_rel_err(&ga, &gn);
                    assert!(
                        err < 1e-7,
                        "weight gradient l{l} k{k} s{s} p{p}: error {err}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 200, "only {checked} geometries checked");
    Ok(())
}

#[test]
fn gradients_of_a_plain_sum_and_of_both_arguments_at_once() -> Result<()> {
    // loss = sum(out): the output gradient arrives as a broadcast (stride 0) view.
    let (b, ci, co, l, k, s, p) = (2, 2, 3, 12, 17, 2, 8);
    let xv = candle_core::Var::from_tensor(&tensor(&uniform(b * ci * l, 5), &[b, ci, l])?)?;
    let wv = candle_core::Var::from_tensor(&tensor(&uniform(co * ci * k, 6), &[co, ci, k])?)?;
    let grads = conv1d(xv.as_tensor(), wv.as_tensor(), s, p)?
        .sum_all()?
        .backward()?;
    let (Some(gx), Some(gw)) = (grads.get(xv.as_tensor()), grads.get(wv.as_tensor())) else {
        panic!("missing gradients");
    };
    let x = xv.as_tensor().flatten_all()?.to_vec1::<f64>()?;
    let w = wv.as_tensor().flatten_all()?.to_vec1::<f64>()?;
    let l_out = (l + 2 * p - k) / s + 1;
    // d/dw[o,c,j] sum(out) = sum over n, t of x[n, c, t*s + j - p] (inside the input).
    let mut want_w = vec![0.0; co * ci * k];
    let mut want_x = vec![0.0; b * ci * l];
    for o in 0..co {
        for c in 0..ci {
            for j in 0..k {
                for n in 0..b {
                    for t in 0..l_out {
                        let i = (t * s + j) as isize - p as isize;
                        if i >= 0 && (i as usize) < l {
                            want_w[(o * ci + c) * k + j] += x[(n * ci + c) * l + i as usize];
                            want_x[(n * ci + c) * l + i as usize] += w[(o * ci + c) * k + j];
                        }
                    }
                }
            }
        }
    }
    assert!(max_rel_err(&gw.flatten_all()?.to_vec1::<f64>()?, &want_w) < 1e-12);
    assert!(max_rel_err(&gx.flatten_all()?.to_vec1::<f64>()?, &want_x) < 1e-12);
    Ok(())
}

#[test]
fn a_constant_input_gets_no_gradient_and_the_weight_still_does() -> Result<()> {
    let (b, ci, co, l) = (2, 3, 2, 10);
    let x = tensor(&uniform(b * ci * l, 11), &[b, ci, l])?;
    let wv = candle_core::Var::from_tensor(&tensor(&uniform(co * ci * 17, 12), &[co, ci, 17])?)?;
    let grads = conv1d(&x, wv.as_tensor(), 1, 8)?.sum_all()?.backward()?;
    assert!(grads.get(&x).is_none());
    let gw = grads.get(wv.as_tensor()).map(|g| g.dims().to_vec());
    assert_eq!(gw, Some(vec![co, ci, 17]));
    Ok(())
}

#[test]
fn bad_arguments_are_errors_not_panics() -> Result<()> {
    let x = Tensor::zeros((2, 3, 20), DType::F32, &Device::Cpu)?;
    let w = Tensor::zeros((4, 3, 17), DType::F32, &Device::Cpu)?;
    let cases = [
        (
            "channels",
            conv1d(
                &x,
                &Tensor::zeros((4, 2, 17), DType::F32, &Device::Cpu)?,
                1,
                8,
            ),
        ),
        ("stride", conv1d(&x, &w, 0, 8)),
        ("longer", conv1d(&x.narrow(2, 0, 10)?, &w, 1, 3)),
        ("(batch", conv1d(&x.flatten(0, 1)?, &w, 1, 8)),
        ("F64", conv1d(&x, &w.to_dtype(DType::F64)?, 1, 8)),
        (
            "BF16",
            conv1d(&x.to_dtype(DType::BF16)?, &w.to_dtype(DType::BF16)?, 1, 8),
        ),
    ];
    for (needle, r) in cases {
        let err = r.expect_err(needle).to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    Ok(())
}
