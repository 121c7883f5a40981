#!/usr/bin/env bash
# The CUDA worker on one GPU against the seed's model in PyTorch on the same GPU, in the same run.
# Meant for a GPU machine with the NVIDIA driver and PyTorch's CUDA wheels installed for
# `python3`, and no Rust: the worker comes prebuilt as dist/worker-cudnn.gz
# (scripts/build-cuda.sh). Steps:
#   a. the GPU and driver; unpack the worker; LD_LIBRARY_PATH from the torch wheels' nvidia/*/lib;
#      stop at once if `ldd` finds a library missing;
#   b. correctness: `worker gpu-check` (CUDA ops against the CPU reference);
#   c. training-step throughput: ROUNDS rounds, each running, per precision, `worker bench` and
#      bench/model_torch.py --device cuda, REPS timed repetitions per batch (JSON lines);
#   d. bench/gpu_e2e.sh when present (it gets WORKER, GPU and LD_LIBRARY_PATH in its environment);
#   e. the table: bench/gpu_report.py (exams/s, ratios, MFU, the design targets).
# JSON lines go to $OUT/gpu_bench.jsonl (the report to $OUT/gpu_report.md) when OUT is set, else
# to a temporary file whose path is printed. A failed step is recorded and the run goes on; the
# exit status is 1 if any step failed (see the summary at the end).
#   bash bench/gpu.sh        (ROUNDS=3 REPS=10 BATCHES=32,128,512 PRECISIONS=f32,tf32,bf16 GPU=0)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}"; reps="${REPS:-10}"; batches="${BATCHES:-32,128,512}"
precisions="${PRECISIONS:-f32,tf32,bf16}"; gpu="${GPU:-0}"
torch_what="train${batches//,/,train}"
failed=()
step() { printf '\n===== %s =====\n' "$*"; }

step "a. GPU, driver, worker binary, CUDA libraries"
nvidia-smi -L
nvidia-smi | grep 'Driver Version' || echo "gpu.sh: no driver line in nvidia-smi's output"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
[ -f dist/worker-cudnn.gz ] || { echo "gpu.sh: dist/worker-cudnn.gz not found (scripts/build-cuda.sh makes it)" >&2; exit 1; }
gunzip -c dist/worker-cudnn.gz > "$tmp/worker"
chmod +x "$tmp/worker"
W="$tmp/worker"
# Every lib/ folder below the site-packages folder(s) holding the `nvidia` namespace package.
libs="$(python3 -c '
import os, nvidia
roots = dict.fromkeys(os.path.dirname(p) for p in list(nvidia.__path__))
print(":".join(os.path.join(r, d) for root in roots for r, ds, _ in os.walk(root)
               for d in ds if d == "lib"))
')" || { echo "gpu.sh: python3 cannot import the nvidia wheels (is PyTorch with CUDA installed?)" >&2; exit 1; }
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
missing="$(ldd "$W" | grep 'not found' || true)"
if [ -n "$missing" ]; then
  echo "gpu.sh: the worker's libraries are missing:" >&2
  echo "$missing" >&2
  exit 1
fi
ldd "$W" | grep -E 'cuda|cudnn|cublas|curand|nvrtc|nccl' || true

step "b. correctness: worker gpu-check --gpu $gpu"
check_rc=0
"$W" gpu-check --gpu "$gpu" || check_rc=$?
if [ "$check_rc" -ne 0 ]; then
  echo "gpu.sh: gpu-check FAILED (exit status $check_rc); the benchmark still runs"
  failed+=("gpu-check (exit status $check_rc)")
fi

step "c. benchmark: $rounds rounds x precisions $precisions, batches $batches, $reps repetitions"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  jsonl="$OUT/gpu_bench.jsonl"
else
  jsonl="$(mktemp --suffix=.jsonl)"
fi
: > "$jsonl"
echo "JSON lines: $jsonl"
# run_peer PEER ROUND PRECISION CMD...: shows the output, appends its JSON lines, records failure.
run_peer() {
  local peer="$1" round="$2" precision="$3"; shift 3
  local rc=0
  echo "--- round $round, precision $precision, $peer: $*"
  "$@" > "$tmp/peer.out" || rc=$?
  cat "$tmp/peer.out"
  grep '^{' "$tmp/peer.out" >> "$jsonl" || true
  if [ "$rc" -ne 0 ]; then
    echo "gpu.sh: $peer failed at precision $precision, round $round (exit status $rc); going on"
    printf '{"peer": "%s", "precision": "%s", "round": %s, "device": "cuda", "error": "exit status %s"}\n' \
      "$peer" "$precision" "$round" "$rc" >> "$jsonl"
    failed+=("bench $peer, precision $precision, round $round (exit status $rc)")
  fi
}
for r in $(seq "$rounds"); do
  for p in ${precisions//,/ }; do
    run_peer ours "$r" "$p" "$W" bench --gpu "$gpu" --precision "$p" --batches "$batches" --reps "$reps"
    run_peer pytorch "$r" "$p" \
      python3 bench/model_torch.py --device cuda --gpu "$gpu" --precision "$p" --what "$torch_what" --reps "$reps"
  done
done

step "d. end-to-end"
if [ -f bench/gpu_e2e.sh ]; then
  e2e_rc=0
  WORKER="$W" GPU="$gpu" bash bench/gpu_e2e.sh || e2e_rc=$?
  [ "$e2e_rc" -eq 0 ] || failed+=("gpu_e2e.sh (exit status $e2e_rc)")
else
  echo "bench/gpu_e2e.sh not present: skipped"
fi

step "e. report"
report_rc=0
GPU="$gpu" python3 bench/gpu_report.py "$jsonl" || report_rc=$?
[ "$report_rc" -eq 0 ] || failed+=("gpu_report.py (exit status $report_rc)")

step "summary"
echo "JSON lines: $jsonl"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED steps:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "all steps passed"
