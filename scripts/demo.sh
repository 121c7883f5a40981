#!/usr/bin/env bash
# The main job on one machine: generates a synthetic CODE-format cohort, runs the coordinator
# on it with deploy/cluster.toml (index CSV + HDF5, patient-level split, split.csv, training:
# history.csv and checkpoints), then evaluates the best checkpoint on one HDF5 file of the
# cohort with `worker evaluate` (predicted_age.csv, MAE / RMSE / Pearson r).
# Everything goes under runs/demo/ (override with ECG_DEMO_DIR); PATIENTS sets the cohort size.
# The published network (6.9 M parameters) trains at a few exams per second on a laptop CPU, so
# the demo overrides [model] and [training] with a narrow network and 10 epochs;
# set DEMO_SMALL=0 to train the full one.
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
if [ "${DEMO_SMALL:-1}" = 1 ]; then
  export ECG__MODEL__NET_FILTER_SIZE=16,16,32,32 ECG__MODEL__NET_SEQ_LENGH=1024,1024,256,16 \
    ECG__MODEL__DROPOUT_RATE=0.1 ECG__TRAINING__EPOCHS="${EPOCHS:-10}" ECG__TRAINING__LR=0.01
fi
ECG__DATA__ROOT="$demo/data" ECG__OUTPUT__DIR="$demo/out" \
  "$bin/coordinator" --config deploy/cluster.toml
"$bin/worker" evaluate --model "$demo/out/model_best.safetensors" \
  --hdf5 "$demo/data/exams_part0.hdf5" --csv "$demo/data/exams.csv" \
  --output "$demo/out/predicted_age.csv"
