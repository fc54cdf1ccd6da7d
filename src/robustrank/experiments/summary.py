"""Run summaries and the paper's Tables 1 and 2 (Section 5), with intervals.

A :class:`RunSummary` holds one run's final numbers (one preset, one seed): the last history
row, and the final evaluation (:mod:`robustrank.evaluation.spec`) when it ran. A
:class:`PresetSummary` gathers the seeds of one preset; each of its metrics is a
:class:`Metric`: the mean over seeds with the 95% Student-t interval over seeds
(:func:`robustrank.stats.seed_summary`, N >= 2) and, for fooling ratios and robust
accuracies, the Wilson (1927) sampling interval over the evaluation inputs of every seed.

What a run is (natural, adversarial or regularised training) and which attacks' fooling
ratios the tables show (``history.attacks``) are read from the configs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from ..evaluation import certified_key, decode_mask, get_certifier
from ..stats import Interval, SeedStat, format_interval, seed_summary, wilson_interval
from ..training import TrainConfig

__all__ = [
    "RunKind",
    "RunSummary",
    "PresetSummary",
    "Metric",
    "Outcomes",
    "FOCUS_LAYERS",
    "run_kind",
    "table_attacks",
    "strong_attack_of",
    "strong_metrics",
    "table_metrics",
    "model_family",
    "method_label",
    "summarise_run",
    "build_tables",
    "certified_metrics",
]

# Layers the paper points at (Section 5): FCNN W1; CNN W1 and W2. The tables show their
# effective rank and sparsity, and the claims compare them.
FOCUS_LAYERS: dict[str, list[str]] = {"fcnn": ["W1"], "cnn": ["W1", "W2"]}


class RunKind(StrEnum):
    """How a run was trained (Section 5)."""

    natural = "natural"  # from scratch, no regulariser, no adversarial examples
    adversarial = "adversarial"  # adversarial training (any attack)
    regularised = "regularised"  # l1 / nuclear / joint penalty (Eqs. 5-8), no adversary
    structured = "structured"  # exact structure (structure: prune/factorize), no adversary
    certified = "certified"  # certified training (an objective on bounds: IBP, CROWN-IBP)
    other = "other"  # e.g. plain fine-tuning of a checkpoint


def run_kind(config: TrainConfig) -> RunKind:
    """The kind of a run, read from its config (not from its preset name)."""
    objective = config.adversarial.objective
    if objective is not None and objective.entry(objective.name).certified:
        return RunKind.certified
    if config.adversarial.attack != "none":
        return RunKind.adversarial
    if config.structure.active:
        return RunKind.structured
    if config.regularizers.active:
        return RunKind.regularised
    if config.init.from_preset is None and config.init.checkpoint is None:
        return RunKind.natural
    return RunKind.other


@dataclass
class Outcomes:
    """Per-example outcomes of one evaluation subset (:mod:`robustrank.evaluation.spec`):
    ``correct[i]`` (clean input ``i`` classified correctly) and ``fooled[attack][i]``; ``n``
    inputs drawn with ``seed``. The certified subset (:mod:`robustrank.evaluation.
    certified_runs`) has ``certified[key][i]`` instead, by ``certified_key(method, eps)``
    (method ``"best"``: certified by any method)."""

    n: int
    seed: int
    correct: np.ndarray
    fooled: dict[str, np.ndarray]
    certified: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcomes:
        """Decode the hex masks of an evaluation's ``outcomes`` entry."""
        n = int(data["n"])
        fooled = {a: decode_mask(m, n) for a, m in data["fooled"].items()}
        return cls(n, int(data["seed"]), decode_mask(data["correct"], n), fooled)

    def robust(self, attack: str) -> np.ndarray:
        """Correct and not fooled by ``attack``: the robust-accuracy outcome of each input."""
        return self.correct & ~self.fooled[attack]


