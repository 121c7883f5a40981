//! The dataset index: the join of the exams table with the rows of the HDF5 files, by
//! `exam_id` (never by position, except for files without an id dataset such as SaMi-Trop's,
//! whose rows follow the CSV order), and its [`Fingerprint`].
//!
//! Nothing is dropped silently: [`IndexReport`] counts, with a few example ids each, the padding
//! rows (`exam_id` 0, which must be all zeros), CSV exams without a tracing (and the HDF5 files
//! their `trace_file` names when those are not among the files given: a part missing on this
//! node), HDF5 rows without a CSV exam, exams with a missing or out-of-range age, and exams found
//! in another file than their `trace_file` says. An `exam_id` present twice in the HDF5 files is
//! an error.
//!
//! The coordinator and every worker build the index from their own copy of the data and compare
//! fingerprints: a blake3 hash of the exams (id, patient, age, file name, row) in id order, each
//! file's name, shape and type, and the bytes of a few tracing rows per file. It does not depend
//! on the directory the files are in, nor on the CSV row order, and it reads only a handful of
//! rows.
use std::fmt;
use std::path::PathBuf;

use super::csv::ExamTable;
use super::h5::{Dtype, TracingsFile};
use crate::ids::{ExamId, PatientId};
use crate::{Error, Result};

mod report;
pub use report::{IndexReport, RowRef, Tally};

/// What to read and what counts as usable.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexOptions {
    /// Name of the tracings dataset in every HDF5 file (`tracings`).
    pub traces_dset: String,
    /// Name of the exam-id dataset (`exam_id`); `None` for files without one (SaMi-Trop), whose
    /// rows, file after file, are the CSV rows in order.
    pub ids_dset: Option<String>,
    /// Samples per lead every file must have (4096).
    pub n_samples: usize,
    /// Leads every file must have (12).
    pub n_leads: usize,
    /// Smallest usable age in years (inclusive).
    pub min_age: f64,
    /// Largest usable age in years (inclusive).
    pub max_age: f64,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            traces_dset: "tracings".into(),
            ids_dset: Some("exam_id".into()),
            n_samples: 4096,
            n_leads: 12,
            min_age: 0.0,
            max_age: 130.0,
        }
    }
}

/// One usable exam: CSV data joined with where its tracing is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexedExam {
    /// Exam id.
    pub exam_id: ExamId,
    /// Patient id.
    pub patient_id: PatientId,
    /// Age at the exam, years.
    pub age: f32,
    /// Index into [`DatasetIndex::files`].
    pub file: u16,
    /// Row in that file.
    pub row: u32,
    /// 0-based data row of the exam in the CSV.
    pub csv_row: u32,
}

/// One HDF5 file of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedFile {
    /// Path as given.
    pub path: PathBuf,
    /// Base name (`exams_part0.hdf5`): how the fingerprint and `trace_file` name the file.
    pub name: String,
    /// Shape, type, storage and ids of the file.
    pub info: TracingsFile,
    /// Rows whose bytes enter the fingerprint.
    pub sample_rows: Vec<u32>,
    /// blake3 of those rows (row number and little-endian bytes of each).
    pub sample_digest: [u8; 32],
}

/// The joined dataset: usable exams in CSV order and the files that hold them.
///
/// A position in `exams` depends on the CSV row order, which the [`Fingerprint`] deliberately
/// ignores: two indexes with the same fingerprint hold the same exams, but only the same
/// positions if their CSVs list the exams in the same order. Messages between machines should
/// name exams by id, or both sides should sort by id.
#[derive(Debug, Clone, Default)]
pub struct DatasetIndex {
    /// Usable exams, in CSV order.
    pub exams: Vec<IndexedExam>,
    /// Sex per exam (same order as `exams`), when the CSV has the column.
    pub is_male: Option<Vec<Option<bool>>>,
    /// Death indicator per exam, when the CSV has the column.
    pub death: Option<Vec<Option<bool>>>,
    /// Follow-up years per exam (NaN where empty), when the CSV has the column.
    pub timey: Option<Vec<f64>>,
    /// The HDF5 files, in the order given.
    pub files: Vec<IndexedFile>,
    /// Samples per lead.
    pub n_samples: usize,
    /// Leads per exam.
    pub n_leads: usize,
}

