#!/usr/bin/env python3
"""Our Python port of the seed's `get_splits` (ecg-age-prediction, formulate_problem.py),
written from its description (seed-spec section 1.5) with NumPy's legacy RandomState. It is the
reference the Rust `age-balanced` strategy is checked against, and a benchmark peer.

As a module: `get_splits(age_at_exam, patient_ids, exam_ids, splits, ...)` returns, like the
seed, three lists with one entry per split: the patient ids (in the seed's order), the
representative exam id of each of those patients, and all exam ids of the split's patients.

As a script: `python get_splits.py CSV --seed 0 --splits 0.15 0.05 --out split.csv` reads the CSV
the way the seed does (pandas, duplicate exam ids dropped keeping the first) and writes
`split.csv` (`exam_id,patient_id,split`, one row per exam in CSV order); with two fractions the
splits are named test, valid and train.

One extension: the seed cannot handle an exam without an age; here all such exams share one age
group, after every number (as np.unique sorts NaN) and outside the age window.
"""
import argparse
import math
import sys

import numpy as np

SPLIT_NAMES = ("test", "valid", "train")


class _Missing:
    """The age group of exams without an age (a NaN would not work as a dict key)."""

    def __repr__(self):
        return "nan"


MISSING = _Missing()


def _age_key(a):
    return MISSING if math.isnan(a) else a


def get_splits(age_at_exam, patient_ids, exam_ids, splits, min_age_valid=16, max_age_valid=85, seed=0):
    """The seed's patient-level, age-balanced split. `splits` are fractions (test, valid, ...);
    the last split gets the remaining patients."""
    if sum(splits) > 1:
        raise ValueError("the fractions of the splits sum to more than 1: %r" % (list(splits),))
    rng = np.random.RandomState(seed)
    ages_array = np.asarray(age_at_exam)
    if ages_array.dtype.kind == "f":
        age_at_exam = [_age_key(a) for a in ages_array.tolist()]
    else:
        age_at_exam = ages_array.tolist()
    patient_ids = np.asarray(patient_ids).astype(np.int64).tolist()
    exam_ids = np.asarray(exam_ids).astype(np.int64).tolist()

    # Patients in increasing id order, each with its exams in table order.
    patients = sorted(set(patient_ids))
    patient_index = {p: i for i, p in enumerate(patients)}
    exams_of_patient = [[] for _ in patients]
    for e, p in zip(exam_ids, patient_ids):
        exams_of_patient[patient_index[p]].append(e)
    age_of_exam = dict(zip(exam_ids, age_at_exam))

    # Distinct ages, sorted (missing last); one list of patients per age, in that order.
    numbers = sorted(set(a for a in age_at_exam if a is not MISSING))
    ages = numbers + ([MISSING] if any(a is MISSING for a in age_at_exam) else [])
    patients_per_age = {a: [] for a in ages}
    representative = {}
    for i in range(len(patients)):
        e = rng.choice(exams_of_patient[i])
        representative[i] = int(e)
        patients_per_age[age_of_exam[int(e)]].append(i)

    n_patients = len(patients)
    sizes = [int(s * n_patients) for s in splits]
    sizes.append(n_patients - sum(sizes))

    rng.shuffle(ages)
    for a in patients_per_age:
        rng.shuffle(patients_per_age[a])

    def in_window(a):
        return a is not MISSING and min_age_valid <= a <= max_age_valid

    sequence = []
    for inside in (True, False):
        group = [a for a in ages if in_window(a) == inside]
        while any(len(patients_per_age[a]) > 0 for a in group):
            for a in group:
                if patients_per_age[a]:
                    sequence.append(patients_per_age[a].pop())

    patient_splits, representative_splits, exam_splits = [], [], []
    start = 0
    for n in sizes:
        chosen = sequence[start:start + n]
        start += n
        patient_splits.append([patients[i] for i in chosen])
        representative_splits.append([representative[i] for i in chosen])
        exam_splits.append([e for i in chosen for e in exams_of_patient[i]])
    return patient_splits, representative_splits, exam_splits


def read_exams(path, exam_id_col="exam_id", age_col="age", patient_id_col="patient_id"):
    """The seed's reading: pandas, duplicate exam ids dropped (first kept), ids as int."""
    import pandas as pd

    df = pd.read_csv(path, low_memory=False)
    df = df.drop_duplicates(exam_id_col, keep="first")
    return (
        df[age_col].to_numpy(),
        df[patient_id_col].astype(int).to_numpy(),
        df[exam_id_col].astype(int).to_numpy(),
    )


def split_table(exam_ids, patient_ids, patient_splits, names=SPLIT_NAMES):
    """The split name of every exam, from the per-split patient lists."""
    split_of = {}
    for name, plist in zip(names, patient_splits):
        for p in plist:
            split_of[p] = name
    return [split_of[int(p)] for p in patient_ids]


def write_split_csv(path, exam_ids, patient_ids, split_names):
    """`exam_id,patient_id,split`, one row per exam, in the given order."""
    with open(path, "w") as f:
        f.write("exam_id,patient_id,split\n")
        f.writelines("%d,%d,%s\n" % (e, p, s) for e, p, s in zip(exam_ids, patient_ids, split_names))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="exams CSV")
    ap.add_argument("--exam_id_col", default="exam_id")
    ap.add_argument("--age_col", default="age")
    ap.add_argument("--patient_id_col", default="patient_id")
    ap.add_argument("--splits", type=float, nargs="*", default=[0.15, 0.05],
                    help="test and validation fractions; train gets the rest")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="split.csv")
    args = ap.parse_args(argv)
    if len(args.splits) != 2:
        ap.error("--splits takes two fractions (test, valid)")
    ages, pids, eids = read_exams(args.file, args.exam_id_col, args.age_col, args.patient_id_col)
    patient_splits, _, _ = get_splits(ages, pids, eids, args.splits, seed=args.seed)
    write_split_csv(args.out, eids, pids, split_table(eids, pids, patient_splits))
    for name, plist in zip(SPLIT_NAMES, patient_splits):
        print("%-6s %9d patients" % (name, len(plist)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
