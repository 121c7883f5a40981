#!/usr/bin/env bash
# The main job on one machine: generates a synthetic CODE-format cohort, then runs the
# coordinator on it with deploy/cluster.toml (index CSV + HDF5, patient-level split, split.csv).
# Everything goes under runs/demo/ (override with ECG_DEMO_DIR); PATIENTS sets the cohort size.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
demo="${ECG_DEMO_DIR:-$PWD/runs/demo}"
patients="${PATIENTS:-1000}"
cargo build --release --bins
bin="$PWD/target/release"
if [ ! -f "$demo/data/exams.csv" ]; then
  "$bin/coordinator" synth --out "$demo/data" --patients "$patients" --seed 0 --exams-per-part 2000
fi
ECG__DATA__ROOT="$demo/data" ECG__OUTPUT__DIR="$demo/out" \
  "$bin/coordinator" --config deploy/cluster.toml
