//! The dataset index on real CSV and HDF5 files in temporary directories: the join by
//! `exam_id` whatever the HDF5 order, padding rows, exams missing on either side, duplicate ids,
//! ages out of range, the SaMi-Trop layout (no id dataset), and the fingerprint's properties;
//! then the batch reader and the prefetcher over such an index (order, early drop, errors).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ecg_shared::data::csv::{CsvColumns, ExamTable};
use ecg_shared::data::h5write::TracingsWriter;
use ecg_shared::data::index::{DatasetIndex, IndexOptions};
use ecg_shared::data::prefetch::Prefetcher;
use ecg_shared::data::reader::BatchReader;
use ecg_shared::ids::ExamId;

const L: usize = 16;
const C: usize = 3;

/// The tracing value of exam `id` at sample `s`, lead `c` (padding rows are zeros).
fn value(id: i64, s: usize, c: usize) -> f32 {
    if id == 0 {
        0.0
    } else {
        ((id * 7 + s as i64 * 3 + c as i64 * 11) % 1000 - 500) as f32 / 8.0
    }
}

/// Writes an HDF5 file whose rows hold `ids`, with the tracing given by `value` (possibly
/// altered by `tweak`).
fn write_h5(path: &Path, ids: &[i64], tweak: impl Fn(i64, usize, usize, f32) -> f32) {
    let mut data = Vec::with_capacity(ids.len() * L * C);
    for &id in ids {
        for s in 0..L {
            for c in 0..C {
                data.push(tweak(id, s, c, value(id, s, c)));
            }
        }
    }
    let mut w = TracingsWriter::create(path, ids.len(), L, C).unwrap();
    w.write_rows(0, ids, &data).unwrap();
    w.finish().unwrap();
}

fn plain(path: &Path, ids: &[i64]) {
    write_h5(path, ids, |_, _, _, v| v);
}

/// CSV rows: (exam_id, patient_id, age ("" = missing), trace_file).
fn write_csv(path: &Path, rows: &[(i64, i64, &str, &str)]) {
    let mut text = String::from("exam_id,age,patient_id,trace_file\n");
    for (e, p, a, t) in rows {
        text.push_str(&format!("{e},{a},{p},{t}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn opts() -> IndexOptions {
    IndexOptions {
        n_samples: L,
        n_leads: C,
        ..Default::default()
    }
}

fn build(
    csv: &Path,
    files: &[PathBuf],
    o: &IndexOptions,
) -> ecg_shared::Result<(DatasetIndex, ecg_shared::data::index::IndexReport)> {
    let table = ExamTable::read(csv, &CsvColumns::default())?;
    DatasetIndex::build(&table, files, o)
}

/// `(C, L)` channels-first tracing of exam `id`.
fn expected(id: i64) -> Vec<f32> {
    let mut v = Vec::with_capacity(L * C);
    for c in 0..C {
        for s in 0..L {
            v.push(value(id, s, c));
        }
    }
    v
}

#[test]
fn joins_by_exam_id_whatever_the_hdf5_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("part_a.hdf5"),
        dir.path().join("part_b.hdf5"),
    );
    plain(&a, &[5, 3, 9, 0]);
    plain(&b, &[2, 0, 8]);
    let csv = dir.path().join("exams.csv");
    write_csv(
        &csv,
        &[
            (2, 20, "40", "part_b.hdf5"),
            (3, 30, "41", "part_a.hdf5"),
            (5, 30, "42", "part_a.hdf5"),
            (8, 80, "43", "part_b.hdf5"),
            (9, 90, "44", "part_a.hdf5"),
        ],
    );
    let (index, report) = build(&csv, &[a, b], &opts()).unwrap();

    let got: Vec<(i64, i64, f32, u16, u32)> = index
        .exams
        .iter()
        .map(|e| (e.exam_id.0, e.patient_id.0, e.age, e.file, e.row))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, 20, 40.0, 1, 0),
            (3, 30, 41.0, 0, 1),
            (5, 30, 42.0, 0, 0),
            (8, 80, 43.0, 1, 2),
            (9, 90, 44.0, 0, 2)
        ]
    );
    assert_eq!(
        index.exams.iter().map(|e| e.csv_row).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        (
            report.usable,
            report.csv_rows,
            report.hdf5_rows,
            report.excluded()
        ),
        (5, 5, 7, 0)
    );
    assert_eq!(report.padding_rows.count, 2);
    assert_eq!(report.padding_not_zero.count, 0);
    assert_eq!(report.wrong_trace_file.count, 0);
    assert_eq!(report.hdf5_not_in_csv.count, 0);

    // The tracings read through the index are those of the right exams.
    let reader = BatchReader::open(&index).unwrap();
    assert!(
        reader.all_direct(),
        "files written contiguously are read from the mapping"
    );
    let mut out = Vec::new();
    reader.read_batch(&[4, 0, 2], &mut out).unwrap();
    assert_eq!(out.len(), 3 * C * L);
    assert_eq!(&out[..C * L], &expected(9)[..]);
    assert_eq!(&out[C * L..2 * C * L], &expected(2)[..]);
    assert_eq!(&out[2 * C * L..], &expected(5)[..]);
    let batch = reader.read_batch_by_id(&[ExamId(8), ExamId(3)]).unwrap();
    assert_eq!(batch.positions, vec![3, 1]);
    assert_eq!(batch.ages, vec![43.0, 41.0]);
    assert_eq!(batch.exam(0), &expected(8)[..]);
    assert!(
        reader
            .read_batch_by_id(&[ExamId(77)])
            .unwrap_err()
            .to_string()
            .contains("77")
    );
    assert!(
        reader
            .read_batch(&[5], &mut out)
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
}