/// A blake3 digest identifying a [`DatasetIndex`]; displayed as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Dataset(format!("`{s}` is not a fingerprint (64 hex digits)"));
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

impl DatasetIndex {
    /// Joins `table` with the HDF5 `files` (see the module documentation).
    pub fn build(
        table: &ExamTable,
        files: &[PathBuf],
        opts: &IndexOptions,
    ) -> Result<(Self, IndexReport)> {
        if files.is_empty() {
            return Err(Error::Dataset("no HDF5 files given".into()));
        }
        if files.len() > u16::MAX as usize {
            return Err(Error::Dataset(format!(
                "{} HDF5 files: at most {} are supported",
                files.len(),
                u16::MAX
            )));
        }
        let infos = files
            .iter()
            .map(|p| {
                let f = TracingsFile::open_expecting(
                    p,
                    &opts.traces_dset,
                    opts.ids_dset.as_deref(),
                    opts.n_samples,
                    opts.n_leads,
                )?;
                if f.n_rows > u32::MAX as usize {
                    return Err(Error::hdf5(
                        p,
                        format!("{} rows: at most {} are supported", f.n_rows, u32::MAX),
                    ));
                }
                Ok(f)
            })
            .collect::<Result<Vec<_>>>()?;
        check_unique_names(&infos)?;

        let mut report = IndexReport {
            csv_path: table.path.clone(),
            csv_rows: table.len(),
            files: infos.len(),
            hdf5_rows: infos.iter().map(|f| f.n_rows).sum(),
            ..Default::default()
        };
        // Where each CSV row's tracing is, if anywhere.
        let found: Vec<Option<(u16, u32)>> = match opts.ids_dset {
            None => by_position(table, &infos)?,
            Some(_) => by_id(table, &infos, &mut report)?,
        };

        let mut index = DatasetIndex {
            exams: Vec::with_capacity(table.len()),
            is_male: table.is_male.as_ref().map(|_| Vec::new()),
            death: table.death.as_ref().map(|_| Vec::new()),
            timey: table.timey.as_ref().map(|_| Vec::new()),
            files: Vec::new(),
            n_samples: opts.n_samples,
            n_leads: opts.n_leads,
        };
        let names: Vec<String> = infos.iter().map(|f| f.base_name()).collect();
        // Exams without a tracing, per `trace_file` value that names none of the files.
        let mut absent = vec![0usize; table.trace_files.len()];
        let absent_name: Vec<bool> = table
            .trace_files
            .iter()
            .map(|t| !t.is_empty() && !names.contains(t))
            .collect();
        for (i, loc) in found.iter().enumerate() {
            let id = table.exam_id[i];
            let Some((file, row)) = *loc else {
                report.csv_not_in_hdf5.add(id);
                if let Some(tf) = &table.trace_file
                    && absent_name[tf[i] as usize]
                {
                    absent[tf[i] as usize] += 1;
                }
                continue;
            };
            // An empty trace_file says nothing.
            let named = table
                .trace_file
                .as_ref()
                .map(|tf| &table.trace_files[tf[i] as usize]);
            if let Some(named) = named
                && !named.is_empty()
                && *named != names[file as usize]
            {
                report.wrong_trace_file.add(id);
            }
            let age = table.age[i];
            if age.is_nan() {
                report.missing_age.add(id);
                continue;
            }
            if !(opts.min_age..=opts.max_age).contains(&age) {
                report.age_out_of_range.add(id);
                continue;
            }
            index.exams.push(IndexedExam {
                exam_id: id,
                patient_id: table.patient_id[i],
                age: age as f32,
                file,
                row,
                csv_row: i as u32,
            });
            if let (Some(dst), Some(src)) = (index.is_male.as_mut(), table.is_male.as_ref()) {
                dst.push(src[i]);
            }
            if let (Some(dst), Some(src)) = (index.death.as_mut(), table.death.as_ref()) {
                dst.push(src[i]);
            }
            if let (Some(dst), Some(src)) = (index.timey.as_mut(), table.timey.as_ref()) {
                dst.push(src[i]);
            }
        }
        report.usable = index.exams.len();
        report.absent_files = table
            .trace_files
            .iter()
            .zip(absent)
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| (t.clone(), n))
            .collect();
        report.absent_files.sort();
        if !report.absent_files.is_empty() {
            tracing::warn!(
                "{} names HDF5 files that are not among the files given, and their exams are \
                 left out: {}",
                table.path.display(),
                report.absent_files_text()
            );
        }
        report.age_range = (opts.min_age, opts.max_age);

