"""Gradient exchange of the full network: our coordinator and N worker processes over gRPC on
loopback, beside torch.distributed gloo all_reduce of the same tensor, in the same run.

Ours: a real `coordinator` process with the full-size model (6,924,705 parameters) and N real
`worker` processes in simulation mode (`--simulate-ms 0`: no data, no computation, a random
gradient of the real size). Each step every worker uploads its 27.7 MB gradient in 1 MiB
chunks, the coordinator sums the contributions, applies Adam and publishes the new parameters,
and every worker downloads them: the whole cycle of a synchronous data-parallel step minus the
computation. The coordinator reports the median step time over `--steps` steps; the workers'
step logs give the split into upload, wait (reduction + Adam + the others) and download.

Two transports of ours: `shm`, the default for workers on the coordinator's host (each
worker's gradient chunks through its upload segment, the new parameters read from the
coordinator's parameter segment where Adam writes them, gRPC carrying the messages that name
the chunks), and `grpc` (`cluster.shared_memory_dir = ""`: every byte inside gRPC messages, as
between hosts).

Peers: bench/exchange_gloo.py, one all_reduce(SUM) of the same 6,924,705 float32 values between
N processes (which leaves every process with the summed gradient, but applies no optimizer),
and the same all_reduce followed by torch.optim.Adam's step on every process (what a
DistributedDataParallel step does with the gradients: our step includes Adam).

Rounds alternate ours and gloo for each N; the table gives medians over rounds.
usage: bench/exchange.sh  (ROUNDS=3 STEPS=23 PROCS="2 4 8")
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
NUMEL = 6_924_705


def ours(work: Path, data: Path, n: int, steps: int, shm: bool) -> dict:
    out = work / f"run{n}"
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    cfg = work / f"exchange{n}.toml"
    cfg.write_text(
        f'[data]\nroot = "{data}"\n[output]\ndir = "{out}"\n[split]\nstrategy = "hash"\n'
        f"[training]\nbatch_size = {n}\nmax_steps = {steps}\n"
        f'[cluster]\nlisten = "127.0.0.1:0"\nmetrics_listen = ""\nmin_workers = {n}\n'
        f"micro_batch = 1\ncheckpoint_every_steps = 0\nworker_timeout_ms = 60000\n"
        + ("" if shm else 'shared_memory_dir = ""\n')
    )
    coord = subprocess.Popen(
        [str(BIN / "coordinator"), "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    addr_file = out / "coordinator.addr"
    deadline = time.time() + 120
    while not (addr_file.exists() and addr_file.read_text()):
        if coord.poll() is not None or time.time() > deadline:
            raise SystemExit(f"coordinator did not start:\n{coord.stdout.read()}")
        time.sleep(0.05)
    addr = addr_file.read_text()
    workers = []
    for i in range(n):
        log = out / f"steps{i}.csv"
        workers.append(
            subprocess.Popen(
                [str(BIN / "worker"), "--coordinator", addr, "--cpu", "--threads", "1",
                 "--simulate-ms", "0", "--step-log", str(log)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    text, _ = coord.communicate(timeout=900)
    for w in workers:
        _, err = w.communicate(timeout=120)
        if w.returncode != 0:
            raise SystemExit(f"worker failed: {err}")
    if coord.returncode != 0:
        raise SystemExit(f"coordinator failed:\n{text}")
    if shm != any(l.startswith("shared memory: ") for l in text.splitlines()):
        raise SystemExit(f"shared memory {'unused' if shm else 'used'}:\n{text}")
    line = next(l for l in text.splitlines() if l.startswith("median step "))
    step_ms = float(line.split()[2])
    reduce_ms = float(line.split("arrived, ")[1].split()[0])
    parts = {"upload": [], "wait": [], "download": []}
    for i in range(n):
        for row in (out / f"steps{i}.csv").read_text().splitlines():
            step, _units, _exams, _compute, up, wait, down = row.split(",")
            if int(step) >= 3:
                parts["upload"].append(float(up))
                parts["wait"].append(float(wait))
                parts["download"].append(float(down))
    return {
        "step_ms": step_ms,
        "reduce_ms": reduce_ms,
        **{f"{k}_ms": statistics.median(v) for k, v in parts.items()},
    }


def gloo(n: int, reps: int, adam: bool = False) -> float:
    torch_py = subprocess.run(
        ["bash", str(ROOT / "scripts" / "torch-python.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    r = subprocess.run(
        [torch_py, str(ROOT / "bench" / "exchange_gloo.py"), "--procs", str(n), "--reps", str(reps), "--json"]
        + (["--adam"] if adam else []),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])["median_ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=23)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        subprocess.run(
            [str(BIN / "coordinator"), "synth", "--out", str(data), "--patients", "400", "--seed", "1"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        results = {}
        for n in args.procs:
            rows = {"shm": [], "grpc": []}
            peers, peers_adam = [], []
            for _ in range(args.rounds):
                rows["shm"].append(ours(work, data, n, args.steps, True))
                rows["grpc"].append(ours(work, data, n, args.steps, False))
                peers.append(gloo(n, args.steps - 3))
                peers_adam.append(gloo(n, args.steps - 3, adam=True))
            results[n] = (rows, peers, peers_adam)
            for t, r in rows.items():
                med = {k: statistics.median(x[k] for x in r) for k in r[0]}
                print(json.dumps({"procs": n, "transport": t, **med, "gloo_ms": statistics.median(peers),
                                  "gloo_adam_ms": statistics.median(peers_adam), "rounds": args.rounds}),
                      file=sys.stderr)
    mb = NUMEL * 4 / 1e6
    print(f"gradient of {NUMEL:,} float32 ({mb:.1f} MB); medians of {args.rounds} rounds")
    print(f"{'N':>3} {'transport':>9} {'ours step ms':>13} {'(up/wait/down)':>20} {'reduce+Adam':>12} "
          f"{'gloo ms':>9} {'gloo/ours':>10} {'gloo+Adam':>10} {'/ours':>7} {'ours GB/s':>10}")
    for n, (rows, peers, peers_adam) in results.items():
        g, ga = statistics.median(peers), statistics.median(peers_adam)
        for t, r in rows.items():
            med = {k: statistics.median(x[k] for x in r) for k in r[0]}
            # Bytes through the coordinator per step: N uploads and N downloads.
            gbps = 2 * n * NUMEL * 4 / (med["step_ms"] / 1e3) / 1e9
            split = f"{med['upload_ms']:.0f}/{med['wait_ms']:.0f}/{med['download_ms']:.0f}"
            print(f"{n:>3} {t:>9} {med['step_ms']:>13.1f} {split:>20} {med['reduce_ms']:>12.1f} "
                  f"{g:>9.1f} {g / med['step_ms']:>9.2f}x {ga:>10.1f} {ga / med['step_ms']:>6.2f}x {gbps:>10.2f}")


if __name__ == "__main__":
    main()
