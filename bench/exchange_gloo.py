"""The peer for the gradient-exchange benchmark: torch.distributed with the gloo backend.

What it measures: the wall time of one `all_reduce(SUM)` of a single float32 tensor of
6,924,705 values (the parameter count of the full ECG-age network, i.e. one step's gradient)
between N local processes talking over loopback (127.0.0.1), CPU only. This is the exchange a
data-parallel PyTorch job on one host would do each step, so our own exchange (coordinator and
workers over gRPC) is judged as a ratio to it, measured in the same run on the same machine.

How: for each N the parent picks a free port (binds port 0), spawns N processes (start method
spawn), and each joins a gloo process group on tcp://127.0.0.1:PORT with GLOO_SOCKET_IFNAME set
to the loopback interface. Each process first checks correctness once (rank r fills r + 1;
after the reduce every value must equal N(N+1)/2), then runs `--warmup` untimed and `--reps`
timed repetitions. A repetition refills the tensor (untimed), passes a barrier, then times the
`all_reduce` alone on every rank. After the last repetition one small all_reduce(MAX) of the
per-repetition times gives, per repetition, the slowest rank's time; the report is the median
(and 10th/90th percentiles) of those over repetitions. Bandwidths follow the NCCL-tests
convention: algbw = bytes / median, busbw = algbw * 2 (N - 1) / N (GB/s, 1 GB = 1e9 bytes).

A failing process (wrong result, gloo error, timeout) makes the whole script exit non-zero; the
other processes of that N are stopped.

usage (TORCH_PYTHON or scripts/torch-python.sh gives the interpreter):
  "$(bash scripts/torch-python.sh)" bench/exchange_gloo.py --procs 2 4 8 --reps 20 [--json]
options: --procs N... (repeatable), --numel 6924705, --warmup 3, --reps 20, --threads 1,
         --iface lo, --timeout 300 (seconds, per collective), --json (one object per N),
         --adam (time torch.optim.Adam's step on every rank after the all_reduce, as a
         DistributedDataParallel step does)
"""
import argparse
import datetime
import json
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

FULL_NUMEL = 6_924_705


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, port, args, results):
    """One process of the group: check the sum once, then time the repetitions.

    Rank 0 puts the per-repetition times (max over ranks, seconds) into `results`.
    Any failure raises, which torch.multiprocessing turns into an exception in the parent.
    """
    torch.set_num_threads(args.threads)
    os.environ["GLOO_SOCKET_IFNAME"] = args.iface
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=args.timeout),
    )
    try:
        x = torch.full((args.numel,), float(rank + 1), dtype=torch.float32)
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        want = world * (world + 1) / 2
        bad = int((x != want).sum())
        if bad:
            raise RuntimeError(
                f"rank {rank}: {bad} of {args.numel} values differ from {want} after the "
                f"all_reduce of {world} processes (first: {x[x != want][0].item()})"
            )

        # With --adam, every rank then applies Adam to its replica of the parameters, as a
        # DistributedDataParallel job does after its gradients are all-reduced.
        param = torch.nn.Parameter(torch.zeros(args.numel, dtype=torch.float32))
        opt = torch.optim.Adam([param], lr=1e-3) if args.adam else None
        times = torch.zeros(args.reps, dtype=torch.float64)
        for rep in range(args.warmup + args.reps):
            x.fill_(1.0)
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
            if opt is not None:
                param.grad = x
                opt.step()
            dt = time.perf_counter() - t0
            if rep >= args.warmup:
                times[rep - args.warmup] = dt
        dist.all_reduce(times, op=dist.ReduceOp.MAX)
        if rank == 0:
            results.put(times.tolist())
    finally:
        dist.destroy_process_group()


def percentile(sorted_xs, q):
    """Linear-interpolated percentile `q` (0..100) of an ascending, non-empty list."""
    pos = (len(sorted_xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def measure(world, args):
    """Run one group of `world` processes; returns the summary dict for that N."""
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    # join=True waits for every process; if one fails, the others are terminated and the
    # child's exception is re-raised here (ProcessRaisedException / ProcessExitedException).
    mp.start_processes(
        worker,
        args=(world, free_port(), args, results),
        nprocs=world,
        join=True,
        start_method="spawn",
    )
    if results.empty():
        raise RuntimeError(f"procs {world}: rank 0 exited without reporting its times")
    secs = sorted(results.get())
    nbytes = args.numel * 4
    median = statistics.median(secs)
    algbw = nbytes / median / 1e9
    return {
        "procs": world,
        "numel": args.numel,
        "bytes": nbytes,
        "reps": args.reps,
        "threads": args.threads,
        "adam": args.adam,
        "median_ms": median * 1e3,
        "p10_ms": percentile(secs, 10) * 1e3,
        "p90_ms": percentile(secs, 90) * 1e3,
        "algbw_gbps": algbw,
        "busbw_gbps": algbw * 2 * (world - 1) / world,
    }


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Time gloo all_reduce(SUM) of one float32 tensor between N local processes."
    )
    ap.add_argument("--procs", type=int, nargs="+", action="extend",
                    help="group sizes to measure (repeatable; default 2 4 8)")
    ap.add_argument("--numel", type=int, default=FULL_NUMEL, help="float32 values in the tensor")
    ap.add_argument("--warmup", type=int, default=3, help="untimed repetitions")
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--iface", default="lo", help="network interface for gloo (loopback)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before a collective fails")
    ap.add_argument("--json", action="store_true", help="one JSON object per N on stdout")
    ap.add_argument("--adam", action="store_true",
                    help="time the all_reduce and then torch.optim.Adam's step on every rank")
    args = ap.parse_args(argv)
    args.procs = args.procs or [2, 4, 8]
    for name in ("numel", "reps", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        ap.error(f"--warmup must not be negative, got {args.warmup}")
    if any(n < 1 for n in args.procs):
        ap.error(f"--procs values must be at least 1, got {args.procs}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if not args.json:
        print(f"gloo all_reduce(SUM){' + Adam step' if args.adam else ''}, {args.numel} float32 ({args.numel * 4 / 1e6:.1f} MB), "
              f"loopback, {args.threads} thread(s)/process, {args.warmup} warm-up + "
              f"{args.reps} timed reps; time = slowest rank per rep")
        print(f"{'procs':>5} {'median ms':>10} {'p10 ms':>9} {'p90 ms':>9} "
              f"{'algbw GB/s':>11} {'busbw GB/s':>11}")
    for world in args.procs:
        r = measure(world, args)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['procs']:>5} {r['median_ms']:>10.2f} {r['p10_ms']:>9.2f} "
                  f"{r['p90_ms']:>9.2f} {r['algbw_gbps']:>11.3f} {r['busbw_gbps']:>11.3f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
