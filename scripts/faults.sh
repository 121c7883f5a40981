#!/usr/bin/env bash
# The full fault-injection suite: release binaries, then tests/src/bin/fault_suite.rs (workers
# and the coordinator killed at every fault point, stragglers, SIGTERM, corrupted checkpoints,
# links cut between network namespaces when run as root, malformed messages). Report in
# runs/faults/report.txt. Extra arguments go to the suite (--dir DIR, --patients N).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --release --workspace --bins
exec target/release/fault_suite "$@"
