#!/usr/bin/env bash
# Read throughput of random batches of exams: our BatchReader (rows mapped from the page cache + blocked
# transpose to channels-first) against h5py fancy indexing (bench/read_h5py.py), on the same
# contiguous CODE-layout file (float32 (N, 4096, 12) plus exam_id, shuffled ids, one padding row).
#
# The page cache is WARM for both: the file is read once before the runs and is much smaller than
# RAM, so this measures the readers' own cost, not the disk. Runs alternate (ours, h5py) RUNS
# times; the medians and their ratios are printed.
#
# Usage: bash bench/read.sh            (env: N_EXAMS=3000 BATCHES=200 BATCH=32 RUNS=5 THREADS=2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../scripts/setup.sh
. "$root/scripts/setup.sh"
N_EXAMS=${N_EXAMS:-3000}
BATCHES=${BATCHES:-200}
BATCH=${BATCH:-32}
RUNS=${RUNS:-5}
THREADS=${THREADS:-2}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== writing $N_EXAMS exams to $work/exams.hdf5"
python - "$work" "$N_EXAMS" <<'PY'
import os, sys
import h5py, numpy as np
d, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(1)
ids = rng.permutation(np.arange(1, n + 1) * 3 + 100000)
with h5py.File(os.path.join(d, "exams.hdf5"), "w") as f:
    t = f.create_dataset("tracings", shape=(n + 1, 4096, 12), dtype="<f4")
    for s in range(0, n, 500):
        e = min(n, s + 500)
        t[s:e] = rng.standard_normal((e - s, 4096, 12), dtype=np.float32)
    t[n] = 0.0
    f.create_dataset("exam_id", data=np.append(ids, 0).astype("<i8"))
with open(os.path.join(d, "exams.csv"), "w") as c:
    c.write("exam_id,patient_id,age\n")
    for i, e in enumerate(sorted(ids)):
        c.write(f"{e},{e // 2},{20 + i % 70}\n")
PY
ls -l "$work/exams.hdf5"

echo "== building bench_read (release)"
(cd "$root" && cargo build --quiet --release -p ecg-tests --bin bench_read)
bin="$root/target/release/bench_read"
cat "$work/exams.hdf5" > /dev/null   # warm the page cache

for i in $(seq 1 "$RUNS"); do
  "$bin" --hdf5 "$work/exams.hdf5" --csv "$work/exams.csv" --batch "$BATCH" --batches "$BATCHES" \
    --seed "$i" --threads "$THREADS" 2>/dev/null | tee -a "$work/ours.txt"
  python "$root/bench/read_h5py.py" --hdf5 "$work/exams.hdf5" --batch "$BATCH" --batches "$BATCHES" \
    --seed "$i" | tee -a "$work/h5py.txt"
done

python - "$work/ours.txt" "$work/h5py.txt" "$THREADS" <<'PY'
import statistics, sys
def med(path, key):
    return statistics.median(float(l.split()[1]) for l in open(path) if l.startswith(key + " "))
ours, pre = med(sys.argv[1], "reader_exams_per_s"), med(sys.argv[1], "prefetch_exams_per_s")
h5, h5t = med(sys.argv[2], "h5py_exams_per_s"), med(sys.argv[2], "h5py_transposed_exams_per_s")
print("== medians (exams/s, warm page cache)")
print(f"ours BatchReader, 1 thread          {ours:10.0f}")
print(f"ours Prefetcher, {sys.argv[3]} threads         {pre:10.0f}")
print(f"h5py ds[sorted(idx)]                {h5:10.0f}")
print(f"h5py ds[sorted(idx)] + transpose    {h5t:10.0f}")
print(f"ratio BatchReader / h5py            {ours / h5:10.2f}")
print(f"ratio BatchReader / h5py+transpose  {ours / h5t:10.2f}")
print(f"ratio Prefetcher / h5py             {pre / h5:10.2f}")
PY
