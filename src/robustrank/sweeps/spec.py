"""Sweep specs: a base config, overrides, a search space over dotted config keys, a strategy.

A spec answers questions such as the paper's closing one (Section 6: is there an optimal
combination of sparsity and low rank for robustness?) by training many runs over the
lambdas of Eqs. (5)-(7), eps, epochs and seeds. It is validated YAML (unknown keys are
errors), and every trial config it produces is validated with
:func:`robustrank.training.config_from_dict` before anything trains, so a bad key or value
is reported against the spec key that caused it.

Example (``examples/sweeps/tiny-open-question.yaml``)::

    name: tiny-open-question
    base: fcnn-natural
    overrides: {epochs: 2, train_subset: 10000}
    space:
      regularizers.l1.1: [0.0, 0.001]     # lambda_{1,1} (Eq. 5) of layer 1 (W1)
      regularizers.nuclear.1: [0.0, 0.001] # lambda_{*,1} (Eq. 6)
      seed: [0, 1]
    strategy: grid
"""

from __future__ import annotations

import difflib
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from .._types import NonNegativeInt, PositiveInt
from ..evaluation import AttackChoice
from ..yamlio import YAMLInputError, load_yaml, load_yaml_file
from .fidelity import Fidelity
from .registry import count_trials, get_strategy
from .space import SpaceError, merge_overrides, set_path

__all__ = [
    "SpecError",
    "LogUniform",
    "Objective",
    "SweepSpec",
    "DEFAULT_MAX_TRIALS",
    "check_trial_count",
    "load_spec",
    "list_specs",
    "spec_from_dict",
]


#: The most trials a sweep may ask for unless its ``max_trials`` (or the caller) raises it.
DEFAULT_MAX_TRIALS = 10_000


