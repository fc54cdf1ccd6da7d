"""Gradual pruning (Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of
pruning for model compression", 2017): the density of the pruned layers falls from
``d_0 = 1`` to the target ``d_f`` along the cubic schedule

    d_t = d_f + (d_0 - d_f) (1 - (t - t_0) / (t_1 - t_0))^3,   t_0 <= t <= t_1,

the masks being updated at the start of the pruning epochs ``t_0, t_0 + every, ...`` and
``t_1`` (always the last), before that epoch's training steps, and fixed from ``t_1`` to
the end of the run (fine-tuning). Each update keeps a subset of the previous mask (nested
masks, :func:`robustrank.structure.prune`), so a pruned entry never regrows.

Design: from the start of the run every layer on the schedule carries a
:class:`robustrank.models.Masked` parametrization, with a full mask (density 1) until
``t_0``. Checkpoints, the resume state and the state dict therefore have the same keys and
shapes throughout the run; the mask in force is saved with the weights, so a resumed run
continues from it, and an update happens only at the *start* of a pruning epoch (never
when resuming mid-epoch), which makes a resumed run identical to an uninterrupted one.

This module holds the schedule itself (plain numbers) and the check that a model's masks
keep what it asks for; ``structure.prune.gradual`` (:class:`~.config.GradualConfig`)
configures it and the training loop applies it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..models import Masked, StructureError, WeightLayer, kept_count, layer_structure
from .pruning import Scope

__all__ = ["cubic_density", "pruning_epochs", "scheduled_density", "check_kept"]


def cubic_density(final: float, epoch: int, start: int, end: int, initial: float = 1.0) -> float:
    """The cubic schedule's density at ``epoch`` (Zhu & Gupta, 2017, Eq. 1 with density =
    1 - sparsity): ``initial`` up to ``start``, ``final`` from ``end`` on."""
    if epoch >= end:
        return final
    if epoch <= start:
        return initial
    return final + (initial - final) * (1 - (epoch - start) / (end - start)) ** 3


def pruning_epochs(start: int, end: int, every: int) -> list[int]:
    """The epochs whose start updates the masks: ``start, start + every, ...`` below ``end``,
    then ``end`` (so the schedule always reaches its target; Zhu & Gupta, 2017)."""
    return [*range(start, end, every), end]


def scheduled_density(
    final: float, epoch: int, start: int, end: int, every: int, initial: float = 1.0
) -> float:
    """The density in force during ``epoch``: the cubic schedule's at the last pruning epoch
    up to ``epoch`` (Zhu & Gupta, 2017), ``initial`` before ``start``."""
    done = [t for t in pruning_epochs(start, end, every) if t <= epoch]
    return cubic_density(final, done[-1], start, end, initial) if done else initial


def check_kept(pairs: Sequence[tuple[WeightLayer, float]], scope: Scope, what: str) -> None:
    """Raise a StructureError unless the masks of ``[(layer, density)]`` keep exactly
    ``round(density * #entries)`` entries: per layer, or in total with ``scope="global"``."""
    groups = [list(pairs)] if scope == "global" else [[pair] for pair in pairs]
    for group in groups:
        numel = sum(layer.weight.numel() for layer, _ in group)
        want = kept_count(numel, group[0][1])
        found = sum(_mask_count(layer, what) for layer, _ in group)
        if found != want:
            names = ", ".join(repr(layer.key) for layer, _ in group)
            raise StructureError(
                f"{what}: {names} keeps {found} entries, but the schedule's density "
                f"{group[0][1]:.6g} keeps {want}"
            )


def _mask_count(layer: WeightLayer, what: str) -> int:
    structure = layer_structure(layer.module)
    if not isinstance(structure, Masked):
        raise StructureError(f"{what}: layer {layer.key!r} carries no pruning mask")
    return int(structure.mask.sum())
