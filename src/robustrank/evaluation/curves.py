"""Robustness curves: robust accuracy and fooling ratio against eps, for any attack.

Every curve is stored as each input's *breaking eps*: the smallest budget at which an
attack found an adversarial example for it (0 for inputs misclassified clean, ``inf`` when
none was found). Then, at any eps,

    robust_accuracy(eps) = mean_i [breaking_eps_i > eps]
    fooling_ratio(eps)   = #{correct i: breaking_eps_i <= eps} / #correct

Two ways to get it (Carlini et al. 2019 ask for curves, not one point):

* a minimal-perturbation attack (FAB untargeted, Croce & Hein 2020b) returns each input's
  smallest adversarial l_inf norm in one run, so the whole curve costs about one attack;
* any fixed-eps attack is run at every grid point, ascending, each time on the inputs still
  robust (an example that breaks at ``eps`` breaks every larger budget too).

``confirm="autoattack"`` then re-attacks, at the chosen budgets, the inputs the curve
still calls robust, and lowers their breaking eps where the ensemble breaks them: the
per-example worst case of both, and a count of what the curve alone missed.

:func:`save_curve` writes a curve as ``curve.json`` and its figure ``curve.png`` (the files
of ``robustrank curve``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._io import atomic_write_text
from ..attacks import Attack, check_model, create_attack, get_attack
from ..ownership import check_files, record_files
from .core import check_batch_size, check_data, evaluation_device, fooled_mask, predictions

__all__ = [
    "RobustnessCurve",
    "robustness_curve",
    "confirm_curve",
    "is_minimal_perturbation",
    "curve_paths",
    "save_curve",
]

CURVE_JSON = "curve.json"
CURVE_PNG = "curve.png"


@dataclass
class RobustnessCurve:
    """Robust accuracy and fooling ratio over ``eps`` from per-input breaking budgets.

    Attributes:
        eps: the grid, ascending.
        breaking_eps: ``(N,)`` float64, each input's smallest breaking budget found
            (0: misclassified clean; ``inf``: never broken).
        correct: ``(N,)`` bool, classified correctly on the clean input.
        attack: the attack that traced the curve; ``method`` is ``"minimal"`` (one run of
            a minimal-perturbation attack) or ``"sweep"`` (one run per eps).
        confirmations: per confirmed eps, the confirming attack, how many inputs the
            curve called robust there and how many of those it broke.
        seconds: wall time of the curve and of the confirmations.
    """

    eps: list[float]
    breaking_eps: Tensor
    correct: Tensor
    attack: str
    method: str
    confirmations: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.breaking_eps)

    @property
    def n_correct(self) -> int:
        return int(self.correct.sum())

    def robust_accuracy_at(self, eps: float) -> float:
        """Fraction of all inputs not broken within ``eps``."""
        return float((self.breaking_eps > eps).double().mean())

    def fooling_ratio_at(self, eps: float) -> float:
        """Among the correctly classified inputs, the fraction broken within ``eps``."""
        if not self.n_correct:
            return math.nan
        broken = (self.breaking_eps <= eps) & self.correct
        return int(broken.sum()) / self.n_correct

    @property
    def robust_accuracy(self) -> list[float]:
        return [self.robust_accuracy_at(e) for e in self.eps]

    @property
    def fooling_ratio(self) -> list[float]:
        return [self.fooling_ratio_at(e) for e in self.eps]

    def fold(self, attack: str, eps: float, fooled: Tensor, seconds: float = 0.0) -> dict:
        """Fold a fixed-eps attack's per-input ``fooled`` mask at ``eps`` into the curve
        (per-example worst case) and record the confirmation; returns the record."""
        fooled = fooled.cpu().bool()
        robust = self.breaking_eps > eps
        robust_before = int(robust.sum())
        newly = fooled & robust
        self.breaking_eps[newly] = float(eps)
        record = {
            "attack": attack,
            "eps": float(eps),
            "robust_before": robust_before,
            "broken": int(newly.sum()),
            "robust_accuracy_before": robust_before / self.n,
            "robust_accuracy": self.robust_accuracy_at(eps),
            "seconds": seconds,
        }
        self.confirmations.append(record)
        return record

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: the grid, both curves, the confirmations, summary statistics and
        each input's breaking budget (``breaking_eps``, None where never broken)."""
        finite = self.breaking_eps[torch.isfinite(self.breaking_eps) & self.correct]
        return {
            "attack": self.attack,
            "method": self.method,
            "n": self.n,
            "n_correct": self.n_correct,
            "eps": self.eps,
            "robust_accuracy": self.robust_accuracy,
            "fooling_ratio": [None if math.isnan(v) else v for v in self.fooling_ratio],
            "median_breaking_eps": float(finite.median()) if len(finite) else None,
            "breaking_eps": [
                float(e) if math.isfinite(e) else None for e in self.breaking_eps.tolist()
            ],
            "confirmations": self.confirmations,
            "seconds": self.seconds,
        }

    def format(self) -> str:
        """A plain-text table of robust accuracy and fooling ratio per eps, then one line
        per confirmation."""
        lines = [f"{'eps':>7} {'robust acc':>10} {'fooling':>8}"]
        for e, ra, fr in zip(self.eps, self.robust_accuracy, self.fooling_ratio, strict=True):
            lines.append(f"{e:>7g} {ra:>10.4f} {fr:>8.4f}")
        for c in self.confirmations:
            lines.append(
                f"confirmed at eps {c['eps']:g} by {c['attack']}: {c['broken']} more broken, "
                f"robust accuracy {c['robust_accuracy_before']:.4f} -> {c['robust_accuracy']:.4f}"
            )
        return "\n".join(lines)