class SpecError(ValueError):
    """A sweep spec is invalid; the message names the spec key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogUniform(_Strict):
    """A log-uniform range ``[lo, hi]``; ``num`` grid points (``np.geomspace``) for grids."""

    log_uniform: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]
    num: (
        Annotated[int, Field(ge=2, description="grid points, required by strategy grid")] | None
    ) = None

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        lo, hi = self.log_uniform
        if not (math.isfinite(hi) and lo < hi):
            raise ValueError(f"log_uniform needs 0 < lo < hi, got [{lo}, {hi}]; swap or fix them")
        return self

    def grid(self) -> list[float]:
        """``num`` log-spaced points from lo to hi (both included)."""
        import numpy as np

        lo, hi = self.log_uniform
        return [float(v) for v in np.geomspace(lo, hi, self.num or 2)]


def _dim_kind(value: Any) -> str:
    return "range" if isinstance(value, dict | LogUniform) else "values"


#: One dimension of the space: a non-empty list of values or a log-uniform range.
Dimension = Annotated[
    Annotated[list[Any], Field(min_length=1), Tag("values")] | Annotated[LogUniform, Tag("range")],
    Discriminator(_dim_kind),
]


class Objective(AttackChoice):
    """The robust accuracy a sweep reports and Optuna maximises (with the clean accuracy):
    a registered attack at ``eps`` on ``n`` seeded test inputs (paper: eps = 0.05)."""

    attack: str = "autoattack"
    eps: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    n: PositiveInt = 1000
    seed: int = Field(1, description="seed of the test subset")

    def evaluation(self) -> dict[str, Any]:
        """The :class:`~robustrank.evaluation.EvaluationSpec` of every trial
        (no curve, no diagnostics), as plain data."""
        from ..evaluation import EvaluationSpec

        spec = EvaluationSpec(
            eps=self.eps,
            n=self.n,
            seed=self.seed,
            attack=self.attack,
            options=dict(self.options),
            curve=None,
            diagnostics=None,
        )
        return spec.model_dump(mode="json")


class SweepSpec(_Strict):
    """A validated sweep (see the module docstring and ``README.md``, "Sweeps")."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    description: str = ""
    base: Annotated[str, Field(description="a preset name or a YAML config path")]
    overrides: dict[str, Any] = Field(default_factory=dict)
    parent_overrides: dict[str, Any] = Field(
        default_factory=dict, description="deep-merged into the parent preset of a fine-tune base"
    )
    space: Annotated[dict[str, Dimension], Field(min_length=1)]
    strategy: Annotated[str, Field(description="a registered strategy (robustrank sweep list)")]
    n_trials: PositiveInt | None = None
    max_trials: PositiveInt | None = Field(
        None,
        description=f"refuse a sweep of more trials than this (default {DEFAULT_MAX_TRIALS:,}); "
        "not part of the sweep's identity",
    )
    seed: NonNegativeInt = 0
    batch: PositiveInt | None = Field(
        None, description="optuna: trials asked at a time (default: the executor's workers)"
    )
    objective: Objective = Field(default_factory=Objective)
    fidelity: Fidelity | None = Field(
        None,
        description="multi-fidelity: judge trials by a cheap signal at rung epochs "
        "(strategy halving; optuna with a pruner)",
    )
    reference: dict[str, Any] | None = Field(
        None,
        description="space values of the baseline every combination is compared with, "
        "paired by seed (e.g. {structure.prune.density.W1: 1.0}); not part of the identity",
    )
    base_dir: Path | None = Field(
        None, exclude=True, description="where a base path is relative to"
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        get_strategy(name)  # raises naming the registered strategies
        return name

    @model_validator(mode="after")
    def _strategy_needs(self) -> SweepSpec:
        strategy = get_strategy(self.strategy)
        if strategy.needs_n_trials and self.n_trials is None:
            raise ValueError(f"n_trials is required for strategy {self.strategy}; add it")
        if strategy.check is not None:
            strategy.check(self)
        self._check_fidelity()
        return self

    def _check_fidelity(self) -> None:
        strategy = get_strategy(self.strategy)
        fidelity = self.fidelity
        if strategy.multi_fidelity and fidelity is None:
            raise ValueError(
                f"strategy {self.strategy} judges trials at rungs; add fidelity: {{rungs: [2]}} "
                "(epochs at which trials are judged)"
            )
        if fidelity is None:
            return
        if not (strategy.multi_fidelity or strategy.adaptive):
            raise ValueError(
                f"fidelity needs a multi-fidelity strategy, not {self.strategy}: use strategy "
                "halving (or optuna with fidelity.pruner), or remove fidelity"
            )
        if strategy.adaptive and fidelity.pruner is None:
            raise ValueError(
                f"strategy {self.strategy} with fidelity needs fidelity.pruner (one of "
                "median, successive-halving, hyperband)"
            )
        if strategy.multi_fidelity and fidelity.pruner is not None:
            raise ValueError(
                f"fidelity.pruner is for strategy optuna; strategy {self.strategy} judges rungs "
                "by eta, clean_tolerance and robust_margin: remove pruner"
            )

    def base_config(self) -> dict[str, Any]:
        """The base config with the overrides applied, as plain data (not yet validated).

        A base that leaves ``threads`` unset (and a space that does not sweep it) runs its
        trials with one thread each, as ``reproduce`` does: a run's numbers depend on its
        thread count, so they are then the same whichever executor runs the trials."""
        base = merge_overrides(_load_base(self), self.overrides)
        if base.get("threads") is None and "threads" not in self.space:
            base["threads"] = 1
        return base

    def identity(self) -> dict[str, Any]:
        """What makes two sweeps the same: the spec (without its description) and the base
        config it resolves to."""
        data = self.model_dump(mode="json", exclude={"description", "max_trials", "reference"})
        return {"spec": data, "base_config": self.base_config()}


def _load_base(spec: SweepSpec) -> dict[str, Any]:
    from ..training import ConfigError, load_config, load_preset

    base = spec.base
    looks_like_path = base.endswith((".yaml", ".yml")) or "/" in base or "\\" in base
    try:
        if not looks_like_path:
            return load_preset(base).plain()  # an unknown name raises naming the presets
        path = Path(base)
        if not path.is_absolute() and spec.base_dir is not None:
            path = spec.base_dir / path
        return load_config(path).plain()
    except ConfigError as err:
        raise SpecError(f"base: {err}") from None


# --------------------------------------------------------------------------- validation


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("values", "range")]
    out = ""
    for i, part in enumerate(parts):
        if i and parts[i - 1] == "space":
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _spec_message(e: dict[str, Any], loc: tuple[Any, ...]) -> str:
    if e["type"] == "extra_forbidden":
        from ..evaluation import SignalSpec

        owners = {
            (): SweepSpec,
            ("objective",): Objective,
            ("fidelity",): Fidelity,
            ("fidelity", "signal"): SignalSpec,
        }
        owner = owners.get(tuple(loc[:-1]))
        allowed = [k for k in owner.model_fields if k != "base_dir"] if owner else ["log_uniform"]
        if owner is None:
            allowed.append("num")
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key{hint} (allowed here: {', '.join(allowed)})"
    if e["type"] == "missing":
        return "required key is missing"
    if e["type"] == "too_short" and loc and loc[0] == "space":
        if len(loc) == 1:
            return "the space is empty; give at least one key: a list of values or a log_uniform"
        return "empty list of values; give at least one value (or remove the key)"
    if e["type"] == "greater_than" and "log_uniform" in loc:
        return "log_uniform bounds must be > 0; to include 0 give a list such as [0, 0.001, 0.01]"
    if e["type"] == "string_pattern_mismatch":
        return "must be a plain identifier (letters, digits, '.', '_', '-'), e.g. my-sweep"
    return str(e["msg"]).removeprefix("Value error, ")


def check_trial_count(spec: SweepSpec, max_trials: int | None = None) -> int:
    """The number of trials ``spec`` asks for (:func:`count_trials`; nothing is built).

    Raises :class:`SpecError` above ``max_trials`` (default: the spec's ``max_trials``,
    else :data:`DEFAULT_MAX_TRIALS`), naming the count, the limit and how to raise it.
    """
    if max_trials is not None and max_trials < 1:
        raise SpecError(f"max_trials must be at least 1, got {max_trials}; pass a positive limit")
    count = count_trials(spec)
    limit = max_trials or spec.max_trials or DEFAULT_MAX_TRIALS
    if count > limit:
        how, fix = get_strategy(spec.strategy).count_text(spec)
        raise SpecError(
            f"the sweep asks for {count:,} trials ({how}), above the limit of {limit:,}; "
            f"{fix}, or raise the limit with max_trials: {count} in the spec or "
            f"--max-trials {count} (run_sweep(..., max_trials={count}))"
        )
    return count


