//! Benchmark driver (not a test): our `conv1d` custom op against Candle 0.11.1's stock
//! `Tensor::conv1d` on the full-size network's layer shapes, forward and backward (input and
//! weight gradients through `Var` + `backward()` of a weighted sum `sum(out * r)`, r random; the stock backward runs
//! `conv_transpose1d` and its weight gradient is wrong for batch > 1, it is timed all the same).
//! Repetitions alternate between the two implementations; medians are printed as exams per
//! second, the ratio ours / stock, and the GFLOP/s ours reaches against the CPU's nominal peak
//! and a large matmul measured in the same run. `bench/ops.sh` builds and runs it.
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor, Var};
use clap::Parser;
use ecg_shared::model::ops::conv1d;

/// Times our conv1d op against Candle's stock conv1d.
#[derive(Parser, Debug)]
struct Args {
    /// Exams per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed repetitions per measurement (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Only the layers whose name contains this text.
    #[arg(long, default_value = "")]
    only: String,
    /// f32 operations per cycle and core at peak: 2 FMA pipes x 8 lanes x 2 on Zen 4 (whose
    /// AVX-512 instructions run as two 256-bit halves, so AVX2 and AVX-512 share this peak).
    #[arg(long, default_value_t = 32.0)]
    flops_per_cycle: f64,
    /// Latency in cycles of a dependent f64 addition, used to estimate the running clock.
    #[arg(long, default_value_t = 3.0)]
    add_latency: f64,
}

/// A convolution of the network: name, c_in, c_out, input length, kernel, stride, padding.
struct Layer {
    name: &'static str,
    c_in: usize,
    c_out: usize,
    len: usize,
    k: usize,
    stride: usize,
    padding: usize,
}

const fn layer(
    name: &'static str,
    c_in: usize,
    c_out: usize,
    len: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Layer {
    Layer {
        name,
        c_in,
        c_out,
        len,
        k,
        stride,
        padding,
    }
}

/// The default network's convolutions (seed-spec §2), plus one stride-2 shape.
const LAYERS: [Layer; 9] = [
    layer("stem 12->64 L4096 k17 s1", 12, 64, 4096, 17, 1, 8),
    layer("b0.conv 64->64 L4096 k17 s1", 64, 64, 4096, 17, 1, 8),
    layer("b1.conv1 64->128 L4096 k17 s1", 64, 128, 4096, 17, 1, 8),
    layer("b1.conv2 128->128 L4096 k17 s4", 128, 128, 4096, 17, 4, 7),
    layer("b1.skip 64->128 L1024 k1", 64, 128, 1024, 1, 1, 0),
    layer("b2.conv1 128->196 L1024 k17 s1", 128, 196, 1024, 17, 1, 8),
    layer("b2.conv2 196->196 L1024 k17 s4", 196, 196, 1024, 17, 4, 7),
    layer("b3.conv1 196->256 L256 k17 s1", 196, 256, 256, 17, 1, 8),
    layer("s2 128->128 L2048 k17 s2", 128, 128, 2048, 17, 2, 8),
];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let t = Instant::now();
    let r = f()?;
    Ok((t.elapsed().as_secs_f64(), r))
}

/// Largest |a - b| / max(|b|) over two tensors.
fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let scale = b
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    let diff = (a - b)?
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(diff / scale.max(f64::MIN_POSITIVE))
}

/// Forward and backward of one implementation: (forward s, backward s, x grad, w grad).
fn run_once(
    x: &Tensor,
    w: &Tensor,
    r: &Tensor,
    l: &Layer,
    ours: bool,
) -> Result<(f64, f64, Tensor, Tensor)> {
    let conv = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
        Ok(if ours {
            conv1d(x, w, l.stride, l.padding)?
        } else {
            x.conv1d(w, l.padding, l.stride, 1, 1)?
        })
    };
    let (fwd, _) = timed(|| conv(x, w))?;
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let loss = (conv(xv.as_tensor(), wv.as_tensor())? * r)?.sum_all()?;
    let (bwd, grads) = timed(|| Ok(loss.backward()?))?;
    let gx = grads
        .get(xv.as_tensor())
        .context("no input gradient")?
        .clone();
    let gw = grads
        .get(wv.as_tensor())
        .context("no weight gradient")?
        .clone();
    Ok((fwd, bwd, gx, gw))
}

/// Nominal clock of the first CPU (MHz) from /proc/cpuinfo (under a hypervisor: the base clock).
fn cpu_mhz() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("cpu MHz"))?;
    line.split(':').nth(1)?.trim().parse().ok()
}

/// Running clock (GHz) of one busy core, estimated from a chain of dependent f64 additions
/// (3 cycles each on Zen 4; Rust never reassociates them): best of three.
fn clock_ghz(add_latency_cycles: f64) -> f64 {
    let x = std::hint::black_box(1e-9f64);
    let n = 100_000_000u64;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut a = 0.0f64;
        for _ in 0..n {
            a += x;
        }
        std::hint::black_box(a);
        best = best.min(t.elapsed().as_secs_f64());
    }
    add_latency_cycles * n as f64 / best / 1e9
}

