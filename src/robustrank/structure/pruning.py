"""Pruning to an exact density: masks that stay applied through training, checkpoints,
resume and evaluation (:class:`robustrank.models.Masked`, a parametrization).

``prune(model, density={"W1": 0.1})`` keeps exactly ``round(0.1 * #entries)`` entries of
W1, ranked by a registered method (:mod:`robustrank.structure.methods`: ``magnitude``,
``random`` or HYDRA's trainable ``scores``). ``scope="global"`` ranks the entries of all
chosen layers together (one density overall, per-layer densities follow the weights), as
in Han et al. (2015) and Frankle & Carbin (2019); ``"layer"`` keeps each layer's density.
Pruning a pruned layer again keeps a subset of its mask (nested masks: pruned entries stay
pruned), which gradual pruning (:mod:`.gradual`) relies on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..models import (
    Masked,
    ScoredMask,
    StructureError,
    WeightLayer,
    kept_count,
    layer_structure,
    named_weight_layers,
    select_layers,
    top_k_mask,
)
from .methods import get_pruning_method

__all__ = ["prune", "Scope", "LayerKey", "chosen_layers", "check_density"]

#: A layer key: a 1-based paper index, a module path, an alias (``"W1"``) or a glob.
LayerKey = int | str
Scope = Literal["layer", "global"]


def chosen_layers(
    model: nn.Module,
    values: float | int | Mapping[LayerKey, float | int],
    layers: Sequence[LayerKey] | None,
    what: str,
) -> list[tuple[WeightLayer, float | int]]:
    """``[(layer, value)]``: a ``{key: value}`` map, or one value for ``layers`` (default:
    every weight layer). Keys as in the regularisers (:func:`robustrank.models.match_layers`)."""
    if isinstance(values, Mapping):
        if layers is not None:
            raise StructureError(
                f"{what}: give layers either as the keys of a mapping or as layers="
            )
        keys: Mapping[LayerKey, float | int] = values
    else:
        keys = {k: values for k in (layers if layers is not None else ["*"])}
    if not keys:
        raise StructureError(f"{what}: no layer chosen; name layers, e.g. {{'W1': ...}}")
    ordered = any(isinstance(k, int) and not isinstance(k, bool) for k in keys)
    found = named_weight_layers(model, require_order=ordered)
    try:
        return select_layers(found, keys, what, owner=type(model).__name__)
    except ValueError as err:
        raise StructureError(str(err)) from None


def check_density(layer: WeightLayer, value: float, what: str) -> int:
    """The number of entries ``value`` keeps of ``layer``; a StructureError naming the layer
    when ``value`` is not a density in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StructureError(f"{what}: density of {layer.key!r} must be a number, got {value!r}")
    try:
        return kept_count(layer.weight.numel(), float(value))
    except StructureError as err:
        raise StructureError(
            f"{what}: layer {layer.key!r}: {err}; e.g. 0.1 keeps 10% of its entries"
        ) from None


def _plain_or_masked(layer: WeightLayer, what: str) -> Masked | None:
    structure = layer_structure(layer.module)
    if structure is None or isinstance(structure, Masked):
        return structure
    raise StructureError(
        f"{what}: layer {layer.key!r} is {structure.kind.replace('_', '-')} already; prune a "
        "plain or pruned layer, or factorise and prune it together "
        "(factorize(..., density=...): low rank plus sparse)"
    )


def _set_mask(layer: WeightLayer, mask: Tensor, what: str) -> None:
    existing = _plain_or_masked(layer, what)
    if existing is not None:
        existing.mask.copy_(mask)  # re-pruning keeps the state-dict keys (resume-safe)
    else:
        parametrize.register_parametrization(layer.module, "weight", Masked(mask))


def _importance(layer: WeightLayer, method: str, generator: torch.Generator, what: str) -> Tensor:
    """The method's importance of each entry of ``layer``'s effective weight; ``-inf`` where
    the layer's mask prunes already, so that pruning again keeps a subset (nested masks)."""
    rank = get_pruning_method(method).importance
    assert rank is not None
    existing = _plain_or_masked(layer, what)
    with torch.no_grad():
        score = rank(layer.weight, generator)
        if existing is None:
            return score
        return score.masked_fill(~existing.mask, float("-inf"))


