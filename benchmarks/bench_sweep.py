"""A 16-trial FCNN sweep on the local executor against Ray and the process pool (same run).

Every sweep runs the same spec (lambda_{1,1} x lambda_{*,1} on W1, Eqs. 5-6, two seeds;
``--trials``, ``--epochs``, ``--train-subset`` and ``--objective`` size it) into fresh
directories, one thread per trial, on the local executor and on each of ``--executors``
(default ``ray``; e.g. ``ray,processes``). Only quantities measured in this run are
compared, per executor:

* throughput ratio: local wall time / its wall time (target >= 1.7x with 2 workers);
* overhead per trial: (its wall time - sum of the trials' own seconds / workers) /
  trials (target < 1 s). It includes starting Ray or the pool and its worker processes
  (which load the data once each), submitting, collecting, and the driver rewriting the
  tables;
* identical trial tables (values, accuracies, structure) to the local executor's.

The issue's 8-trial measurement: ``--trials 8 --epochs 2 --train-subset 10000
--objective default --executors ray,processes``.

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


#: the trial objective per ``--objective``: the benchmark's, small trials', or the sweep's
#: default (omitted from the spec)
_OBJECTIVES: dict[str, dict | None] = {
    "bench": {"n": 500, "options": {"n_queries": 1000}},
    "small": {"n": 200, "options": {"steps": 20, "n_queries": 200}},
    "default": None,
}


def _spec(
    name: str, trials: int, epochs: int, objective: str = "bench", train_subset: int | None = None
) -> dict:
    """``trials`` runs: lambda_{1,1} x lambda_{*,1} x seed [0, 1] (``trials`` / 4 l1 values)."""
    n_l1 = max(1, trials // 4)
    spec = {
        "name": name,
        "base": "fcnn-natural",
        "overrides": {
            "epochs": epochs,
            "train_subset": train_subset,
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
    }
    if _OBJECTIVES[objective] is not None:
        spec["objective"] = _OBJECTIVES[objective]
    return spec


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
    parser.add_argument("--workers", type=int, default=2, help="workers (CPUs) per executor")
    parser.add_argument(
        "--executors", default="ray", help="comma-separated executors to compare with local"
    )
    parser.add_argument("--objective", choices=sorted(_OBJECTIVES), default="bench")
    parser.add_argument("--train-subset", type=int, default=None, help="training examples")
    parser.add_argument(
        "--small", action="store_true", help="trials of about a second (start-up dominates)"
    )
    parser.add_argument("--quick", action="store_true", help="8 small trials of 1 epoch (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.small = 8, 1, True
    if args.small:
        args.objective, args.train_subset = "small", args.train_subset or 10000
    others = [e.strip() for e in args.executors.split(",") if e.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm = _spec("warm", 4, 1, "small", 10000) | {"space": {"seed": [0]}}
        _timed(warm, root / "warm")
        spec = _spec("bench", args.trials, args.epochs, args.objective, args.train_subset)
        local_wall, local_rows = _timed(spec, root / "local")
        timed = {
            name: _timed(spec, root / name, executor=name, workers=args.workers) for name in others
        }
    n = len(local_rows)
    print(f"{n} trials x {args.epochs} epochs, 1 thread each; {os.cpu_count()} cores here")
    local = _row("local", local_wall, local_rows, 1)
    rows = {
        name: _row(f"{name}, {args.workers} workers", *timed[name], args.workers) for name in others
    }
    print(f"{'executor':<22} {'wall s':>8} {'trial s (sum)':>14} {'overhead/trial s':>17}")
    for r in (local, *rows.values()):
        print(f"{r['label']:<22} {r['wall']:>8.1f} {r['busy']:>14.1f} {r['overhead']:>17.3f}")
    met = []
    for name in others:
        ratio, r = local_wall / timed[name][0], rows[name]
        same = _comparable(local_rows) == _comparable(timed[name][1])
        met += [ratio >= TARGET_RATIO, r["overhead"] < TARGET_OVERHEAD, same]
        print(
            f"{name}: throughput {ratio:.2f}x local (target >= {TARGET_RATIO}x) "
            f"{'PASS' if met[-3] else 'MISS'}; overhead per trial {r['overhead']:.3f} s "
            f"(target < {TARGET_OVERHEAD} s) {'PASS' if met[-2] else 'MISS'}; identical "
            f"tables: {same}; {r['workers']} distinct worker processes"
        )
    print(f"{sum(met)}/{len(met)} targets met")
    return 0


def _comparable(rows: list[dict]) -> list[dict]:
    """Trial rows without what depends on where and when they ran."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "worker", "reused")} for r in rows]


if __name__ == "__main__":
    raise SystemExit(main())
