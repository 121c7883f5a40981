#!/usr/bin/env bash
# Our conv1d custom op (shared/src/model/ops) against Candle 0.11.1's stock Tensor::conv1d on the
# full-size network's convolution shapes: forward, and backward = input + weight gradients through
# Var + backward() of sum(out * r) with r random (the stock backward runs conv_transpose1d; its
# weight gradient is wrong for batch > 1, the last column shows by how much, and it is timed
# all the same).
#
# bench_ops alternates ours and stock within every repetition (one warm-up, then REPS timed) and
# prints medians as exams/s, the ratios ours/stock (> 1: ours faster), and the GFLOP/s ours
# reaches against the peak of the cores (clock measured by the driver) and against Candle's own
# large matmul measured in the same run. The machine is shared: run it when it is otherwise idle.
#
# Usage: bash bench/ops.sh        (env: BATCH=32 REPS=5 ONLY=<substring of a layer name>)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../scripts/setup.sh
. "$root/scripts/setup.sh"
BATCH=${BATCH:-32}
REPS=${REPS:-5}
ONLY=${ONLY:-}

echo "== building bench_ops (release)"
(cd "$root" && cargo build --quiet --release -p ecg-tests --bin bench_ops)
echo "== $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
  "avx512f: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$root/target/release/bench_ops" --batch "$BATCH" --reps "$REPS" --only "$ONLY"
