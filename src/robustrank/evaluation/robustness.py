"""A model under an attack: clean accuracy, fooling ratio (Section 5), robust accuracy,
every count of one evaluation, and eps sweeps.

The definitions (fooling ratio among the correctly classified inputs, robust accuracy
over all of them) and the per-example masks they are counted from live in
:mod:`robustrank.evaluation.core`. With ``early_stop=True`` (AutoAttack style) an input
stops being attacked as soon as an iterate fools the model, and counts as fooled if any
iterate fooled it: never weaker than the plain attack, and much cheaper (see
:meth:`robustrank.attacks.Attack.run`).

Everything runs in eval mode (the model's own per-module flags are restored afterwards),
in batches, on ``device`` (default: the device of the model's parameters).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..attacks import Attack, builtin_attacks, check_model, create_attack, get_attack
from ..data import check_labels
from ..models import output_classes
from .core import (
    EvalResult,
    check_batch_size,
    check_data,
    evaluation_device,
    fooled_mask,
    predictions,
)

__all__ = [
    "AttackName",
    "PAPER_DEFAULTS",
    "make_attack",
    "accuracy",
    "fooling_ratio",
    "robust_accuracy",
    "evaluate",
    "eps_sweep",
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


def _check_labels(model: nn.Module, x: Tensor, y: Tensor, device: torch.device) -> None:
    """Every label must be a class the model predicts (its output width on one input), so
    an out-of-range label is an error instead of a silent misclassification."""
    num_classes = output_classes(model, x[:1].to(device))
    if num_classes is not None:
        check_labels(y, num_classes, "labels y")


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
    check_data(x, y)
    batch_size = check_batch_size(batch_size)
    dev = evaluation_device(model, device)
    _check_labels(model, x, y, dev)
    pred = predictions(model, x, batch_size, dev)
    return float((pred == y.to(dev)).float().mean())


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
    fooled = fooled_mask(
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
    check_data(x, y)
    batch_size = check_batch_size(batch_size)
    if not isinstance(attack, Attack):
        raise TypeError(
            f"attack must be a robustrank Attack, got {type(attack).__name__}; build one "
            "with make_attack(name, model, eps)"
        )
    dev = evaluation_device(model, device)
    _check_labels(model, x, y, dev)
    if checks:
        check_model(model, x[:32].to(dev), y[:32].to(dev), stacklevel=3)
    correct = predictions(model, x, batch_size, dev) == y.to(dev)
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
    check_data(x, y)
    batch_size = check_batch_size(batch_size)
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
    dev = evaluation_device(model, device)
    _check_labels(model, x, y, dev)
    if checks:
        check_model(model, x[:32].to(dev), y[:32].to(dev), stacklevel=3)
    correct = predictions(model, x, batch_size, dev) == y.to(dev)
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
