"""Search strategies, each registered where it is defined: ``grid``, ``random``, ``halving``
and ``optuna`` (the registry: :mod:`.registry`).

``grid`` and ``random`` plan every trial up front (a list of ``{dotted key: value}``);
``halving`` plans the grid (or random draws) and judges them at the spec's fidelity rungs
(successive halving, :mod:`.fidelity`);
``optuna`` asks a multi-objective study (clean accuracy and robust accuracy, both
maximised; NSGA-II, Deb et al. 2002) for trials as results come in, stored in SQLite so
that an interrupted sweep resumes and ``optuna-dashboard`` can open it.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from .registry import register_strategy
from .spec import LogUniform, SpecError, SweepSpec

__all__ = [
    "grid_trials",
    "random_trials",
    "halving_trials",
    "grid_shape",
    "OptunaDriver",
    "OPTUNA_DB",
]

OPTUNA_DB = "optuna.db"


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers (trial values are written to YAML/JSON)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, list | dict) else value


def grid_shape(spec: SweepSpec) -> list[int]:
    """The number of grid points of each space key, in order (nothing is materialised)."""
    return [(d.num or 2) if isinstance(d, LogUniform) else len(d) for d in spec.space.values()]


def _grid_count(spec: SweepSpec) -> int:
    return math.prod(grid_shape(spec))


def _grid_text(spec: SweepSpec) -> tuple[str, str]:
    return f"a grid of {' x '.join(str(n) for n in grid_shape(spec))} values", "shrink the space"


def _grid_check(spec: SweepSpec) -> None:
    for key, dim in spec.space.items():
        if isinstance(dim, LogUniform) and dim.num is None:
            raise ValueError(
                f"space[{key}]: strategy grid needs num (grid points) for a log_uniform "
                "range; add num: 5, say, or give a list of values"
            )


@register_strategy(
    "grid",
    description="every combination of the space (log_uniform ranges need num points)",
    needs_n_trials=False,
    count=_grid_count,
    check=_grid_check,
    count_text=_grid_text,
)
def grid_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the space, the last key varying fastest; a log_uniform range
    contributes ``num`` log-spaced points."""
    keys = list(spec.space)
    axes = [d.grid() if isinstance(d, LogUniform) else list(d) for d in spec.space.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


@register_strategy("random", description="n_trials independent draws, seeded by the spec's seed")
def random_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """``n_trials`` draws with ``numpy.random.default_rng(spec.seed)``: lists uniformly,
    log_uniform ranges as ``exp(uniform(log lo, log hi))``; the same draws on every call."""
    import numpy as np

    rng = np.random.default_rng(spec.seed)
    trials = []
    for _ in range(spec.n_trials or 0):
        values = {}
        for key, dim in spec.space.items():
            if isinstance(dim, LogUniform):
                lo, hi = dim.log_uniform
                values[key] = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
            else:
                values[key] = _plain(dim[int(rng.integers(len(dim)))])
        trials.append(values)
    return trials


def _halving_count(spec: SweepSpec) -> int:
    return spec.n_trials or _grid_count(spec)


def _halving_check(spec: SweepSpec) -> None:
    if not spec.n_trials:
        _grid_check(spec)


def _halving_text(spec: SweepSpec) -> tuple[str, str]:
    if spec.n_trials:
        return "n_trials of strategy halving", "lower n_trials"
    return _grid_text(spec)


@register_strategy(
    "halving",
    description="successive halving: the grid (or n_trials random draws) judged by a cheap "
    "signal at fidelity.rungs; only survivors train to the end and get the objective",
    needs_n_trials=False,
    count=_halving_count,
    check=_halving_check,
    count_text=_halving_text,
    multi_fidelity=True,
)
def halving_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """The candidates of successive halving: ``n_trials`` random draws (:func:`random_trials`)
    if given, else every combination of the space (:func:`grid_trials`)."""
    return random_trials(spec) if spec.n_trials else grid_trials(spec)


# --------------------------------------------------------------------------- optuna


def _import_optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "strategy optuna needs Optuna: pip install 'robustrank[sweep]'; or use strategy "
            "grid or random"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _distributions(spec: SweepSpec) -> dict[str, Any]:
    """Optuna distributions of the space: categorical for lists, log floats for ranges."""
    optuna = _import_optuna()
    out: dict[str, Any] = {}
    for key, dim in spec.space.items():
        if isinstance(dim, LogUniform):
            lo, hi = dim.log_uniform
            out[key] = optuna.distributions.FloatDistribution(lo, hi, log=True)
            continue
        bad = [v for v in dim if not (v is None or isinstance(v, bool | int | float | str))]
        if bad:
            raise SpecError(
                f"space[{key}]: strategy optuna takes values that are numbers, strings, "
                f"booleans or null, not {bad[0]!r}; use strategy grid or random"
            )
        out[key] = optuna.distributions.CategoricalDistribution(list(dim))
    return out


def _pruner(spec: SweepSpec) -> Any:
    """The Optuna pruner ``fidelity.pruner`` names: ``median`` (Optuna's defaults),
    ``successive-halving`` (min resource: the first rung, reduction factor: eta rounded)
    or ``hyperband`` (resources from the first to the last rung)."""
    optuna = _import_optuna()
    fidelity = spec.fidelity
    assert fidelity is not None and fidelity.pruner is not None
    factor = max(2, round(fidelity.eta))
    first, last = fidelity.rungs[0], fidelity.rungs[-1]
    if fidelity.pruner == "median":
        return optuna.pruners.MedianPruner()
    if fidelity.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=factor)
    return optuna.pruners.HyperbandPruner(
        min_resource=first, max_resource=max(last, first + 1), reduction_factor=factor
    )


