//! [`generate`]: the synthetic cohort written to disk.
//!
//! The calling thread plans the exams part by part (in CSV order: part `i` holds exams
//! `i * exams_per_part ..`), writes their CSV rows, shuffles their HDF5 row order and cuts the
//! rows into blocks. Rendering threads take blocks from a queue and fill them; the calling thread
//! writes finished blocks strictly in order, then the part's padding row. A fixed pool of block
//! buffers circulates between them, so memory stays bounded (a few blocks) whatever the cohort
//! size, and since every exam is rendered from its own random stream the bytes do not depend on
//! the number of threads.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::Rng;

use super::cohort::{Cohort, ExamPlan};
use super::csv_out::CsvOut;
use super::render::Renderer;
use super::rng::{Stream, stream};
use super::{N_LEADS, N_SAMPLES, Progress, SynthConfig, SynthSummary, part_name};
use crate::data::h5write::TracingsWriter;
use crate::{Error, Result};

/// HDF5 rows rendered and written together.
const BLOCK_ROWS: usize = 16;
/// Values in one HDF5 row.
const ROW_LEN: usize = N_SAMPLES * N_LEADS;

/// The exams of one HDF5 part.
struct PartPlan {
    path: PathBuf,
    /// In CSV order.
    exams: Vec<ExamPlan>,
    /// HDF5 row `r` holds `exams[rows[r]]`.
    rows: Vec<u32>,
}

/// A block of rows of a part, travelling to a renderer and back with its buffers.
struct Block {
    part: Arc<PartPlan>,
    /// Position of the block among all blocks of the run (the writing order).
    seq: u64,
    first_row: usize,
    n_rows: usize,
    data: Vec<f32>,
    ids: Vec<i64>,
}

