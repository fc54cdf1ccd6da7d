"""Robustness evaluation: accuracy, fooling ratio (Section 5), robust accuracy, eps sweeps.

The fooling ratio (Section 5) is the fraction of the correctly classified inputs whose
predicted class changes under the attack; only correctly classified inputs are attacked
(as in the authors' code). The robust accuracy is the fraction of *all* inputs that are
still classified correctly after the attack (misclassified clean inputs count as wrong).
Both come from the same counts::

    fooling_ratio   = n_fooled / n_correct
    robust_accuracy = (n_correct - n_fooled) / n

With ``early_stop=True`` (AutoAttack style) an input stops being attacked as soon as an
iterate fools the model, and counts as fooled if any iterate fooled it: never weaker than
the plain attack, and much cheaper (see :meth:`robustrank.attacks.Attack.run`).

Everything runs in eval mode (the model's own per-module flags are restored afterwards),
in batches, on ``device`` (default: the device of the model's parameters).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .attacks import Attack, builtin_attacks, check_model, create_attack, eval_mode, get_attack
from .data import check_labels
from .models import atomic_write_bytes, output_classes
from .ownership import check_files, record_files

__all__ = [
    "AttackName",
    "PAPER_DEFAULTS",
    "make_attack",
    "accuracy",
    "fooling_ratio",
    "robust_accuracy",
    "evaluate",
    "eps_sweep",
    "EvalResult",
    "format_results",
    "save_results",
]


def _builtin_enum() -> type[StrEnum]:
    """``AttackName``: one member per built-in registry entry (``PGD = "pgd"``)."""
    members = {name.upper().replace("-", "_").replace(".", "_"): name for name in builtin_attacks()}
    enum = StrEnum("AttackName", members, module=__name__, qualname="AttackName")
    enum.__doc__ = (
        "The paper's attacks (all l_inf), derived from the registry's built-in entries. Kept "
        "for compatibility: every function taking an attack name takes any registered name "
        "(see :func:`robustrank.attacks.list_attacks`)."
    )
    return enum


#: The built-in attack names as a ``StrEnum`` (``AttackName.PGD == "pgd"``), derived from
#: :func:`robustrank.attacks.builtin_attacks`.
AttackName = _builtin_enum()

#: The paper's settings (Section 5), i.e. the built-in registry defaults: PGD T = 20,
#: alpha = 0.005 (random start, Madry); GNM T = 5. The paper's eps is 0.05 for all attacks.
#: A copy: change an attack's defaults with ``register_attack(..., overwrite=True)``.
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    AttackName(name): dict(spec.defaults) for name, spec in builtin_attacks().items()
}


def _attack_name(name: str) -> str:
    """The registered (normalised) name; ``ValueError`` listing the names if unknown."""
    return get_attack(name).name


def make_attack(name: str, model: nn.Module, eps: float, **kw: Any) -> Attack:
    """Build a registered attack by name: an alias of :func:`robustrank.attacks.create_attack`.

    Kept for compatibility. Registry defaults (for the built-ins the paper's, Section 5:
    ``"fgsm"``; ``"pgd"`` with ``steps=20, alpha=0.005, random_start=True``; ``"gnm"`` with
    ``steps=5``) are overridden by the keyword arguments; ``None`` values are ignored (so a
    CLI can pass unset options through). Any name registered with
    :func:`robustrank.attacks.register_attack` works.

    Example::

        >>> attack = make_attack("pgd", model, eps=0.05, seed=0)
    """
    return create_attack(name, model, eps, **kw)


# --------------------------------------------------------------------------- helpers


def _check_data(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be torch tensors")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}"
        )
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set: x has no examples")


def _check_labels(model: nn.Module, x: Tensor, y: Tensor, device: torch.device) -> None:
    """Every label must be a class the model predicts (its output width on one input), so
    an out-of-range label is an error instead of a silent misclassification."""
    num_classes = output_classes(model, x[:1].to(device))
    if num_classes is not None:
        check_labels(y, num_classes, "labels y")


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The evaluation device; an explicit ``device`` moves the model there."""
    if device is not None:
        device = torch.device(device)
        model.to(device)
        return device
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _predictions(model: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Predicted classes (on ``device``), in eval mode, batched."""
    out = []
    with eval_mode(model), torch.inference_mode():
        for s in range(0, len(x), batch_size):
            out.append(model(x[s : s + batch_size].to(device)).argmax(1))
    return torch.cat(out)


def _fooled_mask(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    *,
    batch_size: int,
    early_stop: bool,
    device: torch.device,
    progress: bool,
    desc: str,
) -> Tensor:
    """Which inputs the attack fools (bool ``(N,)`` on the CPU): only the correctly
    classified ones (``correct`` mask) are attacked, in full batches."""
    if early_stop and attack.model is not model:
        raise ValueError(
            "early_stop needs the attack to target the evaluated model (the fooled flags "
            "come from the attack's own forward passes); use early_stop=False for transfer "
            "attacks built on another model"
        )
    idx = torch.nonzero(correct.cpu(), as_tuple=True)[0]
    fooled_all = torch.zeros(len(x), dtype=torch.bool)
    starts = range(0, len(idx), batch_size)
    bar = tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False)
    with eval_mode(model):
        for s in bar:
            rows = idx[s : s + batch_size]
            xb = x.index_select(0, rows.to(x.device)).to(device)
            yb = y.index_select(0, rows.to(y.device)).to(device)
            res = attack.run(xb, yb, early_stop=early_stop)
            if attack.model is model:
                fooled = res.fooled
            else:  # transfer attack: judge the adversarial examples on the evaluated model
                with torch.inference_mode():
                    fooled = model(res.x_adv).argmax(1) != yb
            fooled_all[rows] = fooled.cpu()
    return fooled_all


def _ratio(num: int, den: int, what: str) -> float:
    if den == 0:
        warnings.warn(
            f"{what}: no input is classified correctly, so the fooling ratio is undefined "
            "(returned nan)",
            RuntimeWarning,
            stacklevel=3,
        )
        return math.nan
    return num / den


# --------------------------------------------------------------------------- public API


def accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    batch_size: int = 500,
    device: str | torch.device | None = None,
) -> float:
    """Clean accuracy (fraction of ``x`` classified as ``y``), in eval mode, batched."""
    _check_data(x, y)
    batch_size = _check_batch_size(batch_size)
    dev = _device(model, device)
    _check_labels(model, x, y, dev)
    pred = _predictions(model, x, batch_size, dev)
    return float((pred == y.to(dev)).float().mean())


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: settings, counts and the derived ratios.

    ``fooling_ratio = n_fooled / n_correct`` (nan when ``n_correct == 0``),
    ``robust_accuracy = n_robust / n`` with ``n_robust = n_correct - n_fooled``,
    ``clean_accuracy = n_correct / n``. ``seconds`` is the wall time of the attack,
    ``forward`` / ``backward`` its model evaluations in rows (see
    :meth:`robustrank.attacks.Attack.counts`), ``details`` attack-specific statistics (e.g.
    AutoAttack's per-component breakdown, :meth:`robustrank.attacks.Attack.details`).
    ``fooled`` and ``correct`` are the per-input bool masks (fooled; classified correctly
    before the attack) on the CPU, not serialised by :meth:`to_dict`.
    """

    attack: str
    eps: float
    early_stop: bool
    n: int
    n_correct: int
    n_fooled: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    transfer: bool = False
    forward: int = 0
    backward: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    fooled: Tensor | None = field(default=None, repr=False, compare=False)
    correct: Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def n_robust(self) -> int:
        return self.n_correct - self.n_fooled

    @property
    def clean_accuracy(self) -> float:
        return self.n_correct / self.n

    @property
    def robust_accuracy(self) -> float:
        return self.n_robust / self.n

    @property
    def fooling_ratio(self) -> float:
        return self.n_fooled / self.n_correct if self.n_correct else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-friendly dict: settings, counts and ratios (without the masks)."""
        d = asdict(replace(self, fooled=None, correct=None))
        del d["fooled"], d["correct"]
        d.update(
            n_robust=self.n_robust,
            clean_accuracy=self.clean_accuracy,
            robust_accuracy=self.robust_accuracy,
            fooling_ratio=self.fooling_ratio,
        )
        return d


def _evaluate_on(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    *,
    batch_size: int,
    early_stop: bool,
    device: torch.device,
    progress: bool,
) -> EvalResult:
    attack.reset_counts()
    t0 = time.perf_counter()
    fooled = _fooled_mask(
        model,
        attack,
        x,
        y,
        correct,
        batch_size=batch_size,
        early_stop=early_stop,
        device=device,
        progress=progress,
        desc=f"{attack.name} eps={attack.eps:g}",
    )
    seconds = time.perf_counter() - t0
    params = attack.params()
    counts = attack.counts()
    return EvalResult(
        attack=attack.name,
        eps=attack.eps,
        early_stop=bool(early_stop),
        n=len(x),
        n_correct=int(correct.sum()),
        n_fooled=int(fooled.sum()),
        seconds=seconds,
        params=params,
        seed=params.get("seed"),
        transfer=attack.model is not model,
        forward=counts["forward"],
        backward=counts["backward"],
        details=attack.details(),
        fooled=fooled,
        correct=correct.cpu(),
    )


def evaluate(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    batch_size: int = 500,
    early_stop: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    checks: bool = True,
) -> EvalResult:
    """Clean accuracy, fooling ratio and robust accuracy of ``model`` under ``attack``.

    Only correctly classified inputs are attacked (Section 5). ``attack`` normally targets
    ``model``; an attack built on another model gives a transfer evaluation (then
    ``early_stop`` must be False). With ``checks``, :func:`robustrank.attacks.check_model`
    warns about softmax outputs, zero gradients and training mode first.
    """
    _check_data(x, y)
    batch_size = _check_batch_size(batch_size)
    if not isinstance(attack, Attack):
        raise TypeError(
            f"attack must be a robustrank Attack, got {type(attack).__name__}; build one "
            "with make_attack(name, model, eps)"
        )
    dev = _device(model, device)
    _check_labels(model, x, y, dev)
    if checks:
        check_model(model, x[:32].to(dev), y[:32].to(dev), stacklevel=3)
    correct = _predictions(model, x, batch_size, dev) == y.to(dev)
    return _evaluate_on(
        model,
        attack,
        x,
        y,
        correct,
        batch_size=batch_size,
        early_stop=early_stop,
        device=dev,
        progress=progress,
    )


def fooling_ratio(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    batch_size: int = 500,
    early_stop: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> float:
    """Fooling ratio (Section 5): among correctly classified inputs, the fraction fooled.

    Only the correctly classified inputs are attacked. Returns ``nan`` (with a
    ``RuntimeWarning``) when no input is classified correctly: the ratio is undefined
    then, and 0 would wrongly read as "perfectly robust".

    Args:
        model: the evaluated model (put in eval mode during the call, then restored).
        attack: an :class:`~robustrank.attacks.Attack` (normally on ``model``).
        x, y: inputs ``(N, C, H, W)`` in [0, 1] and labels ``(N,)``.
        batch_size: rows per forward/attack batch.
        early_stop: stop attacking inputs already fooled; fooled by any iterate counts.
        device: where to compute (moves the model); default: the model's device.
        progress: show a progress bar over batches.
    """
    res = evaluate(
        model,
        attack,
        x,
        y,
        batch_size=batch_size,
        early_stop=early_stop,
        device=device,
        progress=progress,
        checks=False,
    )
    return _ratio(res.n_fooled, res.n_correct, "fooling_ratio")


def robust_accuracy(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    early_stop: bool = False,
    progress: bool = False,
) -> float:
    """Robust accuracy: fraction of all inputs still classified correctly after the attack.

    Misclassified clean inputs count as wrong and are not attacked.
    """
    res = evaluate(
        model,
        attack,
        x,
        y,
        batch_size=batch_size,
        early_stop=early_stop,
        device=device,
        progress=progress,
        checks=False,
    )
    return res.robust_accuracy


def eps_sweep(
    model: nn.Module,
    attack: str | Callable[[float], Attack],
    eps_grid: Sequence[float],
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 500,
    early_stop: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    checks: bool = True,
    **attack_kwargs: Any,
) -> list[EvalResult]:
    """Evaluate over a grid of budgets (a robustness curve), one :class:`EvalResult` each.

    ``attack`` is any registered name (built with :func:`robustrank.attacks.create_attack`
    and ``attack_kwargs`` for every eps, so a seeded attack restarts from the same seed at
    each eps) or a factory ``eps -> Attack``. The clean predictions are computed once.
    """
    _check_data(x, y)
    batch_size = _check_batch_size(batch_size)
    grid = [float(e) for e in eps_grid]
    if not grid:
        raise ValueError("eps_grid is empty; pass at least one eps, e.g. [0.01, 0.05, 0.1]")
    if len(set(grid)) < len(grid):
        twice = sorted({e for e in grid if grid.count(e) > 1})
        raise ValueError(f"eps_grid lists {twice} more than once; list each eps once")
    if isinstance(attack, Attack):
        raise TypeError(
            "eps_sweep needs an attack name or a factory eps -> Attack, not an Attack "
            "instance (its eps is fixed); e.g. lambda eps: PGD(model, eps, 0.005, 20)"
        )
    if callable(attack) and not isinstance(attack, str):
        if attack_kwargs:
            raise ValueError("attack options are only accepted with an attack name")
        factory = attack
    else:
        name = _attack_name(attack)

        def factory(eps: float) -> Attack:
            return create_attack(name, model, eps, **attack_kwargs)

    attacks = [factory(eps) for eps in grid]  # validates every eps before any work
    dev = _device(model, device)
    _check_labels(model, x, y, dev)
    if checks:
        check_model(model, x[:32].to(dev), y[:32].to(dev), stacklevel=3)
    correct = _predictions(model, x, batch_size, dev) == y.to(dev)
    results = []
    for atk in tqdm(attacks, desc="eps", unit="eps", disable=not progress or len(grid) == 1):
        results.append(
            _evaluate_on(
                model,
                atk,
                x,
                y,
                correct,
                batch_size=batch_size,
                early_stop=early_stop,
                device=dev,
                progress=progress,
            )
        )
    return results


# --------------------------------------------------------------------------- reporting

_COLUMNS = [
    "attack",
    "eps",
    "early_stop",
    "n",
    "n_correct",
    "n_fooled",
    "n_robust",
    "clean_accuracy",
    "fooling_ratio",
    "robust_accuracy",
    "seconds",
]


def format_results(results: Sequence[EvalResult]) -> str:
    """A plain-text table of evaluation results."""
    head = ["attack", "eps", "n", "clean acc", "fooling ratio", "robust acc", "fooled", "time"]
    rows = [
        [
            r.attack + (" (es)" if r.early_stop else ""),
            f"{r.eps:g}",
            str(r.n),
            f"{r.clean_accuracy:.4f}",
            f"{r.fooling_ratio:.4f}",
            f"{r.robust_accuracy:.4f}",
            f"{r.n_fooled}/{r.n_correct}",
            f"{r.seconds:.1f}s",
        ]
        for r in results
    ]
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def save_results(
    results: Sequence[EvalResult],
    *,
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write results as JSON (``{"metadata", "results"}``) and/or CSV, atomically.

    Existing files are never replaced unless ``overwrite``, and then only files robustrank
    wrote (:func:`robustrank.ownership.check_files`); the check happens for every target
    before anything is written. ``nan`` ratios are written as JSON ``null`` and as ``nan``
    in the CSV.
    """
    check_files([json_path, csv_path], overwrite=overwrite)
    written = []
    if json_path is not None:
        doc = {
            "metadata": _json_safe(metadata or {}),
            "results": [_json_safe(r.to_dict()) for r in results],
        }
        data = json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n"
        atomic_write_bytes(json_path, data.encode())
        written.append(Path(json_path))
    if csv_path is not None:
        buf = io.StringIO()
        extra = sorted({k for r in results for k in r.params} - set(_COLUMNS))
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(_COLUMNS + extra)
        for r in results:
            d = r.to_dict()
            writer.writerow([d[c] for c in _COLUMNS] + [r.params.get(k, "") for k in extra])
        atomic_write_bytes(csv_path, buf.getvalue().encode())
        written.append(Path(csv_path))
    record_files(written)
    return written
