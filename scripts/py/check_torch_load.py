#!/usr/bin/env python3
"""Shows that PyTorch accepts one of our safetensors checkpoints: builds our PyTorch port of the
seed's network (ecg_resnet_torch.py) from a seed-style config.json, loads the file with
`safetensors.torch.load_file` and a strict `load_state_dict`, runs an eval-mode forward and
prints the outputs.

    python scripts/py/check_torch_load.py MODEL.safetensors CONFIG.json \
        [--input tests/fixtures/model/parity.safetensors]

Without --input the forward runs on a fixed pseudo-random batch of two. With --input it uses that
file's `input` tensor and, when the file has `out_eval`, also prints PyTorch's stored outputs and
the largest absolute difference. Metadata keys that are not tensors (our `ecg.*` keys) are
ignored. Exits non-zero if strict loading fails.
"""
import argparse
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ecg_resnet_torch import from_config  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="safetensors checkpoint")
    ap.add_argument("config", help="config.json with seq_length, net_filter_size, ...")
    ap.add_argument("--input", help="safetensors file with an `input` tensor (B, 12, seq_length)")
    args = ap.parse_args()

    with open(args.config) as f:
        config = json.load(f)
    model = from_config(config)
    state = load_file(args.model)
    with safe_open(args.model, framework="pt") as f:
        meta = f.metadata() or {}
    model.load_state_dict(state, strict=True)
    model.eval()
    print("loaded {} tensors strictly from {} (metadata keys: {})".format(
        len(state), args.model, ", ".join(sorted(meta)) or "none"))

    expected = None
    if args.input:
        extra = load_file(args.input)
        x = extra["input"]
        expected = extra.get("out_eval")
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 12, config["seq_length"], generator=g)
    with torch.no_grad():
        out = model(x)
    print("outputs:", [round(v, 6) for v in out.flatten().tolist()])
    if expected is not None:
        print("stored :", [round(v, 6) for v in expected.flatten().tolist()])
        print("max |difference|: {:.3g}".format((out - expected).abs().max().item()))


if __name__ == "__main__":
    main()
