"""Training configs: validated pydantic models loaded from YAML (unknown keys are errors).

Every name a config holds is checked against its registry: ``model.name`` against the
model registry (or an import path ``"package.module:factory"``, see
:mod:`robustrank.models.registry`), ``dataset`` against the dataset registry, and the
attacks of ``adversarial.attack`` and ``history.attacks`` against the attack registry.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from torch import nn

from .._types import Budget, NonNegative, NonNegativeInt, Positive, PositiveInt
from ..data import DatasetRef
from ..models import (
    LayerOrderUnknown,
    UntrustedCodeError,
    create_model,
    get_model,
    is_import_path,
)
from ..regularizers import RegularizerConfig
from ..structure import StructureConfig
from ..yamlio import YAMLInputError, load_yaml_file
from . import preset_index
from .objectives import get_objective
from .optimizers import create_optimizer, get_optimizer, list_optimizers
from .schedules import get_schedule

__all__ = [
    "ConfigError",
    "ModelConfig",
    "InitConfig",
    "AdversarialConfig",
    "ObjectiveConfig",
    "HistoryConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "PaperRef",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "prune_attack_options",
]


class ConfigError(ValueError):
    """A training config (or preset) is invalid; the message names the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _attack_names(names: list[str], where: str) -> list[str]:
    from ..attacks import get_attack

    for name in names:
        get_attack(name)  # raises with the registered names
    if len(set(names)) != len(names):
        raise ValueError(f"{where} lists an attack twice: {names}")
    return names


