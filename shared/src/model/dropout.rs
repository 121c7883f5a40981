//! Dropout as PyTorch's `nn.Dropout(p)`: in training each value is zeroed with probability `p`
//! and the survivors are scaled by `1 / (1 - p)`; in evaluation it is the identity. The masks
//! come from a [`MaskSource`], so that training draws them from a seeded generator (seeded by
//! run, step and worker in the distributed trainer) while the parity tests replay PyTorch's.
use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Where dropout masks come from.
pub trait MaskSource {
    /// The multiplier for the dropout layer `name` (e.g. `resblock1d_0.dropout1`): a tensor of
    /// `shape` holding 0 for dropped values and `1 / (1 - p)` for kept ones.
    fn mask(
        &mut self,
        name: &str,
        shape: &[usize],
        p: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor>;
}

/// Masks drawn from a seeded xoshiro256++ stream: each value is kept when a uniform 32-bit draw
/// is at or above `p * 2^32`.
#[derive(Debug, Clone)]
pub struct RngMasks {
    rng: Xoshiro256PlusPlus,
}

impl RngMasks {
    /// A generator for one step: the same seed gives the same masks.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }
}

impl MaskSource for RngMasks {
    fn mask(
        &mut self,
        _name: &str,
        shape: &[usize],
        p: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let keep = if p >= 1.0 {
            0.0
        } else {
            (1.0 / (1.0 - p)) as f32
        };
        let threshold = (p.clamp(0.0, 1.0) * 4_294_967_296.0).min(u32::MAX as f64 + 1.0) as u64;
        let mut values = Vec::with_capacity(n);
        while values.len() < n {
            let r = self.rng.next_u64();
            for half in [r as u32, (r >> 32) as u32] {
                if values.len() < n {
                    values.push(if u64::from(half) >= threshold {
                        keep
                    } else {
                        0.0
                    });
                }
            }
        }
        Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
    }
}

/// Masks given in advance by layer name (as multipliers), e.g. the ones PyTorch drew in a
/// parity fixture.
#[derive(Debug, Default, Clone)]
pub struct FixedMasks {
    masks: HashMap<String, Vec<f32>>,
}

impl FixedMasks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the multiplier values of layer `name`.
    pub fn insert(&mut self, name: impl Into<String>, multipliers: Vec<f32>) {
        self.masks.insert(name.into(), multipliers);
    }
}

impl MaskSource for FixedMasks {
    fn mask(
        &mut self,
        name: &str,
        shape: &[usize],
        _p: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let values = self.masks.get(name).ok_or_else(|| {
            candle_core::Error::Msg(format!("no dropout mask for layer {name:?}"))
        })?;
        Tensor::from_slice(values, shape, device)?.to_dtype(dtype)
    }
}

/// Applies dropout to `x` with masks from `source` (identity when `p` is 0).
pub fn dropout(x: &Tensor, name: &str, p: f64, source: &mut dyn MaskSource) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let mask = source.mask(name, x.dims(), p, x.dtype(), x.device())?;
    x.mul(&mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_masks_drop_about_p_and_scale_survivors() {
        let mut src = RngMasks::new(7);
        let m = src
            .mask("d", &[200, 500], 0.8, DType::F32, &Device::Cpu)
            .unwrap();
        let v = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let kept = v.iter().filter(|&&x| x != 0.0).count() as f64 / v.len() as f64;
        assert!((kept - 0.2).abs() < 0.01, "kept fraction {kept}");
        assert!(v.iter().all(|&x| x == 0.0 || (x - 5.0).abs() < 1e-6));
        // Same seed, same masks; another seed, other masks.
        let again = RngMasks::new(7)
            .mask("d", &[200, 500], 0.8, DType::F32, &Device::Cpu)
            .unwrap();
        assert_eq!(v, again.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let other = RngMasks::new(8)
            .mask("d", &[200, 500], 0.8, DType::F32, &Device::Cpu)
            .unwrap();
        assert_ne!(v, other.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn extreme_rates() {
        let mut src = RngMasks::new(1);
        let all = src
            .mask("d", &[1000], 1.0, DType::F32, &Device::Cpu)
            .unwrap();
        assert!(all.to_vec1::<f32>().unwrap().iter().all(|&x| x == 0.0));
        let x = Tensor::ones(10, DType::F32, &Device::Cpu).unwrap();
        let same = dropout(&x, "d", 0.0, &mut src).unwrap();
        assert_eq!(same.to_vec1::<f32>().unwrap(), vec![1.0; 10]);
    }
}
