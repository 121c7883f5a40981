//! The network's state dict: export in the seed's key order (parameters and batch-norm buffers,
//! `num_batches_tracked` as int64 scalars) and a strict import that names every missing,
//! unexpected or misshapen tensor, as PyTorch's `load_state_dict(strict=True)` would refuse.
use candle_core::{DType, Device, Tensor, Var};

use super::batchnorm::BatchNorm;
use super::config::ModelConfig;
use super::resnet::ResNet1d;
use super::state::{NamedTensor, StateDict, TensorData};
use crate::{Error, Result};

fn var_values(v: &Var) -> Result<Vec<f32>> {
    Ok(v.as_tensor()
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?)
}

fn bn_entries(bn: &BatchNorm, sd: &mut StateDict) -> Result<()> {
    let c = bn.channels();
    let p = &bn.prefix;
    sd.push(NamedTensor::new(
        format!("{p}.weight"),
        vec![c],
        TensorData::F32(var_values(&bn.weight)?),
    )?)?;
    sd.push(NamedTensor::new(
        format!("{p}.bias"),
        vec![c],
        TensorData::F32(var_values(&bn.bias)?),
    )?)?;
    let f = |v: &[f64]| TensorData::F32(v.iter().map(|&x| x as f32).collect());
    sd.push(NamedTensor::new(
        format!("{p}.running_mean"),
        vec![c],
        f(&bn.running_mean),
    )?)?;
    sd.push(NamedTensor::new(
        format!("{p}.running_var"),
        vec![c],
        f(&bn.running_var),
    )?)?;
    sd.push(NamedTensor::new(
        format!("{p}.num_batches_tracked"),
        vec![],
        TensorData::I64(vec![bn.num_batches_tracked]),
    )?)?;
    Ok(())
}

impl ResNet1d {
    /// The state dict, keys and order exactly as the seed's `model.state_dict()`.
    pub fn state_dict(&self) -> Result<StateDict> {
        let mut sd = StateDict::new();
        let conv = |sd: &mut StateDict, name: &str, v: &Var| -> Result<()> {
            sd.push(NamedTensor::new(
                name,
                v.dims().to_vec(),
                TensorData::F32(var_values(v)?),
            )?)
        };
        conv(&mut sd, "conv1.weight", &self.conv1.weight)?;
        bn_entries(&self.bn1, &mut sd)?;
        for blk in &self.blocks {
            conv(&mut sd, &blk.conv1.name, &blk.conv1.weight)?;
            bn_entries(&blk.bn1, &mut sd)?;
            conv(&mut sd, &blk.conv2.name, &blk.conv2.weight)?;
            bn_entries(&blk.bn2, &mut sd)?;
            if let Some(c) = &blk.skip_conv {
                conv(&mut sd, &c.name, &c.weight)?;
            }
        }
        conv(&mut sd, "lin.weight", &self.lin.weight)?;
        conv(&mut sd, "lin.bias", &self.lin.bias)?;
        Ok(sd)
    }

    /// A network of `config` holding the tensors of `sd` (strict: see
    /// [`ResNet1d::load_state_dict`]).
    pub fn from_state_dict(config: &ModelConfig, sd: &StateDict, device: &Device) -> Result<Self> {
        let mut model = Self::new(config, 0, device)?;
        model.load_state_dict(sd)?;
        Ok(model)
    }

    /// Replaces every parameter and buffer with the tensors of `sd`. Every key of
    /// [`ResNet1d::state_dict`] must be present with its shape (`num_batches_tracked` may be
    /// absent: it is unused in evaluation), and no other key may be; the error names the
    /// tensors. Nothing is changed when it fails.
    pub fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let expected = self.state_dict()?;
        let mut problems = Vec::new();
        for e in expected.tensors() {
            match sd.get(&e.name) {
                None if e.name.ends_with(".num_batches_tracked") => {}
                None => problems.push(format!("missing tensor {:?}", e.name)),
                Some(t) if t.shape != e.shape => problems.push(format!(
                    "tensor {:?} has shape {:?}, the model needs {:?}",
                    e.name, t.shape, e.shape
                )),
                Some(t) => {
                    let int_wanted = matches!(e.data, TensorData::I64(_));
                    let is_int = matches!(t.data, TensorData::I64(_));
                    if int_wanted != is_int {
                        problems.push(format!(
                            "tensor {:?} is {}, the model needs {}",
                            e.name,
                            t.data.dtype_name(),
                            e.data.dtype_name()
                        ));
                    }
                }
            }
        }
        for t in sd.tensors() {
            if expected.get(&t.name).is_none() {
                problems.push(format!(
                    "unexpected tensor {:?} (shape {:?})",
                    t.name, t.shape
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Error::Training(format!(
                "state dict does not fit the model: {}",
                problems.join("; ")
            )));
        }
        for (name, var) in self.named_params() {
            let t = sd
                .get(&name)
                .ok_or_else(|| Error::Training(format!("missing {name}")))?;
            let values = t.to_f32()?;
            var.set(
                &Tensor::from_vec(values, t.shape.clone(), &self.device().clone())?
                    .to_dtype(self.dtype())?,
            )?;
        }
        for bn in self.batch_norms_mut() {
            let get = |suffix: &str| -> Result<Vec<f64>> {
                let name = format!("{}.{suffix}", bn.prefix);
                let t = sd
                    .get(&name)
                    .ok_or_else(|| Error::Training(format!("missing {name}")))?;
                Ok(t.to_f32()?.into_iter().map(f64::from).collect())
            };
            bn.running_mean = get("running_mean")?;
            bn.running_var = get("running_var")?;
            if let Some(TensorData::I64(v)) = sd
                .get(&format!("{}.num_batches_tracked", bn.prefix))
                .map(|t| &t.data)
            {
                bn.num_batches_tracked = v.first().copied().unwrap_or(0);
            }
        }
        Ok(())
    }
}
