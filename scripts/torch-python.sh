#!/usr/bin/env bash
# Prints the path of a Python with PyTorch (CPU use only), NumPy and safetensors, for the
# fixture generator and the benchmark peers; neither the build nor the tests need it.
# TORCH_PYTHON wins when set; otherwise .venv-torch is created once with pinned versions from
# PyPI (a large download: PyPI's Linux wheel brings the CUDA libraries along).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${TORCH_PYTHON:-}" ]; then
  echo "$TORCH_PYTHON"
  exit 0
fi
venv=.venv-torch
if [ ! -f "$venv/.ecg-torch-1" ]; then
  echo "torch-python: creating $venv (torch 2.15.0, numpy, safetensors from PyPI)" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    torch==2.15.0 numpy==2.3.4 safetensors==0.8.0 >&2
  touch "$venv/.ecg-torch-1"
fi
echo "$PWD/$venv/bin/python"