def is_minimal_perturbation(attack: Attack | str) -> bool:
    """Whether an attack (object or registered name) returns per-input minimal norms
    through ``minimal_perturbation(x, y) -> (x_adv, norms)`` (e.g. ``"fab"``)."""
    cls = get_attack(attack).cls if isinstance(attack, str) else type(attack)
    return callable(getattr(cls, "minimal_perturbation", None))


def _check_grid(eps_grid: Sequence[float]) -> list[float]:
    grid = sorted({float(e) for e in eps_grid})
    if not grid:
        raise ValueError("eps_grid is empty; pass budgets, e.g. [0.0, 0.025, 0.05, 0.1]")
    if any(not math.isfinite(e) or e < 0 for e in grid):
        raise ValueError(f"eps_grid values must be finite and >= 0, got {list(eps_grid)}")
    return grid


def _minimal_breaking_eps(
    attack: Attack, x: Tensor, y: Tensor, correct: Tensor, batch_size: int, device: torch.device
) -> Tensor:
    """Per-input minimal adversarial norm from a minimal-perturbation attack."""
    out = torch.full((len(x),), math.inf, dtype=torch.float64)
    out[~correct.cpu()] = 0.0
    idx = torch.nonzero(correct.cpu(), as_tuple=True)[0]
    for s in range(0, len(idx), batch_size):
        rows = idx[s : s + batch_size]
        _, norms = attack.minimal_perturbation(x[rows].to(device), y[rows].to(device))
        out[rows] = norms.double().cpu()
    return out


