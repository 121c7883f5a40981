#!/usr/bin/env python3
"""Writes the committed model fixtures (tests/fixtures/model/): PyTorch checkpoints in both
containers, safetensors files with the initial weights, and PyTorch's own numbers (forward in
eval and train mode, dropout masks, loss, gradients, batch-norm statistics, three Adam steps) for
a small configuration of our PyTorch port of the seed's network (ecg_resnet_torch.py).

Small configuration: seq_length 256, net_filter_size [8, 16, 24, 24], net_seq_lengh
[128, 32, 32, 8], kernel_size 17, dropout_rate 0.8: stem stride 2; block 0 identity skip;
block 1 ds 4 and 8->16 (skip_connection.1.weight); block 2 ds 1 and 16->24
(skip_connection.0.weight); block 3 ds 4 without a channel change (max-pool only).

Usage: python scripts/py/make_model_fixtures.py --out tests/fixtures/model
(scripts/make-model-fixtures.sh sets up PyTorch and runs this). The output is deterministic
(torch.manual_seed, one thread), except the storage keys of model_legacy.pth, which torch.save
takes from Python object ids. See tests/fixtures/model/README.md for every file.
"""
import argparse
import copy
import json
import os
import struct
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ecg_resnet_torch import ResNet1d, dropout_paths, from_config  # noqa: E402

CONFIG = {
    "epochs": 70,
    "seed": 2,
    "sample_freq": 400,
    "seq_length": 256,
    "scale_multiplier": 10,
    "batch_size": 4,
    "lr": 0.001,
    "patience": 7,
    "min_lr": 1e-07,
    "lr_factor": 0.1,
    "net_filter_size": [8, 16, 24, 24],
    "net_seq_lengh": [128, 32, 32, 8],
    "dropout_rate": 0.8,
    "kernel_size": 17,
    "folder": "model/",
    "traces_dset": "tracings",
    "ids_dset": "",
    "age_col": "age",
    "ids_col": None,
    "cuda": False,
    "n_valid": 100,
    "path_to_traces": "exams.hdf5",
    "path_to_csv": "exams.csv",
}
BATCH = 4
EPOCH = 7
VALID_LOSS = 123.45678901234567
N_ADAM_STEPS = 3


