#!/usr/bin/env bash
# Regenerates the committed model fixtures (tests/fixtures/model/) with PyTorch: checkpoints in
# both containers, safetensors files and PyTorch's forward/backward/Adam numbers for a small
# configuration of our PyTorch port of the seed's network (scripts/py/ecg_resnet_torch.py).
# PyTorch is not needed by the build or the tests, only here.
#
# scripts/torch-python.sh finds the Python: .venv-torch with pinned PyTorch, NumPy and
# safetensors from PyPI (a large download), or one that already has them:
#   TORCH_PYTHON=/path/to/python bash scripts/make-model-fixtures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py="$(bash scripts/torch-python.sh)"
"$py" scripts/py/make_model_fixtures.py --out tests/fixtures/model "$@"
