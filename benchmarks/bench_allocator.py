"""The allocator's settings (``robustrank.allocator``) against glibc's defaults, same run.

Workload: the paper's CNN (Fashion-MNIST shapes, channels-last as the attacks run it, one
thread) at working batches of 128 to 1024 rows: forward passes without gradients (Square,
FAB's check) and forward+backward passes for the input gradient (APGD, FAB's step). Each
setting runs in its own interpreter, because glibc reads its environment at start-up; the
two alternate, and each cell is the median of the repeats. Reported per row: time, the
ratio default / robustrank (above 1: the settings pay) and the page faults per pass,
which the kernel counts independently of the machine's load. Both settings compute the
same logits and gradients; the script checks that they are equal to the bit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_WORKER = """
import json, resource, statistics, sys, time
from robustrank.allocator import keep_freed_memory
took = keep_freed_memory()
import torch
from robustrank.models import create_model
torch.set_num_threads(1)
torch.manual_seed(0)
model = create_model("cnn").eval().to(memory_format=torch.channels_last)
batches, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def forward(x):
    with torch.no_grad():
        return model(x)
def backward(x):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(model(x).logsumexp(1).sum(), x)[0]
out = {"took": took, "cells": []}
for b in batches:
    x = torch.rand(b, 1, 28, 28, generator=torch.Generator().manual_seed(b))
    x = x.contiguous(memory_format=torch.channels_last)
    for name, fn in (("forward", forward), ("forward+backward", backward)):
        ref = fn(x)  # warm-up; also the value both settings must agree on
        times, fl = [], []
        for _ in range(repeats):
            f0, t0 = faults(), time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
            fl.append(faults() - f0)
        out["cells"].append({
            "rows": b, "pass": name, "ms_per_row": 1e3 * statistics.median(times) / b,
            "faults_per_pass": statistics.median(fl),
            "checksum": float(ref.double().abs().sum()),
        })
print(json.dumps(out))
"""


def _run(system: bool, batches: list[int], repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["OMP_NUM_THREADS"] = "1"
    if system:
        env["ROBUSTRANK_MALLOC"] = "system"
    else:
        env.pop("ROBUSTRANK_MALLOC", None)
    args = [sys.executable, "-c", _WORKER, json.dumps(batches), str(repeats)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="128,256,512,1024")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.rounds):
        for system in (True, False):
            runs[system].append(_run(system, batches, args.repeats))
    if not runs[False][0]["took"]:
        print("the settings did not apply here (not glibc, or MALLOC_* set): nothing to compare")
        return
    print(
        f"{'rows':>5} {'pass':17}{'glibc default':>15}{'robustrank':>12}{'ratio':>8}"
        f"{'faults/pass':>18}"
    )
    for i, cell in enumerate(runs[False][0]["cells"]):
        ours = min(r["cells"][i]["ms_per_row"] for r in runs[False])
        base = min(r["cells"][i]["ms_per_row"] for r in runs[True])
        same = {r["cells"][i]["checksum"] for r in runs[False] + runs[True]}
        if len(same) != 1:
            raise SystemExit(f"the settings changed a computed value: {sorted(same)}")
        f_base = runs[True][0]["cells"][i]["faults_per_pass"]
        f_ours = runs[False][0]["cells"][i]["faults_per_pass"]
        print(
            f"{cell['rows']:>5} {cell['pass']:17}{base:>12.3f} ms{ours:>9.3f} ms"
            f"{base / ours:>7.2f}x{f_base:>10.0f} -> {f_ours:.0f}"
        )


if __name__ == "__main__":
    main()
