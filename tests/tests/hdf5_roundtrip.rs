//! HDF5 files across the language boundary, with the project's Python (h5py): files we write
//! open in h5py with the right shapes, types and values; files h5py writes (contiguous, chunked,
//! gzip, float64, big-endian, without `exam_id`) read back identically through our reader, on
//! its direct (mapped) path and on its HDF5-library path alike; and bad files (truncated, wrong
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
    run_ok(
        Command::new(python())
            .arg("-c")
            .arg(format!("{PY_VALUE}\n{script}"))
            .args(args),
    )
}

/// `(C, L)` channels-first f32 tracing of exam `id`.
fn expected(id: i64) -> Vec<f32> {
    (0..C)
        .flat_map(|c| (0..L).map(move |s| value64(id, s, c) as f32))
        .collect()
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

/// Ids in the files written by h5py (shuffled; a padding row is added at the end).
const IDS: [i64; 7] = [1005, 1001, 1007, 1003, 1002, 1006, 1004];

const PY_WRITE_VARIANTS: &str = r#"
d = sys.argv[1]
ids = np.array([1005, 1001, 1007, 1003, 1002, 1006, 1004] + [0])
def put(name, dtype, ids_dtype="<i8", **kw):
    with h5py.File(os.path.join(d, name), "w") as f:
        f.create_dataset("tracings", data=value(ids).astype(dtype), **kw)
        if ids_dtype is not None:
            f.create_dataset("exam_id", data=ids.astype(ids_dtype))
put("contig_f32.hdf5", "<f4")
put("chunked_f32.hdf5", "<f4", ids_dtype="<i4", chunks=(1, L, C))
put("gzip_f32.hdf5", "<f4", ids_dtype="<u4", chunks=(3, L, C), compression="gzip", compression_opts=6, shuffle=True)
put("bigendian_f32.hdf5", ">f4", ids_dtype=">i8")
put("contig_f64.hdf5", "<f8", ids_dtype="<f8")
put("gzip_f64.hdf5", "<f8", chunks=(2, 8, C), compression="gzip")
# SaMi-Trop: no exam_id, rows in CSV order (sorted ids), float64.
with h5py.File(os.path.join(d, "noids_f64.hdf5"), "w") as f:
    f.create_dataset("tracings", data=value(sorted(ids[:-1])).astype("<f8"))
print("written")
"#;

fn index_of(dir: &Path, file: &str, with_ids: bool) -> DatasetIndex {
    let csv = dir.join(format!("{file}.csv"));
    let mut sorted = IDS;
    sorted.sort();
    let rows: String = sorted
        .iter()
        .map(|id| format!("{id},{},{}\n", id % 97, 30 + id % 50))
        .collect();
    std::fs::write(&csv, format!("exam_id,patient_id,age\n{rows}")).unwrap();
    let table = ExamTable::read(&csv, &CsvColumns::default()).unwrap();
    let opts = IndexOptions {
        n_samples: L,
        n_leads: C,
        ids_dset: with_ids.then(|| "exam_id".to_string()),
        ..Default::default()
    };
    let (index, report) = DatasetIndex::build(&table, &[dir.join(file)], &opts).unwrap();
    assert_eq!(report.usable, IDS.len(), "{file}: {report}");
    assert_eq!(
        report.padding_rows.count,
        usize::from(with_ids),
        "{file}: {report}"
    );
    index
}

#[test]
fn files_h5py_writes_read_back_identically_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(py(PY_WRITE_VARIANTS, &[dir.path()]).trim(), "written");
    let cases: [(&str, Dtype, bool, bool); 7] = [
        // (file, dtype, direct reads, has ids)
        ("contig_f32.hdf5", Dtype::F32, true, true),
        ("chunked_f32.hdf5", Dtype::F32, false, true),
        ("gzip_f32.hdf5", Dtype::F32, false, true),
        ("bigendian_f32.hdf5", Dtype::F32, false, true),
        ("contig_f64.hdf5", Dtype::F64, true, true),
        ("gzip_f64.hdf5", Dtype::F64, false, true),
        ("noids_f64.hdf5", Dtype::F64, true, false),
    ];
    // Read every exam, in an order unlike the files', through each file.
    let order: Vec<ExamId> = [1004, 1001, 1007, 1002, 1006, 1003, 1005]
        .map(ExamId)
        .to_vec();
    let want: Vec<f32> = order.iter().flat_map(|id| expected(id.0)).collect();
    let mut outputs: Vec<Vec<f32>> = Vec::new();
    for (file, dtype, direct, with_ids) in cases {
        let index = index_of(dir.path(), file, with_ids);
        let info = &index.files[0].info;
        assert_eq!(info.dtype, dtype, "{file}");
        assert_eq!(
            matches!(info.storage, Storage::Contiguous { .. }),
            direct,
            "{file}: {:?}",
            info.storage
        );
        let reader = BatchReader::open(&index).unwrap();
        assert_eq!(reader.all_direct(), direct, "{file}");
        let batch = reader.read_batch_by_id(&order).unwrap();
        assert_eq!(batch.exam_ids, order);
        assert!(batch.data == want, "{file}: values differ from the formula");
        outputs.push(batch.data);
        // Ages and ids travel with the batch.
        assert_eq!(batch.ages[0], (30 + 1004 % 50) as f32);
    }
    // Bit-identical across storage layouts (the formula check above already implies it for
    // equal values; this states it).
    assert!(outputs[..4].iter().all(|o| o == &outputs[0]));
    assert!(outputs[4..].iter().all(|o| o == &outputs[4]));

    // The fingerprint sees values, not layouts: the same f32 data contiguous or gzip-compressed
    // gives the same fingerprint once the file name is the same.
    let fp: Vec<_> = ["contig_f32.hdf5", "gzip_f32.hdf5"]
        .iter()
        .map(|f| {
            let sub = dir.path().join(f.replace(".hdf5", ""));
            std::fs::create_dir(&sub).unwrap();
            std::fs::copy(dir.path().join(f), sub.join("part.hdf5")).unwrap();
            index_of(&sub, "part.hdf5", true).fingerprint()
        })
        .collect();
    assert_eq!(fp[0], fp[1]);
}

