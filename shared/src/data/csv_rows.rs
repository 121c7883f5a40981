//! Row parsing of the exams table, behind [`super::csv::ExamTable::read`].
//!
//! The full CODE table has 2.3 M rows, and the split must take seconds, so a table without
//! quote characters (CODE, CODE-15% and SaMi-Trop are written so) is parsed by a plain byte
//! scanner over the whole file, cut at line boundaries into one chunk per core, each chunk
//! parsed on its own thread and the chunks joined in order. A table with quotes goes through the
//! `csv` crate, which handles quoting. Both paths feed the same [`Columns`] sink, so they accept
//! and refuse exactly the same values.
use std::collections::HashMap;
use std::path::Path;

use super::csv::{CsvColumns, ExamTable};
use crate::ids::{ExamId, PatientId};
use crate::{Error, Result};

/// Where each wanted column is in a row.
pub(super) struct Plan<'a> {
    names: &'a CsvColumns,
    n_fields: usize,
    exam: usize,
    age: usize,
    patient: Option<usize>,
    male: Option<usize>,
    death: Option<usize>,
    timey: Option<usize>,
    trace: Option<usize>,
}

impl<'a> Plan<'a> {
    /// Finds the columns in the header line (already split into names).
    pub(super) fn new(path: &Path, headers: &[String], names: &'a CsvColumns) -> Result<Self> {
        if headers.iter().all(|h| h.is_empty()) {
            return Err(Error::csv(path, Some(1), "empty file: no header line"));
        }
        let find = |name: &str| {
            (!name.is_empty())
                .then(|| headers.iter().position(|h| h == name))
                .flatten()
        };
        let required = |name: &str| require_column(path, headers, name);
        Ok(Plan {
            names,
            n_fields: headers.len(),
            exam: required(&names.exam_id)?,
            age: required(&names.age)?,
            patient: names.patient_id.as_deref().map(required).transpose()?,
            male: find(&names.is_male),
            death: find(&names.death),
            timey: find(&names.timey),
            trace: find(&names.trace_file),
        })
    }
}

/// The columns of a run of rows (a chunk, or the whole table).
#[derive(Default)]
pub(super) struct Columns {
    exam_id: Vec<ExamId>,
    patient_id: Vec<PatientId>,
    age: Vec<f64>,
    is_male: Vec<Option<bool>>,
    death: Vec<Option<bool>>,
    timey: Vec<f64>,
    trace_file: Vec<u32>,
    trace_files: Vec<String>,
    trace_lookup: HashMap<Vec<u8>, u32>,
}

impl Columns {
    /// Parses one row; `fields` holds all its fields. `line` is the 1-based line for errors.
    fn push(&mut self, plan: &Plan<'_>, path: &Path, line: u64, fields: &[&[u8]]) -> Result<()> {
        let n = plan.names;
        if fields.len() != plan.n_fields {
            return Err(Error::csv(
                path,
                Some(line),
                format!(
                    "row has {} fields, the header has {}",
                    fields.len(),
                    plan.n_fields
                ),
            ));
        }
        let exam_raw = fields[plan.exam];
        let exam = parse_int(exam_raw)
            .ok_or_else(|| bad_value(path, line, &n.exam_id, exam_raw, "an integer id"))?;
        let age_raw = fields[plan.age];
        let age = if age_raw.trim_ascii().is_empty() {
            f64::NAN
        } else {
            parse_float(age_raw)
                .filter(|a| a.is_finite())
                .ok_or_else(|| bad_value(path, line, &n.age, age_raw, "a number"))?
        };
        let patient = match (plan.patient, &n.patient_id) {
            (Some(c), Some(name)) => parse_int(fields[c])
                .ok_or_else(|| bad_value(path, line, name, fields[c], "an integer id"))?,
            _ => exam,
        };
        self.exam_id.push(ExamId(exam));
        self.patient_id.push(PatientId(patient));
        self.age.push(age);
        if let Some(c) = plan.male {
            let v = parse_bool(fields[c])
                .map_err(|()| bad_value(path, line, &n.is_male, fields[c], "a boolean"))?;
            self.is_male.push(v);
        }
        if let Some(c) = plan.death {
            let v = parse_bool(fields[c])
                .map_err(|()| bad_value(path, line, &n.death, fields[c], "a boolean"))?;
            self.death.push(v);
        }
        if let Some(c) = plan.timey {
            let raw = fields[c];
            let v = if raw.trim_ascii().is_empty() {
                f64::NAN
            } else {
                parse_float(raw).ok_or_else(|| bad_value(path, line, &n.timey, raw, "a number"))?
            };
            self.timey.push(v);
        }
        if let Some(c) = plan.trace {
            let raw = fields[c].trim_ascii();
            let id = match self.trace_lookup.get(raw) {
                Some(&id) => id,
                None => {
                    let id = self.trace_files.len() as u32;
                    self.trace_files
                        .push(String::from_utf8_lossy(raw).into_owned());
                    self.trace_lookup.insert(raw.to_vec(), id);
                    id
                }
            };
            self.trace_file.push(id);
        }
        Ok(())
    }

