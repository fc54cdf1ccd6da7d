"""The results of a sweep: one row per trial, the Pareto front, the summary over seeds.

* A row holds a trial's values, its clean accuracy (``test_acc`` of the final history
  row), its robust accuracy under the objective attack, the fooling ratios (Section 5) and
  the effective rank and sparsity (Eqs. 2-3), numerical rank and density of every
  regularised or structured layer, and the model's stored weight parameters and
  compression ratio.
* The Pareto front of (clean, robust) accuracy: the trials no other trial beats on both.
* Trials whose values differ only in ``seed`` form a combination; each gets the mean and
  95% Student-t interval over seeds of both accuracies (:func:`robustrank.stats.seed_summary`),
  and the most robust combination is compared with the runner-up by the paired-by-seed
  difference of robust accuracy and its t-interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._io import csv_text
from ..stats import Comparison as StatsComparison
from ..stats import SeedStat, seed_difference, seed_summary
from .space import layer_key, parse_path

__all__ = [
    "SEED_KEY",
    "outcome_row",
    "pareto_front",
    "Combination",
    "Comparison",
    "combinations",
    "compare_best",
    "against_reference",
    "structure_layers",
    "rows_csv",
    "finished_rows",
    "combinations_csv",
    "json_safe",
    "combination_key",
    "combination_label",
]

#: The space key that repeats a combination (it is averaged over, never compared).
SEED_KEY = "seed"


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats as None (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def outcome_row(
    head: dict[str, Any],
    final: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None,
    attack: str,
    layers: Sequence[str],
) -> dict[str, Any]:
    """A finished trial's row: ``head`` (trial, values, run_dir, ...), then accuracies,
    fooling ratios and the structure of ``layers`` (every layer when empty)."""
    objective = (evaluation or {}).get(attack) or {}
    row = dict(head)
    row["status"] = "done"
    row["clean_acc"] = final.get("test_acc")
    row["robust_acc"] = objective.get("robust_accuracy")
    row["objective_fr"] = objective.get("fooling_ratio")
    row.update({k: v for k, v in final.items() if k.startswith("fr_")})
    names = list(layers) or [k[len("eff_rank_") :] for k in final if k.startswith("eff_rank_")]
    for name in names:
        for prefix in ("eff_rank", "eff_sparsity", "num_rank", "density"):
            row[f"{prefix}_{name}"] = final.get(f"{prefix}_{name}")
    row["weight_params"] = final.get("weight_params")
    row["compression"] = final.get("compression")
    return row


def rows_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV of the rows, the ``values`` mapping flattened into one column per space key."""
    flat = []
    for row in rows:
        values = row.get("values") or {}
        rest = {k: v for k, v in row.items() if k != "values"}
        head = {k: rest.pop(k) for k in ("trial", "index") if k in rest}
        flat.append({**head, **values, **rest})
    return csv_text(flat)


# --------------------------------------------------------------------------- Pareto front


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates when both coordinates are maximised
    (a dominating point is >= in both and > in one); equal points are all kept. Sorted by
    the first coordinate, descending. O(n log n): a sweep in that order keeps a point when
    its second coordinate beats every point seen so far."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        x, y = points[i]
        if y > best:
            front.append(i)
            best = y
        elif y == best and front and points[front[-1]] == (x, y):
            front.append(i)  # a duplicate of a front point does not dominate it
    return front


# --------------------------------------------------------------------------- seeds


