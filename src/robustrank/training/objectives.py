"""Robust training objectives, chosen by name in a training config (``adversarial.objective``).

An objective turns one training batch into the loss the optimiser minimises (before the
regularisers of Eq. 8, which the loop adds) and the logits its training-accuracy
statistic counts. Built in:

* ``madry`` (the default): ``CE(f(x_adv), y)`` with ``x_adv`` from the configured attack
  (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
  ICLR 2018); without an attack (``attack: none``) this is natural training.
* ``mix``: ``mix * CE(f(x_adv), y) + (1 - mix) * CE(f(x), y)`` (Goodfellow et al.,
  "Explaining and Harnessing Adversarial Examples", ICLR 2015), ``mix`` being
  ``adversarial.mix``; a config that sets ``mix < 1`` and no objective gets this one.
* ``trades``: ``CE(f(x), y) + beta * KL(p(x) || p(x'))`` with ``x'`` maximising the KL
  term (Zhang et al., "Theoretically Principled Trade-off between Robustness and
  Accuracy", ICML 2019).
* ``mart``: a boosted CE on ``x'`` plus ``beta * KL(p(x) || p(x'))`` weighted by
  ``1 - p_y(x)`` (Wang et al., "Improving Adversarial Robustness Requires Revisiting
  Misclassified Examples", ICLR 2020).
* ``ibp`` and ``crown-ibp`` (:mod:`robustrank.training.certified`): certified training,
  ``kappa_t * CE(f(x), y) + (1 - kappa_t) * CE(-m(x, eps_t), y)`` with ``m`` lower bounds
  of the logit margins from interval bound propagation (Gowal et al., "On the
  Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models",
  2018) or a ``beta_t`` mix of CROWN-IBP and IBP (Zhang et al., "Towards Stable and
  Efficient Training of Verifiably Robust Neural Networks", ICLR 2020), ``eps_t``,
  ``kappa_t`` and ``beta_t`` ramped over the run; no attack needed (``attack: none``).

An objective is a class (or factory) whose constructor takes its options by keyword and
whose instances have ``loss(model, x, y, adversary) -> (loss, logits)``. Options named
like a key of the ``adversarial`` section (``eps``, ``alpha``, ``steps``, ``mix``, ...)
are filled from there; the others are set beside the name::

    adversarial: {attack: pgd, eps: 0.05, objective: {name: trades, beta: 6}}

The training accuracy is counted on the logits an objective returns: those of the
adversarial inputs for the attack-based built-ins (``f(x_adv)``, ``f(x')``), the clean
``f(x)`` for the certified ones (a bound is not an input). The loop tells an objective
where the run is (:class:`Progress`, ``adversary.progress``), for schedules. Register your own::

    @register_objective("clean-plus-adv", description="CE(x) + w * CE(x_adv)")
    class CleanPlusAdv(Objective):
        def __init__(self, w: float = 1.0):
            self.w = w

        def loss(self, model, x, y, adversary):
            logits = model(adversary.inputs(x, y))
            ce = F.cross_entropy(model(x), y) + self.w * F.cross_entropy(logits, y)
            return ObjectiveOutput(ce, logits)

    # adversarial: {attack: pgd, objective: {name: clean-plus-adv, w: 0.5}}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._modes import eval_mode
from ..attacks.base import check_alpha, check_eps, check_steps
from ..registry import Registry, check_keyword_options, keyword_options, summary_line

__all__ = [
    "Adversary",
    "Progress",
    "ObjectiveOutput",
    "Objective",
    "ObjectiveEntry",
    "REGISTRY",
    "register_objective",
    "get_objective",
    "list_objectives",
    "create_objective",
    "Madry",
    "Mix",
    "Trades",
    "Mart",
    "trades_adversary",
    "trades_loss",
    "mart_loss",
]

Attack = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Progress:
    """Where a training run is, for an objective's schedules (functions of these, so a
    resumed run continues identically).

    Attributes:
        epoch: the current epoch, from 1.
        step: the batch about to be trained within the epoch, from 0.
        epochs: the run's epochs.
        steps_per_epoch: the optimiser steps (batches) of an epoch.
    """

    epoch: int
    step: int
    epochs: int
    steps_per_epoch: int

    @property
    def global_step(self) -> int:
        """The optimiser steps taken before this one."""
        return (self.epoch - 1) * self.steps_per_epoch + self.step

    @property
    def total_steps(self) -> int:
        """The optimiser steps of the whole run."""
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class Adversary:
    """The adversarial side of one training batch, as an objective sees it.

    Attributes:
        attack: the configured attack for this batch, ``attack(x, y) -> x_adv`` (built
            with the batch seed when it takes one); ``None`` for ``attack: none``.
        seed: the batch seed (derived from the run seed, the epoch and the step), for an
            objective's own randomness: runs stay deterministic and resumable.
        progress: where the run is (``None`` outside the training loop).
    """

    attack: Attack | None
    seed: int
    progress: Progress | None = None

    def inputs(self, x: Tensor, y: Tensor) -> Tensor:
        """``attack(x, y)``, or ``x`` itself without an attack (natural training)."""
        return x if self.attack is None else self.attack(x, y)

    def generator(self, device: torch.device) -> torch.Generator:
        """A fresh ``torch.Generator`` on ``device`` seeded with :attr:`seed`."""
        return torch.Generator(device=device).manual_seed(self.seed)


class ObjectiveOutput(NamedTuple):
    """What :meth:`Objective.loss` returns: the loss (a scalar; the history's ``train_ce``
    column) and the ``(N, classes)`` logits the training accuracy counts."""

    loss: Tensor
    logits: Tensor


class Objective:
    """Base class of the training objectives: options in the constructor, one
    :meth:`loss` per batch."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, adversary: Adversary) -> ObjectiveOutput:
        """The loss of the batch ``(x, y)`` for ``model`` (in train mode) and its logits.

        ``adversary`` gives the configured attack and the batch seed. The loop adds the
        regularisers of Eq. (8) to the loss, then back-propagates it.
        """
        raise NotImplementedError


