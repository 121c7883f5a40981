#!/usr/bin/env bash
# The full-size network on this machine's CPU against the seed's model in PyTorch (our port),
# same threads, same batches, in the same run: evaluation forward at batch 32 and the training
# step at batches 8 and 32. ROUNDS rounds alternate the two peers; each round times REPS
# repetitions after a warm-up; the table gives medians over all repetitions, in exams/s.
#   bash bench/model.sh            (THREADS=2 ROUNDS=3 REPS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
threads="${THREADS:-2}"; rounds="${ROUNDS:-3}"; reps="${REPS:-3}"
cargo build --release -p ecg-tests --bin bench_model >&2
torch_py="$(bash scripts/torch-python.sh)"
out="$(mktemp)"
for r in $(seq "$rounds"); do
  RAYON_NUM_THREADS="$threads" target/release/bench_model --reps "$reps" >> "$out"
  "$torch_py" bench/model_torch.py --threads "$threads" --reps "$reps" >> "$out"
done
python3 - "$out" "$threads" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {}
for r in rows:
    by.setdefault((r["what"], r["peer"]), []).extend(r["seconds"])
print(f"threads {sys.argv[2]}; exams/s, median of {len(by[next(iter(by))])} timings")
print(f"{'measurement':<12} {'ours':>10} {'pytorch':>10} {'ratio':>7}")
for what in dict.fromkeys(r["what"] for r in rows):
    batch = int(what.lstrip("forwardtain"))
    ours = batch / statistics.median(by[(what, "ours")])
    peer = batch / statistics.median(by[(what, "pytorch")])
    print(f"{what:<12} {ours:>10.2f} {peer:>10.2f} {ours / peer:>6.2f}x")
PY
rm -f "$out"
