"""The benchmark peer: the seed's network (our PyTorch port, scripts/py/ecg_resnet_torch.py) on
the CPU, timed like bench_model: evaluation forward at batch 32 under no_grad, and the seed's
training step (zero_grad, forward in train mode, sum of weighted squared errors, backward,
Adam step) at batches 8 and 32. Prints one JSON line per measurement with every repetition.

usage: model_torch.py --threads 2 --reps 5 [--config small|full]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts", "py"))
from ecg_resnet_torch import ResNet1d  # noqa: E402

FULL = ([64, 128, 196, 256, 320], [4096, 1024, 256, 64, 16])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--what", default="forward32,train8,train32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResNet1d((12, 4096), list(zip(*FULL)), 1, kernel_size=17, dropout_rate=0.8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for what in args.what.split(","):
        batch = int(what.lstrip("forwardtain"))
        x = torch.randn(batch, 12, 4096)
        age = torch.rand(batch) * 70 + 16
        w = torch.ones(batch)
        times = []
        for rep in range(args.reps + 1):
            t0 = time.perf_counter()
            if what.startswith("forward"):
                model.eval()
                with torch.no_grad():
                    model(x)
            else:
                model.train()
                model.zero_grad()
                pred = model(x)
                loss = torch.sum(w * (age - pred.flatten()) ** 2)
                loss.backward()
                opt.step()
            dt = time.perf_counter() - t0
            if rep > 0:  # the first run warms up
                times.append(dt)
        print(json.dumps({"peer": "pytorch", "what": what, "batch": batch, "seconds": times}),
              flush=True)


if __name__ == "__main__":
    main()