@dataclass
class RunSummary:
    """Final numbers of one run (one preset, one seed) plus what defines the run.

    ``kind`` and ``parent`` (the preset it was fine-tuned from) and the non-zero lambdas
    ``l1``, ``nuclear`` and ``joint`` come from the config; the claims use them to pick
    the natural reference of each run and the regulariser ablations (Section 5).
    ``fooling`` holds the fooling ratio of every table attack: from the final evaluation
    of the paper's attacks when it ran, else from the last history row. ``strong`` holds the
    strong evaluation at eps (:mod:`robustrank.evaluation.spec`) of ``strong_attack`` (a
    registered name, e.g. ``autoattack``): ``ra_pgd``, ``ra_<attack>`` and ``fr_<attack>``.
    ``counts`` gives ``[successes, trials]`` behind each ratio (``fr_<attack>``,
    ``ra_pgd``, ...) for its Wilson interval; ``outcomes`` the
    per-example outcomes by subset (``"paper"``, ``"strong"``). ``seed`` is the config's
    seed, ``seed_index`` its ``k`` in ``runs/<preset>/seed-<k>``.
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
    certified: dict[str, float] = field(default_factory=dict)
    diagnostic_warnings: list[str] | None = None
    seed: int = 0
    seed_index: int = 0
    counts: dict[str, list[int]] = field(default_factory=dict)
    outcomes: dict[str, Outcomes] = field(default_factory=dict)
    strong_attack: str | None = None

    def value(self, key: str) -> float | None:
        """The metric ``key``: ``test_acc``, ``fr_<attack>``, ``ra_pgd``, ``ra_<strong
        attack>``, ``fr_<strong attack>``, ``ca_<method>@<eps>`` (certified accuracy),
        ``eff_rank_<layer>`` or ``eff_sparsity_<layer>``."""
        if key == "test_acc":
            return self.test_acc
        if key in self.strong:
            return self.strong[key]
        if key in self.certified:
            return self.certified[key]
        for prefix, values in (
            ("fr_", self.fooling),
            ("eff_rank_", self.eff_rank),
            ("eff_sparsity_", self.eff_sparsity),
        ):
            if key.startswith(prefix) and key[len(prefix) :] in values:
                return values[key[len(prefix) :]]
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (the outcome masks stay in the run's ``evaluation.json``)."""
        d = asdict(replace(self, outcomes={}))
        del d["outcomes"]
        return d


