"""KDE mutual-information benchmark: chunked estimator vs. a dense N x N implementation.

Workload (Section 5 settings): N = 10,000 MNIST test images through the paper's FCNN
(784 -> 5 x 20 tanh -> 10, seed 0, untrained: only the activations' geometry matters
here), first hidden layer t^1 (d = 20), sigma^2 = 0.1. Both bounds of I(T;X) and of
I(T;Y) (the same estimator on the full set and on each of the 10 classes).

Compared, each in a fresh subprocess so that its peak memory can be read:

* ``robustrank``: ``mutual_information_x`` + ``mutual_information_y`` (chunks of rows,
  float64), automatic chunk size and ``chunk_size=256``;
* ``dense``: the straightforward implementation: the full N x N squared-distance matrix
  (float64, |a|^2 + |b|^2 - 2ab, clamped), ``torch.logsumexp`` over each row for each
  kernel width, and again per class.

Peak memory = ``ru_maxrss`` after the run minus ``ru_maxrss`` after imports and loading
the activations (tracemalloc does not see torch's allocations). Times are the median of
``--repeat`` runs after one warm-up, ratios against the dense implementation measured in
the same invocation. Exit code 0 whatever the outcome: this is a report.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

NOISE_VAR = 0.1


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def dense_bounds(h: torch.Tensor, noise_var: float) -> tuple[float, float]:
    """(lower, upper) of H(T) - H(T|X) in nats with the whole N x N matrix."""
    n = h.shape[0]
    sq = (h * h).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * h @ h.T).clamp_(min=0.0)
    dist.fill_diagonal_(0.0)
    up = math.log(n) - float(torch.logsumexp(-dist / (2 * noise_var), dim=1).mean())
    low = math.log(n) - float(torch.logsumexp(-dist / (8 * noise_var), dim=1).mean())
    return low, up


def dense_all(h: torch.Tensor, y: torch.Tensor, noise_var: float) -> list[float]:
    """[I(T;X) low, up, I(T;Y) low, up] in bits, dense."""
    h = h.double()
    low, up = dense_bounds(h, noise_var)
    c_low = c_up = 0.0
    for c in torch.unique(y).tolist():
        sel = h[y == c]
        a, b = dense_bounds(sel, noise_var)
        c_low += len(sel) / len(h) * a
        c_up += len(sel) / len(h) * b
    ln2 = math.log(2)
    return [low / ln2, up / ln2, (low - c_low) / ln2, (up - c_up) / ln2]


def robustrank_all(h: torch.Tensor, y: torch.Tensor, chunk: int | None) -> list[float]:
    from robustrank.information import mutual_information_x, mutual_information_y

    x_low, x_up = mutual_information_x(h, NOISE_VAR, chunk_size=chunk)
    y_low, y_up = mutual_information_y(h, y, NOISE_VAR, chunk_size=chunk)
    return [x_low, x_up, y_low, y_up]


def worker(kind: str, data: Path, repeat: int) -> None:
    import robustrank.information  # noqa: F401  (imports before the baseline)

    arrays = np.load(data)
    h, y = torch.from_numpy(arrays["h"]), torch.from_numpy(arrays["y"])
    base = _peak_rss_mb()
    if kind == "dense":

        def run():
            return dense_all(h, y, NOISE_VAR)
    else:
        chunk = None if kind == "robustrank" else int(kind.split("=")[1])

        def run():
            return robustrank_all(h, y, chunk)

    t0 = time.perf_counter()
    values = run()
    first = time.perf_counter() - t0
    peak = _peak_rss_mb() - base
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    out = {
        "kind": kind,
        "values": values,
        "first_s": first,
        "median_s": statistics.median(times) if times else first,
        "peak_mb": peak,
    }
    print(json.dumps(out))


def activations(n: int) -> tuple[np.ndarray, np.ndarray]:
    from robustrank.data import load_dataset
    from robustrank.information import layer_activations
    from robustrank.models import create_model

    x, y = load_dataset("mnist", "test")
    torch.manual_seed(0)
    model = create_model("fcnn")
    t1 = layer_activations(model, x[:n])[0]
    return t1.numpy(), y[:n].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="number of test images")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs after the first")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.repeat)
        return

    h, y = activations(args.n)
    print(
        f"KDE MI, N={len(h)}, d={h.shape[1]} (FCNN t1 on MNIST test), sigma^2={NOISE_VAR}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, repeat={args.repeat}"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "acts.npz"
        np.savez(data, h=h, y=y)
        for kind in ("dense", "robustrank", "robustrank chunk=256"):
            cmd = [sys.executable, __file__, "--worker", kind.replace("robustrank ", "")]
            cmd += ["--data", str(data), "--repeat", str(args.repeat)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{kind}: FAILED\n{proc.stderr[-2000:]}")
                continue
            results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])

    base = results.get("dense")
    head = f"{'implementation':<22} {'first s':>8} {'median s':>9} {'x dense':>8} {'peak MB':>9}"
    print(head)
    print("-" * len(head))
    for kind, r in results.items():
        ratio = f"{base['median_s'] / r['median_s']:.2f}" if base else "n/a"
        print(
            f"{kind:<22} {r['first_s']:>8.2f} {r['median_s']:>9.2f} {ratio:>8} {r['peak_mb']:>9.0f}"
        )
    labels = ["I(T;X) low", "I(T;X) up", "I(T;Y) low", "I(T;Y) up"]
    print("\nvalues (bits): " + ", ".join(labels))
    for kind, r in results.items():
        print(f"  {kind:<22} " + "  ".join(f"{v:.10f}" for v in r["values"]))
    if base:
        for kind, r in results.items():
            if kind != "dense":
                diff = max(abs(a - b) for a, b in zip(r["values"], base["values"], strict=True))
                print(f"max |{kind} - dense| = {diff:.2e} bits")
    print(f"(the dense N x N float64 matrix alone is {len(h) ** 2 * 8 / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
