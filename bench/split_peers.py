#!/usr/bin/env python3
"""The Python peers of the split benchmark (bench/split.sh). Each writes split.csv
(`exam_id,patient_id,split`, one row per exam in CSV order) and prints one line
`elapsed SECONDS (read R, split S, write W)` timed after the imports.

    python bench/split_peers.py seed-port CSV OUT [--seed 0] [--fractions 0.15 0.05]
    python bench/split_peers.py pandas    CSV OUT [--seed 0] [--fractions 0.15 0.05]
    python bench/split_peers.py pandas-usecols CSV OUT [--seed 0] [--fractions 0.15 0.05]

- `seed-port`: what the seed does (pandas read_csv with low_memory=False, duplicate exam ids
  dropped, ids cast to int) followed by our port of its get_splits (scripts/py/get_splits.py),
  then the file written from its patient lists. Its split.csv must equal ours byte for byte.
- `pandas`: a plain vectorised patient split: read_csv, unique patients, a random permutation,
  the first fractions to test and valid, mapped back to the exams, to_csv.
- `pandas-usecols`: the same, reading only the two columns it needs (`usecols`), as a
  pandas user who knows the table would; ours also parses only the columns it needs.
"""
import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "py"))
import get_splits as gs  # noqa: E402


def seed_port(csv, out, seed, fractions):
    t0 = time.perf_counter()
    ages, pids, eids = gs.read_exams(csv)
    t1 = time.perf_counter()
    patient_splits, _, _ = gs.get_splits(ages, pids, eids, fractions, seed=seed)
    t2 = time.perf_counter()
    gs.write_split_csv(out, eids, pids, gs.split_table(eids, pids, patient_splits))
    return t0, t1, t2, time.perf_counter()


def plain_pandas(csv, out, seed, fractions, usecols=None):
    t0 = time.perf_counter()
    df = pd.read_csv(csv, low_memory=False, usecols=usecols)
    t1 = time.perf_counter()
    patients = df["patient_id"].unique()
    perm = np.random.default_rng(seed).permutation(len(patients))
    n_test = int(fractions[0] * len(patients))
    n_valid = int(fractions[1] * len(patients))
    names = np.full(len(patients), "train", dtype=object)
    names[perm[:n_test]] = "test"
    names[perm[n_test:n_test + n_valid]] = "valid"
    split = df["patient_id"].map(pd.Series(names, index=patients))
    t2 = time.perf_counter()
    pd.DataFrame({"exam_id": df["exam_id"], "patient_id": df["patient_id"], "split": split}).to_csv(out, index=False)
    return t0, t1, t2, time.perf_counter()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("peer", choices=["seed-port", "pandas", "pandas-usecols"])
    ap.add_argument("csv")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fractions", type=float, nargs=2, default=[0.15, 0.05])
    args = ap.parse_args()
    if args.peer == "seed-port":
        t0, t1, t2, t3 = seed_port(args.csv, args.out, args.seed, args.fractions)
    else:
        usecols = ["exam_id", "patient_id"] if args.peer == "pandas-usecols" else None
        t0, t1, t2, t3 = plain_pandas(args.csv, args.out, args.seed, args.fractions, usecols)
    print("elapsed %.3f (read %.3f, split %.3f, write %.3f)" % (t3 - t0, t1 - t0, t2 - t1, t3 - t2))


if __name__ == "__main__":
    main()