    /// Appends `other` (the rows after these), renumbering its trace-file names.
    fn append(&mut self, other: Columns) {
        self.exam_id.extend(other.exam_id);
        self.patient_id.extend(other.patient_id);
        self.age.extend(other.age);
        self.is_male.extend(other.is_male);
        self.death.extend(other.death);
        self.timey.extend(other.timey);
        let remap: Vec<u32> = other
            .trace_files
            .iter()
            .map(|name| match self.trace_lookup.get(name.as_bytes()) {
                Some(&id) => id,
                None => {
                    let id = self.trace_files.len() as u32;
                    self.trace_files.push(name.clone());
                    self.trace_lookup.insert(name.as_bytes().to_vec(), id);
                    id
                }
            })
            .collect();
        self.trace_file
            .extend(other.trace_file.into_iter().map(|t| remap[t as usize]));
    }

    /// The table, with the optional columns the plan found.
    pub(super) fn into_table(self, path: &Path, plan: &Plan<'_>) -> ExamTable {
        ExamTable {
            path: path.to_path_buf(),
            exam_id: self.exam_id,
            patient_id: self.patient_id,
            age: self.age,
            is_male: plan.male.map(|_| self.is_male),
            death: plan.death.map(|_| self.death),
            timey: plan.timey.map(|_| self.timey),
            trace_file: plan.trace.map(|_| self.trace_file),
            trace_files: self.trace_files,
        }
    }
}

/// Splits a header line into column names.
pub(super) fn header_names(line: &[u8]) -> Vec<String> {
    line.split(|&b| b == b',').map(header_name).collect()
}

/// A header cell as a column name: trimmed, a leading byte-order mark dropped.
pub(crate) fn header_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim()
        .trim_start_matches('\u{feff}')
        .trim()
        .to_string()
}

/// The position of column `name` in `headers`, or an error naming the file and the columns.
pub(crate) fn require_column(path: &Path, headers: &[String], name: &str) -> Result<usize> {
    headers.iter().position(|h| h == name).ok_or_else(|| {
        Error::csv(
            path,
            Some(1),
            format!(
                "missing column `{name}` (columns are: {})",
                headers.join(", ")
            ),
        )
    })
}

/// Opens a small CSV (a split or pin list) with the `csv` crate and reads its column names.
pub(crate) fn open_with_headers(
    path: &Path,
) -> Result<(csv::Reader<std::io::BufReader<std::fs::File>>, Vec<String>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, file));
    let headers = rdr
        .byte_headers()
        .map_err(|e| csv_error(path, &e))?
        .iter()
        .map(header_name)
        .collect();
    Ok((rdr, headers))
}

