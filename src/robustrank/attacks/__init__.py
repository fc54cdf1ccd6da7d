"""l_inf adversarial attacks: the paper's (Section 5: FGSM, PGD, GNM), AutoAttack's, a registry.

The paper's attacks are :class:`FGSM`, :class:`PGD` and :class:`GNM`. For evaluations a
reviewer accepts there are AutoAttack's parameter-free attacks (Croce & Hein, ICML 2020):
:class:`APGD` (CE or DLR loss), :class:`APGDT` (targeted DLR), :class:`FAB` (minimal
norm, targeted or not), :class:`Square` (gradient-free) and the ensemble
:class:`AutoAttack`, which attack only the inputs still robust.

All attacks follow one convention (torchattacks-like)::

    attack = PGD(model, eps=0.05, alpha=0.005, steps=20, seed=0)
    x_adv = attack(x, y)          # x: (N, C, H, W) in [0, 1], y: (N,) int64

* Inputs are images in [0, 1], NCHW; the model returns logits (no softmax).
* During the attack the model is in eval mode; every module's previous ``training``
  flag is restored afterwards, also when the attack raises.
* Gradients are taken with respect to the input only (``torch.autograd.grad``); the
  parameters' ``.grad`` are never touched. Whole batches are processed at once, on the
  input's device.
* Speed: on CPU, a model with ``Conv2d`` layers is evaluated with channels-last copies
  of its 4-D tensors (``torch.func.functional_call``), which oneDNN runs about 1.5x
  faster for the paper's CNN (``benchmarks/bench_attacks.py``). The model itself is not
  modified, and the values are the same up to float round-off; pass
  ``channels_last=False`` to disable it.
* ``attack.run(x, y, early_stop=True)`` is the evaluation entry point: it also returns
  which inputs are misclassified, and with ``early_stop`` an input stops being attacked as
  soon as an iterate fools the model (AutoAttack style). The logits of iterate ``x_t`` come
  for free with the gradient at ``x_t``, so the check costs no extra forward pass, and the
  fooled rows are dropped from the working batch so later steps compute fewer rows.
* Attacks are chosen by name through a registry (:mod:`robustrank.attacks.registry`):
  ``create_attack("pgd", model, eps=0.05, seed=0)`` builds PGD with the paper's settings;
  ``register_attack("my-attack", MyAttack)`` makes a new :class:`Attack` subclass usable
  wherever a name is accepted (evaluation, sweeps, training configs, the command line).

Modules: :mod:`~robustrank.attacks.base` (:class:`Attack`, :class:`AttackResult`,
:func:`eval_mode`), :mod:`~robustrank.attacks.fgsm`, :mod:`~robustrank.attacks.pgd`,
:mod:`~robustrank.attacks.gnm`, :mod:`~robustrank.attacks.losses` (CE, margin, DLR),
:mod:`~robustrank.attacks.apgd`, :mod:`~robustrank.attacks.fab`,
:mod:`~robustrank.attacks.square`, :mod:`~robustrank.attacks.autoattack`,
:mod:`~robustrank.attacks.checks` (:func:`check_model`),
:mod:`~robustrank.attacks.precision` (low-precision search: :class:`Autocast`) and
:mod:`~robustrank.attacks.registry`.
"""

# Every attack registers where it is defined: importing them in this order lists the
# paper's attacks first (fgsm, pgd, gnm), then AutoAttack's.
from . import fgsm, pgd, gnm, apgd, fab, square, autoattack  # noqa: F401  isort: skip
from .apgd import APGD, APGDT
from .autoattack import AUTOATTACK_VERSIONS, AutoAttack, ComponentStats
from .base import RANGE_TOLERANCE, Attack, AttackResult, eval_mode, seeded_generator
from .checks import check_model
from .fab import FAB
from .fgsm import FGSM
from .gnm import GNM
from .losses import dlr_loss, dlr_targeted_loss, margin
from .pgd import PGD
from .precision import Autocast, Precision, native_bfloat16, resolve_precision
from .registry import (
    AttackSpec,
    builtin_attacks,
    create_attack,
    get_attack,
    list_attacks,
    register_attack,
    supported_options,
)
from .square import Square

__all__ = [
    "Attack",
    "AttackResult",
    "FGSM",
    "PGD",
    "GNM",
    "APGD",
    "APGDT",
    "FAB",
    "Square",
    "AutoAttack",
    "AUTOATTACK_VERSIONS",
    "ComponentStats",
    "Precision",
    "native_bfloat16",
    "resolve_precision",
    "Autocast",
    "dlr_loss",
    "dlr_targeted_loss",
    "margin",
    "seeded_generator",
    "eval_mode",
    "check_model",
    "RANGE_TOLERANCE",
    "AttackSpec",
    "register_attack",
    "list_attacks",
    "get_attack",
    "create_attack",
    "supported_options",
    "builtin_attacks",
]
