"""Strong evaluation of every reproduced model: AutoAttack, robustness curves, diagnostics.

After training, each run's final checkpoint is evaluated at the profile's eps (the paper's
0.05) on a fixed seeded test subset:

* the paper's PGD-20 and AutoAttack (Croce & Hein, 2020) on the same inputs, so the
  tables can show both robust accuracies side by side;
* a robustness curve (FAB's minimal perturbations, one run), with PGD-20's and
  AutoAttack's successes at eps folded in (per-example worst case);
* the gradient-masking diagnostics of :mod:`robustrank.diagnostics`.

Results are cached per run in its run directory (``OUT/runs/<run>/evaluation.json``, written
by :func:`robustrank.execution.run_task`), keyed by the settings and the checkpoint's
SHA-256, so a repeated reproduce only evaluates what changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._io import atomic_write_text
from .._types import PositiveInt
from ..training import TrainConfig

__all__ = ["EvaluationSpec", "evaluate_run", "cached_evaluation"]

Budget = Annotated[float, Field(gt=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CurveSpec(_Strict):
    """The robustness curve: a minimal-perturbation attack over an eps grid."""

    attack: str = "fab"
    eps: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default=[0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3], min_length=2
    )
    options: dict[str, Any] = Field(default_factory=dict, description="options of the attack")


class DiagnosticsSpec(_Strict):
    """Settings of :func:`robustrank.diagnostics.diagnose` (its ``n`` test inputs)."""

    n: PositiveInt = 200
    steps: PositiveInt = 100
    n_queries: PositiveInt = 1000
    large_eps: Budget = 0.5


class EvaluationSpec(_Strict):
    """The ``evaluation:`` entry of a reproduce profile."""

    eps: Budget = 0.05
    n: PositiveInt = Field(1000, description="test inputs for PGD-20, the attack and the curve")
    seed: int = Field(1, description="seed of the test subset")
    attack: str = Field("autoattack", description="the strong attack, by registered name")
    options: dict[str, Any] = Field(default_factory=dict, description="options of the attack")
    curve: CurveSpec | None = Field(default_factory=CurveSpec)
    diagnostics: DiagnosticsSpec | None = Field(default_factory=DiagnosticsSpec)

    @field_validator("attack")
    @classmethod
    def _known_attack(cls, name: str) -> str:
        from ..attacks import get_attack

        return get_attack(name).name  # raises naming the registered attacks


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_key(spec: EvaluationSpec, checkpoint: Path) -> str:
    return json.dumps({"spec": spec.model_dump(), "checkpoint": _sha256(checkpoint)})


def evaluate_run(config: TrainConfig, checkpoint: Path, spec: EvaluationSpec) -> dict[str, Any]:
    """PGD-20 and the strong attack at eps, the curve and the diagnostics of one checkpoint.

    Keys: ``"pgd"`` and ``spec.attack`` (each an ``EvalResult.to_dict()``), ``"curve"`` and
    ``"diagnostics"`` when the spec asks for them.
    """
    from ..attacks import create_attack
    from ..curves import robustness_curve
    from ..data import eval_subset, load_dataset
    from ..diagnostics import diagnose
    from ..evaluation import evaluate
    from ..models import load_checkpoint

    model, _ = load_checkpoint(checkpoint, config.device)
    x_all, y_all = load_dataset(config.dataset, "test")
    x, y = eval_subset(x_all, y_all, spec.n, seed=spec.seed)
    x, y = x.to(config.device), y.to(config.device)
    out: dict[str, Any] = {}
    pgd = evaluate(model, create_attack("pgd", model, spec.eps, seed=0), x, y, early_stop=True)
    strong = create_attack(spec.attack, model, spec.eps, **spec.options)
    auto = evaluate(model, strong, x, y, early_stop=True, checks=False)
    out["pgd"], out[spec.attack] = pgd.to_dict(), auto.to_dict()
    if spec.curve is not None:
        t0 = time.perf_counter()
        curve = robustness_curve(
            model, x, y, spec.curve.eps, spec.curve.attack, checks=False, **spec.curve.options
        )
        curve.seconds = time.perf_counter() - t0
        curve.fold("pgd", spec.eps, pgd.fooled)
        curve.fold(spec.attack, spec.eps, auto.fooled)
        out["curve"] = curve.to_dict()
    if spec.diagnostics is not None:
        d = spec.diagnostics
        xd, yd = x[: d.n], y[: d.n]
        report = diagnose(
            model, xd, yd, spec.eps, steps=d.steps, n_queries=d.n_queries, large_eps=d.large_eps
        )
        out["diagnostics"] = report.to_dict()
    return out


def cached_evaluation(
    config: TrainConfig, checkpoint: Path, spec: EvaluationSpec, cache: Path
) -> dict[str, Any]:
    """:func:`evaluate_run`, cached in ``cache`` under the spec and the checkpoint's SHA-256
    (written atomically, with its time in ``"seconds"``)."""
    key = _cache_key(spec, checkpoint)
    if cache.exists():
        saved = json.loads(cache.read_text("utf-8"))
        if saved.get("key") == key:
            return saved["result"]
    t0 = time.perf_counter()
    result = evaluate_run(config, checkpoint, spec)
    result["seconds"] = time.perf_counter() - t0
    atomic_write_text(cache, json.dumps({"key": key, "result": result}, indent=2) + "\n")
    return result
