"""Peer of tests/src/bin/bench_read.rs: random batches of exams read with h5py fancy indexing.

Each batch holds --batch distinct rows drawn uniformly from the non-padding rows (exam_id != 0);
h5py needs increasing indices, so each batch is read as ds[sorted(idx)]. Prints exams per second
for the plain read, and for the read followed by the transpose to channels-first (B, 12, 4096)
that our reader also does.
"""
import argparse
import time

import h5py
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hdf5", required=True, help="CODE-layout HDF5 file")
    ap.add_argument("--batch", type=int, default=32, help="exams per batch")
    ap.add_argument("--batches", type=int, default=200, help="batches per measurement")
    ap.add_argument("--seed", type=int, default=0, help="seed of the batch draw")
    a = ap.parse_args()

    with h5py.File(a.hdf5, "r") as f:
        ds = f["tracings"]
        rows = np.flatnonzero(f["exam_id"][:] != 0)
        rng = np.random.default_rng(a.seed)
        batches = [np.sort(rng.choice(rows, a.batch, replace=False)) for _ in range(a.batches)]
        exams = a.batch * a.batches
        check = 0.0

        t = time.perf_counter()
        for idx in batches:
            x = ds[idx]
            check += float(x[len(x) // 2, 0, 0])
        plain = exams / (time.perf_counter() - t)

        t = time.perf_counter()
        for idx in batches:
            x = np.ascontiguousarray(ds[idx].transpose(0, 2, 1))
            check += float(x[len(x) // 2, 0, 0])
        transposed = exams / (time.perf_counter() - t)

    print(f"h5py_exams_per_s {plain:.1f}")
    print(f"h5py_transposed_exams_per_s {transposed:.1f}")
    print(f"(checksum {check})", flush=True)


if __name__ == "__main__":
    main()
