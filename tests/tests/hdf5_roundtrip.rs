//! HDF5 files across the language boundary, with the project's Python (h5py): files we write
//! open in h5py with the right shapes, types and values; files h5py writes (contiguous, chunked,
//! gzip, float64, big-endian, without `exam_id`) read back identically through our reader, on
//! its positioned-read path and on its HDF5-library path alike; and bad files (truncated, wrong
//! shape or type, missing dataset, short ids, not HDF5) give an error naming the file.
//!
//! Values come from one formula written in both languages, so each side checks the other.
use std::path::{Path, PathBuf};
use std::process::Command;

use ecg_shared::data::csv::{CsvColumns, ExamTable};
use ecg_shared::data::h5::{Dtype, Storage, TracingsFile};
use ecg_shared::data::h5write::TracingsWriter;
use ecg_shared::data::index::{DatasetIndex, IndexOptions};
use ecg_shared::data::reader::BatchReader;
use ecg_shared::ids::ExamId;
use ecg_tests::{python, run_ok};

const L: usize = 16;
const C: usize = 3;

/// Shared with the Python below (`value`): exact in f64, and the same f64 on both sides.
fn value64(id: i64, s: usize, c: usize) -> f64 {
    if id == 0 {
        return 0.0;
    }
    ((id * 7 + s as i64 * 3 + c as i64 * 11) % 1000 - 500) as f64 / 8.0 + (id % 3) as f64 * 0.1
}

const PY_VALUE: &str = r#"
import sys, os, h5py, numpy as np
L, C = 16, 3
def value(ids):
    ids = np.asarray(ids, dtype=np.int64)[:, None, None]
    s = np.arange(L)[None, :, None]; c = np.arange(C)[None, None, :]
    v = ((ids * 7 + s * 3 + c * 11) % 1000 - 500) / 8.0 + (ids % 3) * 0.1
    return np.where(ids == 0, 0.0, v)
"#;

fn py(script: &str, args: &[&Path]) -> String {
    run_ok(Command::new(python()).arg("-c").arg(format!("{PY_VALUE}\n{script}")).args(args))
}

/// `(C, L)` channels-first f32 tracing of exam `id`.
fn expected(id: i64) -> Vec<f32> {
    (0..C).flat_map(|c| (0..L).map(move |s| value64(id, s, c) as f32)).collect()
}

#[test]
fn a_file_we_write_opens_in_h5py_with_the_right_contents() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ours.hdf5");
    let ids = [104i64, 101, 106, 0];
    let data: Vec<f32> = ids
        .iter()
        .flat_map(|&id| (0..L).flat_map(move |s| (0..C).map(move |c| value64(id, s, c) as f32)))
        .collect();
    let mut w = TracingsWriter::create(&p, ids.len(), L, C).unwrap();
    w.write_rows(0, &ids[..2], &data[..2 * L * C]).unwrap();
    w.write_rows(2, &ids[2..], &data[2 * L * C..]).unwrap();
    w.finish().unwrap();

    let out = py(
        r#"
f = h5py.File(sys.argv[1], "r")
t, e = f["tracings"], f["exam_id"]
assert t.shape == (4, L, C), t.shape
assert t.dtype == np.dtype("<f4"), t.dtype
assert t.chunks is None and t.compression is None, "tracings must be contiguous"
assert e.shape == (4,) and e.dtype.kind == "i", (e.shape, e.dtype)
ids = e[:]
assert np.array_equal(t[:], value(ids).astype(np.float32)), "values differ"
print("ok", ids.tolist())
"#,
        &[&p],
    );
    assert_eq!(out.trim(), "ok [104, 101, 106, 0]");
}
