"""Run summaries and the paper's Tables 1 and 2 (Section 5).

Everything here is derived from the runs' configs and last history rows: which attacks'
fooling ratios a table shows (``history.attacks``), and what kind of run a preset is
(natural, adversarial or regularised training).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..training import TrainConfig

__all__ = ["RunKind", "RunSummary", "run_kind", "table_attacks"]


class RunKind(StrEnum):
    """How a run was trained (Section 5)."""

    natural = "natural"  # from scratch, no regulariser, no adversarial examples
    adversarial = "adversarial"  # adversarial training (any attack)
    regularised = "regularised"  # l1 / nuclear / joint penalty (Eqs. 5-8), no adversary
    other = "other"  # e.g. plain fine-tuning of a checkpoint


def run_kind(config: TrainConfig) -> RunKind:
    """The kind of a run, read from its config (not from its preset name)."""
    if config.adversarial.attack != "none":
        return RunKind.adversarial
    if config.regularizers.active:
        return RunKind.regularised
    if config.init.from_preset is None and config.init.checkpoint is None:
        return RunKind.natural
    return RunKind.other


@dataclass
class RunSummary:
    """Final numbers of one run (the last history row) plus what defines the run.

    ``kind`` and ``parent`` (the preset it was fine-tuned from) and the non-zero lambdas
    ``l1``, ``nuclear`` and ``joint`` come from the config; the claims use them to pick
    the natural reference of each run and the regulariser ablations (Section 5).
    ``strong`` holds the strong evaluation at eps (:mod:`.robust_eval`): ``ra_pgd``,
    ``ra_autoattack`` and ``fr_autoattack`` on the same inputs; ``diagnostic_warnings``
    the names of the failed gradient-masking checks (None when not diagnosed).
    """

    preset: str
    family: str
    method: str
    paper_row: str | None
    paper_accuracy: float | None
    test_acc: float | None
    fooling: dict[str, float]
    eff_rank: dict[str, float]
    eff_sparsity: dict[str, float]
    epochs: int
    wall_time: float | None
    kind: RunKind = RunKind.other
    parent: str | None = None
    l1: dict[str, float] = field(default_factory=dict)
    nuclear: dict[str, float] = field(default_factory=dict)
    joint: float = 0.0
    strong: dict[str, float] = field(default_factory=dict)
    diagnostic_warnings: list[str] | None = None


def _family(config: TrainConfig) -> str:
    """The model family of a run (``fcnn`` or ``cnn`` for the paper's models)."""
    return config.model.name


def _method(config: TrainConfig) -> str:
    """The paper's row label, or one in the same notation built from the config."""
    if config.paper is not None:
        return config.paper.row
    reg = config.regularizers
    parts = [f"lambda_joint = {reg.joint:g}"] if reg.joint else []
    parts += [f"lambda_{{1,{i}}} = {lam:g}" for i, lam in sorted(reg.l1.items())]
    parts += [f"lambda_{{*,{i}}} = {lam:g}" for i, lam in sorted(reg.nuclear.items())]
    if config.adversarial.attack != "none":
        parts.insert(0, f"{config.adversarial.attack.upper()} adv. train.")
    return ", ".join(parts) or config.name


def _nonzero(lambdas: dict[Any, float]) -> dict[str, float]:
    return {str(key): float(lam) for key, lam in lambdas.items() if lam}


def _prefixed(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}


def _strong(evaluation: dict[str, Any] | None) -> dict[str, float]:
    """``ra_pgd``, ``ra_autoattack``, ``fr_autoattack`` from a :mod:`.robust_eval` result."""
    if not evaluation:
        return {}
    pgd, aa = evaluation["pgd"], evaluation["autoattack"]
    return {
        "ra_pgd": pgd["robust_accuracy"],
        "ra_autoattack": aa["robust_accuracy"],
        "fr_autoattack": aa["fooling_ratio"],
    }


def _summarise(
    config: TrainConfig, history: list[dict[str, Any]], evaluation: dict[str, Any] | None = None
) -> RunSummary:
    """The summary of one run from its config, history (Section 5's final numbers) and
    strong evaluation (:mod:`.robust_eval`, optional)."""
    last = history[-1] if history else {}
    diag = (evaluation or {}).get("diagnostics")
    return RunSummary(
        preset=config.name,
        family=_family(config),
        method=_method(config),
        paper_row=config.paper.row if config.paper else None,
        paper_accuracy=config.paper.accuracy if config.paper else None,
        test_acc=last.get("test_acc"),
        fooling={a: last[f"fr_{a}"] for a in config.history.attacks if f"fr_{a}" in last},
        eff_rank=_prefixed(last, "eff_rank_"),
        eff_sparsity=_prefixed(last, "eff_sparsity_"),
        epochs=int(last.get("epoch", 0)),
        wall_time=last.get("wall_time"),
        kind=run_kind(config),
        parent=config.init.from_preset,
        l1=_nonzero(config.regularizers.l1),
        nuclear=_nonzero(config.regularizers.nuclear),
        joint=float(config.regularizers.joint),
        strong=_strong(evaluation),
        diagnostic_warnings=None if diag is None else list(diag["warnings"]),
    )


# --------------------------------------------------------------------------- tables


def table_attacks(configs: Iterable[TrainConfig]) -> list[str]:
    """The attacks whose fooling ratios the tables show: the union of the runs'
    ``history.attacks``, in first-seen order (the paper: FGSM, PGD, GNM)."""
    attacks: list[str] = []
    for config in configs:
        attacks += [a for a in config.history.attacks if a not in attacks]
    return attacks


def _paper_table(family: str) -> str:
    """Table 1 holds the FCNN (MNIST), Table 2 the CNN (Fashion-MNIST)."""
    return "table1" if family == "fcnn" else "table2"


def _table_row(s: RunSummary, attacks: list[str]) -> dict[str, Any]:
    difference = (
        s.test_acc - s.paper_accuracy
        if s.test_acc is not None and s.paper_accuracy is not None
        else None
    )
    row: dict[str, Any] = {
        "method": s.method,
        "preset": s.preset,
        "paper": s.paper_accuracy,
        "ours": s.test_acc,
        "difference": difference,
    }
    row.update({f"fr_{a}": s.fooling.get(a) for a in attacks})
    row.update(s.strong)
    return row


def _tables(runs: dict[str, RunSummary], attacks: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Tables 1 and 2: clean accuracy, paper vs ours, and one fooling ratio per attack."""
    tables: dict[str, list[dict[str, Any]]] = {"table1": [], "table2": []}
    for s in runs.values():
        tables[_paper_table(s.family)].append(_table_row(s, attacks))
    return tables


def _csv_text(rows: list[dict[str, Any]]) -> str:
    """CSV of ``rows``; the columns are the union of their keys in first-seen order."""
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
