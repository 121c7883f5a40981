#!/usr/bin/env bash
# End to end on one GPU machine: a synthetic CODE-format cohort, the coordinator (CPU build,
# dist/coordinator.gz) and one CUDA worker on the same machine training the full network at
# batch E2E_BATCH for E2E_STEPS steps (validation included when an epoch ends). While it runs,
# nvidia-smi samples the GPU's utilisation every 100 ms; the report gives the mean utilisation
# over the run, the worker's own split of each step (compute / upload / wait / download, from
# --step-log) and the busy fraction compute / step time. Target: the GPU above 90% busy.
# Called by bench/gpu.sh with WORKER (the unpacked CUDA worker), GPU and LD_LIBRARY_PATH set:
#   WORKER=/path/to/worker GPU=0 bash bench/gpu_e2e.sh
# Knobs: E2E_BATCH=256 E2E_STEPS=60 E2E_PATIENTS=4000 E2E_PRECISION=f32; OUT keeps the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${WORKER:?WORKER must name the CUDA worker binary}"
gpu="${GPU:-0}"; batch="${E2E_BATCH:-256}"; steps="${E2E_STEPS:-60}"
patients="${E2E_PATIENTS:-4000}"; precision="${E2E_PRECISION:-f32}"
[ -f dist/coordinator.gz ] || { echo "gpu_e2e.sh: dist/coordinator.gz not found (scripts/build-cuda.sh makes it)" >&2; exit 1; }
tmp="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
gunzip -c dist/coordinator.gz > "$tmp/coordinator"
chmod +x "$tmp/coordinator"
"$tmp/coordinator" synth --out "$tmp/data" --patients "$patients" --seed 0 --exams-per-part 4000
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tmp/token"
ECG__DATA__ROOT="$tmp/data" ECG__OUTPUT__DIR="$tmp/out" ECG__CLUSTER__TOKEN_FILE="$tmp/token" \
  ECG__CLUSTER__LISTEN=127.0.0.1:0 ECG__CLUSTER__METRICS_LISTEN=127.0.0.1:0 \
  ECG__CLUSTER__MIN_WORKERS=1 ECG__TRAINING__BATCH_SIZE="$batch" \
  ECG__TRAINING__MAX_STEPS="$steps" ECG__TRAINING__PRECISION="$precision" \
  "$tmp/coordinator" --config deploy/cluster.toml > "$tmp/coordinator.log" 2>&1 &
coordinator=$!
pids+=("$coordinator")
for _ in $(seq 3000); do
  [ -s "$tmp/out/coordinator.addr" ] && break
  kill -0 "$coordinator" 2>/dev/null || { cat "$tmp/coordinator.log"; exit 1; }
  sleep 0.1
done
[ -s "$tmp/out/coordinator.addr" ] || { echo "gpu_e2e.sh: the coordinator did not start" >&2; cat "$tmp/coordinator.log"; exit 1; }
nvidia-smi -i "$gpu" --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 100 > "$tmp/util.csv" &
pids+=("$!")
t0=$(date +%s.%N)
"$WORKER" --coordinator "$(cat "$tmp/out/coordinator.addr")" --gpu "$gpu" --token-file "$tmp/token" \
  --step-log "$tmp/steps.csv" > "$tmp/worker.log" 2>&1 || { cat "$tmp/worker.log"; exit 1; }
t1=$(date +%s.%N)
wait "$coordinator" || { cat "$tmp/coordinator.log"; exit 1; }
kill "${pids[-1]}" 2>/dev/null || true
tail -n 5 "$tmp/coordinator.log"
python3 - "$tmp/util.csv" "$tmp/steps.csv" "$batch" "$precision" "$t0" "$t1" <<'PY'
import csv, statistics, sys
util_path, steps_path, batch, precision, t0, t1 = sys.argv[1:]
util = [float(l) for l in open(util_path) if l.strip().replace(".", "", 1).isdigit()]
rows = [r for r in csv.reader(open(steps_path)) if r and r[0].isdigit()]
cols = ["step", "units", "exams", "compute_ms", "upload_ms", "wait_ms", "download_ms"]
steps = [dict(zip(cols, map(float, r))) for r in rows][3:]  # the first steps warm up cuDNN
if not steps:
    sys.exit("gpu_e2e: no steps in the worker's step log")
med = {c: statistics.median(s[c] for s in steps) for c in cols[3:]}
total = sum(med.values())
print(f"end to end, batch {batch}, {precision}: {len(steps)} steps after warm-up, "
      f"{float(t1) - float(t0):.1f} s for the worker's whole run")
print("median per step (ms): " + ", ".join(f"{c[:-3]} {v:.1f}" for c, v in med.items()))
print(f"exams/s over a step: {float(batch) / total * 1000:.1f}; busy fraction (compute / step): "
      f"{med['compute_ms'] / total:.1%}")
if util:
    print(f"nvidia-smi utilisation over the run: mean {statistics.mean(util):.1f}%, "
          f"median {statistics.median(util):.1f}% ({len(util)} samples); target > 90%")
PY