const PY_WRITE_BAD: &str = r#"
d = sys.argv[1]
def mk(name, **dsets):
    with h5py.File(os.path.join(d, name), "w") as f:
        for k, v in dsets.items():
            f.create_dataset(k, data=v)
ids = np.arange(1, 5)
good = value(ids).astype("<f4")
mk("good.hdf5", tracings=good, exam_id=ids)
mk("wrong_shape.hdf5", tracings=np.zeros((4, L, 2), "<f4"), exam_id=ids)
mk("rank2.hdf5", tracings=np.zeros((4, L * C), "<f4"), exam_id=ids)
mk("int_tracings.hdf5", tracings=np.zeros((4, L, C), "<i2"), exam_id=ids)
mk("short_ids.hdf5", tracings=good, exam_id=ids[:3])
mk("string_ids.hdf5", tracings=good, exam_id=np.array([b"a", b"b", b"c", b"d"]))
mk("other_names.hdf5", signals=good, ids=ids)
raw = open(os.path.join(d, "good.hdf5"), "rb").read()
open(os.path.join(d, "truncated.hdf5"), "wb").write(raw[: len(raw) // 2])
open(os.path.join(d, "not_hdf5.hdf5"), "w").write("exam_id,age\n1,50\n")
open(os.path.join(d, "empty.hdf5"), "w").close()
print("written")
"#;

#[test]
fn bad_files_give_errors_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(py(PY_WRITE_BAD, &[dir.path()]).trim(), "written");
    let open = |name: &str| {
        TracingsFile::open_expecting(&dir.path().join(name), "tracings", Some("exam_id"), L, C)
    };
    assert!(open("good.hdf5").is_ok(), "the control file must open");
    let cases = [
        ("truncated.hdf5", "truncated"),
        ("wrong_shape.hdf5", "shape (4, 16, 2): expected (N, 16, 3)"),
        ("rank2.hdf5", "expected 3 dimensions"),
        ("int_tracings.hdf5", "expected float32 or float64"),
        ("short_ids.hdf5", "has 3 ids but the tracings have 4 rows"),
        ("string_ids.hdf5", "expected integer ids"),
        ("other_names.hdf5", "no dataset `tracings`"),
        ("not_hdf5.hdf5", "not an HDF5 file"),
        ("empty.hdf5", "not an HDF5 file"),
        ("absent.hdf5", "No such file"),
    ];
    for (name, want) in cases {
        let err = open(name).unwrap_err().to_string();
        assert!(
            err.contains(name),
            "{name}: the error does not name the file: {err}"
        );
        assert!(err.contains(want), "{name}: expected `{want}` in: {err}");
    }
    let err = open("other_names.hdf5").unwrap_err().to_string();
    assert!(
        err.contains("signals") && err.contains("ids"),
        "the existing datasets are listed: {err}"
    );

    // The same errors come out of the index, which opens every file.
    let csv = dir.path().join("exams.csv");
    std::fs::write(&csv, "exam_id,patient_id,age\n1,1,50\n").unwrap();
    let table = ExamTable::read(&csv, &CsvColumns::default()).unwrap();
    let opts = IndexOptions {
        n_samples: L,
        n_leads: C,
        ..Default::default()
    };
    let files: Vec<PathBuf> = ["good.hdf5", "short_ids.hdf5"]
        .iter()
        .map(|f| dir.path().join(f))
        .collect();
    let err = DatasetIndex::build(&table, &files, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("short_ids.hdf5") && err.contains("3 ids"),
        "{err}"
    );
}
