//! `worker bench`: the worker's training step on random exams, timed per repetition, as JSON
//! lines in the format of `bench/model_torch.py` (`peer` "ours"). A step is what a worker does
//! per assignment: install the parameters (one host-to-device copy), upload the batch, forward
//! and backward of the full network in training mode, and copy the flat gradient and the
//! batch-norm statistics to the host. The optimiser runs on the coordinator, not here.
use std::time::Instant;

use ecg_shared::model::dropout::RngMasks;
use ecg_shared::model::{ModelConfig, Precision, ResNet1d};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::run::select_device;
use crate::{Error, Result};

/// Arguments of `worker bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Benchmark CUDA device N (default: the CPU).
    #[arg(long, value_name = "N")]
    pub gpu: Option<usize>,
    /// Arithmetic of the convolutions: f32, tf32 or bf16 (the last two on CUDA).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,128,512")]
    pub batches: Vec<usize>,
    /// Timed repetitions per batch size.
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Untimed repetitions first (cuDNN's algorithm choices, allocations).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
}

/// Runs the benchmark and prints one JSON line per batch size.
pub fn run(args: &Args) -> Result<()> {
    let device = select_device(args.gpu)?;
    let cfg = ModelConfig::default();
    let mut model = ResNet1d::new(&cfg, 0, &device)?;
    model.set_precision(args.precision)?;
    let params = model.params_flat()?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    for &batch in &args.batches {
        if batch == 0 {
            return Err(Error::Arg {
                arg: "--batches",
                msg: "a batch size of 0".into(),
            });
        }
        let x: Vec<f32> = (0..batch * 12 * cfg.seq_length)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let ages: Vec<f32> = (0..batch)
            .map(|_| rng.random_range(16.0f32..86.0))
            .collect();
        let weights = vec![1.0f32; batch];
        let mut seconds = Vec::with_capacity(args.reps);
        for rep in 0..args.warmup + args.reps {
            let t0 = Instant::now();
            model.set_params_flat(&params)?;
            let out = model.train_step(&x, &ages, &weights, &mut RngMasks::new(rep as u64))?;
            let dt = t0.elapsed().as_secs_f64();
            if !out.loss_sum.is_finite() {
                return Err(Error::Protocol(format!("batch {batch}: non-finite loss")));
            }
            if rep >= args.warmup {
                seconds.push(dt);
            }
        }
        let line = serde_json::json!({
            "peer": "ours",
            "what": format!("train{batch}"),
            "batch": batch,
            "precision": args.precision.to_string(),
            "device": if device.is_cuda() { "cuda" } else { "cpu" },
            "seconds": seconds,
        });
        println!("{line}");
    }
    Ok(())
}