def _fooled_at(
    breaking: Tensor,
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> Tensor:
    """Attack only the inputs still robust at ``attack.eps``; their fooled mask (CPU)."""
    return fooled_mask(
        model,
        attack,
        x,
        y,
        breaking > attack.eps,
        batch_size=batch_size,
        early_stop=True,
        device=device,
        progress=progress,
        desc=f"{attack.name} eps={attack.eps:g}",
    )


def robustness_curve(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps_grid: Sequence[float],
    attack: str = "fab",
    *,
    confirm: str | None = None,
    confirm_eps: Sequence[float] | None = None,
    max_eps: float | None = None,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    progress: bool = False,
    checks: bool = True,
    **attack_options: Any,
) -> RobustnessCurve:
    """Robust accuracy and fooling ratio of ``model`` over ``eps_grid`` (one call).

    Args:
        model: the evaluated model; x, y: inputs in [0, 1] and labels.
        eps_grid: budgets of the curve.
        attack: a registered attack. A minimal-perturbation attack (``"fab"``) runs once
            (its budget ``max_eps``, default the largest grid point, bounds only its
            random restarts); any other runs once per grid point on the inputs still robust.
        confirm: a registered fixed-eps attack (e.g. ``"autoattack"``) run at
            ``confirm_eps`` (default: every grid point) on the inputs the curve calls
            robust there; the curve becomes the per-example worst case of both.
        attack_options: options of ``attack`` (e.g. ``steps=100``, ``seed=0``).
    """
    check_data(x, y)
    batch_size = check_batch_size(batch_size)
    grid = _check_grid(eps_grid)
    dev = evaluation_device(model, device)
    if checks:
        check_model(model, x[:32].to(dev), y[:32].to(dev), stacklevel=3)
    correct = (predictions(model, x, batch_size, dev) == y.to(dev)).cpu()
    t0 = time.perf_counter()
    name = get_attack(attack).name
    if is_minimal_perturbation(name):
        budget = grid[-1] if max_eps is None else float(max_eps)
        atk = create_attack(name, model, max(budget, 1e-12), **attack_options)
        breaking = _minimal_breaking_eps(atk, x, y, correct, batch_size, dev)
        method = "minimal"
    else:
        breaking = torch.where(correct, math.inf, 0.0).double()
        for e in grid:
            atk = create_attack(name, model, e, **attack_options)
            fooled = _fooled_at(
                breaking, model, atk, x, y, batch_size=batch_size, device=dev, progress=progress
            )
            breaking[fooled] = e
        method = "sweep"
    curve = RobustnessCurve(grid, breaking, correct, name, method)
    if confirm is not None:
        for e in _check_grid(grid if confirm_eps is None else confirm_eps):
            confirm_curve(curve, model, x, y, confirm, e, batch_size=batch_size, device=dev)
    curve.seconds = time.perf_counter() - t0
    return curve


def confirm_curve(
    curve: RobustnessCurve,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: str,
    eps: float,
    *,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    progress: bool = False,
    **attack_options: Any,
) -> dict[str, Any]:
    """Run the fixed-eps ``attack`` at ``eps`` on the inputs ``curve`` calls robust there and
    fold its successes into the curve (per-example worst case). Returns the record added
    to ``curve.confirmations``."""
    dev = evaluation_device(model, device)
    atk = create_attack(attack, model, eps, **attack_options)
    t0 = time.perf_counter()
    fooled = _fooled_at(
        curve.breaking_eps, model, atk, x, y, batch_size=batch_size, device=dev, progress=progress
    )
    return curve.fold(atk.name, eps, fooled, time.perf_counter() - t0)


def curve_paths(out_dir: str | Path) -> list[Path]:
    """The files :func:`save_curve` writes in ``out_dir``: ``curve.json`` and ``curve.png``."""
    return [Path(out_dir) / CURVE_JSON, Path(out_dir) / CURVE_PNG]


def save_curve(
    curve: RobustnessCurve,
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    dataset: str | dict[str, str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``curve`` to ``out_dir`` as ``curve.json`` and its figure ``curve.png``.

    The JSON holds ``checkpoint`` and ``dataset`` (e.g. ``DatasetRef.plain()``), then
    :meth:`RobustnessCurve.to_dict`; the figure's line is labelled with the checkpoint's
    file stem (else the attack). Both files are written atomically and listed in the
    directory's ownership marker; existing ones are replaced only with ``overwrite`` and
    only when robustrank wrote them (:func:`robustrank.ownership.check_files`, checked for
    both before anything is written). Returns the two paths.
    """
    from ..plots import plot_robustness_curves

    paths = curve_paths(out_dir)
    check_files(paths, overwrite=overwrite)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    source = None if checkpoint is None else str(checkpoint)
    record = {"checkpoint": source, "dataset": dataset, **curve.to_dict()}
    atomic_write_text(paths[0], json.dumps(record, indent=2) + "\n")
    label = curve.attack if checkpoint is None else Path(checkpoint).stem
    plot_robustness_curves({label: curve}, paths[1])
    record_files(paths)
    return paths
