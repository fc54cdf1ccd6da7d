"""A multi-fidelity sweep against the full sweep of the same grid: saving and risk.

Runs (or reads, when they are finished) two sweeps of the same trials into ``--out``:
the full one (default ``open-question-fcnn``: every trial trains to the end and gets
AutoAttack) and the multi-fidelity one (default ``open-question-fcnn-halving``: trials
judged by APGD-CE on 200 inputs at epochs 2 and 5, survivors only). Both use the same
executor and workers; the multi-fidelity sweep reuses the full sweep's parents (the same
runs, copied), so the comparison is between the trials.

Reported, from the two directories alone:

* CPU time of the trials (the sum of their ``seconds``: training, rung signals and the
  objective) and its ratio (goal: at most 1/3);
* the most robust combination of each, and the paired-by-seed difference between the
  full sweep's best and the multi-fidelity sweep's best (on the full sweep's numbers);
* the Pareto front of the combinations' means in each, and for every combination on the
  full front whether the multi-fidelity front holds it, or holds a combination that is
  indistinguishable from it: paired-by-seed differences of both clean and robust
  accuracy whose 95% t-intervals contain 0 (``robustrank.stats.seed_difference``);
* whether every survivor's numbers equal the full sweep's for the same values.

Usage (about 1.5 hours on two cores the first time; finished sweeps in ``--out`` are
reused, so a second call only compares)::

    python benchmarks/bench_fidelity.py [--out DIR] [--executor ray --workers 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from robustrank.ownership import MARKER_FILE
from robustrank.stats import seed_difference
from robustrank.sweeps import run_sweep
from robustrank.sweeps.table import combination_label, pareto_front


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "trials.json").read_text("utf-8"))["trials"]


def _by_combination(rows: list[dict]) -> dict[str, dict[int, dict]]:
    """Finished rows: combination label -> seed -> row."""
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        if r.get("status") == "done":
            out.setdefault(combination_label(r["values"]), {})[r["values"]["seed"]] = r
    return out


def _means(combos: dict[str, dict[int, dict]]) -> dict[str, tuple[float, float]]:
    return {
        k: (
            sum(r["clean_acc"] for r in v.values()) / len(v),
            sum(r["robust_acc"] for r in v.values()) / len(v),
        )
        for k, v in combos.items()
    }


def _front(means: dict[str, tuple[float, float]]) -> list[str]:
    names = list(means)
    return [names[i] for i in pareto_front([means[k] for k in names])]


def _indistinguishable(a: dict[int, dict], b: dict[int, dict]) -> tuple[bool, str]:
    """Whether the paired differences of clean and robust accuracy both include 0."""
    seeds = sorted(set(a) & set(b))
    parts, same = [], True
    for key in ("clean_acc", "robust_acc"):
        cmp = seed_difference([a[s][key] for s in seeds], [b[s][key] for s in seeds], "greater")
        lo, hi = (cmp.ci95.lo, cmp.ci95.hi) if cmp.ci95 is not None else (None, None)
        inside = lo is not None and lo <= 0.0 <= hi
        same = same and inside
        parts.append(f"{key} {cmp.difference:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    return same, ", ".join(parts)


def _copy_parents(full: Path, mf: Path) -> None:
    """The multi-fidelity sweep's parents are the full sweep's runs (same configs): a new
    sweep directory (the full one's ownership marker, no spec yet) holding copies of them."""
    if mf.exists() or not (full / "parents").is_dir():
        return
    mf.mkdir(parents=True)
    shutil.copy2(full / MARKER_FILE, mf / MARKER_FILE)
    shutil.copytree(full / "parents", mf / "parents")


def compare(full: Path, mf: Path) -> list[str]:
    """The comparison's lines (see the module docstring)."""
    full_rows, mf_rows = _rows(full), _rows(mf)
    full_combos, mf_combos = _by_combination(full_rows), _by_combination(mf_rows)
    full_means, mf_means = _means(full_combos), _means(mf_combos)
    t_full = sum(r.get("seconds") or 0.0 for r in full_rows)
    t_mf = sum(r.get("seconds") or 0.0 for r in mf_rows)
    stopped = sum(r.get("status") == "stopped" for r in mf_rows)
    lines = [
        f"trials: full {len(full_rows)} ({len(full_combos)} combinations), multi-fidelity "
        f"{len(mf_rows)}: {stopped} stopped, {len(mf_rows) - stopped} to the end "
        f"({len(mf_combos)} combinations)",
        f"trial CPU time: full {t_full / 60:.1f} min, multi-fidelity {t_mf / 60:.1f} min: "
        f"ratio {t_mf / t_full:.3f} (goal <= 0.333)",
    ]
    best_full = max(full_means, key=lambda k: (full_means[k][1], full_means[k][0]))
    best_mf = max(mf_means, key=lambda k: (mf_means[k][1], mf_means[k][0]))
    lines.append(f"most robust: full {best_full}; multi-fidelity {best_mf}")
    if best_full != best_mf:
        same, text = _indistinguishable(full_combos[best_full], full_combos[best_mf])
        lines.append(f"  full's best - multi-fidelity's best: {text}: same within noise {same}")
    front_full, front_mf = _front(full_means), _front(mf_means)
    lines.append(
        f"Pareto front of the means: full {len(front_full)}, multi-fidelity {len(front_mf)}"
    )
    for c in sorted(front_full, key=lambda k: -full_means[k][1]):
        clean, robust = full_means[c]
        head = f"  {c}: robust {robust:.4f}, clean {clean:.4f}: "
        if c in front_mf:
            lines.append(head + "on both fronts")
            continue
        matches = [(g, _indistinguishable(full_combos[c], full_combos[g])) for g in front_mf]
        same = [(g, text) for g, (ok, text) in matches if ok]
        if same:
            lines.append(head + f"within the intervals of {same[0][0]} ({same[0][1]})")
        else:
            lines.append(head + "NOT represented on the multi-fidelity front")
    equal = all(
        full_combos[k][s][key] == r[key]
        for k, seeds in mf_combos.items()
        for s, r in seeds.items()
        for key in ("clean_acc", "robust_acc")
    )
    lines.append(f"survivors' numbers equal the full sweep's: {equal}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/bench-fidelity"),
        help="finished sweeps are reused",
    )
    parser.add_argument("--full", default="open-question-fcnn")
    parser.add_argument("--mf", default="open-question-fcnn-halving")
    parser.add_argument("--mf-dir", default="multi-fidelity", help="its directory in --out")
    parser.add_argument("--executor", default="ray")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    full, mf = args.out / "full", args.out / args.mf_dir
    kw = {"executor": args.executor, "workers": args.workers}
    run_sweep(args.full, full, **kw)
    _copy_parents(full, mf)
    run_sweep(args.mf, mf, **kw)
    print("\n".join(compare(full, mf)))


if __name__ == "__main__":
    main()