class _Named(BaseModel):
    """A registered name and its options beside it: ``{name: adam, betas: [0.9, 0.999]}``;
    a bare string is the name alone. A subclass names its registry (:meth:`entry`); the
    name must be registered there and the options taken by the entry."""

    model_config = ConfigDict(extra="allow")

    name: str

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @classmethod
    def entry(cls, name: str) -> Any:
        """The registry entry of ``name`` (raises naming the registered ones)."""
        raise NotImplementedError

    def check_taken(self) -> None:
        """Raise ValueError unless the entry takes every option given."""
        self.entry(self.name).check_options(self.options)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        return cls.entry(value).name

    @model_validator(mode="after")
    def _options_taken(self) -> _Named:
        self.check_taken()
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The options given beside the name."""
        return dict(self.model_extra or {})


class _BareNamed(_Named):
    """A :class:`_Named` written back as the bare name when it has no options."""

    @model_serializer(mode="wrap")
    def _bare_when_plain(self, handler: Any) -> Any:
        data = handler(self)
        return data if self.options else data["name"]


class ModelConfig(_Strict):
    """Architecture: a registered model name or an import path, and its options."""

    name: str
    options: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if not is_import_path(value):
            get_model(value)  # raises with the registered names
        return value


class InitConfig(_Strict):
    """Where the weights start: fresh (seeded) init, a checkpoint, or a preset's final run.

    ``from_preset`` resolves to the sibling run directory ``<out_dir>/../<preset>``, or to
    ``preset_run`` when given (relative to this run's directory); if that run is not
    finished it is trained (or resumed) first, with this run's seed and device.
    """

    checkpoint: Path | None = None
    from_preset: str | None = None
    preset_run: Annotated[
        Path | None,
        Field(description="run directory of from_preset, relative to this run's directory"),
    ] = None

    @model_validator(mode="after")
    def _one(self) -> InitConfig:
        if self.checkpoint is not None and self.from_preset is not None:
            raise ValueError(
                "set at most one of init.checkpoint and init.from_preset (fine-tune from a "
                "checkpoint file or from a preset's finished run, not both)"
            )
        if self.preset_run is not None and self.from_preset is None:
            raise ValueError("init.preset_run is the run directory of init.from_preset; set both")
        return self


class ObjectiveConfig(_BareNamed):
    """The training objective (:mod:`robustrank.training.objectives`): ``madry``, ``mix``,
    ``trades``, ``mart`` or a registered one; a name alone, or a mapping with its options
    beside the name (checked against the objective), e.g. ``{name: trades, beta: 6}``.
    Options named like a key of the ``adversarial`` section (``eps``, ``mix``, ...) are set
    there, not here. Written back as the bare name when it has no options."""

    @classmethod
    def entry(cls, name: str) -> Any:
        return get_objective(name)

    def check_taken(self) -> None:
        self.entry(self.name).check_options(self.options, beside=_objective_keys_beside())


def _objective_keys_beside() -> list[str]:
    """The keys of the ``adversarial`` section an objective takes from there (``eps``,
    ``alpha``, ``steps``, ``mix``, ...), not from its own options."""
    return [k for k in AdversarialConfig.model_fields if k not in ("objective", "options")]


class AdversarialConfig(_Strict):
    """Adversarial training (Section 5): by default ``mix * CE(x_adv) + (1 - mix) * CE(x)``.

    ``attack`` is ``"none"`` or any registered attack. ``alpha``, ``steps`` and
    ``random_start`` go to attacks that take them (PGD: Madry's random start by default);
    ``options`` passes any other constructor argument. An attack that takes a ``seed``
    gets one derived from the run seed, epoch and batch. ``mix = 1.0`` (default) trains
    on adversarial examples only (Madry et al.); ``mix = 0.5`` is Goodfellow's mixture.

    ``objective`` (:class:`ObjectiveConfig`) picks another training objective, e.g.
    ``{name: trades, beta: 6}`` (TRADES' inner loop uses ``eps``, ``alpha`` and ``steps``)
    or ``mart``; both need an attack. Left out (and then not written back), it is ``mix``
    when ``mix < 1`` and ``madry`` otherwise: the loss above.
    """

    attack: str = "none"
    eps: Annotated[
        Budget, Field(description="the l_inf radius in [0, 1] pixel units, paper: 0.05")
    ] = 0.05
    alpha: Annotated[Positive, Field(description="the PGD step size, paper: 0.005")] = 0.005
    steps: Annotated[PositiveInt, Field(description="PGD iterations, paper: 20")] = 20
    random_start: bool = True
    mix: float = 1.0
    options: dict[str, Any] = {}
    objective: ObjectiveConfig | None = None

    @field_validator("mix")
    @classmethod
    def _mix(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(
                f"mix must lie in [0, 1] (1 = adversarial examples only, 0.5 = half/half), got {v}"
            )
        return v

    @field_validator("attack")
    @classmethod
    def _attack(cls, value: str) -> str:
        value = value.strip().lower()
        if value != "none":
            _attack_names([value], "adversarial.attack")
        return value

    @model_validator(mode="after")
    def _objective_fits(self) -> AdversarialConfig:
        name = self.objective_name
        entry = get_objective(name)
        if entry.needs_attack and self.attack == "none":
            raise ValueError(
                f"objective {name!r} trains on adversarial examples; set attack (e.g. pgd), "
                "attack none is natural training"
            )
        if self.mix < 1.0 and "mix" not in entry.options:
            raise ValueError(
                f"mix {self.mix} weighs clean against adversarial examples, which is the mix "
                f"objective; objective {name!r} takes no mix: remove mix (or set objective: mix)"
            )
        try:
            entry.create(**self.objective_options())
        except (ValueError, TypeError) as err:
            raise ValueError(f"objective {name!r}: {err}") from None
        return self

    @model_serializer(mode="wrap")
    def _without_unset_objective(self, handler: Any) -> Any:
        data = handler(self)
        if self.objective is None:  # configs written before objectives were chosen
            data.pop("objective", None)
        return data

    @property
    def objective_name(self) -> str:
        """The objective trained with: ``objective``'s name if set, else ``mix`` when
        ``mix < 1`` and ``madry`` otherwise."""
        if self.objective is not None:
            return self.objective.name
        return "mix" if self.mix < 1.0 else "madry"

    def objective_options(self) -> dict[str, Any]:
        """The options the objective is built with: the keys of this section it takes
        (``eps``, ``alpha``, ``steps``, ``mix``, ...), then ``objective``'s own."""
        takes = get_objective(self.objective_name).options
        beside = {k: getattr(self, k) for k in _objective_keys_beside() if k in takes}
        return {**beside, **(self.objective.options if self.objective is not None else {})}


#: Older configs set the paper attacks' settings with these keys; they map onto
#: ``attack_options`` (kept so that existing configs and run directories stay valid).
_LEGACY_HISTORY_KEYS = {
    "pgd_steps": ("pgd", "steps"),
    "pgd_alpha": ("pgd", "alpha"),
    "gnm_steps": ("gnm", "steps"),
}


class HistoryConfig(_Strict):
    """What is measured at each history point (epoch 0, every ``every_epochs`` epochs, the
    last epoch, and optionally every ``every_steps`` optimiser steps).

    Fooling ratios (Section 5) of every attack in ``attacks`` (any registered name) at
    ``eps`` on a fixed, seeded subset of ``eval_n`` test examples. Each attack is built
    with its registry defaults (the paper's settings) updated by ``attack_options[name]``;
    after validation ``attack_options`` holds the complete settings of every attack, so a
    run directory records exactly what was measured. Attacks that take a seed get
    ``eval_seed``. ``test_accuracy_n = None`` measures the clean accuracy on the whole
    test set. ``evaluate: false`` skips accuracy and fooling ratios (the weight structure
    is always recorded). ``mi_layers`` picks the representations of models without
    ``activations(x)`` (module paths or globs). ``eval_batch_size`` is the batch size of
    the evaluations (keep it fixed when comparing runs: seeded random starts are drawn
    batch by batch).
    """

    evaluate: bool = True
    eval_n: PositiveInt = 1000
    eval_seed: NonNegativeInt = 0
    eps: Annotated[Budget, Field(description="paper: 0.05")] = 0.05
    attacks: list[str] = ["fgsm", "pgd", "gnm"]
    attack_options: dict[str, dict[str, Any]] = {}
    eval_batch_size: PositiveInt = 500
    every_epochs: PositiveInt = 1
    every_steps: PositiveInt | None = None
    track_mi: bool = False
    mi_n: PositiveInt = 1000
    mi_noise_var: Annotated[Positive, Field(description="paper: 0.1")] = 0.1
    mi_layers: list[str] | None = None
    test_accuracy_n: PositiveInt | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not any(k in data for k in _LEGACY_HISTORY_KEYS):
            return data
        data = dict(data)
        options = {k: dict(v) for k, v in (data.get("attack_options") or {}).items()}
        for key, (attack, option) in _LEGACY_HISTORY_KEYS.items():
            if key in data:
                options.setdefault(attack, {})[option] = data.pop(key)
        data["attack_options"] = options
        return data

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, value: list[str]) -> list[str]:
        return _attack_names([v.strip().lower() for v in value], "attacks")

    @model_validator(mode="after")
    def _complete_options(self) -> HistoryConfig:
        from ..attacks import get_attack

        unused = sorted(set(self.attack_options) - set(self.attacks))
        if unused:
            raise ValueError(
                f"attack_options names {unused}, which are not in attacks {self.attacks}; "
                "add them to attacks or remove their options"
            )
        full = {}
        for name in self.attacks:
            spec = get_attack(name)
            given = self.attack_options.get(name, {})
            bad = sorted(k for k in given if not spec.accepts(k) or k in ("model", "eps"))
            if bad:
                raise ValueError(f"attack_options.{name}: {name} does not take {bad}")
            full[name] = {**dict(spec.defaults), **given}
        self.attack_options = full
        return self


def prune_attack_options(base: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (``base`` with overrides applied, plain data) without the
    ``history.attack_options`` that ``base`` held for attacks the overrides removed from
    ``history.attacks``.

    A validated config lists the complete options of every attack, so overriding
    ``history: {attacks: [fgsm]}`` would otherwise keep the options of the dropped attacks
    and be refused. Only entries the overrides left as they were are dropped: options an
    override gives for an attack it does not list are still refused by validation.
    """
    old, new = base.get("history"), config.get("history")
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return config
    attacks, options = new.get("attacks"), new.get("attack_options")
    if attacks == old.get("attacks") or not isinstance(attacks, list):
        return config
    before = old.get("attack_options")
    if not (isinstance(options, Mapping) and isinstance(before, Mapping)):
        return config
    listed = {str(a).strip().lower() for a in attacks}
    kept = {
        name: value
        for name, value in options.items()
        if name in listed or name not in before or value != before[name]
    }
    return {**config, "history": {**new, "attack_options": kept}}


class OptimizerConfig(_Named):
    """The optimizer (:mod:`robustrank.training.optimizers`): ``sgd`` (default, the
    paper's), ``adam``, ``adamw``, ``rmsprop`` or a registered one, with its options beside
    the name (checked against its signature), e.g. ``{name: adam, betas: [0.9, 0.999]}``.
    The top-level ``lr``, ``momentum`` and ``weight_decay`` apply to it
    (:meth:`TrainConfig.optimizer_options`); ``weight_decay`` (default 0) also replaces
    ``adamw``'s own default of 0.01, so give ``weight_decay: 0.01`` for torch's AdamW."""

    name: str = "sgd"

    @classmethod
    def entry(cls, name: str) -> Any:
        return get_optimizer(name)

    @property
    def is_default(self) -> bool:
        """Plain SGD with the top-level settings: then configs leave the key out."""
        return self.name == "sgd" and not self.options


class ScheduleConfig(_BareNamed):
    """The learning-rate schedule (:mod:`robustrank.training.schedules`): ``constant``
    (default), ``cosine``, ``step``, ``linear-warmup`` or a registered one; a name alone,
    or a mapping with options, e.g. ``{name: linear-warmup, warmup_epochs: 2}``. Written
    back as the bare name when it has no options."""

    name: str = "constant"

    @classmethod
    def entry(cls, name: str) -> Any:
        return get_schedule(name)


class PaperRef(_Strict):
    """The row of the paper's Table 1/2 that a preset reproduces."""

    table: int
    row: str
    accuracy: float


def _architecture(name: str, trust: bool, options: dict[str, Any]) -> nn.Module:
    """The model ``name`` built on the meta device (a private RNG); a factory that cannot
    build there is built on the CPU."""
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                return create_model(name, trust_code=trust, **options)
        except (NotImplementedError, RuntimeError):
            return create_model(name, trust_code=trust, **options)


class TrainConfig(_Strict):
    """A complete, validated training run (see :mod:`robustrank.training` and the presets).

    Paper settings (Section 5): plain SGD; FCNN lr 0.001, batch 128; CNN lr 0.01 from
    scratch and 0.001 for fine-tuning, batch 64; adversarial eps 0.05. ``optimizer`` picks
    another optimizer (:class:`OptimizerConfig`; default plain SGD, left out of
    :meth:`plain`). ``schedule`` sets the per-epoch learning rate
    (:class:`ScheduleConfig`): ``constant`` (default), ``cosine`` (to 0 over the run),
    ``step`` (times ``lr_gamma`` every ``lr_step_epochs`` epochs) or ``linear-warmup``.
    ``dataset`` is a registered name (``mnist``) or ``{name: npz, path: data.npz}``.
    """

    name: str
    description: str = ""
    paper: PaperRef | None = None
    model: ModelConfig
    dataset: DatasetRef
    train_subset: Annotated[
        PositiveInt | None, Field(description="or null for the whole training set")
    ] = None
    epochs: PositiveInt
    batch_size: Annotated[PositiveInt, Field(description="paper: 128 for the FCNN, 64 for the CNN")]
    lr: Annotated[Positive, Field(description="paper: 0.001 FCNN, 0.01 CNN from scratch")]
    momentum: Annotated[NonNegative, Field(description="0 = plain SGD as in the paper")] = 0.0
    weight_decay: Annotated[NonNegative, Field(description="0 = plain SGD as in the paper")] = 0.0
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    lr_step_epochs: PositiveInt = 10
    lr_gamma: Positive = 0.1
    seed: NonNegativeInt = 0
    init: InitConfig = InitConfig()
    adversarial: AdversarialConfig = AdversarialConfig()
    regularizers: RegularizerConfig = RegularizerConfig()
    structure: Annotated[
        StructureConfig,
        Field(description="exact structure: prune and/or factorize (robustrank.structure)"),
    ] = Field(default_factory=StructureConfig)
    history: HistoryConfig = HistoryConfig()
    checkpoint_every_epoch: bool = False
    device: str = "cpu"
    threads: Annotated[
        PositiveInt | None,
        Field(
            description="CPU threads of the run (torch.set_num_threads); fixed per run so its "
            "numbers do not depend on where it runs. null: PyTorch's default"
        ),
    ] = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", v):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {v!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(
                f"name must be a plain identifier (letters, digits, '.', '_', '-'; it names "
                f"the run directory), got {v!r}"
            )
        return v

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross(self, info: ValidationInfo) -> TrainConfig:
        _check_from_preset(self)
        trust = bool((info.context or {}).get("trust_code"))
        if is_import_path(self.model.name) and not trust:
            return self  # checked by train(), which requires trust_code for import paths
        # build the architecture once (on the meta device: no weights allocated, whatever
        # the options claim) to check options and layer keys
        try:
            model = _architecture(self.model.name, trust, self.model.options)
        except (ValueError, TypeError) as err:
            raise ValueError(f"model.options: {err}") from None
        try:
            self.regularizers.check_model(model)
            self.structure.check_model(model)
        except LayerOrderUnknown:
            pass  # paper indices on a model of unknown input shape: checked when training
        return self

    @model_validator(mode="after")
    def _structure_epochs(self) -> TrainConfig:
        self.structure.check_epochs(self.epochs)  # HYDRA's score phase, gradual pruning
        return self

    @model_validator(mode="after")
    def _optimizer_and_schedule(self) -> TrainConfig:
        try:  # on a stand-in parameter: refuses bad values (betas outside [0, 1), ...)
            options = self.optimizer_options()
            create_optimizer(
                self.optimizer.name, [torch.zeros(1, requires_grad=True)], self.lr, **options
            )
        except (ValueError, TypeError) as err:
            raise ValueError(f"optimizer: {err}") from None
        schedule = get_schedule(self.schedule.name)
        shared = sorted(set(self.schedule.options) & set(type(self).model_fields))
        if shared:
            raise ValueError(
                f"schedule: set {', '.join(shared)} at the top level of the config, beside "
                "schedule, not inside it"
            )
        try:
            schedule.rates(self.lr, self.epochs, self.schedule_options())
        except (ValueError, TypeError, ArithmeticError) as err:
            raise ValueError(f"schedule: {err}") from None
        return self

    @model_serializer(mode="wrap")
    def _without_default_optimizer(self, handler: Any) -> Any:
        data = handler(self)
        if self.optimizer.is_default:  # configs written before optimizers were chosen
            data.pop("optimizer", None)
        if not self.structure.active:  # nor structure
            data.pop("structure", None)
        if data.get("regularizers", {}).get("mode") == "subgradient":  # nor modes
            data["regularizers"].pop("mode")
        return data

    def optimizer_options(self) -> dict[str, Any]:
        """The options the optimizer is built with (besides ``lr``): the top-level
        ``momentum`` and ``weight_decay`` if it takes them, then ``optimizer``'s own.

        Raises ``ValueError`` when one is set in both places, or a non-zero top-level one
        goes to an optimizer that does not take it (``momentum`` with ``adam``).
        """
        own, takes = self.optimizer.options, get_optimizer(self.optimizer.name).options
        out: dict[str, Any] = {}
        for key in ("momentum", "weight_decay"):
            value = getattr(self, key)
            if key in own and value != 0:
                raise ValueError(f"{key} is set twice: at the top level and in optimizer")
            if key in takes:
                out[key] = value
            elif value != 0:
                others = [n for n in list_optimizers() if key in get_optimizer(n).options]
                raise ValueError(
                    f"{self.optimizer.name} takes no {key} (top-level {key}: {value}); set it "
                    f"to 0, or choose an optimizer that takes it ({', '.join(others)})"
                )
        return {**out, **own}

    def schedule_options(self) -> dict[str, Any]:
        """The options the schedule is called with: those named like a top-level key
        (``lr_step_epochs``, ``lr_gamma``) from there, then ``schedule``'s own."""
        takes = get_schedule(self.schedule.name).options
        top = {k: getattr(self, k) for k in takes if k in type(self).model_fields}
        return {**top, **self.schedule.options}

    @property
    def needs_trust(self) -> bool:
        """Whether building the model imports code named by the config (an import path)."""
        return is_import_path(self.model.name)

    def plain(self) -> dict[str, Any]:
        """The config as plain YAML/JSON-able data (regulariser layer keys keep their types)."""
        data = self.model_dump(mode="json")
        data["regularizers"] = self.regularizers.plain()
        if self.structure.active:
            data["structure"] = self.structure.plain()
        data["dataset"] = self.dataset.plain()
        return data

    def equivalence_key(self) -> str:
        """Equal for configs that train the same run: the plain config without its ``name``
        and without a structure that leaves every layer dense (sweeps run such trials once)."""
        data = {**self.plain(), "name": None}
        if self.structure.leaves_dense:
            data.pop("structure", None)
        return json.dumps(data, sort_keys=True, default=str)

    def to_yaml(self) -> str:
        """The config as YAML; :func:`load_config` reads it back to an equal config."""
        return yaml.safe_dump(self.plain(), sort_keys=False, default_flow_style=False)


def _check_from_preset(config: TrainConfig) -> None:
    preset = config.init.from_preset
    if preset is None:
        return
    if preset == config.name:
        raise ValueError(f"init.from_preset cannot be the run itself ({config.name!r})")
    names = preset_index.list_presets()
    if preset not in names:
        close = difflib.get_close_matches(preset, names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"init.from_preset: unknown preset {preset!r}{hint} (available: {', '.join(names)})"
        )


# --------------------------------------------------------------------------- errors


def _field_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like ``X`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _field_model(arg)
            if found is not None:
                return found
    return None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    cls: type[BaseModel] | None = TrainConfig
    for part in loc:
        if cls is None or part not in cls.model_fields:
            return None
        cls = _field_model(cls.model_fields[part].annotation)
    return cls


def _message(e: dict[str, Any], loc: tuple[Any, ...]) -> str:
    if e["type"] == "extra_forbidden":
        cls = _model_at(loc[:-1])
        allowed = list(cls.model_fields) if cls is not None else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key{hint} (allowed here: {', '.join(allowed)})"
    if e["type"] == "missing":
        return "required key is missing"
    msg = str(e["msg"]).removeprefix("Value error, ")
    cls = _model_at(loc[:-1])
    field = cls.model_fields.get(str(loc[-1])) if cls is not None and loc else None
    if msg.startswith("must be") and loc:
        msg = f"{loc[-1] if field is not None else 'lambda'} {msg}"
    if field is not None and field.description and e["type"] != "model_type":
        msg += f" ({field.description})"
    return msg


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc)
        msg = _message(e, loc)
        lines.append(f"  {where}: {msg}" if loc else f"  {msg}")
    return f"{source}: invalid training config:\n" + "\n".join(lines)


def config_from_dict(data: Any, source: str = "config", *, trust_code: bool = False) -> TrainConfig:
    """Validate a mapping into a :class:`TrainConfig`; errors name ``source`` and each key.

    ``trust_code`` lets validation build a model named by import path (importing it).
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a training config must be a mapping of keys (name, model, dataset, "
            f"...), got {type(data).__name__}"
        )
    try:
        return TrainConfig.model_validate(data, context={"trust_code": trust_code})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    except UntrustedCodeError as err:  # pragma: no cover - validation never imports untrusted
        raise ConfigError(f"{source}: {err}") from None


def load_config(path: str | Path, *, trust_code: bool = False) -> TrainConfig:
    """Read a YAML training config; syntax errors and unknown keys name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = load_yaml_file(path)
    except YAMLInputError as err:
        raise ConfigError(str(err)) from None
    return config_from_dict(data, source=str(path), trust_code=trust_code)
