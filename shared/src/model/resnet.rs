//! `ResNet1d`, the seed's network: a stem (conv1 -> bn1, no activation), residual blocks
//! `resblock1d_{i}`, and a linear head on the flattened (channel-major) output of the last
//! block. Parameters are Candle `Var`s named as in the seed's state dict; batch-norm running
//! statistics are host buffers. Training and evaluation are explicit [`Mode`]s.
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::batchnorm::{BatchNorm, BnBatchStats, PendingStats, materialize};
use super::block::ResBlock1d;
use super::config::{ModelConfig, N_LEADS, padding};
use super::dropout::{MaskSource, dropout};
use super::layers::{Conv, Linear};
use super::precision::Precision;
use crate::train::flat::ParamLayout;
use crate::{Error, Result};

/// How a forward pass runs.
pub enum Mode<'a> {
    /// Evaluation: running statistics, no dropout.
    Eval,
    /// Training: batch statistics (collected in `stats`, in layer order) and dropout masks from
    /// `masks`.
    Train {
        /// Where the dropout masks come from.
        masks: &'a mut dyn MaskSource,
        /// The batch statistics of every batch-norm layer, in registration order.
        stats: Vec<PendingStats>,
    },
}

impl<'a> Mode<'a> {
    /// Training mode with masks from `masks`.
    pub fn train(masks: &'a mut dyn MaskSource) -> Self {
        Mode::Train {
            masks,
            stats: Vec::new(),
        }
    }

    /// Applies `bn` to `x` as this mode requires.
    pub fn batch_norm(&mut self, bn: &BatchNorm, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Mode::Eval => bn.forward_eval(x),
            Mode::Train { stats, .. } => {
                let (y, s) = bn.forward_train_pending(x)?;
                stats.push(s);
                Ok(y)
            }
        }
    }

    /// Applies dropout layer `name` to `x` as this mode requires.
    pub fn dropout(&mut self, x: &Tensor, name: &str, p: f64) -> candle_core::Result<Tensor> {
        match self {
            Mode::Eval => Ok(x.clone()),
            Mode::Train { masks, .. } => dropout(x, name, p, *masks),
        }
    }

    /// The batch statistics collected (empty in evaluation), on the host: one copy from a GPU.
    pub fn into_stats(self) -> candle_core::Result<Vec<BnBatchStats>> {
        match self {
            Mode::Eval => Ok(Vec::new()),
            Mode::Train { stats, .. } => materialize(stats),
        }
    }
}

/// The network.
#[derive(Debug)]
pub struct ResNet1d {
    config: ModelConfig,
    device: Device,
    dtype: DType,
    /// Stem convolution `conv1`.
    pub conv1: Conv,
    /// Stem batch norm `bn1`.
    pub bn1: BatchNorm,
    /// Residual blocks.
    pub blocks: Vec<ResBlock1d>,
    /// Head `lin`.
    pub lin: Linear,
    layout: ParamLayout,
    /// The trainable parameters in `layout` order (sorted by name).
    sorted: Vec<Var>,
}