ObjectiveFactory = Callable[..., Objective]


@dataclass(frozen=True)
class ObjectiveEntry:
    """A registered objective: ``cls(**options)`` and one line for listings.

    ``needs_attack``: the objective trains against adversarial examples, so a config
    must name an attack (``madry`` and ``mix`` do not: without one they train naturally).
    ``certified``: it trains on certified bounds (IBP, CROWN-IBP), so its runs are
    certified training (:class:`robustrank.experiments.summary.RunKind`).
    """

    name: str
    cls: ObjectiveFactory
    description: str = ""
    needs_attack: bool = True
    certified: bool = False

    @property
    def options(self) -> dict[str, Any]:
        """The keyword options of the constructor, with their defaults
        (``inspect.Parameter.empty`` when required)."""
        return keyword_options(self.cls)

    def check_options(self, options: Mapping[str, Any], beside: Collection[str] = ()) -> None:
        """``ValueError`` naming the options the objective does not take and the ones it
        does; options named in ``beside`` (set beside the objective, e.g. ``mix``) are
        refused inside it."""
        shared = sorted(k for k in options if k in beside)
        if shared:
            raise ValueError(
                f"set {', '.join(shared)} beside objective (in the adversarial section), "
                "not inside it"
            )
        own = {k: v for k, v in self.options.items() if k not in beside}
        check_keyword_options(f"objective {self.name!r}", options, own)

    def create(self, **options: Any) -> Objective:
        """The objective with ``options`` (checked against the constructor first)."""
        check_keyword_options(f"objective {self.name!r}", options, self.options)
        objective = self.cls(**options)
        if not callable(getattr(objective, "loss", None)):
            raise TypeError(f"objective {self.name!r} built {objective!r}, which has no loss()")
        return objective


#: Every objective by name (case-insensitive).
REGISTRY: Registry[ObjectiveEntry] = Registry(
    "objective",
    normalise=lambda name: name.strip().lower() if isinstance(name, str) else name,
    hint="register your own with robustrank.training.register_objective",
)


