"""AutoAttack (Croce & Hein, ICML 2020): an ensemble of complementary parameter-free attacks.

Each component attacks only the inputs that every earlier component left robust, always
from the clean ``x``; an input counts as broken by the first component that fools it, and
the result is the per-example worst case over the ensemble. Components are built by name
from the attack registry, so any registered attack can join a custom ensemble.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._modes import model_device
from .base import Attack, check_int, check_seed, check_steps
from .precision import Autocast, Precision, resolve_precision
from .registry import create_attack, get_attack, register_attack

__all__ = ["AutoAttack", "ComponentStats", "AUTOATTACK_VERSIONS"]

#: The reference's ensembles (fra31/auto-attack, ``autoattack.py``), in running order:
#: ``(registered name, options)``. ``standard`` is the RobustBench protocol.
AUTOATTACK_VERSIONS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "standard": (
        ("apgd-ce", {"n_restarts": 1}),
        ("apgd-t", {"n_target_classes": 9, "n_restarts": 1}),
        ("fab-t", {"n_target_classes": 9, "n_restarts": 1}),
        ("square", {"n_queries": 5000}),
    ),
    "plus": (
        ("apgd-ce", {"n_restarts": 5}),
        ("apgd-dlr", {"n_restarts": 5}),
        ("fab", {"n_restarts": 5}),
        ("square", {"n_queries": 5000}),
        ("apgd-t", {"n_target_classes": 9, "n_restarts": 1}),
        ("fab-t", {"n_target_classes": 9, "n_restarts": 1}),
    ),
}


@dataclass
class ComponentStats:
    """What one ensemble member did, summed over every call since the last reset.

    ``n_attacked`` inputs were still robust when it ran; it broke ``n_broken`` of them in
    ``seconds``, with ``forward`` / ``backward`` model evaluations (rows). With a
    low-precision search, ``n_unconfirmed`` examples it found fooled the search model but
    not the float32 model (those inputs stay robust for the next components).
    """

    name: str
    n_attacked: int = 0
    n_broken: int = 0
    seconds: float = 0.0
    forward: int = 0
    backward: int = 0
    n_unconfirmed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ComponentList = Sequence[str | tuple[str, Mapping[str, Any]]]


def _normalise_components(
    version: str, attacks: ComponentList | None
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    if attacks is not None:
        if isinstance(attacks, str) or not len(attacks):
            raise ValueError(
                "attacks must be a non-empty list of registered names or (name, options) "
                "pairs, e.g. ['apgd-ce', ('square', {'n_queries': 1000})]"
            )
        items = [(a, {}) if isinstance(a, str) else (a[0], dict(a[1])) for a in attacks]
        return "custom", items
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(
            f"unknown AutoAttack version {version!r}; choose one of "
            f"{', '.join(AUTOATTACK_VERSIONS)}, or pass attacks=[...] for a custom ensemble"
        )
    return version, [(n, dict(o)) for n, o in AUTOATTACK_VERSIONS[version]]


@register_attack(
    "autoattack",
    defaults={"version": "standard"},
    description="AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square; per-example worst case",
    title="AutoAttack",
)
class AutoAttack(Attack):
    """AutoAttack (Croce & Hein, ICML 2020), l_inf: the per-example worst case of an ensemble.

    ``version="standard"`` runs APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and Square
    (5000 queries) with 100 iterations each; ``"plus"`` adds APGD-DLR and FAB with 5
    restarts; ``attacks=[...]`` runs any registered attacks (names, or ``(name, options)``
    pairs) in the given order. Each component attacks only the inputs still robust, from
    the clean ``x``. After a call, :attr:`stats` holds each component's inputs attacked,
    inputs broken, time and model evaluations (summed over calls until
    :meth:`reset_counts`).

    Args:
        model: logits model, inputs ``(N, C, H, W)`` in [0, 1].
        eps: l_inf budget.
        version: ``"standard"`` or ``"plus"`` (ignored when ``attacks`` is given).
        attacks: a custom ensemble, e.g. ``["apgd-ce", ("square", {"n_queries": 1000})]``.
        steps: iterations of every component that takes ``steps`` (reference: 100).
        n_queries: queries of every component that takes ``n_queries`` (Square: 5000).
        seed: seed of every component (the reference re-seeds each call; 0 by default).
        channels_last: passed to every component (default: auto).
        precision: ``"float32"``, or ``"bfloat16"``: the components search on the model
            under autocast (:mod:`~robustrank.attacks.precision`), and an input counts as
            broken only when the float32 model misclassifies the example found; an input
            whose find float32 does not confirm is attacked again by the same component
            in float32. ``"auto"``: bfloat16 where the model's device computes it
            natively, float32 elsewhere (``params()["precision"]`` is the one used).

    Shape: ``x (N, C, H, W)``, ``y (N,)`` -> ``x_adv (N, C, H, W)``.

    Example::

        >>> aa = AutoAttack(model, eps=0.05)
        >>> x_adv, fooled = aa.run(x, y)
        >>> [(s.name, s.n_broken) for s in aa.stats]
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        version: str = "standard",
        attacks: ComponentList | None = None,
        steps: int | None = None,
        n_queries: int | None = None,
        seed: int | None = 0,
        channels_last: bool | None = None,
        precision: str = "float32",
    ) -> None:
        super().__init__(model, eps, channels_last)
        self.precision = resolve_precision(precision, model_device(model))
        self.search_model = (
            model if self.precision is Precision.float32 else Autocast(model, self.precision.dtype)
        )
        self.version, items = _normalise_components(version, attacks)
        self.steps = None if steps is None else check_steps(steps)
        self.n_queries = None if n_queries is None else check_int(n_queries, "n_queries", 1)
        self.seed = check_seed(seed)
        self._items = items
        self.components = [
            self._build(name, dict(options), self.search_model) for name, options in items
        ]
        self._exact: dict[int, Attack] = {}
        self.stats = [ComponentStats(c.name) for c in self.components]

    def _build(self, name: str, options: dict[str, Any], model: nn.Module) -> Attack:
        spec = get_attack(name)
        if spec.cls is AutoAttack:
            raise ValueError("an AutoAttack ensemble cannot contain another AutoAttack")
        extra = {
            "seed": self.seed,
            "steps": self.steps,
            "n_queries": self.n_queries,
            "channels_last": self.channels_last,
        }
        for key, value in extra.items():
            if value is not None and spec.accepts(key) and (key not in options or key != "seed"):
                options[key] = value
        return create_attack(spec.name, model, self.eps, **options)

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "version": self.version,
            "attacks": [{"name": c.name, **c.params()} for c in self.components],
            "seed": self.seed,
            "precision": self.precision.value,
        }

    def counts(self) -> dict[str, int]:
        """Model evaluations (rows) of the whole ensemble, including the clean check."""
        own = super().counts()
        for c in [*self.components, *self._exact.values()]:
            for k, v in c.counts().items():
                own[k] += v
        return own

    def reset_counts(self) -> None:
        """Zero the evaluation counters and :attr:`stats` (of every component too)."""
        super().reset_counts()
        for c in [*self.components, *self._exact.values()]:
            c.reset_counts()
        self.stats = [ComponentStats(c.name) for c in self.components]

    def details(self) -> dict[str, Any]:
        return {"components": [s.to_dict() for s in self.stats]}

    def perturb(self, x: Tensor, y: Tensor, early_stop: bool = False) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            fooled = self._forward(x).argmax(1) != y
        x_adv = x.clone()
        for i, (attack, stats) in enumerate(zip(self.components, self.stats)):
            robust = torch.nonzero(~fooled, as_tuple=True)[0]
            if robust.numel() == 0:
                break
            before = self._component_counts(i)
            t0 = time.perf_counter()
            res = attack.run(x[robust], y[robust], early_stop=True)
            found, adv = self._confirmed(i, x[robust], y[robust], res.x_adv, res.fooled)
            stats.seconds += time.perf_counter() - t0
            after = self._component_counts(i)
            stats.forward += after["forward"] - before["forward"]
            stats.backward += after["backward"] - before["backward"]
            stats.n_attacked += robust.numel()
            stats.n_broken += int(found.sum())
            broken = robust[found]
            x_adv[broken] = adv[found]
            fooled[broken] = True
        return x_adv, fooled

    def _component_counts(self, i: int) -> dict[str, int]:
        """Rows evaluated by component ``i``: its search and its float32 re-attacks."""
        counts = dict(self.components[i].counts())
        if i in self._exact:
            for k, v in self._exact[i].counts().items():
                counts[k] += v
        return counts

    def _confirmed(
        self, i: int, x: Tensor, y: Tensor, x_adv: Tensor, found: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Which inputs component ``i`` broke, and the examples: a low-precision search's
        finds count only where the float32 model misclassifies them too; an unconfirmed
        input is attacked again by the same component in float32. A float32 search needs
        no check."""
        if self.precision is Precision.float32 or not bool(found.any()):
            return found, x_adv
        rows = torch.nonzero(found, as_tuple=True)[0]
        with torch.no_grad():
            wrong = self._forward(x_adv[rows]).argmax(1) != y[rows]
        found, x_adv = found.clone(), x_adv.clone()
        retry = rows[~wrong]
        self.stats[i].n_unconfirmed += retry.numel()
        if retry.numel():
            exact = self._exact_component(i)
            res = exact.run(x[retry], y[retry], early_stop=True)
            found[retry] = res.fooled
            x_adv[retry] = res.x_adv
        return found, x_adv

    def _exact_component(self, i: int) -> Attack:
        """Component ``i`` on the float32 model (built on first use)."""
        if i not in self._exact:
            name, options = self._items[i]
            self._exact[i] = self._build(name, dict(options), self.model)
        return self._exact[i]
