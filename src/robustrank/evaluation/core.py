"""The per-example core of every evaluation: clean predictions, fooled masks and the counts.

The paper's robustness measure is the *fooling ratio* (Section 5): "the percentage of
inputs, among the correctly classified ones, whose classification outcome changes after
adding adversarial perturbations", at a given budget eps. Only the correctly classified
inputs are attacked (as in the authors' code). The *robust accuracy* is the fraction of
*all* inputs still classified correctly after the attack (misclassified clean inputs count
as wrong). Both come from two per-example masks, ``correct`` (:func:`predictions` equal
the labels) and ``fooled`` (:func:`fooled_mask`), through the same counts::

    fooling_ratio   = n_fooled / n_correct
    robust_accuracy = (n_correct - n_fooled) / n

:class:`EvalResult` holds those counts with the settings; the model-level functions
(:func:`robustrank.evaluation.evaluate`, :func:`robustrank.evaluation.fooling_ratio`,
:func:`robustrank.evaluation.robust_accuracy`), the robustness curves and the diagnostics
are all built on :func:`predictions` and :func:`fooled_mask`.

Everything runs in eval mode (the model's own per-module flags are restored afterwards),
in batches, on ``device``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..attacks import Attack, eval_mode

__all__ = [
    "EvalResult",
    "check_batch_size",
    "check_data",
    "evaluation_device",
    "fooled_mask",
    "predictions",
]


def check_data(x: Tensor, y: Tensor) -> None:
    """Refuse inputs and labels that cannot be evaluated: not tensors, different numbers of
    examples, or no example at all (``TypeError`` / ``ValueError`` naming the problem)."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be torch tensors")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}"
        )
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set: x has no examples")


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` if it is an integer >= 1 (not a bool); ``ValueError`` otherwise."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


def evaluation_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The evaluation device; an explicit ``device`` moves the model there. Without one,
    the device of the model's parameters (the CPU for a model without parameters)."""
    if device is not None:
        device = torch.device(device)
        model.to(device)
        return device
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def predictions(model: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Predicted classes ``(N,)`` (on ``device``), in eval mode, batched.

    ``predictions(...) == y`` is the per-example ``correct`` mask: the inputs that count
    for the fooling ratio (Section 5) and the only ones attacked.
    """
    out = []
    with eval_mode(model), torch.inference_mode():
        for s in range(0, len(x), batch_size):
            out.append(model(x[s : s + batch_size].to(device)).argmax(1))
    return torch.cat(out)


def fooled_mask(
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
    """Which inputs the attack fools: the per-example numerator of the fooling ratio
    (Section 5).

    Only the inputs selected by the bool mask ``correct`` (normally the correctly
    classified ones, see :func:`predictions`) are attacked, in full batches of
    ``batch_size``; every other input counts as not fooled. An input is fooled when its
    adversarial example is classified differently from its label ``y``: by the attack's
    own forward passes when it targets ``model`` (with ``early_stop``, an input fooled by
    any iterate counts, see :meth:`robustrank.attacks.Attack.run`), and by ``model`` on the
    adversarial examples for a transfer attack built on another model (then ``early_stop``
    must be False).

    Args:
        model: the evaluated model (put in eval mode during the call, then restored).
        attack: the attack, normally built on ``model``.
        x, y: inputs and labels (any device; each batch moves to ``device``).
        correct: bool ``(N,)``, the inputs to attack.
        batch_size: rows per attacked batch.
        early_stop: stop attacking an input as soon as an iterate fools the model.
        device: where to compute.
        progress: show a progress bar over batches, labelled ``desc``.

    Returns:
        bool ``(N,)`` on the CPU.
    """
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


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: settings, counts and the derived ratios.

    ``fooling_ratio = n_fooled / n_correct`` (Section 5; nan when ``n_correct == 0``),
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
