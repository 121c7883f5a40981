//! Benchmark driver: random batches of exams read through [`BatchReader`] (one thread), then
//! the same batches through the [`Prefetcher`] on `--threads` threads; prints exams per second
//! for each. `bench/read.sh` runs it against h5py (`bench/read_h5py.py`) on the same file.
//!
//! Each batch holds `--batch` distinct exams drawn uniformly from the index; batches are drawn
//! independently (with replacement across batches), from `--seed`.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use ecg_shared::data::csv::{CsvColumns, ExamTable};
use ecg_shared::data::index::{DatasetIndex, IndexOptions};
use ecg_shared::data::prefetch::Prefetcher;
use ecg_shared::data::reader::BatchReader;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Reads random batches of exams from CODE-layout HDF5 files and reports exams per second.
#[derive(Parser, Debug)]
struct Args {
    /// HDF5 files (CODE layout: `tracings` (N, 4096, 12), `exam_id` (N,)).
    #[arg(long, num_args = 1.., required = true)]
    hdf5: Vec<PathBuf>,
    /// The exams CSV (`exam_id`, `patient_id`, `age`).
    #[arg(long)]
    csv: PathBuf,
    /// Exams per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Number of batches per measurement.
    #[arg(long, default_value_t = 200)]
    batches: usize,
    /// Seed of the batch draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Reading threads of the prefetcher measurement.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Batches the prefetcher reads ahead.
    #[arg(long, default_value_t = 4)]
    depth: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let table = ExamTable::read(&args.csv, &CsvColumns::default())?;
    let (index, report) = DatasetIndex::build(&table, &args.hdf5, &IndexOptions::default())?;
    eprintln!("{report}");
    anyhow::ensure!(
        index.len() >= args.batch,
        "the index has {} exams, fewer than a batch",
        index.len()
    );
    let reader = Arc::new(BatchReader::open(&index)?);
    anyhow::ensure!(
        reader.all_direct(),
        "benchmark files should be contiguous (read from the mapping)"
    );

    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let batches: Vec<Vec<usize>> = (0..args.batches)
        .map(|_| rand::seq::index::sample(&mut rng, index.len(), args.batch).into_vec())
        .collect();
    let exams = (args.batches * args.batch) as f64;

    // One thread, one reused buffer.
    let mut out = Vec::new();
    let mut check = 0f64;
    let t = Instant::now();
    for b in &batches {
        reader.read_batch(b, &mut out).context("read_batch")?;
        check += f64::from(out[out.len() / 2]);
    }
    let single = exams / t.elapsed().as_secs_f64();

    // Prefetcher on `threads` threads; the consumer only touches each batch.
    let t = Instant::now();
    let p = Prefetcher::new(reader.clone(), batches.clone(), args.depth, args.threads);
    let recycler = p.recycler();
    let mut n = 0usize;
    for b in p {
        let b = b.context("prefetcher")?;
        n += b.len();
        check += f64::from(b.data[b.data.len() / 2]);
        recycler.recycle(b);
    }
    let prefetch = n as f64 / t.elapsed().as_secs_f64();

    println!("reader_exams_per_s {single:.1}");
    println!("prefetch_threads {}", args.threads);
    println!("prefetch_exams_per_s {prefetch:.1}");
    eprintln!("(checksum {check})");
    Ok(())
}