/// Generates the cohort of `cfg` into `out_dir` (created if missing): `exams.csv` and
/// `exams_part{i}.hdf5`. `progress` is called after every block of rows written.
///
/// Refuses a non-empty `out_dir` unless `cfg.overwrite`; then it first removes the
/// `exams.csv` and `exams_part*.hdf5` already there.
pub fn generate(
    cfg: &SynthConfig,
    out_dir: &Path,
    mut progress: impl FnMut(&Progress),
) -> Result<SynthSummary> {
    cfg.validate()?;
    prepare_out_dir(out_dir, cfg.overwrite)?;
    let start = Instant::now();
    let cohort = Cohort::new(cfg.patients, cfg.seed);
    let total = cohort.total_exams();
    let per_part = cfg.exams_per_part as u64;
    let parts_total = u32::try_from(total.div_ceil(per_part)).map_err(|_| {
        Error::Config(format!(
            "synthetic cohort: {total} exams make too many parts"
        ))
    })?;
    let csv_path = out_dir.join("exams.csv");
    let mut csv = CsvOut::create(&csv_path)?;
    let mut state = Progress {
        exams_done: 0,
        exams_total: total,
        parts_done: 0,
        parts_total,
    };
    let mut planner = Planner {
        cohort: &cohort,
        exams: cohort.exams(),
        out_dir,
        per_part,
        next_part: 0,
        deaths: 0,
    };
    let mut parts = Vec::new();

    std::thread::scope(|s| -> Result<()> {
        let (job_tx, job_rx) = channel::<Block>();
        let (done_tx, done_rx) = channel::<Block>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..cfg.threads {
            let (rx, tx, seed) = (Arc::clone(&job_rx), done_tx.clone(), cfg.seed);
            s.spawn(move || render_blocks(&rx, &tx, seed));
        }
        drop(done_tx);
        let result = write_blocks(cfg, &mut planner, &mut csv, &job_tx, &done_rx, |part, n| {
            if let Some(p) = part {
                parts.push(p);
                state.parts_done += 1;
            }
            state.exams_done += n as u64;
            progress(&state);
        });
        // Closing the queue ends the rendering threads, also after an error.
        drop(job_tx);
        result
    })?;
    csv.finish()?;
    Ok(SynthSummary {
        patients: cfg.patients,
        exams: total,
        deaths: planner.deaths,
        csv: csv_path,
        parts,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Creates `dir`, or checks that an existing one can be used: empty, or `overwrite`, in which
/// case the files of an earlier cohort (`exams.csv`, `exams_part*.hdf5`) are removed so that no
/// stale part is left beside the new ones.
fn prepare_out_dir(dir: &Path, overwrite: bool) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(Error::Config(format!(
            "synthetic cohort: the output {} exists and is not a directory",
            dir.display()
        ))),
        Ok(_) => {
            let mut generated = Vec::new();
            let mut any = false;
            for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
                let entry = entry.map_err(|e| Error::io(dir, e))?;
                any = true;
                if entry.file_name().to_str().is_some_and(is_generated_file) {
                    generated.push(entry.path());
                }
            }
            if any && !overwrite {
                return Err(Error::Config(format!(
                    "synthetic cohort: the output directory {} is not empty (allow overwriting to replace \
                     its exams.csv and exams_part*.hdf5)",
                    dir.display()
                )));
            }
            for path in generated {
                std::fs::remove_file(&path).map_err(|e| Error::io(path, e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Whether `name` is a file this generator writes.
fn is_generated_file(name: &str) -> bool {
    name == "exams.csv"
        || name
            .strip_prefix("exams_part")
            .and_then(|r| r.strip_suffix(".hdf5"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Plans parts one after the other from the cohort's exams.
struct Planner<'a> {
    cohort: &'a Cohort,
    exams: super::cohort::CohortExams<'a>,
    out_dir: &'a Path,
    per_part: u64,
    next_part: u32,
    deaths: u64,
}

impl Planner<'_> {
    /// The next part, its CSV rows written; `None` after the last.
    fn next_part(&mut self, csv: &mut CsvOut) -> Result<Option<Arc<PartPlan>>> {
        let exams: Vec<ExamPlan> = self.exams.by_ref().take(self.per_part as usize).collect();
        if exams.is_empty() {
            return Ok(None);
        }
        let index = self.next_part;
        self.next_part += 1;
        let name = part_name(index);
        for e in &exams {
            csv.write(e, &name)?;
            self.deaths += e.outcome.is_some_and(|o| o.death) as u64;
        }
        let rows = row_order(exams.len(), self.cohort.seed(), index);
        Ok(Some(Arc::new(PartPlan {
            path: self.out_dir.join(name),
            exams,
            rows,
        })))
    }
}

/// A random order of `n` rows that differs from `0..n` whenever `n >= 2`, so that readers must
/// match rows by `exam_id` (as with CODE).
fn row_order(n: usize, seed: u64, part: u32) -> Vec<u32> {
    let mut rows: Vec<u32> = (0..n as u32).collect();
    let mut rng = stream(seed, Stream::RowOrder, part as u64);
    for i in (1..n).rev() {
        rows.swap(i, rng.random_range(0..=i));
    }
    if rows.iter().enumerate().all(|(i, &r)| r as usize == i) {
        rows.rotate_left(1.min(n));
    }
    rows
}

/// Body of a rendering thread: fills blocks until the queue closes.
fn render_blocks(jobs: &Mutex<Receiver<Block>>, done: &Sender<Block>, seed: u64) {
    let mut renderer = Renderer::default();
    loop {
        // The lock is held only while waiting for the next block, never while rendering.
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut block) = next else { return };
        block.data.resize(block.n_rows * ROW_LEN, 0.0);
        block.ids.clear();
        for (k, out) in block.data.chunks_exact_mut(ROW_LEN).enumerate() {
            let exam = &block.part.exams[block.part.rows[block.first_row + k] as usize];
            let mut rng = stream(seed, Stream::Waveform, exam.index);
            renderer.render(&exam.params, &mut rng, true, out);
            block.ids.push(exam.exam_id);
        }
        if done.send(block).is_err() {
            return;
        }
    }
}

/// The writing side: keeps the renderers busy with a bounded number of blocks, writes the
/// finished ones in order, closes parts. `on_written(finished part, rows)` reports progress.
fn write_blocks(
    cfg: &SynthConfig,
    planner: &mut Planner<'_>,
    csv: &mut CsvOut,
    jobs: &Sender<Block>,
    done: &Receiver<Block>,
    mut on_written: impl FnMut(Option<PathBuf>, usize),
) -> Result<()> {
    let workers_gone = || Error::Dataset("synthetic cohort: the rendering threads stopped".into());
    let mut pool: Vec<(Vec<f32>, Vec<i64>)> = (0..2 * cfg.threads + 2)
        .map(|_| Default::default())
        .collect();
    let mut dispatch: Option<(Arc<PartPlan>, usize)> = None;
    let mut planned_all = false;
    let (mut next_seq, mut write_seq, mut in_flight) = (0u64, 0u64, 0usize);
    let mut finished: BTreeMap<u64, Block> = BTreeMap::new();
    let mut writer: Option<TracingsWriter> = None;
    loop {
        while !pool.is_empty() && !planned_all {
            if dispatch
                .as_ref()
                .is_none_or(|(p, row)| *row == p.exams.len())
            {
                match planner.next_part(csv)? {
                    Some(p) => dispatch = Some((p, 0)),
                    None => {
                        planned_all = true;
                        break;
                    }
                }
            }
            let Some((part, row)) = dispatch.as_mut() else {
                break;
            };
            let Some((data, ids)) = pool.pop() else { break };
            let n_rows = BLOCK_ROWS.min(part.exams.len() - *row);
            let block = Block {
                part: Arc::clone(part),
                seq: next_seq,
                first_row: *row,
                n_rows,
                data,
                ids,
            };
            jobs.send(block).map_err(|_| workers_gone())?;
            *row += n_rows;
            next_seq += 1;
            in_flight += 1;
        }
        if in_flight == 0 {
            return Ok(());
        }
        let block = done.recv().map_err(|_| workers_gone())?;
        in_flight -= 1;
        finished.insert(block.seq, block);
        while let Some(mut block) = finished.remove(&write_seq) {
            let part = Arc::clone(&block.part);
            if block.first_row == 0 {
                writer = Some(TracingsWriter::create(
                    &part.path,
                    part.exams.len() + 1,
                    N_SAMPLES,
                    N_LEADS,
                )?);
            }
            let w = writer.as_mut().ok_or_else(|| {
                Error::hdf5(&part.path, "a block came before the part's first block")
            })?;
            w.write_rows(block.first_row, &block.ids, &block.data)?;
            let end = block.first_row + block.n_rows;
            let mut closed = None;
            if end == part.exams.len() {
                // CODE's trailing padding row: exam_id 0, all zeros.
                block.data.truncate(ROW_LEN);
                block.data.fill(0.0);
                if let Some(mut w) = writer.take() {
                    w.write_rows(end, &[0], &block.data)?;
                    w.finish()?;
                }
                closed = Some(part.path.clone());
            }
            on_written(closed, block.n_rows);
            pool.push((block.data, block.ids));
            write_seq += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(patients: u64, seed: u64, threads: usize) -> SynthConfig {
        SynthConfig {
            exams_per_part: 10,
            threads,
            ..SynthConfig::new(patients, seed)
        }
    }

    /// The `exam_id` and `tracings` datasets of a part.
    type PartData = (Vec<i64>, Vec<f32>);

    /// The CSV text and every part's data.
    fn read_back(s: &SynthSummary) -> (String, Vec<PartData>) {
        let csv = std::fs::read_to_string(&s.csv).unwrap();
        let parts = s
            .parts
            .iter()
            .map(|p| {
                let f = hdf5::File::open(p).unwrap();
                let ids = f.dataset("exam_id").unwrap().read_raw::<i64>().unwrap();
                let t = f.dataset("tracings").unwrap();
                assert_eq!(t.shape(), vec![ids.len(), N_SAMPLES, N_LEADS]);
                (ids, t.read_raw::<f32>().unwrap())
            })
            .collect();
        (csv, parts)
    }

    #[test]
    fn same_seed_same_bytes_whatever_the_threads() {
        let dir = tempfile::tempdir().unwrap();
        let run = |name: &str, seed, threads| {
            let s = generate(&config(13, seed, threads), &dir.path().join(name), |_| {}).unwrap();
            read_back(&s)
        };
        let one = run("one", 5, 1);
        assert_eq!(one, run("three", 5, 3), "1 vs 3 threads");
        let other = run("other", 6, 2);
        assert_ne!(one.0, other.0);
        assert_ne!(one.1[0].1, other.1[0].1);
    }

    #[test]
    fn parts_have_padding_rows_and_shuffled_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut calls = Vec::new();
        let s = generate(&config(15, 1, 2), dir.path(), |p| calls.push(*p)).unwrap();
        let (csv, parts) = read_back(&s);
        assert_eq!(s.parts.len() as u64, s.exams.div_ceil(10));
        let last = calls.last().copied().unwrap();
        assert_eq!(
            (last.exams_done, last.parts_done as usize),
            (s.exams, s.parts.len())
        );
        assert!(calls.windows(2).all(|w| w[0].exams_done < w[1].exams_done));
        let csv_ids: Vec<i64> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(csv_ids.len() as u64, s.exams);
        let mut at = 0;
        for (ids, data) in &parts {
            let n = ids.len() - 1;
            assert_eq!(ids[n], 0, "last row is padding");
            assert!(data[n * N_SAMPLES * N_LEADS..].iter().all(|&v| v == 0.0));
            assert!(ids[..n].iter().all(|&id| id > 0));
            let mut sorted_h5 = ids[..n].to_vec();
            let mut sorted_csv = csv_ids[at..at + n].to_vec();
            if n >= 2 {
                assert_ne!(
                    &ids[..n],
                    &csv_ids[at..at + n],
                    "HDF5 order is not CSV order"
                );
            }
            sorted_h5.sort();
            sorted_csv.sort();
            assert_eq!(
                sorted_h5, sorted_csv,
                "part holds the next exams of the CSV"
            );
            at += n;
        }
    }

    #[test]
    fn refuses_bad_arguments_and_non_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let e = generate(&config(0, 1, 1), &dir.path().join("a"), |_| {}).unwrap_err();
        assert!(e.to_string().contains("patients"), "{e}");
        std::fs::write(dir.path().join("notes.txt"), "keep").unwrap();
        std::fs::write(dir.path().join("exams_part7.hdf5"), "stale").unwrap();
        let e = generate(&config(3, 1, 1), dir.path(), |_| {}).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        let file_as_dir = dir.path().join("notes.txt").join("sub");
        assert!(generate(&config(3, 1, 1), &file_as_dir, |_| {}).is_err());

        let cfg = SynthConfig {
            overwrite: true,
            ..config(3, 1, 1)
        };
        let s = generate(&cfg, dir.path(), |_| {}).unwrap();
        assert!(
            !dir.path().join("exams_part7.hdf5").exists(),
            "stale part removed"
        );
        assert!(dir.path().join("notes.txt").exists(), "other files kept");
        assert!(s.parts.iter().all(|p| p.exists()));
    }

    #[test]
    fn generated_file_names() {
        assert!(is_generated_file("exams.csv") && is_generated_file("exams_part12.hdf5"));
        assert!(!is_generated_file("exams_part.hdf5") && !is_generated_file("exams_partx.hdf5"));
        assert!(!is_generated_file("other.csv"));
    }
}
