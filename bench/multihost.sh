#!/usr/bin/env bash
# Multi-host scaling over capped links (root: network namespaces and tc): a coordinator and 1, 2,
# 3 workers on separate namespaced hosts, links at 1 and 10 Gbit/s; a tiny network trained with
# real computation, and the full-size network with each worker's computation replaced by a delay
# (tests/src/bin/multihost.rs says what is timed). Table in runs/multihost/multihost.txt.
#   bash bench/multihost.sh [--simulate-ms 50,200,500] [--steps 16]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --release --workspace --bins >&2
exec target/release/multihost "$@"
