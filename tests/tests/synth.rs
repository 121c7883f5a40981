//! `coordinator synth` end to end: the real binary writes a cohort into a temporary directory
//! and the project's Python (h5py, pandas, numpy) checks it as a user of CODE-15% would: the
//! CSV columns and their rules, the HDF5 layout (shapes, dtypes, padding rows, rows matched by
//! `exam_id` in an order that is not the CSV's), and that the data mean something: a crude
//! waveform feature follows age with the built-in sign, and patients whose ECG looks older than
//! they are die more often at the same age. Bad arguments fail cleanly.
use std::path::Path;
use std::process::Command;

use ecg_tests::{cmd, python, run_err, run_ok};

/// Runs `coordinator synth` and returns its stdout.
fn synth(out: &Path, patients: u32, seed: u32, exams_per_part: u32) -> String {
    run_ok(cmd("coordinator").args(["synth", "--out"]).arg(out).args([
        "--patients",
        &patients.to_string(),
        "--seed",
        &seed.to_string(),
        "--exams-per-part",
        &exams_per_part.to_string(),
        "--threads",
        "2",
    ]))
}

/// Runs a Python check script with the cohort directory as its argument; the script asserts and
/// prints `ok ...` at the end.
fn check(script: &str, out: &Path) -> String {
    let stdout = run_ok(Command::new(python()).arg("-c").arg(script).arg(out));
    assert!(
        stdout.contains("ok"),
        "check script did not finish:\n{stdout}"
    );
    stdout
}

const LAYOUT: &str = r#"
import sys, os, glob
import numpy as np, pandas as pd, h5py
out = sys.argv[1]
df = pd.read_csv(os.path.join(out, "exams.csv"))
assert list(df.columns) == ["exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB",
    "LBBB", "SB", "ST", "AF", "patient_id", "death", "timey", "normal_ecg", "trace_file"], list(df.columns)
assert df.exam_id.is_unique and (df.exam_id > 0).all()
assert df.patient_id.nunique() == 150
assert df.age.dtype.kind == "i" and df.age.between(16, 100).all(), df.age.describe()
assert df.nn_predicted_age.dtype.kind == "f"
for c in ["is_male", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF", "normal_ecg"]:
    assert df[c].dtype == bool, (c, df[c].dtype)
labels = df[["1dAVb", "RBBB", "LBBB", "SB", "ST", "AF"]]
assert (df.normal_ecg == ~labels.any(axis=1)).all()
assert not (df.SB & df.ST).any() and not (df.RBBB & df.LBBB).any()
assert not (df.AF & (df.SB | df.ST | df["1dAVb"])).any(), "SB, ST, 1dAVb are sinus-rhythm labels"
# Patient by patient, 1-4 exams, non-decreasing ages, one hidden offset per patient.
assert (df.patient_id != df.patient_id.shift()).sum() == df.patient_id.nunique()
assert df.groupby("patient_id").size().between(1, 4).all()
assert df.groupby("patient_id").age.apply(lambda a: a.is_monotonic_increasing).all()
gap = df.nn_predicted_age - df.age
assert (gap.groupby(df.patient_id).agg(lambda g: g.max() - g.min()) < 0.011).all()
first = ~df.patient_id.duplicated()
assert df.death[first].notna().all() and (df.timey[first] > 0).all()
assert df.death[~first].isna().all() and df.timey[~first].isna().all()

parts = sorted(set(df.trace_file))
files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*.hdf5")))
assert parts == files and len(parts) >= 2, (parts, files)
in_files, pads, peaks = [], [], []
for name in parts:
    with h5py.File(os.path.join(out, name), "r") as f:
        t, ids = f["tracings"], f["exam_id"]
        assert t.dtype == np.float32 and t.ndim == 3 and t.shape[1:] == (4096, 12), (t.dtype, t.shape)
        assert ids.dtype == np.int64 and ids.shape == (t.shape[0],), (ids.dtype, ids.shape)
        x, ids = t[:], ids[:]
    assert ids[-1] == 0 and not x[-1].any(), "the last row is padding"
    csv_ids = df.exam_id[df.trace_file == name].to_numpy()
    assert len(ids) == len(csv_ids) + 1
    assert sorted(ids[:-1]) == sorted(csv_ids), name
    assert not np.array_equal(ids[:-1], csv_ids), "HDF5 order must differ from CSV order"
    for row in x[:-1]:
        nz = np.flatnonzero(np.any(row != 0, axis=1))
        lead, trail = nz[0], 4095 - nz[-1]
        assert lead == trail and lead in (48, 648), (lead, trail)
        pads.append(lead)
        peaks.append(np.abs(row[:, 1]).max())
    in_files.extend(ids[:-1])
assert sorted(in_files) == sorted(df.exam_id), "every exam is in exactly one part"
short = np.mean(np.array(pads) == 648)
assert 0.3 < short < 0.7, f"{short:.2f} of records are 7 s"
assert 0.3 < np.median(peaks) < 3.0, f"lead II peaks at {np.median(peaks):.2f} mV"
print("ok", len(df), "exams", len(parts), "parts")
"#;

#[test]
fn writes_the_code15_layout() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cohort");
    let stdout = synth(&out, 150, 7, 100);
    assert!(stdout.contains("150 patients"), "{stdout}");
    assert!(
        stdout.contains("exams/s") && stdout.contains("exams.csv"),
        "{stdout}"
    );
    check(LAYOUT, &out);
}