#[test]
fn counts_and_reports_everything_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("part_a.hdf5"),
        dir.path().join("part_b.hdf5"),
    );
    plain(&a, &[1, 2, 3, 4, 77, 0]);
    // A padding row that is not zero.
    write_h5(&b, &[5, 0, 6], |id, s, c, v| {
        if (id, s, c) == (0, 3, 1) { 0.5 } else { v }
    });
    let csv = dir.path().join("exams.csv");
    write_csv(
        &csv,
        &[
            (1, 1, "50", ""),
            (2, 1, "", "part_a.hdf5"),
            (3, 3, "131", "part_a.hdf5"),
            (4, 4, "-1", "part_a.hdf5"),
            (5, 5, "60", "part_a.hdf5"),
            (6, 6, "130", "part_b.hdf5"),
            (100, 7, "30", "part_a.hdf5"),
        ],
    );
    let (index, r) = build(&csv, &[a, b], &opts()).unwrap();
    assert_eq!(
        index.exams.iter().map(|e| e.exam_id.0).collect::<Vec<_>>(),
        vec![1, 5, 6]
    );
    assert_eq!(r.usable, 3);
    assert_eq!(
        (r.csv_not_in_hdf5.count, r.csv_not_in_hdf5.examples.clone()),
        (1, vec![ExamId(100)])
    );
    assert_eq!(
        (r.missing_age.count, r.missing_age.examples.clone()),
        (1, vec![ExamId(2)])
    );
    assert_eq!(r.age_out_of_range.count, 2);
    assert_eq!(r.age_out_of_range.examples, vec![ExamId(3), ExamId(4)]);
    assert_eq!(
        (r.hdf5_not_in_csv.count, r.hdf5_not_in_csv.examples.clone()),
        (1, vec![ExamId(77)])
    );
    assert_eq!(r.padding_rows.count, 2);
    assert_eq!(r.padding_not_zero.count, 1);
    assert_eq!(
        r.padding_not_zero.examples[0].to_string(),
        "part_b.hdf5 row 1"
    );
    assert_eq!(
        (
            r.wrong_trace_file.count,
            r.wrong_trace_file.examples.clone()
        ),
        (1, vec![ExamId(5)])
    );
    assert_eq!(r.excluded() + r.usable, r.csv_rows);
    let text = r.to_string();
    for want in [
        "3 usable exams of 7 rows",
        "no HDF5 row: 1 (e.g. 100)",
        "missing age: 1 (e.g. 2)",
        "outside [0, 130]: 2 (e.g. 3, 4)",
        "not in the CSV (unused): 1 (e.g. 77)",
        "not all zeros: 1 (e.g. part_b.hdf5 row 1)",
        "trace_file says: 1 (e.g. 5)",
    ] {
        assert!(text.contains(want), "report lacks `{want}`:\n{text}");
    }
    // A narrower age range excludes more.
    let narrow = IndexOptions {
        min_age: 55.0,
        max_age: 100.0,
        ..opts()
    };
    let csv_b = dir.path().join("exams.csv");
    let (_, r2) = build(
        &csv_b,
        &[
            dir.path().join("part_a.hdf5"),
            dir.path().join("part_b.hdf5"),
        ],
        &narrow,
    )
    .unwrap();
    assert_eq!((r2.usable, r2.age_out_of_range.count), (1, 4));
}

