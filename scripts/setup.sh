#!/usr/bin/env bash
# Installs what the build and the tests need into the project's own folders, without root:
# a Python virtual environment (.venv) with cmake (the static HDF5 build needs cmake >= 3.26,
# newer than Debian's), numpy, h5py, pandas and safetensors (test fixtures, round-trip tests, benchmark peers).
# Sourced by the other scripts (`. scripts/setup.sh`) so that PATH and ECG_PYTHON carry over.
_ecg_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_ecg_venv="$_ecg_root/.venv"
if [ ! -f "$_ecg_venv/.ecg-setup-2" ]; then
  command -v cargo >/dev/null || { echo "setup: Rust (cargo) is required: https://rustup.rs" >&2; return 1 2>/dev/null || exit 1; }
  command -v python3 >/dev/null || { echo "setup: python3 is required" >&2; return 1 2>/dev/null || exit 1; }
  echo "setup: creating $_ecg_venv (cmake, numpy, h5py, pandas, safetensors from PyPI)" >&2
  python3 -m venv "$_ecg_venv" \
    && "$_ecg_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
         -r "$_ecg_root/scripts/requirements.txt" \
    && touch "$_ecg_venv/.ecg-setup-2" \
    || { echo "setup: failed to create the Python environment" >&2; return 1 2>/dev/null || exit 1; }
fi
export PATH="$_ecg_venv/bin:$PATH"
export ECG_PYTHON="$_ecg_venv/bin/python"
unset _ecg_root _ecg_venv
