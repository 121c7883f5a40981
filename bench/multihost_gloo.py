"""The peer of the multi-host benchmark: torch.distributed gloo all_reduce between hosts.

One process per host (network namespace), started by tests/src/bin/multihost.rs with
`ip netns exec`; rank 0 listens on its host's address. Each rank times `--reps` all_reduce(SUM)
calls of one float32 tensor of 6,924,705 values (one step's gradient of the full network) after
a barrier and `--warmup` untimed calls; the slowest rank's time of each repetition (all_reduce
MAX) is kept and rank 0 prints one JSON line: {"world": N, "median_ms": ..., "p10_ms": ...,
"p90_ms": ...}. The sum is checked once (rank r fills r + 1).

usage: python bench/multihost_gloo.py --rank R --world N --master ADDR:PORT --iface IF
"""
import argparse
import datetime
import json
import os
import statistics
import time

import torch
import torch.distributed as dist

FULL_NUMEL = 6_924_705


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--master", required=True)
    p.add_argument("--iface", required=True)
    p.add_argument("--numel", type=int, default=FULL_NUMEL)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = a.iface
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{a.master}",
        rank=a.rank,
        world_size=a.world,
        timeout=datetime.timedelta(seconds=300),
    )
    t = torch.full((a.numel,), float(a.rank + 1))
    dist.all_reduce(t)
    want = a.world * (a.world + 1) / 2
    if not bool((t == want).all()):
        raise SystemExit(f"rank {a.rank}: wrong sum")
    times = []
    for i in range(a.warmup + a.reps):
        t.fill_(1.0)
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(t)
        if i >= a.warmup:
            times.append(time.perf_counter() - start)
    worst = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    if a.rank == 0:
        ms = sorted(float(x) * 1e3 for x in worst)
        print(json.dumps({
            "world": a.world,
            "median_ms": statistics.median(ms),
            "p10_ms": ms[len(ms) // 10],
            "p90_ms": ms[(len(ms) * 9) // 10],
        }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