#[test]
fn duplicate_ids_are_an_error_naming_the_id_and_places() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("part_a.hdf5"),
        dir.path().join("part_b.hdf5"),
    );
    plain(&a, &[1, 2, 3]);
    plain(&b, &[4, 2]);
    let csv = dir.path().join("exams.csv");
    write_csv(
        &csv,
        &[
            (1, 1, "50", ""),
            (2, 2, "50", ""),
            (3, 3, "50", ""),
            (4, 4, "50", ""),
        ],
    );
    let err = build(&csv, &[a.clone(), b], &opts())
        .unwrap_err()
        .to_string();
    assert!(err.contains("exam_id 2 appears 2 times"), "{err}");
    assert!(
        err.contains("part_a.hdf5 row 1") && err.contains("part_b.hdf5 row 1"),
        "{err}"
    );

    let c = dir.path().join("part_c.hdf5");
    plain(&c, &[3, 1, 3]);
    let err = build(&csv, &[c], &opts()).unwrap_err().to_string();
    assert!(
        err.contains("exam_id 3")
            && err.contains("part_c.hdf5 row 0")
            && err.contains("part_c.hdf5 row 2"),
        "{err}"
    );

    // Two files with the same base name in different directories.
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let a2 = dir.path().join("other/part_a.hdf5");
    plain(&a2, &[4]);
    let err = build(&csv, &[a, a2], &opts()).unwrap_err().to_string();
    assert!(err.contains("same name `part_a.hdf5`"), "{err}");
}

#[test]
fn samitrop_layout_matches_rows_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("s1.hdf5"), dir.path().join("s2.hdf5"));
    // The id datasets written here are ignored: rows follow the CSV order.
    plain(&a, &[31, 32]);
    plain(&b, &[33]);
    let csv = dir.path().join("exams.csv");
    std::fs::write(&csv, "exam_id,age,death\n31,70,True\n32,,False\n33,61.5,\n").unwrap();
    let cols = CsvColumns {
        patient_id: None,
        ..Default::default()
    };
    let table = ExamTable::read(&csv, &cols).unwrap();
    let o = IndexOptions {
        ids_dset: None,
        ..opts()
    };
    let (index, report) = DatasetIndex::build(&table, &[a.clone(), b.clone()], &o).unwrap();
    let got: Vec<(i64, i64, u16, u32)> = index
        .exams
        .iter()
        .map(|e| (e.exam_id.0, e.patient_id.0, e.file, e.row))
        .collect();
    assert_eq!(got, vec![(31, 31, 0, 0), (33, 33, 1, 0)]);
    assert_eq!(index.death.as_deref(), Some(&[Some(true), None][..]));
    assert_eq!(
        (report.missing_age.count, report.padding_rows.count),
        (1, 0)
    );
    let reader = BatchReader::open(&index).unwrap();
    assert_eq!(reader.read(&[1]).unwrap().data, expected(33));

    // Row counts that differ are refused: positions would not mean anything.
    let err = DatasetIndex::build(&table, &[a], &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("by position") && err.contains("3 rows") && err.contains("have 2"),
        "{err}"
    );
}

/// Writes the same small dataset under `dir`, CSV rows in the given order.
fn dataset(dir: &Path, csv_order: &[usize], ages: &[&str]) -> (PathBuf, Vec<PathBuf>) {
    let (a, b) = (dir.join("exams_part0.hdf5"), dir.join("exams_part1.hdf5"));
    plain(&a, &[11, 12, 13, 14, 0]);
    plain(&b, &[21, 22, 23, 0]);
    let all = [
        (11, 1),
        (12, 1),
        (13, 2),
        (14, 3),
        (21, 4),
        (22, 5),
        (23, 5),
    ];
    let rows: Vec<(i64, i64, &str, &str)> = csv_order
        .iter()
        .map(|&i| (all[i].0, all[i].1, ages[i], ""))
        .collect();
    let csv = dir.join("exams.csv");
    write_csv(&csv, &rows);
    (csv, vec![a, b])
}