        for (info, name) in infos.into_iter().zip(names) {
            let sample_rows = sample_rows(&info);
            let mut h = blake3::Hasher::new();
            for &r in &sample_rows {
                h.update(&r.to_le_bytes());
                h.update(&info.read_row_le_bytes(r as usize)?);
            }
            index.files.push(IndexedFile {
                path: info.path.clone(),
                name,
                info,
                sample_rows,
                sample_digest: *h.finalize().as_bytes(),
            });
        }
        Ok((index, report))
    }

    /// Number of usable exams.
    pub fn len(&self) -> usize {
        self.exams.len()
    }

    /// Whether no exam is usable.
    pub fn is_empty(&self) -> bool {
        self.exams.is_empty()
    }

    /// The identity of this index (see the module documentation). Hashes every exam (about
    /// 60 MB for the full CODE cohort); reads no file.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = blake3::Hasher::new();
        h.update(b"ecg-cluster dataset index v1\0");
        let put = |h: &mut blake3::Hasher, v: u64| {
            h.update(&v.to_le_bytes());
        };
        put(&mut h, self.n_samples as u64);
        put(&mut h, self.n_leads as u64);
        // Files by base name, so that neither their directory nor their order matters.
        let mut by_name: Vec<usize> = (0..self.files.len()).collect();
        by_name.sort_by(|&a, &b| self.files[a].name.cmp(&self.files[b].name));
        let mut rank = vec![0u16; self.files.len()];
        put(&mut h, self.files.len() as u64);
        for (r, &f) in by_name.iter().enumerate() {
            rank[f] = r as u16;
            let file = &self.files[f];
            put(&mut h, file.name.len() as u64);
            h.update(file.name.as_bytes());
            put(&mut h, file.info.n_rows as u64);
            put(&mut h, file.info.n_samples as u64);
            put(&mut h, file.info.n_leads as u64);
            h.update(match file.info.dtype {
                Dtype::F32 => b"f32",
                Dtype::F64 => b"f64",
            });
            h.update(&file.sample_digest);
        }
        // Exams by id, so that the CSV order does not matter.
        let mut order: Vec<u32> = (0..self.exams.len() as u32).collect();
        order.sort_unstable_by_key(|&i| self.exams[i as usize].exam_id);
        put(&mut h, self.exams.len() as u64);
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in order.chunks(2048) {
            buf.clear();
            for &i in chunk {
                let e = &self.exams[i as usize];
                buf.extend_from_slice(&e.exam_id.0.to_le_bytes());
                buf.extend_from_slice(&e.patient_id.0.to_le_bytes());
                buf.extend_from_slice(&e.age.to_bits().to_le_bytes());
                buf.extend_from_slice(&rank[e.file as usize].to_le_bytes());
                buf.extend_from_slice(&e.row.to_le_bytes());
            }
            h.update(&buf);
        }
        Fingerprint(*h.finalize().as_bytes())
    }
}

/// Two files with the same base name would be indistinguishable to `trace_file` and to the
/// fingerprint.
fn check_unique_names(infos: &[TracingsFile]) -> Result<()> {
    let mut names: Vec<(String, usize)> = infos
        .iter()
        .enumerate()
        .map(|(i, f)| (f.base_name(), i))
        .collect();
    names.sort();
    for w in names.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::Dataset(format!(
                "two HDF5 files have the same name `{}`: {} and {}",
                w[0].0,
                infos[w[0].1].path.display(),
                infos[w[1].1].path.display()
            )));
        }
    }
    Ok(())
}