/// GFLOP/s of Candle's f32 matmul (the `gemm` crate on all threads) on 1536^3.
fn matmul_gflops(reps: usize) -> Result<f64> {
    let n = 1536;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let mut t = Vec::new();
    for i in 0..=reps {
        let (dt, _) = timed(|| Ok(a.matmul(&b)?))?;
        if i > 0 {
            t.push(dt);
        }
    }
    Ok(2.0 * (n * n * n) as f64 / median(&mut t) / 1e9)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.reps == 0 || args.batch == 0 {
        bail!("--reps and --batch must be at least 1");
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mhz = cpu_mhz().unwrap_or(f64::NAN);
    let ghz = clock_ghz(args.add_latency);
    let peak = threads as f64 * args.flops_per_cycle * ghz;
    let ceiling = matmul_gflops(args.reps)?;
    println!(
        "batch {}, {} reps (median), {threads} threads; clock: {mhz:.0} MHz nominal, {ghz:.2} GHz measured",
        args.batch, args.reps
    );
    println!(
        "f32 peak {peak:.0} GFLOP/s ({threads} x {} flop/cycle x {ghz:.2} GHz; {:.0} at the nominal clock); Candle matmul 1536^3: {ceiling:.0} GFLOP/s",
        args.flops_per_cycle,
        threads as f64 * args.flops_per_cycle * mhz / 1e3
    );
    println!(
        "{:<32} {:>9} {:>9} {:>6} {:>9} {:>9} {:>6} {:>7} {:>7} {:>7} {:>9}",
        "layer",
        "fwd ours",
        "stock",
        "ratio",
        "bwd ours",
        "stock",
        "ratio",
        "GF/s f",
        "GF/s b",
        "%peak",
        "stock gw"
    );
    println!(
        "{:<32} {:>9} {:>9} {:>6} {:>9} {:>9} {:>6} {:>7} {:>7} {:>7} {:>9}",
        "", "exams/s", "exams/s", "", "exams/s", "exams/s", "", "ours", "ours", "f / b", "rel.err"
    );
    let mut totals = [0.0f64; 4];
    let mut flops_total = 0.0;
    for l in LAYERS.iter().filter(|l| l.name.contains(&args.only)) {
        let x = Tensor::randn(0f32, 1.0, (args.batch, l.c_in, l.len), &Device::Cpu)?;
        let w = (Tensor::randn(0f32, 1.0, (l.c_out, l.c_in, l.k), &Device::Cpu)? * 0.05)?;
        let l_out = (l.len + 2 * l.padding - l.k) / l.stride + 1;
        let r = Tensor::randn(0f32, 1.0, (args.batch, l.c_out, l_out), &Device::Cpu)?;
        let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let mut check = None;
        for rep in 0..=args.reps {
            let (fo, bo, gxo, gwo) = run_once(&x, &w, &r, l, true)?;
            let (fs, bs, gxs, gws) = run_once(&x, &w, &r, l, false)?;
            if rep == 0 {
                // Ours was checked against finite differences; report how far stock is.
                check = Some((rel_diff(&gxs, &gxo)?, rel_diff(&gws, &gwo)?));
                continue;
            }
            for (v, dt) in t.iter_mut().zip([fo, fs, bo, bs]) {
                v.push(dt);
            }
        }
        let [fo, fs, bo, bs] = t.map(|mut v| median(&mut v));
        let flops = 2.0 * (args.batch * l.c_out * l.c_in * l.k * l_out) as f64;
        let (gf, gb) = (flops / fo / 1e9, 2.0 * flops / bo / 1e9);
        let b = args.batch as f64;
        let (gx_err, gw_err) = check.unwrap_or((f64::NAN, f64::NAN));
        println!(
            "{:<32} {:>9.1} {:>9.1} {:>6.2} {:>9.1} {:>9.1} {:>6.2} {:>7.0} {:>7.0} {:>3.0}/{:<3.0} {:>9.1e}",
            l.name,
            b / fo,
            b / fs,
            fs / fo,
            b / bo,
            b / bs,
            bs / bo,
            gf,
            gb,
            100.0 * gf / peak,
            100.0 * gb / peak,
            gw_err
        );
        if gx_err > 1e-3 {
            println!(
                "{:<32} (stock input gradient differs from ours by {gx_err:.1e})",
                ""
            );
        }
        for (acc, v) in totals.iter_mut().zip([fo, fs, bo, bs]) {
            *acc += v;
        }
        flops_total += flops;
    }
    let [fo, fs, bo, bs] = totals;
    let b = args.batch as f64;
    println!(
        "{:<32} {:>9.1} {:>9.1} {:>6.2} {:>9.1} {:>9.1} {:>6.2} {:>7.0} {:>7.0}",
        "all layers above",
        b / fo,
        b / fs,
        fs / fo,
        b / bo,
        b / bs,
        bs / bo,
        flops_total / fo / 1e9,
        2.0 * flops_total / bo / 1e9
    );
    println!(
        "ratio = ours exams/s / stock exams/s (> 1: ours faster); stock gw rel.err = max |stock - ours| / max |ours| of the weight gradient"
    );
    Ok(())
}