@dataclass(frozen=True)
class Metric:
    """One metric of a preset over its seeds: ``stat`` (mean, t-interval over seeds for
    N >= 2, per-seed values) and, for ratios, ``wilson`` (each seed's Wilson interval over
    its evaluation inputs) and ``pooled`` (the Wilson interval of the counts pooled over
    seeds: the sampling noise of the mean alone)."""

    stat: SeedStat
    wilson: tuple[Interval, ...] | None = None
    pooled: Interval | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"mean", "ci95", "n_seeds", "per_seed"}`` plus ``"wilson95"`` (per seed) and
        ``"wilson95_pooled"`` for ratios."""
        d = self.stat.to_dict()
        if self.wilson is not None:
            d["wilson95"] = [w.to_list() for w in self.wilson]
            d["wilson95_pooled"] = None if self.pooled is None else self.pooled.to_list()
        return d

    def format(self, digits: int = 3) -> str:
        """``"0.934 ± 0.012 [±0.005]"``: mean ± t half-width over seeds (absent for one
        seed), then the pooled Wilson half-width in brackets (ratios only)."""
        text = format_interval(self.stat.mean, self.stat.ci95, digits)
        if self.pooled is not None:
            h = max(self.pooled.hi - self.stat.mean, self.stat.mean - self.pooled.lo, 0.0)
            text += f" [±{h:.{digits}f}]"
        return text


def _metric(runs: list[RunSummary], key: str) -> Metric | None:
    """``key`` over the seeds of ``runs``; None when a seed lacks it or it is NaN there."""
    values = [r.value(key) for r in runs]
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None
    stat = seed_summary([float(v) for v in values])  # type: ignore[arg-type]
    counts = [r.counts.get(key) for r in runs]
    if any(c is None for c in counts):
        return Metric(stat)
    wilson = tuple(wilson_interval(k, n) for k, n in counts)  # type: ignore[misc]
    pooled = wilson_interval(sum(c[0] for c in counts), sum(c[1] for c in counts))  # type: ignore[index]
    return Metric(stat, wilson, pooled)


@dataclass
class PresetSummary:
    """The seeds of one preset (``runs``, by seed index) and what defines the preset."""

    preset: str
    family: str
    method: str
    paper_row: str | None
    paper_accuracy: float | None
    kind: RunKind
    parent: str | None
    l1: dict[str, float]
    nuclear: dict[str, float]
    joint: float
    runs: list[RunSummary]

    @classmethod
    def from_runs(cls, runs: list[RunSummary]) -> PresetSummary:
        """Gather the seeds of one preset (sorted by seed index)."""
        if not runs or len({r.preset for r in runs}) != 1:
            raise ValueError("a PresetSummary needs the runs of exactly one preset")
        runs = sorted(runs, key=lambda r: r.seed_index)
        r = runs[0]
        return cls(
            r.preset, r.family, r.method, r.paper_row, r.paper_accuracy, r.kind, r.parent,
            dict(r.l1), dict(r.nuclear), r.joint, runs,
        )  # fmt: skip

    @property
    def strong_attack(self) -> str | None:
        """The strong attack of the seeds' final evaluation (None when none ran)."""
        return next((r.strong_attack for r in self.runs if r.strong_attack), None)

    @property
    def n_seeds(self) -> int:
        """How many seeds were summarised."""
        return len(self.runs)

    def metric(self, key: str) -> Metric | None:
        """The metric ``key`` (see :meth:`RunSummary.value`) over the seeds, or None."""
        return _metric(self.runs, key)

    def metric_keys(self) -> list[str]:
        """Every metric the seeds share: accuracy, fooling ratios, the strong evaluation,
        effective rank and sparsity of every layer."""
        first = self.runs[0]
        keys = ["test_acc"] + [f"fr_{a}" for a in first.fooling] + list(first.strong)
        keys += list(first.certified)
        keys += [f"eff_rank_{k}" for k in first.eff_rank]
        keys += [f"eff_sparsity_{k}" for k in first.eff_sparsity]
        return keys

    def metrics(self) -> dict[str, Metric]:
        """Every available metric (:meth:`metric_keys`) by key."""
        out = {k: self.metric(k) for k in self.metric_keys()}
        return {k: m for k, m in out.items() if m is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the preset's definition, ``n_seeds``, ``seeds`` (config seeds),
        ``metrics`` (:meth:`Metric.to_dict` by key) and ``per_seed`` run summaries."""
        return {
            "preset": self.preset,
            "family": self.family,
            "method": self.method,
            "paper_row": self.paper_row,
            "paper_accuracy": self.paper_accuracy,
            "kind": str(self.kind),
            "parent": self.parent,
            "l1": self.l1,
            "nuclear": self.nuclear,
            "joint": self.joint,
            "n_seeds": self.n_seeds,
            "seeds": [r.seed for r in self.runs],
            "metrics": {k: m.to_dict() for k, m in self.metrics().items()},
            "per_seed": [r.to_dict() for r in self.runs],
        }


def model_family(config: TrainConfig) -> str:
    """The model family of a run (``fcnn`` or ``cnn`` for the paper's models)."""
    return config.model.name


def method_label(config: TrainConfig) -> str:
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


def _strong(
    evaluation: dict[str, Any], attack: str | None
) -> tuple[dict[str, float], dict[str, list[int]]]:
    """``ra_pgd``, ``ra_<attack>``, ``fr_<attack>`` from a :mod:`robustrank.evaluation.spec`
    result of the strong attack ``attack``, and the counts behind them."""
    if attack is None or "pgd" not in evaluation or attack not in evaluation:
        return {}, {}
    pgd, strong = evaluation["pgd"], evaluation[attack]
    values = {
        "ra_pgd": pgd["robust_accuracy"],
        f"ra_{attack}": strong["robust_accuracy"],
        f"fr_{attack}": strong["fooling_ratio"],
    }
    counts = {
        "ra_pgd": [pgd["n_robust"], pgd["n"]],
        f"ra_{attack}": [strong["n_robust"], strong["n"]],
        f"fr_{attack}": [strong["n_fooled"], strong["n_correct"]],
    }
    return values, counts


def _fooling(
    config: TrainConfig, last: dict[str, Any], evaluation: dict[str, Any]
) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Fooling ratio of every history attack: the final evaluation of the paper's attacks
    (with its counts) when it ran, else the last history row (no counts)."""
    paper = evaluation.get("paper_attacks")
    if paper:
        fooling = {a: r["fooling_ratio"] for a, r in paper.items()}
        return fooling, {f"fr_{a}": [r["n_fooled"], r["n_correct"]] for a, r in paper.items()}
    return {a: last[f"fr_{a}"] for a in config.history.attacks if f"fr_{a}" in last}, {}


def _curve_at(curve: dict[str, Any] | None, eps_list: list[float]) -> tuple[dict, dict]:
    """The robustness curve's robust accuracy ``ra_curve@<eps>`` (an attack's upper bound)
    at each certified eps on its grid, with its counts."""
    if not curve or "breaking_eps" not in curve:
        return {}, {}
    breaking = np.array([np.inf if b is None else b for b in curve["breaking_eps"]])
    values, counts = {}, {}
    for eps in eps_list:
        if eps in curve["eps"]:
            robust = int((breaking > eps).sum())
            values[f"ra_curve@{eps:g}"] = robust / len(breaking)
            counts[f"ra_curve@{eps:g}"] = [robust, len(breaking)]
    return values, counts


def _certified(
    certification: dict[str, Any] | None, curve: dict[str, Any] | None = None
) -> tuple[dict[str, float], dict[str, list[int]], Outcomes | None, list[str]]:
    """Certified accuracy ``ca_<method>@<eps>`` of every certifier and eps of a run's
    certification (:mod:`robustrank.evaluation.certified_runs`), with ``ca_best@<eps>``
    (certified by any method: every certifier is sound) and the attacked upper bound of
    the robustness ``curve`` at the same eps (``ra_curve@<eps>``, :func:`_curve_at`), the
    counts behind them, the per-example masks as the ``"certified"`` outcomes, and one
    warning per conflict with the run's attacks."""
    if not certification:
        return {}, {}, None, []
    n = len(certification["positions"])
    correct = decode_mask(certification["correct"], n)
    masks: dict[str, np.ndarray] = {}
    for row in certification["results"]:
        masks[certified_key(row["method"], row["eps"])] = decode_mask(row["certified"], n)
    if len(certification["methods"]) > 1:
        for eps in certification["eps"]:
            rows = [masks[certified_key(m, eps)] for m in certification["methods"]]
            masks[certified_key("best", eps)] = np.logical_or.reduce(rows)
    values = {f"ca_{k}": float(m.mean()) for k, m in masks.items()}
    counts = {f"ca_{k}": [int(m.sum()), n] for k, m in masks.items()}
    upper, upper_counts = _curve_at(curve, list(certification["eps"]))
    values, counts = {**values, **upper}, {**counts, **upper_counts}
    outcomes = Outcomes(n, int(certification["seed"]), correct, {}, masks)
    warnings = [
        f"certified-but-broken: {c['method']} at eps {c['eps']:g} certified "
        f"{len(c['inputs'])} input(s) that {c['source']} broke; a certifier or an attack is "
        "wrong (please report it)"
        for c in certification.get("conflicts", [])
    ]
    return values, counts, outcomes, warnings


def summarise_run(
    config: TrainConfig,
    history: list[dict[str, Any]],
    evaluation: dict[str, Any] | None = None,
    seed_index: int = 0,
    strong_attack: str | None = None,
) -> RunSummary:
    """The summary of one run from its config, history (Section 5's final numbers) and
    final evaluation (:mod:`robustrank.evaluation.spec`, optional; ``strong_attack`` names its
    strong attack, ``EvaluationSpec.attack``)."""
    last = history[-1] if history else {}
    evaluation = evaluation or {}
    diag = evaluation.get("diagnostics")
    fooling, counts = _fooling(config, last, evaluation)
    strong, strong_counts = _strong(evaluation, strong_attack)
    outcomes = {k: Outcomes.from_json(v) for k, v in evaluation.get("outcomes", {}).items()}
    certified, cert_counts, cert_outcomes, conflicts = _certified(
        evaluation.get("certification"), evaluation.get("curve")
    )
    if cert_outcomes is not None:
        outcomes["certified"] = cert_outcomes
    warnings = None if diag is None else list(diag["warnings"])
    if conflicts:
        warnings = (warnings or []) + conflicts
    return RunSummary(
        preset=config.name,
        family=model_family(config),
        method=method_label(config),
        paper_row=config.paper.row if config.paper else None,
        paper_accuracy=config.paper.accuracy if config.paper else None,
        test_acc=last.get("test_acc"),
        fooling=fooling,
        eff_rank=_prefixed(last, "eff_rank_"),
        eff_sparsity=_prefixed(last, "eff_sparsity_"),
        epochs=int(last.get("epoch", 0)),
        wall_time=last.get("wall_time"),
        kind=run_kind(config),
        parent=config.init.from_preset,
        l1=_nonzero(config.regularizers.l1),
        nuclear=_nonzero(config.regularizers.nuclear),
        joint=float(config.regularizers.joint),
        strong=strong,
        certified=certified,
        diagnostic_warnings=warnings,
        seed=config.seed,
        seed_index=seed_index,
        counts={**counts, **strong_counts, **cert_counts},
        outcomes=outcomes,
        strong_attack=strong_attack if strong else None,
    )


# --------------------------------------------------------------------------- tables


def table_attacks(configs: Iterable[TrainConfig]) -> list[str]:
    """The attacks whose fooling ratios the tables show: the union of the runs'
    ``history.attacks``, in first-seen order (the paper: FGSM, PGD, GNM)."""
    attacks: list[str] = []
    for config in configs:
        attacks += [a for a in config.history.attacks if a not in attacks]
    return attacks


def strong_metrics(attack: str) -> list[tuple[str, str]]:
    """The strong evaluation's metrics (:mod:`robustrank.evaluation.spec`), ``(key, label)``:
    PGD-20's robust accuracy and the strong attack's robust accuracy and fooling ratio,
    labelled with the attack's registered title."""
    from ..attacks import get_attack

    title = get_attack(attack).title
    return [
        ("ra_pgd", "RA PGD-20"),
        (f"ra_{attack}", f"RA {title}"),
        (f"fr_{attack}", f"FR {title}"),
    ]


def strong_attack_of(presets: Iterable[PresetSummary]) -> str | None:
    """The strong attack of the first preset evaluated by one, or None."""
    return next((p.strong_attack for p in presets if p.strong_attack), None)


def table_metrics(
    family: str, attacks: list[str], strong_attack: str | None = None
) -> list[tuple[str, str]]:
    """The metric columns of a table, ``(key, label)``: clean accuracy, the fooling ratio
    of every attack, the strong evaluation of ``strong_attack`` (when given), and the focus
    layers' effective rank and sparsity (the structure the claims compare)."""
    cols = [("test_acc", "our acc.")] + [(f"fr_{a}", f"FR {a.upper()}") for a in attacks]
    if strong_attack is not None:
        cols += strong_metrics(strong_attack)
    for layer in FOCUS_LAYERS.get(family, []):
        cols += [(f"eff_rank_{layer}", f"eff. rank {layer}")]
        cols += [(f"eff_sparsity_{layer}", f"eff. sparsity {layer}")]
    return cols


def _paper_table(family: str) -> str:
    """Table 1 holds the FCNN (MNIST), Table 2 the CNN (Fashion-MNIST)."""
    return "table1" if family == "fcnn" else "table2"


def _metric_columns(key: str, m: Metric | None, ratio: bool) -> dict[str, Any]:
    """``key`` (formatted ``mean ± half-width``), ``key_mean``, ``key_ci_lo``, ``key_ci_hi``
    and, for ratios, ``key_wilson_lo``, ``key_wilson_hi`` (pooled over seeds)."""
    ci = None if m is None else m.stat.ci95
    cols: dict[str, Any] = {
        key: None if m is None else m.format(),
        f"{key}_mean": None if m is None else m.stat.mean,
        f"{key}_ci_lo": None if ci is None else ci.lo,
        f"{key}_ci_hi": None if ci is None else ci.hi,
    }
    if ratio:
        pooled = None if m is None else m.pooled
        cols[f"{key}_wilson_lo"] = None if pooled is None else pooled.lo
        cols[f"{key}_wilson_hi"] = None if pooled is None else pooled.hi
    return cols


def _table_row(p: PresetSummary, attacks: list[str]) -> dict[str, Any]:
    """One table row: the preset, the paper's accuracy, our accuracy's difference from it,
    and every metric of :func:`table_metrics` as :func:`_metric_columns`."""
    row: dict[str, Any] = {
        "method": p.method,
        "preset": p.preset,
        "n_seeds": p.n_seeds,
        "paper": p.paper_accuracy,
    }
    acc = p.metric("test_acc")
    row["difference"] = (
        acc.stat.mean - p.paper_accuracy
        if acc is not None and p.paper_accuracy is not None
        else None
    )
    for key, _ in table_metrics(p.family, attacks, p.strong_attack):
        ratio = key.startswith(("fr_", "ra_"))
        row.update(_metric_columns(key, p.metric(key), ratio))
    return row


def certified_metrics(preset: PresetSummary) -> list[tuple[str, str]]:
    """The certified-accuracy columns of ``preset``, ``(key, label)``: eps by eps, every
    certifier, ``best`` (certified by any of them) and the robustness curve's robust
    accuracy there (an upper bound, when the eps is on the curve's grid); [] without a
    certification."""
    out = []
    for key in preset.runs[0].certified:
        kind, rest = key.split("_", 1)
        method, eps = rest.split("@")
        if kind == "ra":  # the robustness curve's robust accuracy at the same eps
            out.append((key, f"RA curve eps {eps}"))
            continue
        title = "best" if method == "best" else get_certifier(method).name.upper()
        out.append((key, f"CA {title} eps {eps}"))
    return sorted(out, key=lambda kl: float(kl[0].split("@")[1]))  # stable: methods in order


def _certified_row(p: PresetSummary) -> dict[str, Any]:
    """One row of the certified table: the preset, its strong attack's robust accuracy (the
    upper bound at the evaluation's eps) and every certified accuracy (the lower bounds)."""
    row: dict[str, Any] = {"family": p.family, "preset": p.preset, "n_seeds": p.n_seeds}
    strong = p.strong_attack
    if strong is not None:
        row.update(_metric_columns(f"ra_{strong}", p.metric(f"ra_{strong}"), True))
    for key, _ in certified_metrics(p):
        row.update(_metric_columns(key, p.metric(key), True))
    return row


def build_tables(
    presets: dict[str, PresetSummary], attacks: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Tables 1 and 2: every metric of :func:`table_metrics` with its intervals; and the
    ``certified`` table (:func:`certified_metrics`) of the presets that were certified."""
    tables: dict[str, list[dict[str, Any]]] = {"table1": [], "table2": [], "certified": []}
    for p in presets.values():
        tables[_paper_table(p.family)].append(_table_row(p, attacks))
        if p.runs[0].certified:
            tables["certified"].append(_certified_row(p))
    return tables
