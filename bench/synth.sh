#!/usr/bin/env bash
# Throughput of `coordinator synth`, end to end (planning, rendering, exams.csv and the HDF5
# writes): builds the release binary, generates the same cohort RUNS times into a temporary
# directory (removed afterwards) and prints each run's exams/s and the median.
# The rate is exams / wall-clock time of the whole command, measured here, not by the command.
# There is no peer for generation: the target is an absolute 2,000 exams/s on the 2-core machine.
#
# Usage: bench/synth.sh [PATIENTS (8000, about 12k exams)] [RUNS (3)] [THREADS (all CPUs)]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
patients="${1:-8000}"
runs="${2:-3}"
threads="${3:-}"
. "$root/scripts/setup.sh"
cargo build --release --quiet -p ecg-coordinator --bin coordinator --manifest-path "$root/Cargo.toml"
bin="$root/target/release/coordinator"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "synth benchmark: $patients patients, $runs runs, threads ${threads:-all} ($(nproc) CPUs)"
rates=()
for i in $(seq 1 "$runs"); do
  out="$tmp/run$i"
  sync # earlier runs' dirty pages must not throttle this one
  t0=$(date +%s.%N)
  "$bin" synth --out "$out" --patients "$patients" --seed 1 ${threads:+--threads "$threads"} >"$tmp/log$i"
  t1=$(date +%s.%N)
  exams=$(($(wc -l <"$out/exams.csv") - 1))
  rate=$(python3 -c "print(f'{$exams / ($t1 - $t0):.0f}')")
  bytes=$(du -sb "$out" | cut -f1)
  echo "run $i: $exams exams, $((bytes / 1000000)) MB, $(python3 -c "print(f'{$t1 - $t0:.2f}')") s: $rate exams/s"
  rates+=("$rate")
  rm -rf "$out"
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | python3 -c "import sys; v=[float(x) for x in sys.stdin]; print(f'{v[len(v)//2] if len(v)%2 else (v[len(v)//2-1]+v[len(v)//2])/2:.0f}')")
echo "median: $median exams/s (target: 2000)"
