#!/usr/bin/env bash
# The test command: sets up what is missing, checks formatting and lints, then builds and runs
# every test of the workspace (unit, end-to-end with the real binaries, round trips with h5py).
# No GPU needed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
bash scripts/validate-k8s.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The end-to-end tests run the real binaries, which `cargo test` alone does not build.
cargo build --workspace --bins
cargo test --workspace "$@"