const MEANING: &str = r#"
import sys, os
import numpy as np, pandas as pd, h5py
out = sys.argv[1]
df = pd.read_csv(os.path.join(out, "exams.csv"))
rows = []
for name in sorted(set(df.trace_file)):
    with h5py.File(os.path.join(out, name), "r") as f:
        ids, x = f["exam_id"][:200], f["tracings"][:200]
    for eid, rec in zip(ids, x):
        if eid == 0:
            continue
        rec = rec[np.any(rec != 0, axis=1)]
        # QRS amplitude: the tallest deflections from each lead's median, averaged over leads.
        amp = np.mean(np.percentile(np.abs(rec - np.median(rec, axis=0)), 99.5, axis=0))
        # RR: onsets of bursts of slope energy (QRS complexes), at least 300 ms apart.
        d = rec[4:] - rec[:-4]
        e = np.convolve((d ** 2).sum(axis=1), np.ones(8), "same")
        above = e > 0.35 * np.percentile(e, 99.5)
        beats = []
        for s in np.flatnonzero(above[1:] & ~above[:-1]):
            if not beats or s - beats[-1] > 120:
                beats.append(s)
        rr = np.median(np.diff(beats)) / 400 if len(beats) > 2 else np.nan
        rows.append((eid, amp, rr))
fe = pd.DataFrame(rows, columns=["exam_id", "amp", "rr"]).merge(df, on="exam_id").dropna(subset=["rr"])
assert len(fe) >= 400, len(fe)
r_amp = fe.amp.corr(fe.age)
r_rr = fe.rr.corr(fe.age)
# Built in: QRS voltage falls and the heart slows with (biological) age.
assert r_amp < -0.2, f"r(QRS amplitude, age) = {r_amp:.3f}"
assert r_rr > 0.1, f"r(RR, age) = {r_rr:.3f}"

first = df[~df.patient_id.duplicated()].copy()
first["death"] = first.death.astype(bool)
died = first.death.mean()
assert 0.015 < died < 0.06, f"{died:.3f} of patients died"
# Death rates of patients whose ECG age is above / below their age, standardised over decades.
first["older"] = first.nn_predicted_age > first.age
first["band"] = first.age // 10
rates = first.groupby(["band", "older"]).death.mean().unstack()
weights = first.groupby("band").size()
ok = rates.notna().all(axis=1)
older = (rates[True][ok] * weights[ok]).sum() / weights[ok].sum()
younger = (rates[False][ok] * weights[ok]).sum() / weights[ok].sum()
assert older > 1.3 * younger, f"death rate {older:.4f} (ECG older) vs {younger:.4f} (ECG younger)"
print(f"ok r_amp={r_amp:.3f} r_rr={r_rr:.3f} death={died:.3f} older={older:.4f} younger={younger:.4f}")
"#;

#[test]
fn the_waveform_carries_age_and_the_age_gap_predicts_death() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cohort");
    synth(&out, 3000, 11, 1500);
    let stdout = check(MEANING, &out);
    eprintln!("{stdout}");
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cohort");
    let err = run_err(
        cmd("coordinator")
            .args(["synth", "--patients", "0", "--out"])
            .arg(&out),
    );
    assert!(err.contains("--patients"), "{err}");
    assert!(!out.exists(), "nothing written for a bad argument");

    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let err = run_err(
        cmd("coordinator")
            .args(["synth", "--patients", "3", "--out"])
            .arg(&out),
    );
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    run_ok(
        cmd("coordinator")
            .args(["synth", "--patients", "3", "--force", "--out"])
            .arg(&out),
    );
    assert!(out.join("exams.csv").exists() && out.join("exams_part0.hdf5").exists());
    assert!(
        out.join("notes.txt").exists(),
        "--force keeps files it did not write"
    );

    let under_file = out.join("notes.txt").join("cohort");
    let err = run_err(
        cmd("coordinator")
            .args(["synth", "--patients", "3", "--out"])
            .arg(&under_file),
    );
    assert!(err.contains("notes.txt"), "the error names the path: {err}");

    let err = run_err(
        cmd("coordinator")
            .args(["synth", "--patients", "3", "--threads", "0", "--out"])
            .arg(&out),
    );
    assert!(err.contains("--threads"), "{err}");
}