impl ResNet1d {
    /// A freshly initialised network (PyTorch's default initialisation, drawn from a generator
    /// seeded with `seed`), in `f32`.
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::new_with_dtype(config, seed, DType::F32, device)
    }

    /// As [`ResNet1d::new`] in `dtype` (`F64` for finite-difference checks).
    pub fn new_with_dtype(
        config: &ModelConfig,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let rng = &mut Xoshiro256PlusPlus::seed_from_u64(seed);
        let k = config.kernel_size;
        let ds0 = config.downsample(0);
        let c0 = config.net_filter_size[0];
        let conv1 = Conv::new(
            "conv1.weight".into(),
            N_LEADS,
            c0,
            k,
            ds0,
            padding(ds0, k),
            rng,
            dtype,
            device,
        )?;
        let bn1 = BatchNorm::new("bn1".into(), c0, dtype, device)?;
        let mut blocks = Vec::with_capacity(config.net_filter_size.len());
        let mut c_in = c0;
        for (i, &c_out) in config.net_filter_size.iter().enumerate() {
            blocks.push(ResBlock1d::new(
                format!("resblock1d_{i}"),
                c_in,
                c_out,
                config.downsample(i + 1),
                k,
                config.dropout_rate,
                rng,
                dtype,
                device,
            )?);
            c_in = c_out;
        }
        let lin = Linear::new(config.lin_features(), 1, rng, dtype, device)?;
        let mut model = Self {
            config: config.clone(),
            device: device.clone(),
            dtype,
            conv1,
            bn1,
            blocks,
            lin,
            layout: ParamLayout::new(Vec::<(String, Vec<usize>)>::new())?,
            sorted: Vec::new(),
        };
        let named = model.named_params();
        model.layout = ParamLayout::new(named.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())))?;
        model.sorted = model
            .layout
            .entries()
            .iter()
            .map(|e| {
                named
                    .iter()
                    .find(|(n, _)| *n == e.name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| Error::Training(format!("parameter {} vanished", e.name)))
            })
            .collect::<Result<_>>()?;
        Ok(model)
    }

    /// Sets the arithmetic of every convolution (see [`Precision`]); `tf32` and `bf16` need a
    /// model on a CUDA device.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        precision.check_device(&self.device)?;
        self.conv1.precision = precision;
        for conv in self.blocks.iter_mut().flat_map(ResBlock1d::convs_mut) {
            conv.precision = precision;
        }
        Ok(())
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The parameters' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Trainable parameters with their names, in registration (state-dict) order.
    pub fn named_params(&self) -> Vec<(String, Var)> {
        let mut v = vec![("conv1.weight".to_string(), self.conv1.weight.clone())];
        let bn = |v: &mut Vec<(String, Var)>, b: &BatchNorm| {
            v.push((format!("{}.weight", b.prefix), b.weight.clone()));
            v.push((format!("{}.bias", b.prefix), b.bias.clone()));
        };
        bn(&mut v, &self.bn1);
        for blk in &self.blocks {
            v.push((blk.conv1.name.clone(), blk.conv1.weight.clone()));
            bn(&mut v, &blk.bn1);
            v.push((blk.conv2.name.clone(), blk.conv2.weight.clone()));
            bn(&mut v, &blk.bn2);
            if let Some(c) = &blk.skip_conv {
                v.push((c.name.clone(), c.weight.clone()));
            }
        }
        v.push(("lin.weight".into(), self.lin.weight.clone()));
        v.push(("lin.bias".into(), self.lin.bias.clone()));
        v
    }

    /// Every batch-norm layer in registration order (the order of [`Mode::into_stats`]).
    pub fn batch_norms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.bn1];
        for b in &self.blocks {
            v.extend(b.bns());
        }
        v
    }

    /// Mutable batch-norm layers in registration order.
    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        let mut v = vec![&mut self.bn1];
        for b in &mut self.blocks {
            v.extend(b.bns_mut());
        }
        v
    }

    /// The name-sorted layout of the flat parameter (and gradient) vector.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Runs the network on `x` (B, 12, seq_length); returns (B, 1).
    pub fn forward(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let (_, leads, len) = x.dims3()?;
        if leads != N_LEADS || len != self.config.seq_length {
            return Err(Error::Training(format!(
                "input of shape {:?}: the model reads ({N_LEADS} leads, {} samples)",
                x.dims(),
                self.config.seq_length
            )));
        }
        let x = x.to_dtype(self.dtype)?;
        let h = self.conv1.forward(&x)?;
        let h = mode.batch_norm(&self.bn1, &h)?;
        let (mut x, mut y) = (h.clone(), h);
        for blk in &self.blocks {
            (x, y) = blk.forward(&x, &y, mode)?;
        }
        drop(y);
        let b = x.dim(0)?;
        let flat = x.reshape((b, self.config.lin_features()))?;
        Ok(self.lin.forward(&flat)?)
    }

    /// Evaluation-mode predictions for `batch` exams laid out (batch, 12, seq_length) in `x`.
    pub fn predict(&self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        let want = batch * N_LEADS * self.config.seq_length;
        if x.len() != want {
            return Err(Error::Training(format!(
                "predict: {} values for {batch} exams of ({N_LEADS}, {}) samples",
                x.len(),
                self.config.seq_length
            )));
        }
        let x = Tensor::from_slice(x, (batch, N_LEADS, self.config.seq_length), &self.device)?;
        let out = self.forward(&x, &mut Mode::Eval)?;
        Ok(out.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    /// Folds one training forward's batch statistics into the running averages.
    pub fn update_batch_norms(&mut self, stats: &[BnBatchStats]) -> Result<()> {
        let mut bns = self.batch_norms_mut();
        if stats.len() != bns.len() {
            return Err(Error::Training(format!(
                "{} batch-norm statistics for {} layers",
                stats.len(),
                bns.len()
            )));
        }
        for (bn, s) in bns.iter_mut().zip(stats) {
            bn.update_running(s);
        }
        Ok(())
    }

    /// The batch-norm buffers of every layer in model order: running means then running
    /// variances of each layer, one after the other, and each layer's batch count.
    pub fn bn_buffers(&self) -> (Vec<f64>, Vec<i64>) {
        let mut running = Vec::new();
        let mut tracked = Vec::new();
        for bn in self.batch_norms() {
            running.extend_from_slice(&bn.running_mean);
            running.extend_from_slice(&bn.running_var);
            tracked.push(bn.num_batches_tracked);
        }
        (running, tracked)
    }

    /// Overwrites the batch-norm buffers from the layout of [`ResNet1d::bn_buffers`].
    pub fn set_bn_buffers(&mut self, running: &[f64], tracked: &[i64]) -> Result<()> {
        let mut bns = self.batch_norms_mut();
        let want: usize = bns.iter().map(|b| 2 * b.channels()).sum();
        if running.len() != want || tracked.len() != bns.len() {
            return Err(Error::Training(format!(
                "{} running values and {} batch counts for {} batch-norm layers of {want} values",
                running.len(),
                tracked.len(),
                bns.len()
            )));
        }
        let mut at = 0;
        for (bn, &t) in bns.iter_mut().zip(tracked) {
            let c = bn.channels();
            bn.running_mean.copy_from_slice(&running[at..at + c]);
            bn.running_var.copy_from_slice(&running[at + c..at + 2 * c]);
            bn.num_batches_tracked = t;
            at += 2 * c;
        }
        Ok(())
    }

    /// The parameters as one flat `f32` vector in [`ResNet1d::layout`] order.
    pub fn params_flat(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.layout.total_len());
        for v in &self.sorted {
            out.extend(
                v.as_tensor()
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(out)
    }

    /// Overwrites the parameters from a flat vector in [`ResNet1d::layout`] order (on a GPU:
    /// one host-to-device copy, then device copies into each parameter).
    pub fn set_params_flat(&self, flat: &[f32]) -> Result<()> {
        if flat.len() != self.layout.total_len() {
            return Err(Error::Training(format!(
                "{} parameter values for a model of {}",
                flat.len(),
                self.layout.total_len()
            )));
        }
        let on_device = if self.device.is_cpu() {
            None
        } else {
            Some(Tensor::from_slice(flat, flat.len(), &self.device)?.to_dtype(self.dtype)?)
        };
        for (e, v) in self.layout.entries().iter().zip(&self.sorted) {
            let t = match &on_device {
                Some(all) => all.narrow(0, e.offset, e.len)?.reshape(v.dims())?,
                None => Tensor::from_slice(&flat[e.range()], v.dims(), &self.device)?
                    .to_dtype(self.dtype)?,
            };
            v.set(&t)?;
        }
        Ok(())
    }

    /// The gradients in `grads` as one flat `f32` vector in [`ResNet1d::layout`] order
    /// (zeros for a parameter that received none). On a GPU the gradients are concatenated on
    /// the device and copied to the host once.
    pub fn grads_flat(&self, grads: &GradStore) -> Result<Vec<f32>> {
        if self.device.is_cpu() {
            let mut out = Vec::with_capacity(self.layout.total_len());
            for (e, v) in self.layout.entries().iter().zip(&self.sorted) {
                match grads.get(v.as_tensor()) {
                    Some(g) => out.extend(g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?),
                    None => out.extend(std::iter::repeat_n(0.0, e.len)),
                }
            }
            return Ok(out);
        }
        let parts = self
            .layout
            .entries()
            .iter()
            .zip(&self.sorted)
            .map(|(e, v)| match grads.get(v.as_tensor()) {
                Some(g) => g.flatten_all()?.to_dtype(DType::F32),
                None => Tensor::zeros(e.len, DType::F32, &self.device),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let all = Tensor::cat(&parts, 0)?;
        #[cfg(feature = "cuda")]
        if all.device().is_cuda() {
            return Ok(super::ops::cuda::to_host_f32(&all)?);
        }
        Ok(all.to_vec1::<f32>()?)
    }
}
