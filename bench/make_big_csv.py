#!/usr/bin/env python3
"""Writes a CODE-like exams CSV for the split benchmark: by default 2.3 M exams of 1.56 M
patients (the size of the full CODE cohort) with the 15 columns of CODE-15%'s exams.csv, in
CODE-15%'s column order. Patient and exam ids are unique random integers, rows are shuffled (a
patient's exams are scattered over the file), ages are integers 0-100 that grow by a few years
between a patient's exams, `death` and `timey` are filled only on a patient's first exam.

    python bench/make_big_csv.py --out out/bench-split/exams.csv [--exams N] [--patients N] [--seed S]
"""
import argparse
import os
import time

import numpy as np
import pandas as pd

COLUMNS = ["exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF",
           "patient_id", "death", "timey", "normal_ecg", "trace_file"]


def make(n_exams, n_patients, seed):
    if not 0 < n_patients <= n_exams:
        raise SystemExit("need 0 < patients <= exams")
    rng = np.random.default_rng(seed)
    # Every patient has one exam; the remaining exams go to random patients.
    patient_of_exam = np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, n_exams - n_patients)])
    rng.shuffle(patient_of_exam)
    patient_ids = rng.choice(20 * n_patients, size=n_patients, replace=False) + 1
    exam_ids = rng.choice(3 * n_exams, size=n_exams, replace=False) + 1

    base_age = np.clip(rng.normal(52, 19, n_patients), 0, 97).astype(np.int64)
    age = np.minimum(base_age[patient_of_exam] + rng.integers(0, 4, n_exams), 100)
    is_male_p = rng.random(n_patients) < 0.4
    # First exam of each patient (first occurrence in file order) carries death and timey.
    first = np.zeros(n_exams, dtype=bool)
    _, first_rows = np.unique(patient_of_exam, return_index=True)
    first[first_rows] = True
    death_p = rng.random(n_patients) < 0.065
    timey_p = np.round(rng.uniform(0.01, 7.0, n_patients), 2)
    death = pd.array(np.where(first, death_p[patient_of_exam], False), dtype="boolean")
    death[~first] = pd.NA
    timey = np.where(first, timey_p[patient_of_exam], np.nan)

    data = {
        "exam_id": exam_ids,
        "age": age,
        "is_male": is_male_p[patient_of_exam],
        "nn_predicted_age": np.round(age + rng.normal(0, 8, n_exams), 6),
    }
    for name, p in [("1dAVb", 0.015), ("RBBB", 0.025), ("LBBB", 0.015), ("SB", 0.015), ("ST", 0.02), ("AF", 0.02)]:
        data[name] = rng.random(n_exams) < p
    data["patient_id"] = patient_ids[patient_of_exam]
    data["death"] = death
    data["timey"] = timey
    data["normal_ecg"] = rng.random(n_exams) < 0.6
    parts = np.array(["exams_part%d.hdf5" % i for i in range((n_exams + 19_999) // 20_000)])
    data["trace_file"] = parts[rng.permutation(n_exams) // 20_000]
    return pd.DataFrame(data, columns=COLUMNS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--exams", type=int, default=2_300_000)
    ap.add_argument("--patients", type=int, default=1_560_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    df = make(args.exams, args.patients, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    df.to_csv(args.out, index=False)
    size = os.path.getsize(args.out) / 1e6
    print("wrote %s: %d exams, %d patients, %.0f MB in %.1f s"
          % (args.out, len(df), df["patient_id"].nunique(), size, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
