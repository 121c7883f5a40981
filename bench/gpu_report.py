"""Summarises the JSON lines of bench/gpu.sh (the worker's `bench` and bench/model_torch.py,
one line per measurement: peer, what, batch, precision, device, seconds) as a Markdown table.

For each (device, precision, measurement): exams/s = batch / median of all repetitions of all
rounds, per peer ("ours", "pytorch"); the ratio ours/pytorch; model-FLOPs utilisation
MFU = exams/s * 15e9 FLOP per exam (training step) / peak dense FLOP/s of the GPU for that
precision. Then, per batch, the design targets (DESIGN.md section 9) against PyTorch in fp32:
ours-f32 / pytorch-f32 >= 1.0 and ours-bf16 / pytorch-f32 >= 2.0, marked PASS or MISS. Lines
with an "error" key (a peer that failed) are listed under Failures.

The GPU comes from `nvidia-smi --query-gpu=name -i $GPU` (GPU defaults to 0; GPU_NAME overrides
the name). Known peaks: H100 SXM and H200 (f32 67e12, tf32 494.7e12, bf16 989.4e12) and H100
PCIe (51e12, 378e12, 756e12); any other GPU gives "n/a" unless PEAK_F32, PEAK_TF32 or
PEAK_BF16 (FLOP/s) are set, which also override the table.

    python3 bench/gpu_report.py gpu_bench.jsonl     (also writes $OUT/gpu_report.md if OUT is set)
"""
import json
import os
import statistics
import subprocess
import sys

FLOPS_PER_EXAM = 15e9  # one training step (forward and backward) of the full network, per exam
PRECISIONS = ["f32", "tf32", "bf16"]
PEAKS = {  # dense tensor-core (tf32, bf16) and CUDA-core (f32) peaks, FLOP/s
    "H100 SXM / H200": {"f32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12},
    "H100 PCIe": {"f32": 51e12, "tf32": 378e12, "bf16": 756e12},
}
TARGETS = [("f32", 1.0), ("bf16", 2.0)]  # ours-<precision> / pytorch-f32, at the same batch


def gpu_name():
    """The benchmarked GPU's name, or None when nvidia-smi cannot tell."""
    if os.environ.get("GPU_NAME"):
        return os.environ["GPU_NAME"]
    cmd = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader",
           "-i", os.environ.get("GPU", "0")]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def peak_class(name):
    """The PEAKS entry for a GPU name, or None for a GPU whose peaks are not in the table."""
    n = (name or "").upper()
    if "H100" in n and "PCIE" in n:
        return "H100 PCIe"
    if ("H100" in n and ("SXM" in n or "HBM3" in n)) or ("H200" in n and "NVL" not in n):
        return "H100 SXM / H200"
    return None


def peaks(name):
    """Peak FLOP/s per precision (None where unknown), with PEAK_<P> overrides applied."""
    cls = peak_class(name)
    out = dict(PEAKS[cls]) if cls else {p: None for p in PRECISIONS}
    for p in PRECISIONS:
        env = os.environ.get("PEAK_" + p.upper())
        if env:
            try:
                out[p] = float(env)
            except ValueError:
                sys.exit(f"gpu_report: PEAK_{p.upper()}='{env}' is not a number of FLOP/s")
    return out, cls


def load(path):
    """(timings by (device, precision, what) -> {"batch", peer: [seconds]}, failure lines)."""
    groups, failures = {}, []
    with open(path) as f:
        for lineno, text in enumerate(f, 1):
            if not text.startswith("{"):
                continue
            try:
                r = json.loads(text)
            except json.JSONDecodeError as e:
                print(f"gpu_report: {path}:{lineno}: not JSON ({e}); skipped", file=sys.stderr)
                continue
            if "error" in r or "seconds" not in r:
                failures.append(r)
                continue
            key = (r.get("device", "?"), r.get("precision", "f32"), r["what"])
            g = groups.setdefault(key, {"batch": int(r["batch"])})
            g.setdefault(r["peer"], []).extend(float(s) for s in r["seconds"])
    return groups, failures


def rate(g, peer):
    """exams/s of `peer` in group `g` (batch / median seconds), or None without timings."""
    s = g.get(peer) if g else None
    return g["batch"] / statistics.median(s) if s else None