def register_objective(
    name: str,
    cls: ObjectiveFactory | None = None,
    *,
    description: str = "",
    needs_attack: bool = True,
    certified: bool = False,
    overwrite: bool = False,
) -> Any:
    """Register ``cls(**options)`` (an :class:`Objective`) under ``name``; usable as a
    decorator. ``description`` defaults to the docstring's first line; ``needs_attack``
    and ``certified`` as in :class:`ObjectiveEntry`."""

    def entry(c: ObjectiveFactory) -> ObjectiveEntry:
        if not callable(c):
            raise TypeError(f"objective {name!r} must be callable, got {c!r}")
        return ObjectiveEntry(
            REGISTRY.key(name),
            c,
            description or summary_line(c),
            bool(needs_attack),
            bool(certified),
        )

    return REGISTRY.register(name, cls, overwrite=overwrite, build=entry)


def get_objective(name: str) -> ObjectiveEntry:
    """The :class:`ObjectiveEntry` registered as ``name`` (case-insensitive)."""
    return REGISTRY.get(name)


def list_objectives() -> list[str]:
    """The registered objective names, in registration order (built-ins first)."""
    return REGISTRY.names()


def create_objective(name: str, **options: Any) -> Objective:
    """The objective ``name`` with ``options`` (checked against its constructor)."""
    return get_objective(name).create(**options)


def _check_beta(beta: Any) -> float:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    return float(beta)


# --------------------------------------------------------------------------- madry, mix


@register_objective(
    "madry",
    description="CE on the attack's adversarial examples (Madry et al., 2018; default)",
    needs_attack=False,
)
class Madry(Objective):
    """``CE(f(x_adv), y)``, ``x_adv`` from the configured attack (Madry et al., 2018).

    Without an attack (``attack: none``) ``x_adv = x``: natural training.
    """

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, adversary: Adversary) -> ObjectiveOutput:
        logits = model(adversary.inputs(x, y))
        return ObjectiveOutput(F.cross_entropy(logits, y), logits)


@register_objective(
    "mix",
    description="mix * CE(x_adv) + (1 - mix) * CE(x), adversarial.mix (Goodfellow et al., 2015)",
    needs_attack=False,
)
class Mix(Objective):
    """``mix * CE(f(x_adv), y) + (1 - mix) * CE(f(x), y)`` (Goodfellow et al., 2015).

    ``mix`` is ``adversarial.mix`` (0.5: Goodfellow's half/half; 1: :class:`Madry`).
    Without an attack, or with ``mix = 1``, only the first term is computed.
    """

    def __init__(self, mix: float) -> None:
        if isinstance(mix, bool) or not isinstance(mix, int | float) or not 0.0 <= mix <= 1.0:
            raise ValueError(f"mix must lie in [0, 1], got {mix!r}")
        self.mix = float(mix)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, adversary: Adversary) -> ObjectiveOutput:
        logits = model(adversary.inputs(x, y))
        ce = F.cross_entropy(logits, y)
        if adversary.attack is not None and self.mix < 1.0:
            ce = self.mix * ce + (1.0 - self.mix) * F.cross_entropy(model(x), y)
        return ObjectiveOutput(ce, logits)


# --------------------------------------------------------------------------- TRADES