def perturb_batchnorm(model, gen):
    """Moves every batch norm's weight, bias and running statistics away from their defaults
    and sets num_batches_tracked to a distinct nonzero count, so that loading them is tested."""
    with torch.no_grad():
        for i, (name, m) in enumerate(
            (n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)
        ):
            c = m.num_features
            m.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=gen))
            m.bias.copy_(0.1 * torch.randn(c, generator=gen))
            m.running_mean.copy_(0.3 * torch.randn(c, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            m.num_batches_tracked.fill_(11 + 7 * i)


def capture_masks(model):
    """Forward hooks on every Dropout module; returns (masks dict, remove function). A mask is
    1 where the output is nonzero: where the dropout's input is 0 it reads 0 whatever was drawn."""
    masks = {}
    handles = []
    for path in dropout_paths(model):
        module = model.get_submodule(path)

        def hook(_m, _inp, out, path=path):
            masks[path] = (out != 0).to(torch.uint8).contiguous()

        handles.append(module.register_forward_hook(hook))

    def remove():
        for h in handles:
            h.remove()

    return masks, remove


def weighted_sse(age, pred, weight):
    """The seed's loss: sum over the batch of w * (age - pred)^2."""
    diff = age - pred.flatten()
    return torch.sum(weight * diff * diff)


def state_to_tensors(prefix, sd):
    """Detached contiguous copies of a state dict's tensors, names prefixed."""
    return {prefix + k: v.detach().clone().contiguous() for k, v in sd.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (tests/fixtures/model)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    out = lambda name: os.path.join(args.out, name)  # noqa: E731

    torch.manual_seed(0)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1)

    model = from_config(CONFIG)
    perturb_batchnorm(model, gen)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    x = torch.randn(BATCH, 12, CONFIG["seq_length"], generator=gen)
    age = torch.tensor([23.0, 41.0, 58.0, 77.0])
    weight = torch.tensor([0.8, 1.3, 0.9, 1.1])

    with open(out("config.json"), "w") as f:
        json.dump(CONFIG, f, indent="\t")
        f.write("\n")

    # Initial weights: both PyTorch containers with the seed's checkpoint layout, a bare state
    # dict (protocol 4, with shared and strided storages) and safetensors.
    # The optimizer state: one Adam step on a copy of the model, over the stem and the head
    # only (exp_avg, exp_avg_sq and step tensors like the seed's, without tripling the size).
    opt_model = copy.deepcopy(model).train()
    opt_params = [p for n, p in opt_model.named_parameters()
                  if n.startswith(("conv1.", "bn1.", "lin."))]
    opt = torch.optim.Adam(opt_params, lr=CONFIG["lr"])
    opt.zero_grad()
    weighted_sse(age, opt_model(x), weight).backward()
    opt.step()
    ckpt = {
        "epoch": EPOCH,
        "model": model.state_dict(),
        "valid_loss": np.float64(VALID_LOSS),
        "optimizer": opt.state_dict(),
    }
    torch.save(ckpt, out("model_zip.pth"))
    torch.save(ckpt, out("model_legacy.pth"), _use_new_zipfile_serialization=False)

    bare = dict(model.state_dict())
    # conv1.weight stored transposed (non-contiguous strides); lin.bias and lin.weight as views
    # into one shared storage, lin.weight at a nonzero storage offset.
    w = bare["conv1.weight"]
    bare["conv1.weight"] = w.permute(2, 1, 0).contiguous().permute(2, 1, 0)
    assert not bare["conv1.weight"].is_contiguous()
    lw, lb = bare["lin.weight"], bare["lin.bias"]
    shared = torch.cat([lb.flatten(), lw.flatten(), torch.zeros(3)])
    bare["lin.bias"] = shared[0:1]
    bare["lin.weight"] = shared[1 : 1 + lw.numel()].view(lw.shape)
    bare = type(model.state_dict())(bare)
    torch.save(bare, out("state_dict_only.pth"), pickle_protocol=4)
    reloaded = torch.load(out("state_dict_only.pth"), weights_only=False)
    for k, v in initial.items():
        assert torch.equal(reloaded[k], v), k

    save_file(state_to_tensors("", initial), out("initial.safetensors"),
              metadata={"source": "make_model_fixtures.py", "config": json.dumps(CONFIG)})

    # Small extra checkpoints: protocol 4 with a float64 and an int64 tensor; a dtype we refuse;
    # a dict without a `model` key.
    tiny = {
        "epoch": 2,
        "model": {
            "a.f64": torch.arange(6, dtype=torch.float64).reshape(2, 3).t(),
            "b.i64": torch.tensor([-3, 0, 2**40], dtype=torch.int64),
            "c.scalar": torch.tensor(2.5),
        },
        "valid_loss": np.float64(0.25),
        "optimizer": None,
    }
    torch.save(tiny, out("tiny_p4.pth"), pickle_protocol=4)
    torch.save({"w.half": torch.ones(3, dtype=torch.float16)}, out("half_dtype.pth"))
    torch.save({"epoch": 1, "net": {"w": torch.ones(2)}, "valid_loss": 0.5},
               out("no_model_key.pth"))

    # PyTorch's numbers on one batch.
    parity = {"input": x, "age": age, "weight": weight}
    model.eval()
    with torch.no_grad():
        parity["out_eval"] = model(x)

    model.train()
    masks, remove = capture_masks(model)
    pred = model(x)
    remove()
    loss = weighted_sse(age, pred, weight)
    loss.backward()
    parity["out_train"] = pred.detach()
    parity["loss"] = loss.detach()
    for k, v in masks.items():
        parity["mask.train." + k] = v
    for k, p in model.named_parameters():
        parity["grad." + k] = p.grad.detach().clone()
    for k, v in model.state_dict().items():
        if "running_" in k or "num_batches_tracked" in k:
            parity["after_train." + k] = v.detach().clone()

    # Three Adam steps from the initial state, each on the same batch in train mode.
    model = from_config(CONFIG)
    model.load_state_dict(initial, strict=True)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])
    for s in range(N_ADAM_STEPS):
        masks, remove = capture_masks(model)
        opt.zero_grad()
        loss = weighted_sse(age, model(x), weight)
        remove()
        loss.backward()
        opt.step()
        parity["loss.step{}".format(s)] = loss.detach()
        for k, v in masks.items():
            parity["mask.step{}.{}".format(s, k)] = v
    parity.update(state_to_tensors("adam3.", model.state_dict()))

    parity = {k: v.detach().contiguous() for k, v in parity.items()}
    save_file(parity, out("parity.safetensors"), metadata={"config": json.dumps(CONFIG)})

    with open(out("expected.json"), "w") as f:
        bits = lambda v: struct.unpack("<Q", struct.pack("<d", v))[0]  # noqa: E731
        json.dump({"epoch": EPOCH, "valid_loss": VALID_LOSS, "valid_loss_bits": bits(VALID_LOSS),
                   "tiny_p4": {"epoch": 2, "valid_loss": 0.25}}, f, indent=2)
        f.write("\n")

    total = 0
    for name in sorted(os.listdir(args.out)):
        size = os.path.getsize(out(name))
        total += size
        print("{:>10}  {}".format(size, name))
    print("{:>10}  total".format(total))


if __name__ == "__main__":
    main()
