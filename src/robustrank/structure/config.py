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
the weights under the fixed mask. ``gradual: {start_epoch, end_epoch, every}`` prunes
gradually instead of at once (Zhu & Gupta, 2017; :mod:`.gradual`): the density falls from
1 to the target along a cubic schedule between those epochs, then stays (fine-tuning).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from .._types import PositiveInt
from ..models import Masked, StructureError, WeightLayer, as_matrix, layer_structure
from .factorization import check_rank, factorize
from .gradual import check_kept, pruning_epochs, scheduled_density
from .methods import get_pruning_method, list_pruning_methods
from .pruning import LayerKey, check_density, chosen_layers, prune

__all__ = ["GradualConfig", "PruneConfig", "FactorizeConfig", "BudgetConfig", "StructureConfig"]

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GradualConfig(_Strict):
    """Gradual pruning (Zhu & Gupta, 2017; :mod:`robustrank.structure.gradual`): the density
    falls from 1 to the target along a cubic schedule, updated at the start of epochs
    ``start_epoch, start_epoch + every, ...`` and ``end_epoch``, then fixed."""

    start_epoch: Annotated[
        int, Field(ge=1, description="the first pruning epoch (1-based; its density is 1)")
    ] = 1
    end_epoch: Annotated[
        int, Field(ge=1, description="the last pruning epoch: the target density from then on")
    ]
    every: Annotated[int, Field(ge=1, description="epochs between mask updates")] = 1

    @model_validator(mode="after")
    def _order(self) -> GradualConfig:
        if self.end_epoch < self.start_epoch:
            raise ValueError(
                f"end_epoch ({self.end_epoch}) comes before start_epoch "
                f"({self.start_epoch}); set end_epoch >= start_epoch"
            )
        return self

    @property
    def epochs(self) -> list[int]:
        """The pruning epochs, in order."""
        return pruning_epochs(self.start_epoch, self.end_epoch, self.every)

    def density(self, target: float, epoch: int) -> float:
        """The density in force during ``epoch`` for a layer pruned to ``target``."""
        return scheduled_density(target, epoch, self.start_epoch, self.end_epoch, self.every)


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
    gradual: Annotated[
        GradualConfig | None,
        Field(description="prune gradually along Zhu & Gupta's cubic schedule (not scores)"),
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
        if trainable and self.gradual is not None:
            fixed = [n for n in list_pruning_methods() if not get_pruning_method(n).trainable]
            raise ValueError(
                f"gradual pruning ranks the weights by a fixed rule, but method {self.method} "
                f"trains its own mask: drop gradual, or use a method of {', '.join(fixed)}"
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
        if self.budget is not None and self.gradual is not None:
            raise ValueError(
                "prune.gradual does not combine with budget (a budget prunes at once): drop "
                "budget and give prune: {density: FRACTION, gradual: ...} instead"
            )
        if self.budget is not None and (self.prune is not None or self.factorize is not None):
            raise ValueError("give either budget or prune/factorize, not both")
        return self

    @property
    def active(self) -> bool:
        """Whether any structure is asked for."""
        return self.prune is not None or self.factorize is not None or self.budget is not None

    @property
    def leaves_dense(self) -> bool:
        """Whether the structure leaves every layer as it is: none, or a ``budget`` at
        fraction 1 (whatever its method), the reference point of a compression curve."""
        return not self.active or (self.budget is not None and self.budget.fraction == 1)

    @property
    def score_epochs(self) -> int | None:
        """Epochs of HYDRA's score phase, or None."""
        return None if self.prune is None else self.prune.score_epochs

    @property
    def gradual(self) -> GradualConfig | None:
        """The gradual pruning schedule (Zhu & Gupta, 2017), or None (prune at once)."""
        return None if self.prune is None else self.prune.gradual

    def check_epochs(self, epochs: int) -> None:
        """Raise a ValueError naming the key and the fix if HYDRA's score phase or the
        gradual schedule does not fit in a run of ``epochs`` epochs."""
        score = self.score_epochs
        if score is not None and score > epochs:
            raise ValueError(
                f"structure.prune.score_epochs ({score}) exceeds epochs ({epochs}); the "
                "score phase is the first score_epochs epochs of the run"
            )
        g = self.gradual
        if g is not None and g.end_epoch > epochs:
            raise ValueError(
                f"structure.prune.gradual.end_epoch ({g.end_epoch}) exceeds epochs ({epochs}); "
                f"the schedule must end within the run: set end_epoch <= {epochs}, or "
                f"epochs >= {g.end_epoch}"
            )

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
            if both and p.gradual is not None:
                keys = sorted(str(layer.key) for layer, _ in pruned if layer.name in both)
                raise StructureError(
                    f"structure.prune.gradual: {', '.join(keys)} is pruned and "
                    "factorised (low rank plus sparse), whose sparse mask is set once; prune "
                    "it gradually without factorize, or drop gradual"
                )
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
        if densities and self.gradual is not None:
            done.update(self._dense_masks(model, pruned))
        elif densities:
            p = self.prune or PruneConfig(density=1.0)
            kept = prune(model, densities, scope=p.scope, method=p.method, seed=seed)
            done.update({name: {"density": d} for name, d in kept.items()})
        return done

    @staticmethod
    def _dense_masks(
        model: nn.Module, pruned: list[tuple[WeightLayer, float]]
    ) -> dict[str, dict[str, Any]]:
        """Gradual pruning's start: a full mask (density 1) on every layer on the schedule,
        so that the run's structure (state-dict keys, checkpoints) never changes shape."""
        for layer, _ in pruned:
            found = layer_structure(layer.module)
            if found is not None and not (isinstance(found, Masked) and found.density == 1):
                raise StructureError(
                    f"structure.prune.gradual: layer {layer.key!r} of the starting weights is "
                    f"structured already ({found.describe()}); the schedule starts from a "
                    "dense layer: start from dense weights, or drop gradual"
                )
        prune(model, {layer.name: 1.0 for layer, _ in pruned})  # any method: keeps all
        return {layer.name: {"density": 1.0, "target": d} for layer, d in pruned}

    def gradual_step(self, model: nn.Module, epoch: int, seed: int) -> dict[str, float]:
        """At the start of a pruning epoch of ``structure.prune.gradual``, prune (nested) to
        the cubic schedule's density (Zhu & Gupta, 2017); ``seed`` seeds random pruning.
        Returns ``{module path: density}`` of the layers pruned, empty on other epochs."""
        g, p = self.gradual, self.prune
        if g is None or p is None or epoch not in g.epochs:
            return {}
        _, pruned = self._split(model)
        densities = {layer.name: g.density(d, epoch) for layer, d in pruned}
        return prune(model, densities, scope=p.scope, method=p.method, seed=seed)

    def check_gradual(self, model: nn.Module, epoch: int) -> None:
        """Raise a StructureError unless the masks keep exactly the schedule's count of
        ``epoch`` (Zhu & Gupta, 2017): the density in force, not the target, mid-schedule."""
        g, p = self.gradual, self.prune
        if g is None or p is None:
            return
        _, pruned = self._split(model)
        check_kept([(layer, g.density(d, epoch)) for layer, d in pruned], p.scope, "gradual")