/// Files without ids: row `i` of the files, one after the other, is CSV row `i`.
fn by_position(table: &ExamTable, infos: &[TracingsFile]) -> Result<Vec<Option<(u16, u32)>>> {
    let total: usize = infos.iter().map(|f| f.n_rows).sum();
    if total != table.len() {
        let list = infos
            .iter()
            .map(|f| format!("{} ({} rows)", f.path.display(), f.n_rows))
            .collect::<Vec<_>>();
        return Err(Error::Dataset(format!(
            "without an exam-id dataset, HDF5 rows are matched to CSV rows by position, so their \
             numbers must agree: {} has {} rows but the HDF5 files have {total}: {}",
            table.path.display(),
            table.len(),
            list.join(", ")
        )));
    }
    let mut out = Vec::with_capacity(total);
    for (f, info) in infos.iter().enumerate() {
        out.extend((0..info.n_rows).map(|r| Some((f as u16, r as u32))));
    }
    Ok(out)
}

/// Files with ids: sort all (id, file, row), refuse duplicates, look each CSV id up. Counts
/// padding rows (checking that they are zero) and HDF5 rows unknown to the CSV.
fn by_id(
    table: &ExamTable,
    infos: &[TracingsFile],
    report: &mut IndexReport,
) -> Result<Vec<Option<(u16, u32)>>> {
    let mut rows: Vec<(i64, u16, u32)> = Vec::with_capacity(report.hdf5_rows);
    for (f, info) in infos.iter().enumerate() {
        let ids = info.exam_ids.as_deref().unwrap_or_default();
        for (r, &id) in ids.iter().enumerate() {
            if id == 0 {
                report.padding_rows.add(RowRef {
                    file: info.base_name(),
                    row: r as u32,
                });
                if !row_is_zero(info, r)? {
                    report.padding_not_zero.add(RowRef {
                        file: info.base_name(),
                        row: r as u32,
                    });
                }
            } else {
                rows.push((id, f as u16, r as u32));
            }
        }
    }
    rows.sort_unstable();
    check_no_duplicates(&rows, infos)?;

    let mut used = vec![false; rows.len()];
    let found = table
        .exam_id
        .iter()
        .map(|id| {
            let j = rows.binary_search_by_key(&id.0, |r| r.0).ok()?;
            used[j] = true;
            Some((rows[j].1, rows[j].2))
        })
        .collect();
    for (r, _) in rows.iter().zip(&used).filter(|(_, u)| !**u) {
        report.hdf5_not_in_csv.add(ExamId(r.0));
    }
    Ok(found)
}

fn check_no_duplicates(sorted: &[(i64, u16, u32)], infos: &[TracingsFile]) -> Result<()> {
    let n_dup = sorted.windows(2).filter(|w| w[0].0 == w[1].0).count();
    let Some(first) = sorted.windows(2).position(|w| w[0].0 == w[1].0) else {
        return Ok(());
    };
    let id = sorted[first].0;
    let places = sorted[first..]
        .iter()
        .take_while(|r| r.0 == id)
        .map(|&(_, f, r)| format!("{} row {r}", infos[f as usize].path.display()))
        .collect::<Vec<_>>();
    Err(Error::Dataset(format!(
        "exam_id {id} appears {} times in the HDF5 files: {} ({n_dup} duplicate row(s) in all)",
        places.len(),
        places.join(", ")
    )))
}

fn row_is_zero(info: &TracingsFile, row: usize) -> Result<bool> {
    let bytes = info.read_row_le_bytes(row)?;
    Ok(match info.dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) == 0.0),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .all(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) == 0.0),
    })
}

/// The first, middle and last non-padding rows of a file.
fn sample_rows(info: &TracingsFile) -> Vec<u32> {
    let real: Vec<u32> = match &info.exam_ids {
        Some(ids) => ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id != 0)
            .map(|(r, _)| r as u32)
            .collect(),
        None => (0..info.n_rows as u32).collect(),
    };
    let mut out = Vec::new();
    if !real.is_empty() {
        for r in [real[0], real[real.len() / 2], real[real.len() - 1]] {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}
