#!/usr/bin/env bash
# The test command: sets up what is missing, then builds and runs every test of the workspace
# (unit, end-to-end with the real binaries, round trips with h5py). No GPU needed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo test --workspace "$@"