def spec_from_dict(
    data: Any,
    source: str = "sweep spec",
    base_dir: Path | None = None,
    max_trials: int | None = None,
) -> SweepSpec:
    """Validate a mapping into a :class:`SweepSpec`, refuse more trials than ``max_trials``
    (:func:`check_trial_count`; given, it replaces the spec's own ``max_trials``) and check
    every trial config it implies (:func:`check_spec`); errors name ``source`` and the key."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a sweep spec must be a mapping (name, base, space, ...)")
    if max_trials is not None:
        data = {**data, "max_trials": max_trials}
    try:
        spec = SweepSpec.model_validate({**data, "base_dir": base_dir})
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = tuple(e["loc"])
            where = _where(loc)
            msg = _spec_message(e, loc)
            lines.append(f"  {where}: {msg}" if where else f"  {msg}")
        raise SpecError(f"{source}: invalid sweep spec:\n" + "\n".join(lines)) from None
    try:
        check_trial_count(spec)
        check_spec(spec)
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None
    return spec


def _validate(config: dict[str, Any], where: str, trust_code: bool) -> None:
    from ..training import ConfigError, config_from_dict

    try:
        config_from_dict(config, source=where, trust_code=trust_code)
    except ConfigError as err:
        raise SpecError(str(err)) from None


def check_spec(spec: SweepSpec, trust_code: bool = False) -> None:
    """The base and overrides make a valid config, and so does every value of every space
    key set into it; errors name the spec key (``overrides``, ``space[KEY]``)."""
    base = spec.base_config()
    _validate(base, "base + overrides", trust_code)
    if not base["history"].get("evaluate", True):
        raise SpecError(
            "overrides: history.evaluate must stay true (a trial's clean accuracy is the final "
            "history row's test_acc); remove that override"
        )
    for key, dim in spec.space.items():
        values = dim.log_uniform if isinstance(dim, LogUniform) else dim
        for value in values:
            try:
                config = set_path(base, key, value)
            except SpaceError as err:
                raise SpecError(f"space[{key}]: {err}") from None
            _validate(config, f"space[{key}] = {value!r}", trust_code)
    _check_rungs(spec, base)


def _check_rungs(spec: SweepSpec, base: dict[str, Any]) -> None:
    """No rung lies beyond a trial's epochs (a rung at the last epoch judges the trained
    trials by the signal before the objective)."""
    if spec.fidelity is None:
        return
    swept = spec.space.get("epochs")
    epochs = list(swept) if isinstance(swept, list) else [base.get("epochs")]
    last = spec.fidelity.rungs[-1]
    short = [e for e in epochs if isinstance(e, int) and e < last]
    if short:
        raise SpecError(
            f"fidelity.rungs {spec.fidelity.rungs} must not exceed any trial's epochs, but "
            f"trials train {min(short)} epochs; lower the rungs (at most the epochs: a rung "
            "at the last epoch judges trained trials before the objective)"
        )


# --------------------------------------------------------------------------- loading


def _spec_dir():
    return resources.files("robustrank") / "sweeps" / "specs"


def list_specs() -> dict[str, str]:
    """The bundled specs (``robustrank sweep run NAME --out DIR``): name -> description."""
    out = {}
    for entry in sorted(_spec_dir().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            text = entry.read_text(encoding="utf-8")
            data = load_yaml(text, f"bundled spec {entry.name}") or {}
            out[entry.name[: -len(".yaml")]] = str(data.get("description", "")).strip()
    return out


def load_spec(path_or_name: str | Path, max_trials: int | None = None) -> SweepSpec:
    """A spec from a YAML file, or a bundled spec by name (:func:`list_specs`); see
    :func:`spec_from_dict` for ``max_trials``."""
    text = str(path_or_name)
    path = Path(path_or_name)
    if path.is_file():
        source, base_dir = str(path), path.resolve().parent
        raw: str | None = None  # read by load_yaml_file: an oversized file is refused unread
    elif text in list_specs():
        source, base_dir = f"bundled spec {text}", None
        raw = (_spec_dir() / f"{text}.yaml").read_text(encoding="utf-8")
    else:
        names = list(list_specs())
        close = difflib.get_close_matches(text, names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError(
            f"{text!r} is neither a spec file nor a bundled spec{hint} (bundled: "
            f"{', '.join(names)}); pass a YAML file or list them with `robustrank sweep list`"
        )
    try:
        data = load_yaml_file(path) if raw is None else load_yaml(raw, source)
    except YAMLInputError as err:
        raise SpecError(str(err)) from None
    return spec_from_dict(data, source=source, base_dir=base_dir, max_trials=max_trials)
