//! Benchmark of the full-size network on the CPU (not a test): evaluation forward at batch 32,
//! and the training step as the trainer runs it (forward in training mode, loss, backward,
//! flat gradient, Adam, parameters written back, batch-norm running statistics) at batches 8
//! and 32. Prints one JSON line per measurement with every repetition; bench/model.sh runs it
//! beside the PyTorch peer and prints the ratios.
use std::time::Instant;

use clap::Parser;
use ecg_shared::model::dropout::RngMasks;
use ecg_shared::model::{Device, ModelConfig, ResNet1d};
use ecg_shared::train::{Adam, AdamConfig};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

#[derive(Parser)]
struct Args {
    /// Timed repetitions per measurement (after one warm-up).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Comma-separated measurements: forward32, train8, train32, ...
    #[arg(long, default_value = "forward32,train8,train32")]
    what: String,
}

#[allow(unsafe_code)]
fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    unsafe { ecg_shared::cli::keep_candle_elementwise_on_caller() };
    if std::env::var_os("ECG_BENCH_DEFAULT_MALLOC").is_none() {
        ecg_shared::cli::keep_freed_memory();
    }
    let args = Args::parse();
    let cfg = ModelConfig::default();
    let mut model = ResNet1d::new(&cfg, 0, &Device::Cpu)?;
    let mut params = model.params_flat()?;
    let mut adam = Adam::new(AdamConfig::default(), params.len())?;
    let rng = &mut Xoshiro256PlusPlus::seed_from_u64(1);
    for what in args.what.split(',') {
        let batch: usize = what
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .parse()?;
        let x: Vec<f32> = (0..batch * 12 * 4096)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let ages: Vec<f32> = (0..batch).map(|_| rng.random_range(16.0..86.0)).collect();
        let w = vec![1.0f32; batch];
        let mut times = Vec::new();
        for rep in 0..=args.reps {
            let t0 = Instant::now();
            if what.starts_with("forward") {
                model.predict(&x, batch)?;
            } else {
                let s = model.train_step(&x, &ages, &w, &mut RngMasks::new(rep as u64))?;
                adam.step(&mut params, &s.grads)?;
                model.set_params_flat(&params)?;
                model.update_batch_norms(&s.bn_stats)?;
            }
            let dt = t0.elapsed().as_secs_f64();
            if rep > 0 {
                times.push(dt);
            }
        }
        println!(
            "{}",
            serde_json::json!({"peer": "ours", "what": what, "batch": batch, "seconds": times})
        );
    }
    Ok(())
}