#[test]
fn fingerprint_identifies_the_data_not_where_it_lies() {
    let ages = ["40", "41", "42", "43", "44", "45", "46"];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (csv1, files1) = dataset(d1.path(), &[0, 1, 2, 3, 4, 5, 6], &ages);
    let fp1 = build(&csv1, &files1, &opts()).unwrap().0.fingerprint();
    assert_eq!(fp1.to_string().len(), 64);
    assert_eq!(
        fp1.to_string()
            .parse::<ecg_shared::data::index::Fingerprint>()
            .unwrap(),
        fp1
    );

    // Same data elsewhere, CSV rows shuffled, files listed in another order: same fingerprint.
    let (csv2, mut files2) = dataset(d2.path(), &[6, 2, 0, 5, 1, 4, 3], &ages);
    files2.reverse();
    let (index2, _) = build(&csv2, &files2, &opts()).unwrap();
    assert_eq!(index2.fingerprint(), fp1);

    // One age changed: different.
    let mut ages3 = ages;
    ages3[4] = "44.5";
    let (csv3, files3) = dataset(d2.path(), &[0, 1, 2, 3, 4, 5, 6], &ages3);
    assert_ne!(build(&csv3, &files3, &opts()).unwrap().0.fingerprint(), fp1);

    // One value of a sampled row (the first real row of part 1) changed: different.
    let (csv4, files4) = dataset(d2.path(), &[0, 1, 2, 3, 4, 5, 6], &ages);
    write_h5(&files4[1], &[21, 22, 23, 0], |id, s, c, v| {
        if (id, s, c) == (21, 5, 2) {
            v + 0.25
        } else {
            v
        }
    });
    let (index4, _) = build(&csv4, &files4, &opts()).unwrap();
    assert_eq!(index4.files[1].sample_rows, vec![0, 1, 2]);
    assert_ne!(index4.fingerprint(), fp1);

    // Cheap by design: a row outside the sample (row 1 of part 0: sampled are 0, 2 and 3) is
    // not read, so changing it alone leaves the fingerprint as it was.
    let (csv5, files5) = dataset(d2.path(), &[0, 1, 2, 3, 4, 5, 6], &ages);
    write_h5(&files5[0], &[11, 12, 13, 14, 0], |id, _, _, v| {
        if id == 12 { v + 1.0 } else { v }
    });
    let (index5, _) = build(&csv5, &files5, &opts()).unwrap();
    assert_eq!(index5.files[0].sample_rows, vec![0, 2, 3]);
    assert_eq!(index5.fingerprint(), fp1);

    // A patient id changed: different.
    let csv6 = d2.path().join("exams.csv");
    let text = std::fs::read_to_string(&csv6)
        .unwrap()
        .replace("23,46,5,", "23,46,6,");
    std::fs::write(&csv6, text).unwrap();
    plain(&files5[0], &[11, 12, 13, 14, 0]);
    assert_ne!(build(&csv6, &files5, &opts()).unwrap().0.fingerprint(), fp1);
}

#[test]
fn prefetcher_yields_in_order_stops_on_drop_and_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<i64> = (1..=40).collect();
    let a = dir.path().join("part.hdf5");
    plain(&a, &ids);
    let csv = dir.path().join("exams.csv");
    let rows: Vec<(i64, i64, &str, &str)> = ids.iter().map(|&i| (i, i, "50", "")).collect();
    write_csv(&csv, &rows);
    let (index, _) = build(&csv, &[a], &opts()).unwrap();
    let reader = Arc::new(BatchReader::open(&index).unwrap());
    let batches: Vec<Vec<usize>> = (0..20)
        .map(|k| vec![(k * 7) % 40, (k * 13 + 5) % 40, 39 - k])
        .collect();

    let got: Vec<_> = Prefetcher::new(reader.clone(), batches.clone(), 3, 4)
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(got.len(), batches.len());
    for (b, want) in got.iter().zip(&batches) {
        assert_eq!(&b.positions, want);
        for (i, &p) in want.iter().enumerate() {
            assert_eq!(b.exam(i), &expected(ids[p])[..]);
        }
    }

    // Dropped after one batch: returns (threads joined) without reading everything.
    let mut p = Prefetcher::new(reader.clone(), batches.clone(), 2, 2);
    assert!(p.next().unwrap().is_ok());
    drop(p);
    assert_eq!(
        Arc::strong_count(&reader),
        1,
        "the reading threads have exited and let go of the reader"
    );

    // A bad batch is yielded as an error in its place; the sequence ends there.
    let mut bad = batches.clone();
    bad[5] = vec![1, 400];
    let items: Vec<_> = Prefetcher::new(reader, bad, 4, 3).collect();
    assert_eq!(items.len(), 6);
    assert!(items[..5].iter().all(|b| b.is_ok()));
    let err = items[5].as_ref().unwrap_err().to_string();
    assert!(err.contains("400") && err.contains("out of range"), "{err}");
}
