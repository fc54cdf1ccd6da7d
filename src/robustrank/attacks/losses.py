"""Per-example attack losses: cross-entropy, the margin, DLR and targeted DLR.

Every function maps logits ``(N, K)`` and labels ``(N,)`` to a loss per example ``(N,)``,
which the attacks *maximise*. DLR is the Difference of Logits Ratio of Croce & Hein
(ICML 2020), Eq. (3) (untargeted) and Eq. (4) (targeted); it is invariant to shifting and
rescaling the logits, so a model cannot defeat it by scaling its outputs up.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ce_loss",
    "ce_targeted_loss",
    "margin",
    "dlr_loss",
    "dlr_targeted_loss",
    "target_classes",
    "LOSSES",
    "TARGETED_LOSSES",
    "DLR_EPS",
]

#: Added to the DLR denominators (the reference's constant) so ties cannot divide by zero.
DLR_EPS = 1e-12


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per example, ``-log softmax(z)_y``."""
    return F.cross_entropy(logits, y, reduction="none")


def _other_max(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{j != y} z_j`` per row."""
    masked = logits.scatter(1, y[:, None], float("-inf"))
    return masked.amax(1)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """The classification margin ``z_y - max_{j != y} z_j``: negative iff misclassified.

    Square (Andriushchenko et al., 2020) minimises it; it is ``-DLR`` times its scale.
    """
    return logits.gather(1, y[:, None]).squeeze(1) - _other_max(logits, y)


def _check_classes(logits: Tensor, need: int, what: str) -> None:
    if logits.shape[1] < need:
        raise ValueError(
            f"{what} needs at least {need} classes (it uses the {need} largest logits), the "
            f"model has {logits.shape[1]}; use the cross-entropy loss (loss='ce') instead"
        )


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """DLR (Croce & Hein 2020, Eq. 3): ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``.

    ``pi`` sorts the logits in descending order; needs at least 3 classes.
    """
    _check_classes(logits, 3, "the DLR loss")
    top = logits.topk(3, dim=1).values
    return -margin(logits, y) / (top[:, 0] - top[:, 2] + DLR_EPS)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR (Croce & Hein 2020, Eq. 4): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2)``.

    Maximising it pushes the target logit ``z_t`` above the true one; needs 4 classes.
    """
    _check_classes(logits, 4, "the targeted DLR loss")
    top = logits.topk(4, dim=1).values
    zy = logits.gather(1, y[:, None]).squeeze(1)
    zt = logits.gather(1, target[:, None]).squeeze(1)
    return -(zy - zt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + DLR_EPS)


def ce_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted cross-entropy to maximise: ``log softmax(z)_t`` (move towards class ``t``)."""
    del y
    return -F.cross_entropy(logits, target, reduction="none")


#: The untargeted losses by name (``APGD(loss=...)``).
LOSSES = {"ce": ce_loss, "dlr": dlr_loss}

#: The targeted losses by name (``APGDT(loss=...)``).
TARGETED_LOSSES = {"dlr-targeted": dlr_targeted_loss, "ce-targeted": ce_targeted_loss}


def target_classes(logits: Tensor, n_target_classes: int) -> Tensor:
    """The targets of APGD-T and FAB-T: the 2nd to ``(n + 1)``-th largest clean logits.

    Returns ``(N, n)`` class indices, column ``k`` the ``(k + 2)``-th largest logit (Croce &
    Hein 2020, Sec. 4). ``n`` is capped at ``K - 1``.
    """
    n = min(int(n_target_classes), logits.shape[1] - 1)
    return logits.argsort(dim=1, descending=True)[:, 1 : n + 1]
