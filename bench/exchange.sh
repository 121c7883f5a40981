#!/usr/bin/env bash
# Gradient exchange of the full network's 6,924,705 values: our coordinator and N simulated
# workers (real processes, real gRPC on loopback) beside torch.distributed gloo all_reduce of
# the same tensor, in the same run (bench/exchange.py says what is timed).
#   bash bench/exchange.sh            (PROCS="2 4 8" ROUNDS=3 STEPS=23)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --release --bins >&2
# shellcheck disable=SC2086
python3 bench/exchange.py --procs ${PROCS:-2 4 8} --rounds "${ROUNDS:-3}" --steps "${STEPS:-23}"