/// Parses a quote-free table held in `bytes`, whose header is already in `plan`; the body
/// starts at byte `body` (line 2). Uses up to `threads` threads.
pub(super) fn parse_plain(
    path: &Path,
    plan: &Plan<'_>,
    bytes: &[u8],
    body: usize,
    threads: usize,
) -> Result<Columns> {
    // Cut the body into chunks that end at a line end.
    let body_bytes = &bytes[body..];
    let n_chunks = if body_bytes.len() < (4 << 20) {
        1
    } else {
        threads.max(1)
    };
    let mut bounds = vec![0usize];
    for k in 1..n_chunks {
        let guess = (body_bytes.len() * k / n_chunks).max(*bounds.last().unwrap_or(&0));
        let cut = body_bytes[guess..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body_bytes.len(), |i| guess + i + 1);
        bounds.push(cut);
    }
    bounds.push(body_bytes.len());
    bounds.dedup();
    let chunks: Vec<&[u8]> = bounds.windows(2).map(|w| &body_bytes[w[0]..w[1]]).collect();

    let results: Vec<Result<(Columns, u64)>> = if chunks.len() == 1 {
        vec![parse_chunk(path, plan, chunks[0])]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|c| s.spawn(move || parse_chunk(path, plan, c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a CSV chunk parser panicked"))
                .collect()
        })
    };
    // Join in order; an error's line is relative to its chunk until the lines before it are known.
    let mut out = Columns::default();
    let mut lines_before: u64 = 1; // the header
    for r in results {
        match r {
            Ok((cols, lines)) => {
                out.append(cols);
                lines_before += lines;
            }
            Err(Error::Csv { path, line, msg }) => {
                return Err(Error::Csv {
                    path,
                    line: line.map(|l| l + lines_before),
                    msg,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Parses one chunk of whole lines; errors carry the line number within the chunk (1-based).
/// Returns the columns and the number of lines in the chunk.
fn parse_chunk(path: &Path, plan: &Plan<'_>, chunk: &[u8]) -> Result<(Columns, u64)> {
    let mut cols = Columns::default();
    let mut fields: Vec<&[u8]> = Vec::with_capacity(plan.n_fields);
    let mut line_no = 0u64;
    let mut start = 0usize;
    let mut row = |fields: &mut Vec<&[u8]>, line_no: u64| -> Result<()> {
        if let Some(last) = fields.last_mut() {
            *last = last.strip_suffix(b"\r").unwrap_or(last);
        }
        let blank = fields.len() == 1 && fields[0].is_empty();
        if !blank {
            cols.push(plan, path, line_no, fields)?;
        }
        fields.clear();
        Ok(())
    };
    for_each_separator(chunk, |pos| {
        fields.push(&chunk[start..pos]);
        start = pos + 1;
        if chunk[pos] == b'\n' {
            line_no += 1;
            row(&mut fields, line_no)?;
        }
        Ok(())
    })?;
    if start < chunk.len() {
        // A last line without a line end.
        fields.push(&chunk[start..]);
        line_no += 1;
        row(&mut fields, line_no)?;
    }
    Ok((cols, line_no))
}

/// Calls `f` with the position of every `,` and `\n` in `bytes`, in order. Works on 64-byte
/// blocks: one bit mask of separators a block (compiled to vector compares), then its set
/// bits; this is several times faster than looking for the next separator from each field.
fn for_each_separator(bytes: &[u8], mut f: impl FnMut(usize) -> Result<()>) -> Result<()> {
    let mut blocks = bytes.chunks_exact(64);
    let mut base = 0usize;
    for block in blocks.by_ref() {
        let block: &[u8; 64] = block.try_into().expect("64-byte block");
        let mut mask = 0u64;
        for (i, &b) in block.iter().enumerate() {
            mask |= u64::from((b == b',') | (b == b'\n')) << i;
        }
        while mask != 0 {
            f(base + mask.trailing_zeros() as usize)?;
            mask &= mask - 1;
        }
        base += 64;
    }
    for (i, &b) in blocks.remainder().iter().enumerate() {
        if b == b',' || b == b'\n' {
            f(base + i)?;
        }
    }
    Ok(())
}

/// Parses a table with quoted fields through the `csv` crate.
pub(super) fn parse_quoted(path: &Path, names: &CsvColumns, bytes: &[u8]) -> Result<ExamTable> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let headers: Vec<String> = rdr
        .byte_headers()
        .map_err(|e| csv_error(path, &e))?
        .iter()
        .map(header_name)
        .collect();
    let plan = Plan::new(path, &headers, names)?;
    let mut cols = Columns::default();
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, &e)),
        }
        let line = rec.position().map_or(0, |p| p.line());
        let fields: Vec<&[u8]> = rec.iter().collect();
        cols.push(&plan, path, line, &fields)?;
    }
    Ok(cols.into_table(path, &plan))
}

fn csv_error(path: &Path, e: &csv::Error) -> Error {
    Error::csv(path, e.position().map(|p| p.line()), e.to_string())
}

fn bad_value(path: &Path, line: u64, column: &str, raw: &[u8], want: &str) -> Error {
    Error::csv(
        path,
        Some(line),
        format!(
            "column `{column}`: `{}` is not {want}",
            String::from_utf8_lossy(raw)
        ),
    )
}

/// Parses an integer id, also written as an integral float (`1169160.0`, as pandas writes ids of
/// a column that once held a NaN).
pub(crate) fn parse_int(raw: &[u8]) -> Option<i64> {
    let raw = raw.trim_ascii();
    // Fast path: plain digits.
    if !raw.is_empty() && raw.len() <= 18 && raw.iter().all(u8::is_ascii_digit) {
        return Some(
            raw.iter()
                .fold(0i64, |acc, &d| acc * 10 + (d - b'0') as i64),
        );
    }
    let s = std::str::from_utf8(raw).ok()?;
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    let f = s.parse::<f64>().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// Parses a number (`54`, `54.0`, `3.5e1`).
pub(crate) fn parse_float(raw: &[u8]) -> Option<f64> {
    let raw = raw.trim_ascii();
    if !raw.is_empty() && raw.len() <= 15 && raw.iter().all(u8::is_ascii_digit) {
        return Some(
            raw.iter()
                .fold(0i64, |acc, &d| acc * 10 + (d - b'0') as i64) as f64,
        );
    }
    std::str::from_utf8(raw).ok()?.parse::<f64>().ok()
}

/// `True`/`False` (pandas), `true`/`false`, `1`/`0`, `1.0`/`0.0`; empty is `None`.
pub(crate) fn parse_bool(raw: &[u8]) -> std::result::Result<Option<bool>, ()> {
    match raw.trim_ascii() {
        b"" => Ok(None),
        b"True" | b"true" | b"TRUE" | b"1" | b"1.0" => Ok(Some(true)),
        b"False" | b"false" | b"FALSE" | b"0" | b"0.0" => Ok(Some(false)),
        _ => Err(()),
    }
}
