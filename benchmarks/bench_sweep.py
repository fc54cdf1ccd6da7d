"""A 16-trial FCNN sweep on the local executor against the Ray executor (same run).

Both sweeps run the same spec (lambda_{1,1} x lambda_{*,1} on W1, Eqs. 5-6, two seeds;
``--trials`` and ``--epochs`` size it) into fresh directories, one thread per trial. Only
quantities measured in this run are compared:

* throughput ratio: local wall time / Ray wall time (target >= 1.7x with 2 workers);
* Ray overhead per trial: (Ray wall time - sum of the trials' own seconds / workers) /
  trials (target < 1 s). It includes starting Ray and its worker processes (which load
  the data once each), submitting, collecting, and the driver rewriting the tables.

The driver first runs one trial locally (not timed) so that neither side pays for the
first import of torch and the dataset in the driver.

A trial (full MNIST training set, ``--epochs`` of SGD with momentum, AutoAttack with 1000
Square queries on 500 test inputs) takes several seconds, still well under a trial of the
bundled ``open-question-fcnn`` sweep (about 40 s). Ray's start-up (a few seconds, plus a
cold start per worker) is a fixed cost: with trials of about one second it dominates and
the ratio says more about start-up than about throughput (``--small`` shows it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from robustrank.sweeps import run_sweep
from robustrank.sweeps.spec import spec_from_dict

TARGET_RATIO = 1.7
TARGET_OVERHEAD = 1.0

_L1 = [0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]


def _spec(name: str, trials: int, epochs: int, small: bool = False) -> dict:
    """``trials`` runs: lambda_{1,1} x lambda_{*,1} x seed [0, 1] (``trials`` / 4 l1 values)."""
    n_l1 = max(1, trials // 4)
    objective = {"n": 500, "options": {"n_queries": 1000}}
    if small:
        objective = {"n": 200, "options": {"steps": 20, "n_queries": 200}}
    return {
        "name": name,
        "base": "fcnn-natural",
        "overrides": {
            "epochs": epochs,
            "train_subset": 10000 if small else None,
            "lr": 0.05,
            "momentum": 0.9,
            "threads": 1,
            "history": {"eval_n": 200, "test_accuracy_n": 1000, "track_mi": False},
        },
        "space": {
            "regularizers.l1.1": _L1[:n_l1],
            "regularizers.nuclear.1": [0.0, 0.01],
            "seed": [0, 1],
        },
        "strategy": "grid",
        "objective": objective,
    }


def _timed(spec: dict, out: Path, **kw) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    result = run_sweep(spec_from_dict(spec), out, progress=False, **kw)
    return time.perf_counter() - t0, result.rows


def _row(label: str, wall: float, rows: list[dict], workers: int) -> dict:
    busy = sum(r["seconds"] for r in rows)
    return {
        "label": label,
        "wall": wall,
        "busy": busy,
        "overhead": (wall - busy / workers) / len(rows),
        "workers": len({r["worker"] for r in rows}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="a multiple of 4, up to 32")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (CPUs)")
    parser.add_argument(
        "--small", action="store_true", help="trials of about a second (start-up dominates)"
    )
    parser.add_argument("--quick", action="store_true", help="8 small trials of 1 epoch (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.small = 8, 1, True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm = _spec("warm", 4, 1, small=True) | {"space": {"seed": [0]}}
        _timed(warm, root / "warm")
        spec = _spec("bench", args.trials, args.epochs, small=args.small)
        local_wall, local_rows = _timed(spec, root / "local")
        ray_wall, ray_rows = _timed(spec, root / "ray", executor="ray", workers=args.workers)
    n = len(local_rows)
    print(f"{n} trials x {args.epochs} epochs, 1 thread each; {os.cpu_count()} cores here")
    local = _row("local", local_wall, local_rows, 1)
    ray = _row(f"ray, {args.workers} workers", ray_wall, ray_rows, args.workers)
    print(f"{'executor':<18} {'wall s':>8} {'trial s (sum)':>14} {'overhead/trial s':>17}")
    for r in (local, ray):
        print(f"{r['label']:<18} {r['wall']:>8.1f} {r['busy']:>14.1f} {r['overhead']:>17.3f}")
    ratio = local_wall / ray_wall
    same = [
        {k: v for k, v in r.items() if k not in ("seconds", "worker", "reused")} for r in local_rows
    ] == [
        {k: v for k, v in r.items() if k not in ("seconds", "worker", "reused")} for r in ray_rows
    ]
    met = [ratio >= TARGET_RATIO, ray["overhead"] < TARGET_OVERHEAD]
    print(
        f"throughput ratio (local / ray wall): {ratio:.2f}x (target >= {TARGET_RATIO}x) "
        f"{'PASS' if met[0] else 'MISS'}"
    )
    print(
        f"ray overhead per trial: {ray['overhead']:.3f} s (target < {TARGET_OVERHEAD} s) "
        f"{'PASS' if met[1] else 'MISS'}"
    )
    print(
        f"identical tables (values, accuracies, structure): {same}; "
        f"{ray['workers']} distinct Ray worker processes"
    )
    print(f"{sum(met)}/{len(met)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