@dataclass
class Combination:
    """Trials whose values differ only in ``seed``, summarised over seeds."""

    values: dict[str, Any]
    trials: list[str]
    clean: SeedStat
    robust: SeedStat
    robust_by_seed: dict[str, float]

    def label(self) -> str:
        """``key=value, ...`` (the values without the seed)."""
        return combination_label(self.values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {
            "values": self.values,
            "trials": self.trials,
            "clean_acc": self.clean.to_dict(),
            "robust_acc": self.robust.to_dict(),
        }


def finished_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    def ok(v: Any) -> bool:
        return isinstance(v, int | float) and math.isfinite(v)

    return [
        r
        for r in rows
        if r.get("status") == "done" and ok(r.get("clean_acc")) and ok(r.get("robust_acc"))
    ]


def combination_label(values: Mapping[str, Any]) -> str:
    """``key=value, ...`` of a trial's values without ``seed``: its combination's name."""
    shown = {k: v for k, v in values.items() if k != SEED_KEY}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "(base config)"


def combination_key(values: Mapping[str, Any]) -> str:
    """A hashable, order-independent key of a trial's values (pass them without ``seed``
    to name its combination)."""
    return json.dumps(dict(values), sort_keys=True, default=str)


def _paired(a: Combination, b: Combination) -> tuple[list[str], list[float], list[float]]:
    """The seeds both combinations have, and their robust accuracies on those seeds."""
    seeds = [s for s in a.robust_by_seed if s in b.robust_by_seed]
    return seeds, [a.robust_by_seed[s] for s in seeds], [b.robust_by_seed[s] for s in seeds]


def combinations(rows: Sequence[Mapping[str, Any]]) -> list[Combination]:
    """Finished trials grouped by their values without ``seed``; a repeated seed within a
    group counts once (the first trial). Most robust first (mean robust accuracy, then mean
    clean accuracy)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in finished_rows(rows):
        values = {k: v for k, v in row["values"].items() if k != SEED_KEY}
        key = combination_key(values)
        seed = json.dumps(row["values"].get(SEED_KEY), default=str)
        group = groups.setdefault(key, [])
        if all(json.dumps(r["values"].get(SEED_KEY), default=str) != seed for r in group):
            group.append(row)
    out = []
    for group in groups.values():
        values = {k: v for k, v in group[0]["values"].items() if k != SEED_KEY}
        out.append(
            Combination(
                values=values,
                trials=[r["trial"] for r in group],
                clean=seed_summary([r["clean_acc"] for r in group]),
                robust=seed_summary([r["robust_acc"] for r in group]),
                robust_by_seed={
                    json.dumps(r["values"].get(SEED_KEY), default=str): r["robust_acc"]
                    for r in group
                },
            )
        )
    out.sort(key=lambda c: (-c.robust.mean, -c.clean.mean))
    return out


def combinations_csv(combos: Sequence[Combination]) -> str:
    """One line per combination: its values, seeds, means and 95% t-intervals."""
    rows = []
    for c in combos:
        row: dict[str, Any] = {**c.values, "n_seeds": c.clean.n_seeds}
        for name, stat in (("clean_acc", c.clean), ("robust_acc", c.robust)):
            lo, hi = (stat.ci95.lo, stat.ci95.hi) if stat.ci95 is not None else (None, None)
            row.update({name: stat.mean, f"{name}_lo": lo, f"{name}_hi": hi})
        row["trials"] = " ".join(c.trials)
        rows.append(row)
    return rows_csv([{"values": {}, **r} for r in rows])


@dataclass
class Comparison:
    """The most robust combination against the runner-up, paired by seed."""

    best: Combination
    runner_up: Combination | None
    seeds: list[str]
    difference: SeedStat | None
    verdict: str  # "conclusive" | "inconclusive" | "no runner-up"
    text: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {
            "best": self.best.to_dict(),
            "runner_up": None if self.runner_up is None else self.runner_up.to_dict(),
            "paired_seeds": self.seeds,
            "difference": None if self.difference is None else self.difference.to_dict(),
            "verdict": self.verdict,
            "text": self.text,
        }


def compare_best(combos: Sequence[Combination]) -> Comparison | None:
    """Is the most robust combination's lead over the runner-up larger than the noise over
    seeds? The paired difference ``robust(best, s) - robust(runner-up, s)`` over the seeds
    both have, with its 95% t-interval: ``inconclusive`` if the interval contains 0 (or
    there are fewer than two paired seeds), else ``conclusive``."""
    if not combos:
        return None
    best = combos[0]
    if len(combos) == 1:
        text = f"Only one combination finished ({best.label()}); nothing to compare."
        return Comparison(best, None, [], None, "no runner-up", text)
    second = combos[1]
    seeds, ours, theirs = _paired(best, second)
    diffs = [x - y for x, y in zip(ours, theirs, strict=True)]
    diff = seed_summary(diffs) if diffs else None
    lead = (
        f"Most robust: {best.label()} (robust accuracy {best.robust.format()}), runner-up: "
        f"{second.label()} ({second.robust.format()})."
    )
    if diff is None or diff.ci95 is None:
        text = (
            f"{lead} The lead cannot be judged: {len(seeds)} paired seed(s); add more seeds "
            "to the space (seed: [0, 1, 2]) for a t-interval: inconclusive."
        )
        return Comparison(best, second, seeds, diff, "inconclusive", text)
    lo, hi = diff.ci95.lo, diff.ci95.hi
    verdict = "inconclusive" if lo <= 0.0 <= hi else "conclusive"
    text = (
        f"{lead} Paired difference over {len(seeds)} seeds: {diff.format()} "
        f"(95% t-interval [{lo:.4f}, {hi:.4f}]): {verdict}"
        + (" (the interval contains 0)." if verdict == "inconclusive" else ".")
    )
    return Comparison(best, second, seeds, diff, verdict, text)


# --------------------------------------------------------------------------- layers


def structure_layers(
    base: Mapping[str, Any], space_keys: Sequence[str], trust_code: bool = False
) -> list[str]:
    """History names (``W1``, or a module path) of the regularised or structured layers:
    the swept ones first (space keys under ``regularizers.l1``/``nuclear``,
    ``structure.prune.density``, ``structure.factorize.rank``), then those the base
    regularises or structures. Empty when there are none."""
    keys: list[Any] = []
    for key in space_keys:
        found = layer_key(parse_path(key))
        if found is not None:
            keys.append(found)
    regs = base.get("regularizers") or {}
    for what in ("l1", "nuclear"):
        keys += list((regs.get(what) or {}).keys())
    structure = base.get("structure") or {}
    for section, field in (("prune", "density"), ("factorize", "rank")):
        values = (structure.get(section) or {}).get(field)
        keys += list(values.keys()) if isinstance(values, Mapping) else []
    names: list[str] = []
    for name in _history_names(base, keys, trust_code):
        if name not in names:
            names.append(name)
    return names


def _history_names(config: Mapping[str, Any], keys: list[Any], trust_code: bool) -> list[str]:
    """Resolve layer keys (index, alias, module path, glob) to history column names."""
    import torch

    from ..models import create_model, match_layers, named_weight_layers

    if not keys:
        return []
    model_cfg = config["model"]
    try:
        with torch.random.fork_rng(devices=[]):
            model = create_model(
                model_cfg["name"], trust_code=trust_code, **(model_cfg.get("options") or {})
            )
        ordered = any(isinstance(k, int) for k in keys)
        layers = named_weight_layers(model, require_order=ordered)
        return [layer.key for k in keys for layer in match_layers(layers, k)]
    except Exception:  # noqa: BLE001 - naming columns must not stop a sweep
        return [f"W{k}" if isinstance(k, int) else str(k) for k in keys]


def against_reference(
    combos: Sequence[Combination], reference: Mapping[str, Any]
) -> list[tuple[Combination, StatsComparison]]:
    """Every combination's robust accuracy against its reference, paired by seed.

    ``reference`` fixes some space keys (e.g. ``{"structure.prune.density.W1": 1.0}``): a
    combination's reference is the combination with the same values but those, so each
    group (say, with and without adversarial training) gets its own baseline. The
    difference ``robust(c, s) - robust(ref, s)`` over the seeds both have, with its 95%
    t-interval and verdict (:func:`robustrank.stats.seed_difference`, claimed direction
    "greater": ``supported`` = more robust, ``contradicted`` = less, ``inconclusive`` =
    inside the noise). Combinations without a finished reference are left out; a
    reference key that is no space key raises ValueError."""
    keys = {k for c in combos for k in c.values}
    unknown = sorted(set(reference) - keys)
    if combos and unknown:
        raise ValueError(f"reference names {unknown}, which are not swept ({sorted(keys)})")
    by_values = {combination_key(c.values): c for c in combos}
    out = []
    for c in combos:
        ref = by_values.get(combination_key({**c.values, **reference}))
        if ref is None or ref is c:
            continue
        _, a, b = _paired(c, ref)
        out.append((c, seed_difference(a, b, "greater", label=f"{c.label()} vs {ref.label()}")))
    return out
