#!/usr/bin/env python3
"""Writes the committed fixtures of the split tests into tests/fixtures/split/:

- exams.csv: a small synthetic exams table (about 2,000 patients with 1-4 exams each, patient
  ids not sorted and rows interleaved, ages 5-100 with exam-level ages that vary within a
  patient, a few fractional and a few missing ages, columns in an unusual order);
- cases.json and expected_<name>.csv: for a few seeds and fraction sets, the patients of each
  split in the order our port of the seed's get_splits (scripts/py/get_splits.py, NumPy's legacy
  RandomState) returns them, with each patient's representative exam;
- numpy_stream.json: raw outputs of np.random.RandomState(seed) and the results of its
  choice and shuffle, recorded from NumPy itself.

Run with the project's Python: `$ECG_PYTHON scripts/py/make_split_fixture.py`. The outputs are
deterministic; rerunning rewrites identical files.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import get_splits as gs  # noqa: E402

OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "split")

CASES = [
    {"name": "seed0_default", "seed": 0, "fractions": [0.15, 0.05]},
    {"name": "seed1_30_10", "seed": 1, "fractions": [0.3, 0.1]},
    {"name": "seed2024_20_0", "seed": 2024, "fractions": [0.2, 0.0]},
]


def make_table(rng, n_patients=2000):
    """Columns exam_id, patient_id, age (float, NaN for a few) in a shuffled row order."""
    patient_ids = rng.choice(np.arange(10_000, 10_000_000), size=n_patients, replace=False)
    base_age = rng.randint(5, 98, size=n_patients)
    n_exams = rng.randint(1, 5, size=n_patients)
    rows = []
    for pid, age, k in zip(patient_ids, base_age, n_exams):
        offsets = np.sort(rng.randint(0, 4, size=k))
        for off in offsets:
            rows.append((int(pid), float(min(age + off, 100))))
    n = len(rows)
    exam_ids = rng.choice(np.arange(1, 50 * n), size=n, replace=False)
    order = rng.permutation(n)
    pid = np.array([rows[i][0] for i in order], dtype=np.int64)
    age = np.array([rows[i][1] for i in order], dtype=np.float64)
    # A few fractional ages, and a few exams without an age.
    frac = rng.choice(n, size=40, replace=False)
    age[frac[:30]] += 0.5
    age[frac[30:]] = np.nan
    return exam_ids.astype(np.int64), pid, age


def write_exams_csv(path, exam_ids, pids, ages, rng):
    is_male = rng.randint(0, 2, size=len(exam_ids))
    with open(path, "w") as f:
        f.write("patient_id,age,is_male,exam_id\n")
        for e, p, a, m in zip(exam_ids, pids, ages, is_male):
            age = "" if np.isnan(a) else ("%d" % a if a == int(a) else "%.1f" % a)
            f.write("%d,%s,%s,%d\n" % (p, age, "True" if m else "False", e))


def numpy_stream(seed):
    """What NumPy's RandomState(seed) produces: raw 32-bit outputs (randint over the full
    uint32 range returns them unchanged), then choices and shuffles from one stream."""
    rng = np.random.RandomState(seed)
    raw = [int(x) for x in rng.randint(0, 2**32, size=700, dtype=np.uint64)]
    rng = np.random.RandomState(seed)
    ops = []
    for k in [1, 2, 3, 5, 1, 7, 8, 9, 100, 1000, 65537, 2**31 + 1]:
        items = list(range(k)) if k <= 1000 else None
        # choice of a list of k items draws like randint(0, k); check that, then record.
        twin = np.random.RandomState(0)
        twin.set_state(rng.get_state())
        value = int(rng.choice(items)) if items is not None else int(rng.choice(k))
        assert value == int(twin.randint(0, k)), "choice and randint differ"
        ops.append({"op": "choice", "k": k, "value": value})
        for n in [0, 1, 2, 6, 50]:
            x = list(range(n))
            rng.shuffle(x)
            ops.append({"op": "shuffle", "n": n, "value": x})
    # The masked rejection of numpy's random_interval, over a range that rejects a lot.
    ops.append({"op": "shuffle", "n": 1025, "value": [int(v) for v in rng.permutation(1025)]})
    return {"seed": seed, "raw_first": raw[:10], "raw_600_to_700": raw[600:], "ops": ops}


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.RandomState(20240601)
    exam_ids, pids, ages = make_table(rng)
    write_exams_csv(os.path.join(OUT, "exams.csv"), exam_ids, pids, ages, rng)
    # Read back as the seed does, so that the lists come from exactly what the tests read.
    r_ages, r_pids, r_eids = gs.read_exams(os.path.join(OUT, "exams.csv"))
    assert len(r_eids) == len(exam_ids)

    cases = []
    for case in CASES:
        p_splits, rep_splits, _ = gs.get_splits(r_ages, r_pids, r_eids, case["fractions"], seed=case["seed"])
        fname = "expected_%s.csv" % case["name"]
        with open(os.path.join(OUT, fname), "w") as f:
            f.write("split,position,patient_id,representative_exam_id\n")
            for name, plist, rlist in zip(gs.SPLIT_NAMES, p_splits, rep_splits):
                for pos, (p, r) in enumerate(zip(plist, rlist)):
                    f.write("%s,%d,%d,%d\n" % (name, pos, p, r))
        cases.append(dict(case, file=fname, sizes=[len(p) for p in p_splits]))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"exams": "exams.csv", "cases": cases}, f, indent=1)
        f.write("\n")

    streams = [numpy_stream(s) for s in [0, 1, 5489, 4294967295]]
    with open(os.path.join(OUT, "numpy_stream.json"), "w") as f:
        json.dump({"numpy_version": np.__version__, "streams": streams}, f, separators=(",", ":"))
        f.write("\n")
    n_patients = len(set(pids.tolist()))
    print("wrote %s: %d exams, %d patients, %d cases" % (os.path.normpath(OUT), len(exam_ids), n_patients, len(cases)))


if __name__ == "__main__":
    main()
