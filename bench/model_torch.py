"""The benchmark peer: the seed's network (our PyTorch port, scripts/py/ecg_resnet_torch.py),
timed like bench_model: evaluation forward under no_grad (`forward<B>`), and the seed's training
step (zero_grad, forward in train mode, sum of weighted squared errors, backward, Adam step) at
batch B (`train<B>`). Prints one JSON line per measurement with every repetition:

    {"peer": "pytorch", "what": "train32", "batch": 32, "precision": "f32", "device": "cpu",
     "seconds": [...]}

CPU (the default; bench/model.sh): one warm-up repetition per measurement, then --reps timed.

CUDA (--device cuda, on GPU --gpu N; bench/gpu.sh): the model, Adam state and inputs live on the GPU (inputs are
generated there before timing); torch.backends.cudnn.benchmark is on, as users set it; three
warm-up repetitions per measurement (they include cuDNN's algorithm search for the new shape);
torch.cuda.synchronize() before the clock is read at the start and at the end of every
repetition. A measurement that runs out of GPU memory prints a line with "error" instead of
"seconds", the others still run, and the exit status is 1.

--precision:
  f32   plain fp32: cudnn.allow_tf32 and cuda.matmul.allow_tf32 both False (the default).
  tf32  fp32 tensors, TF32 tensor-core convolutions and matmuls (both allow_tf32 True);
        CUDA only: on the CPU it is refused with an error.
  bf16  torch.autocast(dtype=bfloat16) around forward and loss, fp32 master weights and fp32
        Adam, allow_tf32 False (so whatever autocast leaves in fp32 stays true fp32). On the CPU
        this uses CPU autocast (oneDNN bf16), which runs but is not a meaningful speed peer on
        CPUs without native bf16 instructions.

usage: model_torch.py [--threads 2] [--reps 5] [--what forward32,train8,train32]
                      [--device cpu|cuda] [--gpu 0] [--precision f32|tf32|bf16]
"""
import argparse
import contextlib
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts", "py"))
from ecg_resnet_torch import ResNet1d  # noqa: E402

FULL = ([64, 128, 196, 256, 320], [4096, 1024, 256, 64, 16])
WARMUP = {"cpu": 1, "cuda": 3}


def parse_what(what):
    """`forward<B>` or `train<B>` -> (kind, B); exits with a message on anything else."""
    for kind in ("forward", "train"):
        if what.startswith(kind) and what[len(kind):].isdigit() and int(what[len(kind):]) > 0:
            return kind, int(what[len(kind):])
    sys.exit(f"model_torch: --what entry '{what}' is not forward<B> or train<B> (e.g. train32)")


def set_precision(device, precision):
    """Sets the TF32 switches for `precision`; returns a factory of the autocast context that
    wraps forward and loss (a no-op context except for bf16)."""
    if device == "cpu" and precision == "tf32":
        sys.exit("model_torch: --precision tf32 needs --device cuda (TF32 is a tensor-core mode)")
    tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    if precision == "bf16":
        return lambda: torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext


def sync(device):
    """Waits for the GPU's queued work, so that the clock measures finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, opt, kind, batch, args, autocast):
    """Times `args.reps` repetitions of one measurement after the warm-up; returns seconds."""
    dev = args.torch_device
    x = torch.randn(batch, 12, 4096, device=dev)
    age = torch.rand(batch, device=dev) * 70 + 16
    w = torch.ones(batch, device=dev)
    times = []
    for rep in range(WARMUP[dev.type] + args.reps):
        sync(dev)
        t0 = time.perf_counter()
        if kind == "forward":
            model.eval()
            with torch.no_grad(), autocast():
                model(x)
        else:
            model.train()
            model.zero_grad()
            with autocast():
                pred = model(x)
                loss = torch.sum(w * (age - pred.flatten()) ** 2)
            loss.backward()
            opt.step()
        sync(dev)
        dt = time.perf_counter() - t0
        if rep >= WARMUP[dev.type]:
            times.append(dt)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--what", default="forward32,train8,train32")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--gpu", type=int, default=0, help="CUDA device index (with --device cuda)")
    ap.add_argument("--precision", choices=["f32", "tf32", "bf16"], default="f32")
    args = ap.parse_args()
    measurements = [(what, *parse_what(what)) for what in args.what.split(",")]
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("model_torch: --device cuda but torch.cuda.is_available() is False")
        if not 0 <= args.gpu < torch.cuda.device_count():
            sys.exit(f"model_torch: --gpu {args.gpu} but {torch.cuda.device_count()} GPU(s) visible")
        torch.cuda.set_device(args.gpu)
        torch.backends.cudnn.benchmark = True
    args.torch_device = torch.device(f"cuda:{args.gpu}" if args.device == "cuda" else "cpu")
    autocast = set_precision(args.device, args.precision)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResNet1d((12, 4096), list(zip(*FULL)), 1, kernel_size=17, dropout_rate=0.8)
    model.to(args.torch_device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    failed = False
    for what, kind, batch in measurements:
        line = {"peer": "pytorch", "what": what, "batch": batch,
                "precision": args.precision, "device": args.device}
        try:
            line["seconds"] = measure(model, opt, kind, batch, args, autocast)
        except torch.cuda.OutOfMemoryError as e:
            line["error"] = "out of memory: " + str(e).split("\n")[0]
        if "error" in line:  # the failed step's tensors are released once `e` is gone
            failed = True
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        print(json.dumps(line), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
