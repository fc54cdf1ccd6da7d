"""The ``structure:`` section of a training config: exact structure set before training.

.. code-block:: yaml

    structure:
      prune: {density: {W1: 0.1}, method: magnitude, scope: layer}   # or method: scores
      factorize: {rank: {W1: 5}}                                     # or energy: 0.95

Keys select layers as in ``regularizers`` (1-based paper index, module path, alias, glob).
A density of 1 and a rank of ``null`` leave a layer as it is, so that a sweep's grid can
hold "no pruning" and "no factorisation" as values.
A layer both pruned and factorised becomes low rank plus sparse (ATMC):
``U V + S * M`` with the rank of ``factorize`` and the density of ``prune``.
``budget: {fraction: 0.03, method: prune | low_rank | both}`` instead compresses every
chosen layer to that fraction of its parameters (ATMC-style curves). The
structure is applied to the starting weights (fresh, a checkpoint or a preset's run),
and stays through training, checkpoints and resume. ``method: scores`` is HYDRA: the
first ``score_epochs`` epochs train the scores with the weights frozen, the rest fine-tune
the weights under the fixed mask.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from .._types import PositiveInt
from ..models import StructureError, WeightLayer, as_matrix
from .factorization import check_rank, factorize
from .methods import get_pruning_method
from .pruning import LayerKey, check_density, chosen_layers, prune

__all__ = ["PruneConfig", "FactorizeConfig", "BudgetConfig", "StructureConfig"]

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PruneConfig(_Strict):
    """Pruning to an exact density (:func:`robustrank.structure.prune`)."""

    density: Annotated[
        float | dict[LayerKey, float],
        Field(description="fraction of entries kept, in (0, 1]: one value or {layer: density}"),
    ]
    layers: list[LayerKey] | None = None
    method: str = "magnitude"
    scope: Literal["layer", "global"] = "layer"
    score_epochs: Annotated[
        PositiveInt | None,
        Field(description="method scores (HYDRA): epochs that train the scores first"),
    ] = None
    score_lr: Annotated[
        float | None,
        Field(
            gt=0,
            description="method scores: the learning rate of the score phase (HYDRA: 0.1); "
            "default: the run's",
        ),
    ] = None

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        return get_pruning_method(value).name  # raises naming the registered methods

    @model_validator(mode="after")
    def _scores(self) -> PruneConfig:
        trainable = get_pruning_method(self.method).trainable
        if trainable and self.score_epochs is None:
            raise ValueError(
                f"method {self.method} trains scores first: set score_epochs (e.g. half the "
                "epochs; the rest fine-tune the weights under the learnt mask)"
            )
        if not trainable and (self.score_epochs is not None or self.score_lr is not None):
            raise ValueError(
                f"score_epochs and score_lr belong to method scores, not {self.method}"
            )
        return self


class FactorizeConfig(_Strict):
    """Low-rank factorisation to an exact rank (:func:`robustrank.structure.factorize`)."""

    rank: Annotated[
        int | dict[LayerKey, int | None] | None,
        Field(
            description="one rank or {layer: rank}, each in [1, min(out, in*kh*kw)]; null "
            "leaves a layer unfactorised"
        ),
    ] = None
    energy: Annotated[
        Fraction | None, Field(description="instead of rank: the fraction of ||W||_F^2 kept")
    ] = None
    layers: list[LayerKey] | None = None

    @model_validator(mode="after")
    def _one(self) -> FactorizeConfig:
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of rank and energy")
        return self


class BudgetConfig(_Strict):
    """Compress layers to a ``fraction`` of their weight parameters with one ``method``, the
    x-axis of an ATMC-style curve (Gui et al., NeurIPS 2019): ``prune`` keeps that density,
    ``low_rank`` the largest rank ``r`` with ``r (m + n) <= fraction m n`` (at least 1),
    ``both`` half the budget each (low rank plus sparse). A fraction of 1 leaves the layers
    dense (the curve's reference point)."""

    fraction: Fraction
    method: Literal["prune", "low_rank", "both"]
    layers: list[LayerKey] | None = None

    def plan(self, layer: WeightLayer) -> tuple[int | None, float | None]:
        """``(rank or None, density or None)`` of ``layer`` under this budget."""
        if self.fraction == 1:
            return None, None
        m, n = as_matrix(layer.weight).shape
        share = self.fraction / 2 if self.method == "both" else self.fraction
        rank = max(1, min(min(m, n), int(share * m * n / (m + n))))
        if self.method == "prune":
            return None, self.fraction
        return rank, (share if self.method == "both" else None)


class StructureConfig(_Strict):
    """Exact structure of a run: ``prune`` and/or ``factorize`` (both may name a layer), or
    a parameter ``budget`` (one method at a fraction of the parameters)."""

    prune: PruneConfig | None = None
    factorize: FactorizeConfig | None = None
    budget: BudgetConfig | None = None

    @model_validator(mode="after")
    def _budget_alone(self) -> StructureConfig:
        if self.budget is not None and (self.prune is not None or self.factorize is not None):
            raise ValueError("give either budget or prune/factorize, not both")
        return self

    @property
    def active(self) -> bool:
        """Whether any structure is asked for."""
        return self.prune is not None or self.factorize is not None or self.budget is not None

    @property
    def score_epochs(self) -> int | None:
        """Epochs of HYDRA's score phase, or None."""
        return None if self.prune is None else self.prune.score_epochs

    def plain(self) -> dict[str, Any]:
        """Plain data (layer keys keep their types), without unset sections."""
        return self.model_dump(exclude_none=True)

    def _split(
        self, model: nn.Module
    ) -> tuple[list[tuple[WeightLayer, str, Any]], list[tuple[WeightLayer, float]]]:
        """``([(layer, "rank" | "energy", value)], [(layer, density)])``, checked; a rank of
        ``null`` and a density of 1 leave a layer as it is (a grid's "none" value)."""
        if self.budget is not None:
            return self._budget_split(model, self.budget)
        factors: list[tuple[WeightLayer, str, Any]] = []
        if self.factorize is not None:
            f = self.factorize
            kind, values = ("rank", f.rank) if f.rank is not None else ("energy", f.energy)
            for layer, value in chosen_layers(model, values, f.layers, "structure.factorize"):
                if kind == "rank" and value is not None:
                    check_rank(layer, value, "structure.factorize")
                if value is not None:
                    factors.append((layer, kind, value))
        pruned: list[tuple[WeightLayer, float]] = []
        if self.prune is not None:
            p = self.prune
            for layer, d in chosen_layers(model, p.density, p.layers, "structure.prune"):
                check_density(layer, d, "structure.prune")
                if d != 1:
                    pruned.append((layer, float(d)))
            both = {layer.name for layer, _, _ in factors} & {layer.name for layer, _ in pruned}
            if both and (p.method != "magnitude" or p.scope != "layer"):
                raise StructureError(
                    f"structure: {', '.join(sorted(both))} is pruned and factorised (low rank "
                    f"plus sparse), which takes method magnitude and scope layer, not "
                    f"{p.method}/{p.scope}; or prune and factorise different layers"
                )
        return factors, pruned

    @staticmethod
    def _budget_split(
        model: nn.Module, budget: BudgetConfig
    ) -> tuple[list[tuple[WeightLayer, str, Any]], list[tuple[WeightLayer, float]]]:
        factors: list[tuple[WeightLayer, str, Any]] = []
        pruned: list[tuple[WeightLayer, float]] = []
        for layer, _ in chosen_layers(model, budget.fraction, budget.layers, "structure.budget"):
            rank, density = budget.plan(layer)
            if rank is not None:
                factors.append((layer, "rank", rank))
            if density is not None:
                pruned.append((layer, density))
        return factors, pruned

    def check_model(self, model: nn.Module) -> None:
        """Raise a :class:`~robustrank.models.StructureError` naming the key and the fix if
        a key selects no layer, a density or rank is out of range, or a combination is not
        supported (works on a ``meta``-device model: nothing is computed)."""
        self._split(model)

    def apply(self, model: nn.Module, seed: int) -> dict[str, dict[str, Any]]:
        """Structure ``model`` in place (factorise, then prune; ``seed`` seeds random
        pruning); returns ``{module path: {"rank": r} | {"density": d} | both}``."""
        factors, pruned = self._split(model)
        densities = {layer.name: d for layer, d in pruned}
        done: dict[str, dict[str, Any]] = {}
        for layer, kind, value in factors:
            sparse = densities.pop(layer.name, None)
            ranks = factorize(
                model,
                {layer.name: value} if kind == "rank" else None,
                energy=value if kind == "energy" else None,
                layers=[layer.name] if kind == "energy" else None,
                density=None if sparse is None else {layer.name: sparse},
            )
            done[layer.name] = {"rank": ranks[layer.name]}
            if sparse is not None:
                done[layer.name]["density"] = sparse
        if densities:
            p = self.prune or PruneConfig(density=1.0)
            kept = prune(model, densities, scope=p.scope, method=p.method, seed=seed)
            done.update({name: {"density": d} for name, d in kept.items()})
        return done
