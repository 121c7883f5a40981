//! Dropout as PyTorch's `nn.Dropout(p)`: in training each value is zeroed with probability `p`
//! and the survivors are scaled by `1 / (1 - p)`; in evaluation it is the identity. The masks
//! come from a [`MaskSource`], so that training draws them from a seeded generator (seeded by
//! run, step and unit in the distributed trainer) while the parity tests replay PyTorch's.
//!
//! [`RngMasks`] decides each element by a counter-based hash of (seed, layer name, element
//! index) (splitmix64), so that the decision does not depend on the order of draws: the CPU and
//! the CUDA kernel (`ops/cuda/kernels.cu`) compute the same masks, and the op never builds a mask
//! tensor: the forward multiplies in place of a mask, and the backward applies the same op to the
//! gradient.
use std::collections::HashMap;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, bail,
};
use rayon::prelude::*;

/// Where dropout masks come from.
pub trait MaskSource {
    /// Applies the dropout layer `name` (e.g. `resblock1d_0.dropout1`), drop probability `p`,
    /// to `x`.
    fn apply(&mut self, x: &Tensor, name: &str, p: f64) -> Result<Tensor>;
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a layer name.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Whether element `i` of the layer keyed `key` is kept: its 32-bit draw is at or above
/// `threshold` (`p * 2^32`). The CUDA kernel computes the same.
fn keep(key: u64, threshold: u64, i: u64) -> bool {
    (mix(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN))) >> 32) >= threshold
}

/// Masks from a hash of (seed, layer name, element index).
#[derive(Debug, Clone)]
pub struct RngMasks {
    seed: u64,
}

impl RngMasks {
    /// A generator for one step: the same seed gives the same masks.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    fn op(&self, name: &str, p: f64) -> DropoutOp {
        DropoutOp {
            key: mix(mix(self.seed.wrapping_add(GOLDEN)) ^ name_hash(name)),
            threshold: (p.clamp(0.0, 1.0) * 4_294_967_296.0) as u64,
            scale: if p >= 1.0 {
                0.0
            } else {
                (1.0 / (1.0 - p)) as f32
            },
        }
    }

    /// The multiplier tensor of layer `name` for `shape` (0 for dropped values, `1 / (1 - p)`
    /// for kept ones): what [`MaskSource::apply`] multiplies by.
    pub fn mask(
        &self,
        name: &str,
        shape: &[usize],
        p: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        Tensor::ones(shape, dtype, device)?.apply_op1_no_bwd(&self.op(name, p))
    }
}

impl MaskSource for RngMasks {
    fn apply(&mut self, x: &Tensor, name: &str, p: f64) -> Result<Tensor> {
        x.contiguous()?.apply_op1(self.op(name, p))
    }
}

/// `x * m`, the multiplier of each element decided by [`keep`].
#[derive(Clone, Copy, Debug)]
struct DropoutOp {
    key: u64,
    threshold: u64,
    scale: f32,
}

impl DropoutOp {
    fn run<T>(&self, x: &[T], l: &Layout, scale: T, zero: T) -> Result<Vec<T>>
    where
        T: Copy + Send + Sync + std::ops::Mul<Output = T>,
    {
        let x = super::ops::dense_view(x, l, "dropout input")?;
        let mut y = vec![zero; x.len()];
        const CHUNK: usize = 1 << 14;
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(c, (yo, xi))| {
                let base = (c * CHUNK) as u64;
                for (j, (o, &v)) in yo.iter_mut().zip(xi).enumerate() {
                    let m = if keep(self.key, self.threshold, base + j as u64) {
                        scale
                    } else {
                        zero
                    };
                    *o = v * m;
                }
            });
        Ok(y)
    }
}

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "ecg-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(self.run(x, l, self.scale, 0.0)?),
            CpuStorage::F64(x) => CpuStorage::F64(self.run(x, l, f64::from(self.scale), 0.0)?),
            other => bail!(
                "{}: expects f32 or f64, got {:?}",
                self.name(),
                other.dtype()
            ),
        };
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        super::ops::cuda::dropout(s, l, self.key, self.threshold, self.scale)
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        bail!("{}: this binary was built without CUDA", self.name())
    }

    /// d(x m)/dx = m: the same op on the gradient.
    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
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
    fn apply(&mut self, x: &Tensor, name: &str, _p: f64) -> Result<Tensor> {
        let values = self.masks.get(name).ok_or_else(|| {
            candle_core::Error::Msg(format!("no dropout mask for layer {name:?}"))
        })?;
        let mask = Tensor::from_slice(values, x.dims(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}

/// Applies dropout to `x` with masks from `source` (identity when `p` is 0).
pub fn dropout(x: &Tensor, name: &str, p: f64, source: &mut dyn MaskSource) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    source.apply(x, name, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_masks_drop_about_p_and_scale_survivors() {
        let src = RngMasks::new(7);
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
    fn the_op_multiplies_by_the_mask_in_both_directions() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 600.0, &dev)
            .unwrap()
            .reshape((2, 3, 100))
            .unwrap();
        let xv = candle_core::Var::from_tensor(&x).unwrap();
        let mut src = RngMasks::new(3);
        let mask = src
            .mask("blk.dropout1", &[2, 3, 100], 0.5, DType::F32, &dev)
            .unwrap();
        let y = dropout(xv.as_tensor(), "blk.dropout1", 0.5, &mut src).unwrap();
        let want = (&x * &mask).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // The gradient of sum(y * c) is c * mask.
        let c = Tensor::arange(1f32, 601.0, &dev)
            .unwrap()
            .reshape((2, 3, 100))
            .unwrap();
        let g = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = g.get(xv.as_tensor()).unwrap();
        assert_eq!(
            gx.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (&c * &mask)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        // Another layer name, another mask; a transposed input is masked in logical order.
        let other = src
            .mask("blk.dropout2", &[2, 3, 100], 0.5, DType::F32, &dev)
            .unwrap();
        assert_ne!(
            mask.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            other.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let xt = x.transpose(1, 2).unwrap();
        let yt = src.apply(&xt, "t", 0.5).unwrap();
        let mt = src.mask("t", xt.dims(), 0.5, DType::F32, &dev).unwrap();
        assert_eq!(
            yt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (&xt.contiguous().unwrap() * &mt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
    }

    #[test]
    fn extreme_rates() {
        let src = RngMasks::new(1);
        let all = src
            .mask("d", &[1000], 1.0, DType::F32, &Device::Cpu)
            .unwrap();
        assert!(all.to_vec1::<f32>().unwrap().iter().all(|&x| x == 0.0));
        let x = Tensor::ones(10, DType::F32, &Device::Cpu).unwrap();
        let same = dropout(&x, "d", 0.0, &mut src.clone()).unwrap();
        assert_eq!(same.to_vec1::<f32>().unwrap(), vec![1.0; 10]);
    }
}
