//! The Candle-op versions of the convolution and the training batch norm (the CUDA paths without
//! cuDNN, and every CUDA batch norm), checked on the CPU against the custom ops: outputs, both
//! gradients (through Candle's autograd of the composition) and the batch statistics.
use candle_core::{DType, Result, Tensor, Var};

use super::super::composed;
use super::super::conv1d::conv1d;
use super::{max_rel_err, tensor, uniform};
use crate::model::bn_op::batch_norm_train;

fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// Output and the gradients of `sum(out * r)` with respect to both arguments.
fn run2(
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    a: &Tensor,
    b: &Tensor,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let (va, vb) = (Var::from_tensor(a)?, Var::from_tensor(b)?);
    let out = f(va.as_tensor(), vb.as_tensor())?;
    let r = tensor(&uniform(out.elem_count(), 5), out.dims())?;
    let g = (&out * &r)?.sum_all()?.backward()?;
    let grad = |v: &Var| -> Result<Vec<f64>> {
        values(
            g.get(v.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?,
        )
    };
    Ok((values(&out)?, grad(&va)?, grad(&vb)?))
}

#[test]
fn composed_convolution_matches_the_custom_op_with_gradients() -> Result<()> {
    // The model's (kernel, stride, padding) and a stride whose padded length is not a multiple.
    let cases = [
        (17, 1, 8, 37),
        (17, 4, 7, 37),
        (17, 2, 8, 37),
        (1, 1, 0, 37),
        (5, 3, 1, 23),
    ];
    for (i, &(k, s, p, l)) in cases.iter().enumerate() {
        let (b, ci, co) = (2, 3, 4);
        let x = tensor(&uniform(b * ci * l, i as u64), &[b, ci, l])?;
        let w = tensor(&uniform(co * ci * k, 50 + i as u64), &[co, ci, k])?;
        let ours = run2(|x, w| conv1d(x, w, s, p), &x, &w)?;
        let composed = run2(|x, w| composed::conv1d(x, w, s, p), &x, &w)?;
        let case = format!("k {k} s {s} p {p} l {l}");
        assert!(max_rel_err(&composed.0, &ours.0) < 1e-12, "{case}: output");
        assert!(
            max_rel_err(&composed.1, &ours.1) < 1e-12,
            "{case}: input gradient"
        );
        assert!(
            max_rel_err(&composed.2, &ours.2) < 1e-12,
            "{case}: weight gradient"
        );
    }
    Ok(())
}

#[test]
fn composed_batch_norm_matches_the_fused_op_with_gradients_and_statistics() -> Result<()> {
    let (b, c, l) = (3, 4, 11);
    let x = tensor(&uniform(b * c * l, 7), &[b, c, l])?.affine(2.0, 0.5)?;
    let w = tensor(&uniform(c, 8), &[c])?;
    let bias = tensor(&uniform(c, 9), &[c])?;
    // The weight and bias gradients, and the input's, through a product of the two arguments.
    for (name, f) in [("x", 0usize), ("weight", 1), ("bias", 2)] {
        let pick = |x: &Tensor, v: &Tensor, fused: bool| -> Result<Tensor> {
            let (xa, wa, ba) = match f {
                0 => (
                    x.broadcast_mul(&v.reshape((1, c, 1))?)?,
                    w.clone(),
                    bias.clone(),
                ),
                1 => (x.clone(), v.clone(), bias.clone()),
                _ => (x.clone(), w.clone(), v.clone()),
            };
            if fused {
                Ok(batch_norm_train(&xa, &wa, &ba, 1e-5)?.0)
            } else {
                Ok(composed::batch_norm_train(&xa, &wa, &ba, 1e-5)?.0)
            }
        };
        let v = tensor(&uniform(c, 10), &[c])?.affine(0.5, 1.0)?;
        let fused = run2(|x, v| pick(x, v, true), &x, &v)?;
        let comp = run2(|x, v| pick(x, v, false), &x, &v)?;
        assert!(max_rel_err(&comp.0, &fused.0) < 1e-10, "{name}: output");
        assert!(
            max_rel_err(&comp.1, &fused.1) < 1e-10,
            "{name}: input gradient"
        );
        assert!(
            max_rel_err(&comp.2, &fused.2) < 1e-10,
            "{name}: parameter gradient"
        );
    }
    let (_, mean, var) = composed::batch_norm_train(&x, &w, &bias, 1e-5)?;
    let (_, s) = batch_norm_train(&x, &w, &bias, 1e-5)?;
    assert!(max_rel_err(&values(&mean)?, &s.mean) < 1e-12);
    assert!(max_rel_err(&values(&var)?, &s.var) < 1e-12);
    Ok(())
}