def trades_adversary(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TRADES' inner maximisation (Zhang et al., ICML 2019): ``x'`` maximising
    ``sum_i KL(p(x_i) || p(x'_i))`` over the l_inf ``eps``-ball around ``x`` in [0, 1].

    As the reference: start at ``x + 0.001 * N(0, I)`` (drawn from ``generator``), then
    ``steps`` sign steps of size ``alpha``, each projected onto the ball and clipped to
    [0, 1]; ``p(x)`` is computed once and held fixed. Runs in eval mode on whole batches
    (each module's mode restored), with gradients with respect to the input only.
    Returns detached ``x'``.
    """
    x = x.detach()
    lo, hi = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    with eval_mode(model), torch.enable_grad():
        with torch.no_grad():
            target = F.softmax(model(x), dim=1)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        xa = x + 0.001 * noise
        for _ in range(steps):
            xa.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(xa), dim=1), target, reduction="sum")
            (grad,) = torch.autograd.grad(kl, xa)
            # clamp to [max(x - eps, 0), min(x + eps, 1)]: the ball, then [0, 1]
            xa = torch.clamp(xa.detach() + alpha * grad.sign(), lo, hi)
    return xa.detach()


def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """TRADES' outer loss (Zhang et al., ICML 2019, Eq. 5 with the reference's surrogate):
    ``CE(f(x), y) + beta * (1/B) * sum_i KL(softmax(f(x_i)) || softmax(f(x'_i)))``.

    Gradients flow through both ``f(x)`` and ``f(x')``, as in the reference.
    """
    natural = F.cross_entropy(logits_clean, y)
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="sum")
    return natural + beta * ((1.0 / len(y)) * kl)


@register_objective(
    "trades",
    description="CE(x) + beta * KL(p(x) || p(x')), x' by PGD on the KL (Zhang et al., 2019)",
)
class Trades(Objective):
    """TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and
    Accuracy", ICML 2019): :func:`trades_loss` at ``x'`` from :func:`trades_adversary`.

    ``eps``, ``alpha`` and ``steps`` are those of the ``adversarial`` section (the KL inner
    loop replaces the configured attack); ``beta`` (default 6.0, the paper's CIFAR-10
    setting) weighs robustness against accuracy. The start noise is drawn from a
    generator seeded with the batch seed. ``f(x)`` and ``f(x')`` of the outer loss are
    computed in train mode, as the reference does; the logits returned (for the training
    accuracy) are ``f(x')``.
    """

    def __init__(self, eps: float, alpha: float, steps: int, beta: float = 6.0) -> None:
        self.eps, self.alpha = check_eps(eps), check_alpha(alpha)
        self.steps, self.beta = check_steps(steps), _check_beta(beta)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, adversary: Adversary) -> ObjectiveOutput:
        x_adv = trades_adversary(
            model,
            x,
            eps=self.eps,
            alpha=self.alpha,
            steps=self.steps,
            generator=adversary.generator(x.device),
        )
        logits_clean, logits_adv = model(x), model(x_adv)
        return ObjectiveOutput(trades_loss(logits_clean, logits_adv, y, self.beta), logits_adv)


# --------------------------------------------------------------------------- MART


def mart_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """MART's loss (Wang et al., ICLR 2020, Eq. 12) with the reference's constants:
    ``BCE(p(x'), y) + beta * (1/B) * sum_i KL(p(x_i) || p(x'_i)) * (1 - p_{y_i}(x_i))``.

    ``BCE(p(x'), y) = -log p_y(x') - log(1.0001 - max_{k != y} p_k(x') + 1e-12)`` (batch
    means); the KL uses ``log(p(x') + 1e-12)`` and the weight ``1.0000001 - p_y(x)``.
    """
    adv_probs = F.softmax(logits_adv, dim=1)
    true_class = F.one_hot(y, adv_probs.shape[1]).bool()
    wrong = adv_probs.masked_fill(true_class, -1.0).argmax(dim=1)  # most likely wrong class
    boosted = F.cross_entropy(logits_adv, y) + F.nll_loss(
        torch.log(1.0001 - adv_probs + 1e-12), wrong
    )
    nat_probs = F.softmax(logits_clean, dim=1)
    true_probs = nat_probs.gather(1, y.unsqueeze(1)).squeeze(1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(dim=1)
    robust = (1.0 / len(y)) * torch.sum(kl * (1.0000001 - true_probs))
    return boosted + beta * robust


@register_objective(
    "mart",
    description="boosted CE(x') + beta * KL(p(x) || p(x')) * (1 - p_y(x)) (Wang et al., 2020)",
)
class Mart(Objective):
    """MART (Wang et al., "Improving Adversarial Robustness Requires Revisiting
    Misclassified Examples", ICLR 2020): :func:`mart_loss` at ``x'`` from the configured
    attack (PGD on CE, as in the paper).

    ``beta`` defaults to 6.0 (the paper's). ``f(x)`` and ``f(x')`` are computed in train
    mode, as the reference does; the logits returned (for the training accuracy) are
    ``f(x')``.
    """

    def __init__(self, beta: float = 6.0) -> None:
        self.beta = _check_beta(beta)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, adversary: Adversary) -> ObjectiveOutput:
        if adversary.attack is None:
            raise ValueError("objective 'mart' needs an attack (adversarial.attack, e.g. pgd)")
        x_adv = adversary.attack(x, y)
        logits_clean, logits_adv = model(x), model(x_adv)
        return ObjectiveOutput(mart_loss(logits_clean, logits_adv, y, self.beta), logits_adv)