@register_strategy(
    "optuna",
    adaptive=True,
    description="n_trials from a multi-objective Optuna study (clean vs robust accuracy, "
    "NSGA-II), stored in OUT/optuna.db; with fidelity.pruner, Optuna's pruner stops trials "
    "at the rungs (pip install 'robustrank[sweep]')",
)
class OptunaDriver:
    """The study of a sweep: ``sqlite:///OUT/optuna.db``, named after the spec, two
    maximised objectives (clean, robust accuracy), NSGA-II seeded by the spec's seed.

    Trials a killed driver left RUNNING are found by :meth:`unfinished` and told later
    with their stored parameters; COMPLETE and PRUNED trials count towards ``n_trials``.

    With ``fidelity.pruner``, the robust signal of each rung is reported to a companion
    single-objective study ``<name>.signal`` in the same database, whose Optuna pruner
    decides (Optuna does not prune multi-objective studies); a pruned trial is told
    PRUNED in the main study.
    """

    def __init__(self, spec: SweepSpec, out_dir: Path) -> None:
        optuna = _import_optuna()
        self.optuna = optuna
        self.keys = list(spec.space)
        self.distributions = _distributions(spec)
        storage = f"sqlite:///{Path(out_dir).resolve() / OPTUNA_DB}"
        self.study = optuna.create_study(
            storage=storage,
            study_name=spec.name,
            directions=["maximize", "maximize"],
            sampler=optuna.samplers.NSGAIISampler(seed=spec.seed),
            load_if_exists=True,
        )
        fidelity = spec.fidelity
        self.pruner = fidelity.pruner if fidelity is not None else None
        self.signal_study = None
        if self.pruner is not None:
            self.signal_study = optuna.create_study(
                storage=storage,
                study_name=f"{spec.name}.signal",
                direction="maximize",
                pruner=_pruner(spec),
                load_if_exists=True,
            )
        self._signal_trials: dict[int, Any] = {}

    def _values(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: params[k] for k in self.keys}

    def _in_state(self, state: Any) -> list[tuple[int, dict[str, Any]]]:
        trials = self.study.get_trials(deepcopy=False, states=(state,))
        return [(t.number, self._values(t.params)) for t in trials]

    def completed(self) -> list[tuple[int, dict[str, Any]]]:
        """``(number, values)`` of the COMPLETE trials."""
        return self._in_state(self.optuna.trial.TrialState.COMPLETE)

    def pruned(self) -> list[tuple[int, dict[str, Any]]]:
        """``(number, values)`` of the PRUNED trials."""
        return self._in_state(self.optuna.trial.TrialState.PRUNED)

    def unfinished(self) -> list[tuple[int, dict[str, Any]]]:
        """``(number, values)`` of trials asked but never told (a driver died)."""
        return self._in_state(self.optuna.trial.TrialState.RUNNING)

    def ask(self, k: int) -> list[tuple[int, dict[str, Any]]]:
        """``k`` new trials ``(number, values)``."""
        trials = [self.study.ask(self.distributions) for _ in range(k)]
        return [(t.number, self._values(t.params)) for t in trials]

    def tell(self, number: int, clean: float, robust: float) -> None:
        """Report a finished trial's objectives."""
        self.study.tell(number, [float(clean), float(robust)])
        if self.signal_study is not None:
            self.signal_study.tell(self._signal_trial(number), float(robust))

    # ------------------------------------------------------------------ pruning

    def _signal_trial(self, number: int) -> Any:
        """Trial ``number``'s trial in the signal study: this driver's, else a new one (a
        killed driver's is told FAIL: its reports are made again)."""
        if number in self._signal_trials:
            return self._signal_trials[number]
        assert self.signal_study is not None
        running = self.signal_study.get_trials(
            deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,)
        )
        for old in running:
            if old.user_attrs.get("trial") == number:
                self.signal_study.tell(old.number, state=self.optuna.trial.TrialState.FAIL)
        trial = self.signal_study.ask()
        trial.set_user_attr("trial", number)
        self._signal_trials[number] = trial
        return trial

    def report(self, number: int, epoch: int, robust: float) -> bool:
        """Report trial ``number``'s robust signal at ``epoch``; whether to prune it."""
        trial = self._signal_trial(number)
        trial.report(float(robust), epoch)
        return bool(trial.should_prune())

    def prune(self, number: int) -> None:
        """Stop trial ``number`` (PRUNED in both studies)."""
        pruned = self.optuna.trial.TrialState.PRUNED
        self.signal_study.tell(self._signal_trial(number), state=pruned)  # type: ignore[union-attr]
        self.study.tell(number, state=pruned)

    def pruned_at(self, number: int) -> int | None:
        """The epoch (last reported step) at which trial ``number`` was pruned."""
        if self.signal_study is None:
            return None
        pruned = self.signal_study.get_trials(
            deepcopy=False, states=(self.optuna.trial.TrialState.PRUNED,)
        )
        for t in pruned:
            if t.user_attrs.get("trial") == number and t.intermediate_values:
                return max(t.intermediate_values)
        return None
