"""Exact structure: what masks, factors and proximal steps cost in training, and when a
structured model infers faster than the dense one (ratios measured in the same run).

Training (one CNN/F-MNIST epoch of ``--batches`` x 64 through ``robustrank.train``, history
off; medians of ``--repeat`` runs in ABBA order), each against the unstructured epoch:

* pruned: conv2 at density 0.2 and fc1 at 0.1 (masks, ``structure.prune``); target <= 1.10x;
* factorised: conv2 at rank 8 and fc1 at rank 16 (``structure.factorize``); target <= 1.15x;
* proximal: ``regularizers: {mode: proximal, l1: {3: 1e-4}, nuclear: {2: 0.1}}`` against the
  same lambdas as subgradient terms (Eq. 8); target <= 1.10x.

Inference (batch 500, eval mode, no gradients), each against the dense model:

* the CNN with masked and with factorised layers as ``robustrank`` stores them: masks
  multiply the dense weight and factors are multiplied out in every forward pass, so they
  cost a little more than the dense model, never less (reported, not a target);
* fc1 (1568 -> 128) computed as two thin matrix products ``(x V^T) U^T`` at ranks 4-64,
  against the dense product: the factored form is faster when ``r (m + n) << m n``, which
  says at which rank exporting factors as two layers pays (reported).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench_training import alternate, robustrank_epoch
from robustrank.models import create_model
from robustrank.structure import factorize, prune

TARGET_MASK, TARGET_FACTOR, TARGET_PROXIMAL = 1.10, 1.15, 1.10


def _cnn(batches: int, **extra) -> dict:
    data = {
        "name": "bench-structure",
        "model": {"name": "cnn"},
        "dataset": "fashion-mnist",
        "train_subset": batches * 64,
        "epochs": 1,
        "batch_size": 64,
        "lr": 0.01,
        "history": {"evaluate": False},
    }
    return {**data, **extra}


def _report(label: str, base: float, other: float, target: float | None) -> bool:
    ratio = other / base
    ok = target is None or ratio <= target
    verdict = "" if target is None else f"(target <= {target:.2f}x) {'PASS' if ok else 'MISS'}"
    print(
        f"{label:<52} {other:8.4f} s  baseline {base:8.4f} s  ratio {ratio:5.3f}x  {verdict}",
        flush=True,
    )
    return ok


def training(batches: int, repeat: int) -> list[bool]:
    plain = _cnn(batches)
    cases = {
        "pruned conv2 0.2, fc1 0.1 (epoch)": (
            _cnn(batches, structure={"prune": {"density": {2: 0.2, 3: 0.1}}}),
            plain,
            TARGET_MASK,
        ),
        "factorised conv2 r8, fc1 r16 (epoch)": (
            _cnn(batches, structure={"factorize": {"rank": {2: 8, 3: 16}}}),
            plain,
            TARGET_FACTOR,
        ),
        "proximal l1 + nuclear vs subgradient (epoch)": (
            _cnn(batches, regularizers={"mode": "proximal", "l1": {3: 1e-4}, "nuclear": {2: 0.1}}),
            _cnn(batches, regularizers={"l1": {3: 1e-4}, "nuclear": {2: 0.1}}),
            TARGET_PROXIMAL,
        ),
    }
    results = []
    for label, (cfg, base_cfg, target) in cases.items():
        t_base, t_case = alternate(
            lambda c=base_cfg: robustrank_epoch(c)[0],
            lambda c=cfg: robustrank_epoch(c)[0],
            repeat=repeat,
        )
        results.append(_report(label, statistics.median(t_base), statistics.median(t_case), target))
    return results


def _time(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def inference(repeat: int) -> None:
    x = torch.rand(500, 1, 28, 28)
    dense = create_model("cnn").eval()
    masked = create_model("cnn").eval()
    prune(masked, {2: 0.2, 3: 0.1})
    factored = create_model("cnn").eval()
    factorize(factored, {2: 8, 3: 16})
    t_dense = _time(lambda: dense(x), repeat)
    _report(
        "CNN inference, masked layers (batch 500)", t_dense, _time(lambda: masked(x), repeat), None
    )
    _report(
        "CNN inference, factorised layers (batch 500)",
        t_dense,
        _time(lambda: factored(x), repeat),
        None,
    )
    h = torch.rand(500, 1568)
    w = torch.randn(128, 1568)
    t_full = _time(lambda: F.linear(h, w), 5 * repeat)
    for r in (4, 16, 32, 64):
        u, v = torch.randn(128, r), torch.randn(r, 1568)
        t_two = _time(lambda u=u, v=v: F.linear(F.linear(h, v), u), 5 * repeat)
        _report(
            f"fc1 as two factors, rank {r} (r(m+n)/mn = {r * 1696 / (128 * 1568):.2f})",
            t_full,
            t_two,
            None,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, repeat {args.repeat}")
    results = training(args.batches, args.repeat)
    inference(args.repeat * 4)
    print(f"{sum(results)}/{len(results)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
