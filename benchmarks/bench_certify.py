"""Certification benchmark: time and peak memory of every registered certifier.

Workload: the paper's FCNN (MNIST) and CNN (Fashion-MNIST), each trained one quick epoch
(plain SGD, lr 0.05, batch 50, on the first 5000 training images; seed 0), so that the
certifiers have something to certify; a fixed seeded subset of ``--n`` test images
(default 1000), l_inf budget ``--eps`` (default 0.01), ``--batch-size`` inputs per
certifier call (default 200).

Every certifier of the registry (``list_certifiers()``: lipschitz, ibp, crown, crown-ibp,
alpha-crown) runs in a fresh subprocess so that its peak memory can be read: peak =
``ru_maxrss`` after the run minus ``ru_maxrss`` after imports and loading the model and the
inputs (tracemalloc does not see torch's allocations). The baseline is one plain forward
pass over the same inputs, in the same batches, measured in every subprocess; each time is
reported as a ratio to it. Times are the median of ``--repeat`` runs after a first one
(``first s`` includes tracing the model). The exit code is 0 whatever the outcome: this is
a report.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

MODELS = {"fcnn": "mnist", "cnn": "fashion-mnist"}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def quick_model(arch: str, dataset: str, path: Path) -> Path:
    """``arch`` trained one epoch on 5000 training images, saved to ``path``."""
    from robustrank.data import load_dataset
    from robustrank.models import create_model, save_checkpoint

    x, y = load_dataset(dataset, "train", progress=False)
    x, y = x[:5000], y[:5000]
    torch.manual_seed(0)
    model = create_model(arch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for s in range(0, len(x), 50):
        opt.zero_grad()
        F.cross_entropy(model(x[s : s + 50]), y[s : s + 50]).backward()
        opt.step()
    return save_checkpoint(model.eval(), path, dataset=dataset)


def _median_time(fn, repeat: int) -> tuple[float, float]:  # noqa: ANN001
    """(first, median of ``repeat`` more) wall-clock seconds of ``fn()``."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times) if times else first


def worker(args: argparse.Namespace) -> None:
    """One certifier on one model; prints a JSON line."""
    from robustrank.data import eval_subset, load_dataset
    from robustrank.evaluation import certify
    from robustrank.models import load_checkpoint

    model, meta = load_checkpoint(args.checkpoint)
    model.eval()
    x, y = eval_subset(*load_dataset(meta["dataset"], "test", progress=False), args.n, seed=0)
    bs = args.batch_size

    def forward() -> None:
        with torch.no_grad():
            for s in range(0, len(x), bs):
                model(x[s : s + bs])

    _, base_s = _median_time(forward, max(args.repeat, 3))
    base_mb = _peak_rss_mb()
    result = {}

    def run() -> None:
        result["r"] = certify(model, x, y, args.eps, args.worker, batch_size=bs)

    first, median = _median_time(run, args.repeat)
    r = result["r"]
    out = {
        "method": args.worker,
        "forward_s": base_s,
        "first_s": first,
        "median_s": median,
        "peak_mb": _peak_rss_mb() - base_mb,
        "certified": r.certified_accuracy,
        "clean": r.clean_accuracy,
    }
    print(json.dumps(out))


def _run_worker(method: str, ckpt: Path, args: argparse.Namespace) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", method, "--checkpoint", str(ckpt)]
    cmd += ["--n", str(args.n), "--eps", str(args.eps), "--repeat", str(args.repeat)]
    cmd += ["--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {method}: FAILED\n{proc.stderr[-1500:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(arch: str, rows: list[dict]) -> None:
    """The table of one model: times, ratios to the forward pass, peak memory, accuracy."""
    head = (
        f"{'method':<12} {'first s':>8} {'median s':>9} {'x forward':>10} {'peak MB':>8} "
        f"{'certified':>9} {'clean':>6}"
    )
    print(f"\n{arch}: forward pass {statistics.median(r['forward_s'] for r in rows):.4f}s")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = r["median_s"] / r["forward_s"]
        print(
            f"{r['method']:<12} {r['first_s']:>8.3f} {r['median_s']:>9.3f} {ratio:>10.1f} "
            f"{r['peak_mb']:>8.0f} {r['certified']:>9.3f} {r['clean']:>6.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of test images")
    ap.add_argument("--eps", type=float, default=0.01, help="l_inf budget")
    ap.add_argument("--batch-size", type=int, default=200, help="inputs per certifier call")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs after the first")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: fcnn,cnn")
    ap.add_argument(
        "--methods", default=None, help="comma-separated certifiers (default: every registered)"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    from robustrank.evaluation import list_certifiers

    print(
        f"certification, n={args.n}, eps={args.eps:g}, batch {args.batch_size}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, repeat={args.repeat}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.models.split(","):
            ckpt = quick_model(arch, MODELS[arch], Path(tmp) / f"{arch}.safetensors")
            methods = args.methods.split(",") if args.methods else list_certifiers()
            rows = [r for m in methods if (r := _run_worker(m, ckpt, args))]
            if rows:
                report(arch, rows)


if __name__ == "__main__":
    main()
