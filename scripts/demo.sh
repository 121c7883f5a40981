#!/usr/bin/env bash
# The main job on one machine: generates a synthetic CODE-format cohort, then trains on it with
# a coordinator (deploy/cluster.toml: index CSV + HDF5, patient-level split, split.csv) and two
# local worker processes that exchange gradients with it over gRPC, protected by a generated
# cluster token. At the end the coordinator prints the test-split MAE and where the checkpoints,
# history.csv and split.csv are; the best checkpoint is then evaluated on one HDF5 file of the
# cohort with `worker evaluate` (predicted_age.csv, MAE / RMSE / Pearson r).
# Everything goes under runs/demo/ (override with ECG_DEMO_DIR); PATIENTS sets the cohort size,
# WORKERS the number of workers. The published network (6.9 M parameters) trains at a few
# exams per second on a laptop CPU, so the demo overrides [model] and [training] with a narrow
# network and 10 epochs; set DEMO_SMALL=0 to train the full one.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
demo="${ECG_DEMO_DIR:-$PWD/runs/demo}"
patients="${PATIENTS:-1000}"
workers="${WORKERS:-2}"
cargo build --release --bins
bin="$PWD/target/release"
if [ ! -f "$demo/data/exams.csv" ]; then
  "$bin/coordinator" synth --out "$demo/data" --patients "$patients" --seed 0 --exams-per-part 2000
fi
if [ "${DEMO_SMALL:-1}" = 1 ]; then
  export ECG__MODEL__NET_FILTER_SIZE=16,16,32,32 ECG__MODEL__NET_SEQ_LENGH=1024,1024,256,16 \
    ECG__MODEL__DROPOUT_RATE=0.1 ECG__TRAINING__EPOCHS="${EPOCHS:-10}" ECG__TRAINING__LR=0.01
fi
out="$demo/out"
mkdir -p "$out"
rm -f "$out/coordinator.addr"
token="$demo/token"
[ -s "$token" ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token")

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
ECG__DATA__ROOT="$demo/data" ECG__OUTPUT__DIR="$out" ECG__CLUSTER__TOKEN_FILE="$token" \
  ECG__CLUSTER__LISTEN=127.0.0.1:0 ECG__CLUSTER__METRICS_LISTEN=127.0.0.1:0 \
  ECG__CLUSTER__MIN_WORKERS="$workers" \
  "$bin/coordinator" --config deploy/cluster.toml &
coordinator=$!
pids+=("$coordinator")
# The coordinator writes the address it listens on once it is ready (up to 10 minutes for a
# large cohort's index).
for _ in $(seq 6000); do
  [ -s "$out/coordinator.addr" ] && break
  kill -0 "$coordinator" 2>/dev/null || { wait "$coordinator"; exit 1; }
  sleep 0.1
done
addr="$(cat "$out/coordinator.addr")"
threads=$(( $(nproc) / workers )); [ "$threads" -ge 1 ] || threads=1
for i in $(seq "$workers"); do
  "$bin/worker" --coordinator "$addr" --cpu --threads "$threads" --token-file "$token" \
    > "$out/worker$i.log" 2>&1 &
  pids+=("$!")
done
wait "$coordinator"
for p in "${pids[@]:1}"; do wait "$p"; done
echo "worker logs: $out/worker*.log"
"$bin/worker" evaluate --model "$out/model_best.safetensors" \
  --hdf5 "$demo/data/exams_part0.hdf5" --csv "$demo/data/exams.csv" \
  --output "$out/predicted_age.csv"