def _check_nested(pairs: list[tuple[WeightLayer, float]], k: int, what: str) -> None:
    """Refuse a count above what the chosen layers' masks keep: pruned entries stay pruned."""
    kept = sum(_kept_now(layer, what) for layer, _ in pairs)
    if k > kept:
        names = ", ".join(repr(layer.key) for layer, _ in pairs)
        raise StructureError(
            f"{what}: {names} keeps {kept} entries already, fewer than the {k} asked for; "
            "pruning keeps a subset of the kept entries (pruned ones stay pruned). Ask for a "
            "lower density, or remove_structure(model) first to prune the dense weights"
        )


def _kept_now(layer: WeightLayer, what: str) -> int:
    existing = _plain_or_masked(layer, what)
    return layer.weight.numel() if existing is None else int(existing.mask.sum())


def _layer_masks(
    pairs: list[tuple[WeightLayer, float]], method: str, generator: torch.Generator, what: str
) -> list[Tensor]:
    masks = []
    for layer, d in pairs:
        k = kept_count(layer.weight.numel(), d)
        _check_nested([(layer, d)], k, what)
        masks.append(top_k_mask(_importance(layer, method, generator, what), k))
    return masks


def _global_masks(
    pairs: list[tuple[WeightLayer, float]], method: str, generator: torch.Generator, what: str
) -> list[Tensor]:
    densities = {d for _, d in pairs}
    if len(densities) != 1:
        raise StructureError(
            "global pruning keeps one density over all chosen layers; give one density "
            f"(got {sorted(densities)}), or use scope='layer'"
        )
    scores = [_importance(layer, method, generator, what).reshape(-1) for layer, _ in pairs]
    flat = torch.cat(scores)
    k = kept_count(flat.numel(), densities.pop())
    _check_nested(pairs, k, what)
    mask = top_k_mask(flat, k)
    masks, start = [], 0
    for (layer, _), s in zip(pairs, scores, strict=True):
        masks.append(mask[start : start + s.numel()].reshape(layer.weight.shape))
        start += s.numel()
    return masks


def _score_masks(pairs: list[tuple[WeightLayer, float]], scope: Scope, what: str) -> None:
    if scope != "layer":
        raise StructureError(
            f"{what}: method 'scores' (HYDRA) keeps each layer's density; use scope='layer'"
        )
    for layer, d in pairs:
        if _plain_or_masked(layer, what) is not None:
            raise StructureError(
                f"{what}: layer {layer.key!r} is pruned already; score a plain layer"
            )
        with torch.no_grad():
            p = ScoredMask(layer.weight, d)
        parametrize.register_parametrization(layer.module, "weight", p)


def prune(
    model: nn.Module,
    density: float | Mapping[LayerKey, float],
    *,
    layers: Sequence[LayerKey] | None = None,
    scope: Scope = "layer",
    method: str = "magnitude",
    seed: int = 0,
) -> dict[str, float]:
    """Prune weight layers to an exact density, in place; returns ``{module path: density}``.

    Args:
        model: any ``nn.Module``; its ``nn.Linear`` and convolution layers can be pruned.
        density: the fraction of entries kept, in (0, 1]: one value (for ``layers``, by
            default every weight layer) or ``{layer key: density}``.
        layers: layer keys (index, module path, alias, glob) when ``density`` is one value.
        scope: ``"layer"`` (each layer keeps its density) or ``"global"`` (one ranking over
            the chosen layers).
        method: a registered pruning method (:func:`list_pruning_methods`).
        seed: seeds the ``random`` method.

    A pruned layer's weight is ``W * M`` from then on (:class:`robustrank.models.Masked`);
    pruning it again replaces its mask by a *nested* one: the method ranks the effective
    weight and only the entries the mask keeps compete, so pruned entries stay pruned (their
    stored values do not come back), as gradual pruning needs (Zhu & Gupta, 2017); a
    density above the mask's is refused. ``method="scores"`` registers HYDRA's trainable
    scores instead (train them with :func:`robustrank.structure.score_phase`).
    """
    what = "prune"
    if scope not in ("layer", "global"):
        raise StructureError(f"{what}: scope must be 'layer' or 'global', got {scope!r}")
    entry = get_pruning_method(method)
    pairs = chosen_layers(model, density, layers, what)
    for layer, d in pairs:
        check_density(layer, d, what)
    if entry.trainable:
        _score_masks(pairs, scope, what)
    else:
        generator = torch.Generator().manual_seed(seed)
        make = _global_masks if scope == "global" else _layer_masks
        masks = make(pairs, entry.name, generator, what)
        for (layer, _), mask in zip(pairs, masks, strict=True):
            _set_mask(layer, mask, what)
    return {layer.name: float(layer_structure(layer.module).density) for layer, _ in pairs}