def fmt(x, spec):
    """`x` formatted with `spec`, or "n/a" for a missing value."""
    return "n/a" if x is None else format(x, spec)


def ratio(a, b):
    """a / b, or None when either is missing."""
    return a / b if a is not None and b else None


def table(head, rows):
    """A Markdown table with padded columns (readable as plain text too)."""
    w = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(n) for c, n in zip(cells, w)) + " |"
    return [line(head), "|" + "|".join("-" * (n + 2) for n in w) + "|"] + [line(r) for r in rows]


def order(key):
    """Sort key of a row: device, precision (f32, tf32, bf16), training first, batch."""
    device, precision, what = key
    kind = "".join(c for c in what if not c.isdigit())
    num = "".join(c for c in what if c.isdigit()) or "0"
    p = PRECISIONS.index(precision) if precision in PRECISIONS else len(PRECISIONS)
    return device, p, precision, kind != "train", kind, int(num)


def report(path):
    """Prints the tables for the JSON lines in `path` (and writes $OUT/gpu_report.md)."""
    groups, failures = load(path)
    if not groups and not failures:
        sys.exit(f"gpu_report: no measurement lines in {path}")
    name = gpu_name()
    peak, cls = peaks(name)
    out = [f"# GPU benchmark: {name or 'unknown GPU'}", ""]
    peak_txt = ", ".join(f"{p} {fmt(peak[p], '.4g')}" for p in PRECISIONS)
    out.append(f"Peak FLOP/s ({cls or 'not in the table'}; PEAK_* overrides): {peak_txt}. "
               f"exams/s = batch / median over all repetitions of all rounds; "
               f"MFU = exams/s x {FLOPS_PER_EXAM:.3g} / peak (training steps on CUDA only).")
    out.append("")
    rows = []
    for key in sorted(groups, key=order):
        device, precision, what = key
        g = groups[key]
        ours, torch_ = rate(g, "ours"), rate(g, "pytorch")
        mfu = {}
        for peer, r in (("ours", ours), ("pytorch", torch_)):
            pk = peak.get(precision)
            ok = device == "cuda" and what.startswith("train") and pk and r is not None
            mfu[peer] = fmt(r * FLOPS_PER_EXAM / pk * 100, ".1f") + "%" if ok else "n/a"
        n = f"{len(g.get('ours', []))}/{len(g.get('pytorch', []))}"
        rows.append([device, precision, what, g["batch"], fmt(ours, ".1f"), fmt(torch_, ".1f"),
                     fmt(ratio(ours, torch_), ".2f") + ("x" if ours and torch_ else ""),
                     mfu["ours"], mfu["pytorch"], n])
    out += table(["device", "precision", "measurement", "batch", "ours ex/s", "pytorch ex/s",
                  "ours/pytorch", "MFU ours", "MFU pytorch", "timings ours/pytorch"], rows)

    batches = sorted({g["batch"] for (d, _, w), g in groups.items()
                      if d == "cuda" and w.startswith("train")})
    if batches:
        out += ["", "## Targets against PyTorch fp32 (training step, same batch)", ""]
        rows = []
        for b in batches:
            base = rate(groups.get(("cuda", "f32", f"train{b}")), "pytorch")
            row = [b]
            for p, target in TARGETS:
                r = ratio(rate(groups.get(("cuda", p, f"train{b}")), "ours"), base)
                verdict = "n/a" if r is None else ("PASS" if r >= target else "MISS")
                row += [fmt(r, ".2f") + ("x" if r is not None else ""), f">= {target}", verdict]
            rows.append(row)
        head = ["batch"]
        for p, _ in TARGETS:
            head += [f"ours-{p} / pytorch-f32", "target", "verdict"]
        out += table(head, rows)

    if failures:
        out += ["", "## Failures", ""]
        for f in failures:
            where = ", ".join(f"{k} {f[k]}" for k in ("peer", "precision", "what", "round")
                              if k in f)
            out.append(f"- {where}: {f.get('error', 'no timings')}")
    text = "\n".join(out) + "\n"
    print(text, end="")
    if os.environ.get("OUT"):
        dest = os.path.join(os.environ["OUT"], "gpu_report.md")
        with open(dest, "w") as f:
            f.write(text)
        print(f"(written to {dest})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gpu_report.py <jsonl from bench/gpu.sh>")
    report(sys.argv[1])
