"""Training runs of Section 5: natural, adversarial (FGSM/PGD) and regularised (Eq. 8).

A run is described by a :class:`TrainConfig` (YAML; unknown keys are errors) and lives in
a run directory::

    config.yaml            the config (resume refuses a different one)
    history.jsonl/.csv     one row per history point, appended as training goes
    last.safetensors       rolling model checkpoint (removed when the run finishes)
    resume.safetensors     exact resume state (removed when the run finishes)
    final.safetensors      the trained model
    checkpoint-epoch-E.safetensors   only with ``checkpoint_every_epoch: true``
    done.json              written last: the run is finished

Every source of randomness is derived from ``seed`` (see :func:`derive_seed`): the initial
weights, one shuffling generator per epoch, one PGD random-start seed per training batch,
and a private global RNG stream (saved in the resume state). A resumed run therefore
reaches the same weights and history (apart from the ``time_*`` columns) as an
uninterrupted one on the same device; runs are deterministic given the seed on CPU.

Adversarial training (Madry et al. 2018 / Goodfellow et al. 2015, Section 5): the loss is
``mix * CE(x_adv) + (1 - mix) * CE(x)``. The default ``mix = 1.0`` replaces the clean
examples by adversarial ones (Madry); ``mix = 0.5`` is Goodfellow's half/half mixture.
Regularisers (Eqs. 5-7) are added to it, giving Eq. (8).
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
import math
import os
import re
import shutil
import sys
import time
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from torch import Tensor, nn

from .models import (
    atomic_write_bytes,
    create_model,
    list_models,
    load_checkpoint,
    model_spec,
    use_fast_layout,
)
from .regularizers import RegularizerConfig, regularization_terms

__all__ = [
    "ConfigError",
    "RunError",
    "ModelConfig",
    "InitConfig",
    "AdversarialConfig",
    "HistoryConfig",
    "PaperRef",
    "TrainConfig",
    "TrainResult",
    "config_from_dict",
    "load_config",
    "list_presets",
    "load_preset",
    "derive_seed",
    "lr_at_epoch",
    "train",
    "read_history",
]

DATASETS = ("mnist", "fashion-mnist")
RESUME_FORMAT = "robustrank-resume/1"

# tags mixed into derive_seed(seed, TAG, ...) -- one independent stream per purpose
_INIT, _SHUFFLE, _ATTACK, _GLOBAL = 0, 1, 2, 3


class ConfigError(ValueError):
    """A training config (or preset) is invalid; the message names the key and the fix."""


class RunError(ValueError):
    """A run directory cannot be used as asked (not empty, different config, ...)."""


# --------------------------------------------------------------------------- config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _positive(name: str, value: float, hint: str = "") -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0{hint}, got {value}")
    return value


def _non_negative(name: str, value: float, hint: str = "") -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0{hint}, got {value}")
    return value


def _at_least(name: str, value: int | None, low: int, hint: str = "") -> int | None:
    if value is not None and value < low:
        raise ValueError(f"{name} must be an integer >= {low}{hint}, got {value}")
    return value


class ModelConfig(_Strict):
    """Architecture: a registered model name and its options (see ``create_model``)."""

    name: str
    options: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in list_models():
            raise ValueError(f"unknown model {value!r}; choose one of {', '.join(list_models())}")
        return value


class InitConfig(_Strict):
    """Where the weights start: fresh (seeded) init, a checkpoint, or a preset's final run.

    ``from_preset`` resolves to the sibling run directory ``<out_dir>/../<preset>``; if that
    run is not finished it is trained (or resumed) first, with this run's seed and device.
    """

    checkpoint: Path | None = None
    from_preset: str | None = None

    @model_validator(mode="after")
    def _one(self) -> InitConfig:
        if self.checkpoint is not None and self.from_preset is not None:
            raise ValueError(
                "set at most one of init.checkpoint and init.from_preset (fine-tune from a "
                "checkpoint file or from a preset's finished run, not both)"
            )
        return self


class AdversarialConfig(_Strict):
    """Adversarial training (Section 5): ``mix * CE(x_adv) + (1 - mix) * CE(x)``.

    ``mix = 1.0`` (default) trains on adversarial examples only (Madry et al.);
    ``mix = 0.5`` is the half/half mixture of Goodfellow et al. PGD uses a random start by
    default (Madry); its seed is derived from the run seed, epoch and batch.
    """

    attack: Literal["none", "fgsm", "pgd"] = "none"
    eps: float = 0.05
    alpha: float = 0.005
    steps: int = 20
    random_start: bool = True
    mix: float = 1.0

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: float) -> float:
        return _non_negative("eps", v, " (the l_inf radius in [0, 1] pixel units, paper: 0.05)")

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        return _positive("alpha", v, " (the PGD step size, paper: 0.005)")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        return _at_least("steps", v, 1, " (PGD iterations, paper: 20)")  # type: ignore[return-value]

    @field_validator("mix")
    @classmethod
    def _mix(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(
                f"mix must lie in [0, 1] (1 = adversarial examples only, 0.5 = half/half), got {v}"
            )
        return v


class HistoryConfig(_Strict):
    """What is measured at each history point (epoch 0, every ``every_epochs`` epochs, the
    last epoch, and optionally every ``every_steps`` optimiser steps).

    Fooling ratios (Section 5) use ``eps`` and the attacks' paper settings on a fixed,
    seeded subset of ``eval_n`` test examples; PGD's random start is seeded with
    ``eval_seed`` so that the history is deterministic. ``test_accuracy_n = None`` measures
    the clean accuracy on the whole test set. ``evaluate: false`` skips accuracy and
    fooling ratios (the weight structure is always recorded). ``eval_batch_size`` is the
    batch size of those evaluations (speed and memory; keep it fixed when comparing runs,
    since PGD's seeded random start is drawn batch by batch).
    """

    evaluate: bool = True
    eval_n: int = 1000
    eval_seed: int = 0
    eps: float = 0.05
    attacks: list[Literal["fgsm", "pgd", "gnm"]] = ["fgsm", "pgd", "gnm"]
    pgd_steps: int = 20
    pgd_alpha: float = 0.005
    gnm_steps: int = 5
    eval_batch_size: int = 500
    every_epochs: int = 1
    every_steps: int | None = None
    track_mi: bool = False
    mi_n: int = 1000
    mi_noise_var: float = 0.1
    test_accuracy_n: int | None = None

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: float) -> float:
        return _non_negative("eps", v, " (paper: 0.05)")

    @field_validator("pgd_alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        return _positive("pgd_alpha", v, " (paper: 0.005)")

    @field_validator("mi_noise_var")
    @classmethod
    def _noise(cls, v: float) -> float:
        return _positive("mi_noise_var", v, " (paper: 0.1)")

    @field_validator("eval_n", "pgd_steps", "gnm_steps", "eval_batch_size", "every_epochs", "mi_n")
    @classmethod
    def _ge1(cls, v: int, info) -> int:
        return _at_least(info.field_name, v, 1)  # type: ignore[return-value]

    @field_validator("every_steps", "test_accuracy_n")
    @classmethod
    def _opt_ge1(cls, v: int | None, info) -> int | None:
        return _at_least(info.field_name, v, 1, " (or null)")

    @field_validator("eval_seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        return _at_least("eval_seed", v, 0)  # type: ignore[return-value]

    @field_validator("attacks")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"attacks lists an attack twice: {v}")
        return v


class PaperRef(_Strict):
    """The row of the paper's Table 1/2 that a preset reproduces."""

    table: int
    row: str
    accuracy: float


class TrainConfig(_Strict):
    """A complete, validated training run (see the module docstring and the presets).

    Paper settings (Section 5): plain SGD; FCNN lr 0.001, batch 128; CNN lr 0.01 from
    scratch and 0.001 for fine-tuning, batch 64; adversarial eps 0.05. ``schedule`` sets
    the per-epoch learning rate: ``constant`` (default), ``cosine`` (to 0 over the run) or
    ``step`` (times ``lr_gamma`` every ``lr_step_epochs`` epochs).
    """

    name: str
    description: str = ""
    paper: PaperRef | None = None
    model: ModelConfig
    dataset: Literal["mnist", "fashion-mnist"]
    train_subset: int | None = None
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "step"] = "constant"
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    seed: int = 0
    init: InitConfig = InitConfig()
    adversarial: AdversarialConfig = AdversarialConfig()
    regularizers: RegularizerConfig = RegularizerConfig()
    history: HistoryConfig = HistoryConfig()
    checkpoint_every_epoch: bool = False
    device: str = "cpu"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(
                f"name must be a plain identifier (letters, digits, '.', '_', '-'; it names "
                f"the run directory), got {v!r}"
            )
        return v

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: int) -> int:
        return _at_least("epochs", v, 1)  # type: ignore[return-value]

    @field_validator("batch_size")
    @classmethod
    def _bs(cls, v: int) -> int:
        return _at_least("batch_size", v, 1, " (paper: 128 for the FCNN, 64 for the CNN)")  # type: ignore[return-value]

    @field_validator("train_subset")
    @classmethod
    def _subset(cls, v: int | None) -> int | None:
        return _at_least("train_subset", v, 1, " (or null for the whole training set)")

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float) -> float:
        return _positive("lr", v, " (paper: 0.001 FCNN, 0.01 CNN from scratch)")

    @field_validator("momentum", "weight_decay")
    @classmethod
    def _nonneg(cls, v: float, info) -> float:
        return _non_negative(info.field_name, v, " (0 = plain SGD as in the paper)")

    @field_validator("lr_step_epochs")
    @classmethod
    def _step_epochs(cls, v: int) -> int:
        return _at_least("lr_step_epochs", v, 1)  # type: ignore[return-value]

    @field_validator("lr_gamma")
    @classmethod
    def _gamma(cls, v: float) -> float:
        return _positive("lr_gamma", v)

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        return _at_least("seed", v, 0)  # type: ignore[return-value]

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", v):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {v!r}")
        return v

    @model_validator(mode="after")
    def _cross(self) -> TrainConfig:
        preset = self.init.from_preset
        if preset is not None:
            if preset == self.name:
                raise ValueError(f"init.from_preset cannot be the run itself ({self.name!r})")
            names = list_presets()
            if preset not in names:
                close = difflib.get_close_matches(preset, names, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"init.from_preset: unknown preset {preset!r}{hint} "
                    f"(available: {', '.join(names)})"
                )
        # build the architecture once (private RNG) to check options and layer indices
        with torch.random.fork_rng(devices=[]):
            try:
                model = create_model(self.model.name, **self.model.options)
            except ValueError as err:
                raise ValueError(f"model.options: {err}") from None
        try:
            self.regularizers.check_model(model)
        except ValueError as err:
            raise ValueError(str(err)) from None
        return self

    def plain(self) -> dict[str, Any]:
        """The config as plain YAML/JSON-able data (regulariser layer keys stay ints)."""
        data = self.model_dump(mode="json")
        for key in ("l1", "nuclear"):
            data["regularizers"][key] = {int(k): v for k, v in data["regularizers"][key].items()}
        return data

    def to_yaml(self) -> str:
        """The config as YAML; :func:`load_config` reads it back to an equal config."""
        return yaml.safe_dump(self.plain(), sort_keys=False, default_flow_style=False)


def _field_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like ``X`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _field_model(arg)
            if found is not None:
                return found
    return None


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    cls: type[BaseModel] | None = TrainConfig
    for part in loc:
        if cls is None or part not in cls.model_fields:
            return []
        cls = _field_model(cls.model_fields[part].annotation)
    return list(cls.model_fields) if cls is not None else []


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msg = f"unknown key{hint} (allowed here: {', '.join(allowed)})"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"  {where}: {msg}" if loc else f"  {msg}")
    return f"{source}: invalid training config:\n" + "\n".join(lines)


def config_from_dict(data: Any, source: str = "config") -> TrainConfig:
    """Validate a mapping into a :class:`TrainConfig`; errors name ``source`` and each key."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a training config must be a mapping of keys (name, model, dataset, "
            f"...), got {type(data).__name__}"
        )
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML training config; syntax errors and unknown keys name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: YAML syntax error: {err}") from None
    return config_from_dict(data, source=str(path))


# --------------------------------------------------------------------------- presets


def _preset_dir():
    return resources.files("robustrank") / "experiments" / "presets"


def list_presets() -> list[str]:
    """Names of the bundled presets (every row of the paper's Tables 1 and 2, and more)."""
    return sorted(
        p.name[: -len(".yaml")] for p in _preset_dir().iterdir() if p.name.endswith(".yaml")
    )


def load_preset(name: str) -> TrainConfig:
    """The bundled preset ``name`` (e.g. ``"fcnn-natural"``, ``"cnn-pgd"``)."""
    names = list_presets()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint} Available presets: {', '.join(names)}")
    resource = _preset_dir() / f"{name}.yaml"
    try:
        data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:  # pragma: no cover - bundled files are tested
        raise ConfigError(f"preset {name}: YAML syntax error: {err}") from None
    config = config_from_dict(data, source=f"preset {name}")
    if config.name != name:
        raise ConfigError(f"preset {name}: its name field is {config.name!r}; they must agree")
    return config


# --------------------------------------------------------------------------- helpers


def derive_seed(*parts: int) -> int:
    """An independent 63-bit seed for the stream identified by ``parts`` (e.g. seed, tag, epoch)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate used during ``epoch`` (1-based) under ``config.schedule``."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))
    if config.schedule == "step":
        return config.lr * config.lr_gamma ** ((epoch - 1) // config.lr_step_epochs)
    return config.lr


def _device(name: str) -> torch.device:
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but CUDA is not available in this torch build/machine; "
            "use device: cpu (--device cpu)"
        )
    return dev


@functools.lru_cache(maxsize=4)
def _load_dataset(name: str, split: str) -> tuple[Tensor, Tensor]:
    """``data.load_dataset`` cached per process (verification costs seconds per call).

    The cached tensors are never modified in place (batching and subsets copy).
    """
    from .data import load_dataset

    return load_dataset(name, split)


def _log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


@contextmanager
def _private_rng(device: torch.device) -> Iterator[None]:
    """Run with a forked global RNG so training neither reads nor disturbs the caller's."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        if not data and prefix:
            out[prefix[:-1]] = {}
        return out
    return {prefix[:-1]: data}


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            lines.append(
                f"  {key}: run has {a.get(key, '<unset>')!r}, new config has "
                f"{b.get(key, '<unset>')!r}"
            )
    return lines


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --------------------------------------------------------------------------- run directory

CONFIG_FILE = "config.yaml"
HISTORY_JSONL = "history.jsonl"
HISTORY_CSV = "history.csv"
LAST_FILE = "last.safetensors"
RESUME_FILE = "resume.safetensors"
FINAL_FILE = "final.safetensors"
DONE_FILE = "done.json"
LOCK_FILE = ".robustrank.lock"


@contextmanager
def _run_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory so two processes never train into it.

    POSIX ``flock`` (released by the OS if the process dies); not available on Windows,
    where runs are not locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            raise RunError(
                f"another process (pid {pid}) is training in {out_dir}; wait for it to finish "
                "or stop it before starting, resuming or overwriting this run"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _append_line(path: Path, line: str) -> int:
    """Append one complete line with a single write, flush and fsync; return the new size."""
    data = line.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _truncate(path: Path, size: int) -> None:
    """Drop what was appended after the last committed resume state (e.g. a torn line)."""
    current = path.stat().st_size if path.exists() else 0
    if current < size:
        raise RunError(
            f"{path} is shorter ({current} bytes) than when the resume state was saved "
            f"({size} bytes); the run directory was modified. Start over with --overwrite"
        )
    if current != size:
        with open(path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``history.jsonl`` in a run directory (complete lines only)."""
    path = Path(run_dir) / HISTORY_JSONL
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line after a crash
    return rows


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        ["" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in values]
    )
    return buf.getvalue()


def _save_resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer, meta: dict) -> None:
    """Model, optimiser state (e.g. momentum buffers) and RNG states: safetensors + JSON."""
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model/{k}"] = v.detach().to("cpu").contiguous()
    sd = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{idx}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    tensors["rng/torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    header = dict(meta)
    header["format"] = RESUME_FORMAT
    header["optim"] = {"param_groups": sd["param_groups"], "scalars": scalars}
    data = save(tensors, metadata={"robustrank_resume": json.dumps(header)})
    atomic_write_bytes(path, data)


def _load_resume(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    from safetensors.torch import load

    raw = path.read_bytes()
    try:
        tensors = load(raw)
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["robustrank_resume"])
    except Exception as err:  # noqa: BLE001 - any corruption is reported the same way
        raise RunError(
            f"{path} is not a valid resume state ({err}); delete the run directory or start "
            "over with --overwrite"
        ) from err
    if header.get("format") != RESUME_FORMAT:
        raise RunError(f"{path}: unsupported resume format {header.get('format')!r}")
    return tensors, header


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], header: dict):
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scal in header["optim"]["scalars"].items():
        state.setdefault(int(idx), {}).update(scal)
    opt.load_state_dict({"state": state, "param_groups": header["optim"]["param_groups"]})


# --------------------------------------------------------------------------- result


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: nn.Module
    history: list[dict[str, Any]]
    out_dir: Path
    final_checkpoint: Path
    history_jsonl: Path
    history_csv: Path
    wall_time: float
    config: TrainConfig
    resumed: bool = False
    already_done: bool = False


def _result_from_finished(config: TrainConfig, out_dir: Path, t0: float) -> TrainResult:
    model, _ = load_checkpoint(out_dir / FINAL_FILE, map_location=config.device)
    return TrainResult(
        model=model,
        history=read_history(out_dir),
        out_dir=out_dir,
        final_checkpoint=out_dir / FINAL_FILE,
        history_jsonl=out_dir / HISTORY_JSONL,
        history_csv=out_dir / HISTORY_CSV,
        wall_time=time.perf_counter() - t0,
        config=config,
        already_done=True,
    )


# --------------------------------------------------------------------------- training


def _check_init_model(model: nn.Module, config: TrainConfig, source: str) -> None:
    spec = model_spec(model)
    want = {"name": config.model.name, "options": dict(config.model.options)}
    if spec["name"] != want["name"] or dict(spec.get("options", {})) != want["options"]:
        raise ConfigError(
            f"{source} holds a {spec['name']} with options {spec.get('options', {})}, but the "
            f"config asks for model {want['name']} with options {want['options']}; make "
            "model: match the checkpoint"
        )


_ROW_BOOKKEEPING = ("kind", "epoch", "step", "epoch_progress", "lr", "train_", "time_")


def _reusable_measures(config: TrainConfig, parent_dir: Path) -> dict[str, Any] | None:
    """The measurements of a finished parent run's last row, if they are exactly what this
    run's epoch-0 row would compute (same final weights, dataset and history settings)."""
    try:
        parent = yaml.safe_load((parent_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(parent, dict):
        return None
    when = ("every_epochs", "every_steps")  # when to measure, not what: irrelevant here
    mine = {k: v for k, v in config.plain()["history"].items() if k not in when}
    theirs = {k: v for k, v in (parent.get("history") or {}).items() if k not in when}
    if parent.get("dataset") != config.dataset or theirs != mine:
        return None
    rows = read_history(parent_dir)
    if not rows or rows[-1].get("kind") != "epoch" or rows[-1].get("epoch") != parent.get("epochs"):
        return None
    return {k: v for k, v in rows[-1].items() if not k.startswith(_ROW_BOOKKEEPING)}


def _initial_model(
    config: TrainConfig, out_dir: Path, progress: bool, stack: tuple[str, ...]
) -> tuple[nn.Module, str, dict[str, Any] | None]:
    """The starting weights, where they came from, and reusable epoch-0 measurements.

    A fine-tune of a preset run reuses the evaluation of that run's final row for its own
    epoch-0 row when the history settings agree (the numbers are identical: same weights,
    same seeded evaluation), which saves one full evaluation per fine-tuning run.
    """
    if config.init.checkpoint is not None:
        path = Path(config.init.checkpoint)
        model, meta = load_checkpoint(path)
        _check_init_model(model, config, f"init.checkpoint {path}")
        ds = meta.get("dataset")
        if ds is not None and ds != config.dataset:
            _log(f"warning: {path} was trained on {ds}; fine-tuning it on {config.dataset}")
        return model, f"checkpoint {path}", None
    if config.init.from_preset is not None:
        name = config.init.from_preset
        if name in stack:
            raise ConfigError(f"init.from_preset cycle: {' -> '.join((*stack, name))}")
        parent_dir = out_dir.parent / name
        if not (parent_dir / DONE_FILE).exists():
            _log(
                f"[{config.name}] init.from_preset {name!r}: no finished run in {parent_dir}; "
                f"training it first (seed {config.seed}, device {config.device})"
            )
            parent = load_preset(name).model_copy(
                update={"seed": config.seed, "device": config.device}
            )
            try:
                _train(
                    parent,
                    parent_dir,
                    resume=True,
                    overwrite=False,
                    progress=progress,
                    callback=None,
                    stack=(*stack, config.name),
                )
            except RunError as err:
                raise RunError(f"while preparing init.from_preset {name!r}: {err}") from err
            _log(f"[{config.name}] {name} finished; fine-tuning from {parent_dir / FINAL_FILE}")
        model, meta = load_checkpoint(parent_dir / FINAL_FILE)
        _check_init_model(model, config, f"preset run {parent_dir}")
        parent_seed = (meta.get("config") or {}).get("seed")
        origin = f"fine-tuning {parent_dir / FINAL_FILE} (seed {parent_seed})"
        return model, origin, _reusable_measures(config, parent_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, _INIT))
        model = create_model(config.model.name, **config.model.options)
    return model, f"fresh init (seed {config.seed})", None


class _Evaluator:
    """Computes one history row's measurements (Section 5): accuracy, fooling ratios,
    effective rank/sparsity of every layer (Eqs. 2-3) and optionally KDE MI."""

    def __init__(self, config: TrainConfig, x_test: Tensor, y_test: Tensor) -> None:
        from .data import eval_subset

        h = config.history
        self.h = h
        n_test = len(x_test)
        self.x_acc, self.y_acc = x_test, y_test
        if h.test_accuracy_n is not None and h.test_accuracy_n < n_test:
            self.x_acc, self.y_acc = eval_subset(x_test, y_test, h.test_accuracy_n, h.eval_seed)
        self.x_ev, self.y_ev = eval_subset(x_test, y_test, min(h.eval_n, n_test), h.eval_seed)
        self.x_mi = self.y_mi = None
        if h.track_mi:
            self.x_mi, self.y_mi = eval_subset(x_test, y_test, min(h.mi_n, n_test), h.eval_seed)

    def measure(self, model: nn.Module) -> dict[str, Any]:
        from .metrics import effective_rank, effective_sparsity
        from .models import weight_matrices

        row: dict[str, Any] = {}
        h = self.h
        was_training = model.training
        model.eval()
        try:
            if h.evaluate:
                from .attacks import FGSM, GNM, PGD
                from .evaluation import accuracy, fooling_ratio

                bs = h.eval_batch_size
                row["test_acc"] = accuracy(model, self.x_acc, self.y_acc, batch_size=bs)
                for name in h.attacks:
                    if name == "fgsm":
                        attack = FGSM(model, h.eps)
                    elif name == "pgd":
                        attack = PGD(
                            model,
                            h.eps,
                            alpha=h.pgd_alpha,
                            steps=h.pgd_steps,
                            random_start=True,
                            seed=h.eval_seed,
                        )
                    else:
                        attack = GNM(model, h.eps, steps=h.gnm_steps)
                    row[f"fr_{name}"] = fooling_ratio(
                        model, attack, self.x_ev, self.y_ev, batch_size=bs
                    )
            with torch.no_grad():
                mats = weight_matrices(model)
                for key, w in mats.items():
                    try:
                        row[f"eff_rank_{key}"] = effective_rank(w)
                    except ValueError:
                        row[f"eff_rank_{key}"] = float("nan")
                for key, w in mats.items():
                    try:
                        row[f"eff_sparsity_{key}"] = effective_sparsity(w)
                    except ValueError:
                        row[f"eff_sparsity_{key}"] = float("nan")
            if h.track_mi:
                from .information import mi_per_layer

                for layer in mi_per_layer(model, self.x_mi, self.y_mi, noise_var=h.mi_noise_var):
                    for q in ("ixt_lower", "ixt_upper", "iyt_lower", "iyt_upper"):
                        row[f"mi_{layer.layer}_{q}"] = getattr(layer, q)
        finally:
            model.train(was_training)
        return row


class _Accumulator:
    """Running sums of the per-batch losses of the current epoch (JSON-serialisable)."""

    KEYS = ("ce", "l1", "nuclear", "joint", "total")

    def __init__(self, data: dict[str, float] | None = None) -> None:
        self.sums = {k: 0.0 for k in self.KEYS}
        self.correct = 0
        self.seen = 0
        self.batches = 0
        if data:
            self.sums = dict(data["sums"])
            self.correct, self.seen, self.batches = data["correct"], data["seen"], data["batches"]

    def means(self) -> dict[str, Any]:
        n = self.batches
        out: dict[str, Any] = {f"train_{k}": (self.sums[k] / n if n else None) for k in self.KEYS}
        out["train_acc"] = self.correct / self.seen if self.seen else None
        return out

    def state(self) -> dict[str, Any]:
        return {
            "sums": self.sums,
            "correct": self.correct,
            "seen": self.seen,
            "batches": self.batches,
        }


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    callback: Callable[[dict[str, Any], nn.Module], None] | None = None,
) -> TrainResult:
    """Train (or fine-tune) a model as described by ``config`` into the run directory ``out_dir``.

    Natural training, fine-tuning (``init``), adversarial training with FGSM or PGD at
    ``adversarial.eps`` (Section 5) and any regulariser of Eq. (8) combine freely.

    Args:
        config: the run.
        out_dir: run directory. A non-empty directory is refused unless ``resume`` (continue
            the interrupted run with the same config; a finished run is a no-op) or
            ``overwrite`` (delete the previous run there and start over).
        progress: show a tqdm bar (epoch, loss, accuracy, time left).
        callback: ``callback(row, model)`` after every history row is written and the
            resume state saved; an exception raised there stops training (the run can then
            be resumed from that point).

    Returns:
        :class:`TrainResult` with the final model (on ``config.device``), the history rows
        and the paths of the run's files.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(
            f"config must be a TrainConfig (use load_config(path) or load_preset(name)), "
            f"got {type(config).__name__}"
        )
    return _train(
        config,
        Path(out_dir),
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        callback=callback,
        stack=(),
    )


def _contents(out_dir: Path) -> list[str]:
    if not out_dir.is_dir():
        return []
    return sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_FILE)


def _prepare_dir(config: TrainConfig, out_dir: Path, resume: bool, overwrite: bool) -> str:
    """Returns "fresh", "resume" or "done"."""
    if resume and overwrite:
        raise RunError("choose either resume or overwrite, not both")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"{out_dir} exists and is not a directory; choose another output path")
    contents = _contents(out_dir)
    if not contents:
        return "fresh"
    if overwrite:
        if CONFIG_FILE not in contents:
            raise RunError(
                f"{out_dir} is not empty and is not a robustrank run directory (no "
                f"{CONFIG_FILE}); refusing to delete it. Choose another output directory"
            )
        for name in contents:  # keep the lock file we hold
            path = out_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        return "fresh"
    if not resume:
        shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
        raise RunError(
            f"run directory {out_dir} is not empty ({shown}); pass --resume (resume=True) to "
            "continue that run, --overwrite (overwrite=True) to delete it and start over, or "
            "choose another output directory"
        )
    if CONFIG_FILE not in contents:
        raise RunError(
            f"cannot resume in {out_dir}: it has no {CONFIG_FILE}, so it is not a robustrank run "
            "directory; choose another output directory"
        )
    try:
        saved = yaml.safe_load((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        saved = config_from_dict(saved, source=str(out_dir / CONFIG_FILE)).plain()
    except (yaml.YAMLError, ConfigError) as err:
        raise RunError(
            f"cannot resume in {out_dir}: its {CONFIG_FILE} is unreadable: {err}"
        ) from err
    diff = _config_diff(saved, config.plain())
    if diff:
        raise RunError(
            f"cannot resume {out_dir} with a different config; differing keys:\n"
            + "\n".join(diff)
            + "\nUse the run's own config.yaml, --overwrite to start over, or another --out"
        )
    if (out_dir / DONE_FILE).exists():
        return "done"
    return "resume"


def _train(
    config: TrainConfig,
    out_dir: Path,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
    callback: Callable[[dict[str, Any], nn.Module], None] | None,
    stack: tuple[str, ...],
) -> TrainResult:
    if resume and overwrite:
        raise RunError("choose either resume or overwrite, not both")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"{out_dir} exists and is not a directory; choose another output path")
    contents = _contents(out_dir)
    if contents and CONFIG_FILE not in contents and (resume or overwrite):
        _prepare_dir(config, out_dir, resume, overwrite)  # raises: not a run directory
    if contents and not (resume or overwrite):
        _prepare_dir(config, out_dir, resume, overwrite)  # raises: not empty
    with _run_lock(out_dir):
        return _train_locked(
            config,
            out_dir,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            callback=callback,
            stack=stack,
        )


def _train_locked(
    config: TrainConfig,
    out_dir: Path,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
    callback: Callable[[dict[str, Any], nn.Module], None] | None,
    stack: tuple[str, ...],
) -> TrainResult:
    t_call = time.perf_counter()
    device = _device(config.device)
    mode = _prepare_dir(config, out_dir, resume, overwrite)
    if mode == "done":
        _log(f"[{config.name}] run {out_dir} is already finished ({DONE_FILE}); nothing to do")
        return _result_from_finished(config, out_dir, t_call)

    state_path = out_dir / RESUME_FILE
    resume_state = None
    if mode == "resume" and state_path.exists():
        resume_state = _load_resume(state_path)
    if mode == "resume" and resume_state is None:
        _log(f"[{config.name}] {out_dir} has no resume state yet; starting the run from scratch")

    # --- model and optimiser
    if resume_state is None:
        model, origin, init_measures = _initial_model(config, out_dir, progress, stack)
    else:
        model = create_model(config.model.name, **config.model.options)
        origin, init_measures = f"resumed from {state_path}", None
    config.regularizers.check_model(model)
    if config.adversarial.attack != "none" and config.adversarial.eps == 0:
        _log(f"[{config.name}] warning: adversarial.eps is 0, adversarial examples are clean")

    # --- data (moved to the device once)
    x_tr, y_tr = _load_dataset(config.dataset, "train")
    if config.train_subset is not None:
        if config.train_subset > len(x_tr):
            raise ConfigError(
                f"train_subset {config.train_subset} exceeds the {len(x_tr)} training examples "
                f"of {config.dataset}; lower it or set null"
            )
        from .data import eval_subset

        x_tr, y_tr = eval_subset(x_tr, y_tr, config.train_subset, seed=config.seed)
    x_te, y_te = _load_dataset(config.dataset, "test")
    x_tr, y_tr = x_tr.to(device), y_tr.to(device)
    x_te, y_te = x_te.to(device), y_te.to(device)
    n_batches = math.ceil(len(x_tr) / config.batch_size)

    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl, csv_path = out_dir / HISTORY_JSONL, out_dir / HISTORY_CSV
    if resume_state is None:
        for p in (jsonl, csv_path, out_dir / LAST_FILE):
            p.unlink(missing_ok=True)
        atomic_write_bytes(out_dir / CONFIG_FILE, config.to_yaml().encode("utf-8"))

    with _private_rng(device):
        return _run_loop(
            config,
            out_dir,
            model,
            origin,
            init_measures,
            resume_state,
            device,
            x_tr,
            y_tr,
            x_te,
            y_te,
            n_batches,
            progress,
            callback,
            t_call,
        )


def _run_loop(
    config: TrainConfig,
    out_dir: Path,
    model: nn.Module,
    origin: str,
    init_measures: dict[str, Any] | None,
    resume_state: tuple[dict[str, Tensor], dict[str, Any]] | None,
    device: torch.device,
    x_tr: Tensor,
    y_tr: Tensor,
    x_te: Tensor,
    y_te: Tensor,
    n_batches: int,
    progress: bool,
    callback: Callable[[dict[str, Any], nn.Module], None] | None,
    t_call: float,
) -> TrainResult:
    from tqdm import tqdm

    from .attacks import FGSM, PGD
    from .data import batches
    from .models import save_checkpoint

    adv, reg = config.adversarial, config.regularizers
    jsonl, csv_path = out_dir / HISTORY_JSONL, out_dir / HISTORY_CSV
    evaluator = _Evaluator(config, x_te, y_te)

    use_fast_layout(model.to(device), device)
    model.train()
    opt = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )

    columns: list[str] | None = None
    if resume_state is None:
        torch.manual_seed(derive_seed(config.seed, _GLOBAL))
        epoch, step_in_epoch, global_step = 0, n_batches, 0
        acc = _Accumulator()
        sizes = {"jsonl": 0, "csv": 0}
        times = {"train": 0.0, "elapsed": 0.0}
        rows: list[dict[str, Any]] = []
    else:
        tensors, header = resume_state
        model.load_state_dict(
            {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
        )
        _restore_optimizer(opt, tensors, header)
        torch.set_rng_state(tensors["rng/torch_cpu"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
        if cuda_states and device.type == "cuda":
            torch.cuda.set_rng_state_all(cuda_states)
        epoch, step_in_epoch = header["epoch"], header["step_in_epoch"]
        global_step = header["global_step"]
        acc = _Accumulator(header["accumulator"])
        sizes, times = header["history_bytes"], header["times"]
        columns = header["columns"]
        _truncate(jsonl, sizes["jsonl"])
        _truncate(csv_path, sizes["csv"])
        rows = read_history(out_dir)
        _log(
            f"[{config.name}] resuming {out_dir} at epoch {epoch}"
            + (f", step {step_in_epoch}/{n_batches}" if step_in_epoch < n_batches else "")
        )

    t_session = time.perf_counter()
    elapsed0 = times["elapsed"]

    def elapsed() -> float:
        return elapsed0 + (time.perf_counter() - t_session)

    def commit(kind: str | None) -> dict[str, Any] | None:
        """Write a history row (if ``kind``), the rolling checkpoint and the resume state."""
        nonlocal columns
        row = None
        if kind is not None:
            t_eval = time.perf_counter()
            row = {
                "kind": kind,
                "epoch": epoch,
                "step": global_step,
                "epoch_progress": (epoch - 1) + step_in_epoch / n_batches if epoch else 0.0,
                "lr": lr_at_epoch(config, max(epoch, 1)),
            }
            row.update(acc.means())
            if kind == "init" and init_measures is not None:
                row.update(init_measures)
            else:
                row.update(evaluator.measure(model))
            row["time_eval"] = time.perf_counter() - t_eval
            row["time_train"] = times["train"]
            row["time_elapsed"] = elapsed()
            if columns is None:
                columns = list(row)
            missing = [c for c in columns if c not in row]
            if missing or len(row) != len(columns):
                raise RuntimeError(
                    f"history row columns changed: {sorted(set(row) ^ set(columns))}"
                )
            if sizes["csv"] == 0:
                sizes["csv"] = _append_line(csv_path, _csv_line(columns))
            clean = {k: _json_value(row[k]) for k in columns}
            sizes["jsonl"] = _append_line(jsonl, json.dumps(clean) + "\n")
            sizes["csv"] = _append_line(csv_path, _csv_line([row[k] for k in columns]))
            rows.append(clean)
        times["elapsed"] = elapsed()
        meta = {
            "dataset": config.dataset,
            "epoch": epoch,
            "step": global_step,
            "preset": config.name,
            "config": config.plain(),
        }
        save_checkpoint(model, out_dir / LAST_FILE, **meta)
        if config.checkpoint_every_epoch and kind != "steps":
            save_checkpoint(model, out_dir / f"checkpoint-epoch-{epoch}.safetensors", **meta)
        _save_resume(
            out_dir / RESUME_FILE,
            model,
            opt,
            {
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "global_step": global_step,
                "n_batches": n_batches,
                "accumulator": acc.state(),
                "history_bytes": sizes,
                "times": times,
                "columns": columns,
            },
        )
        if row is not None and callback is not None:
            callback(dict(row), model)
        return row

    if resume_state is None:
        _log(f"[{config.name}] {origin}; {len(x_tr)} training examples, {n_batches} batches/epoch")
        commit("init")

    h = config.history
    total_steps = config.epochs * n_batches
    bar = tqdm(
        total=total_steps,
        initial=global_step,
        desc=config.name,
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    last_test = rows[-1].get("test_acc") if rows else None
    attack_cls = {"fgsm": FGSM, "pgd": PGD}.get(adv.attack)
    fgsm = FGSM(model, adv.eps) if adv.attack == "fgsm" else None
    try:
        while True:
            if step_in_epoch >= n_batches:
                if epoch >= config.epochs:
                    break
                epoch, step_in_epoch = epoch + 1, 0
                acc = _Accumulator()
            skip = step_in_epoch
            lr = lr_at_epoch(config, epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            shuffle = torch.Generator().manual_seed(derive_seed(config.seed, _SHUFFLE, epoch))
            model.train()  # attacks and evaluation restore the mode they found
            t_train = time.perf_counter()
            for i, (xb, yb) in enumerate(batches(x_tr, y_tr, config.batch_size, generator=shuffle)):
                if i < skip:
                    continue
                step_in_epoch = i + 1
                if attack_cls is None:
                    x_in = xb
                elif fgsm is not None:
                    x_in = fgsm(xb, yb)
                else:
                    x_in = PGD(
                        model,
                        adv.eps,
                        alpha=adv.alpha,
                        steps=adv.steps,
                        random_start=adv.random_start,
                        seed=derive_seed(config.seed, _ATTACK, epoch, step_in_epoch),
                    )(xb, yb)
                opt.zero_grad(set_to_none=True)
                logits = model(x_in)
                ce = F.cross_entropy(logits, yb)
                if attack_cls is not None and adv.mix < 1.0:
                    ce = adv.mix * ce + (1.0 - adv.mix) * F.cross_entropy(model(xb), yb)
                loss = ce
                if reg.active:
                    terms = regularization_terms(model, reg)
                    loss = ce + terms["l1"] + terms["nuclear"] + terms["joint"]
                loss.backward()
                opt.step()
                global_step += 1
                s = acc.sums
                ce_value = ce.item()
                s["ce"] += ce_value
                if reg.active:
                    s["l1"] += terms["l1"].item()
                    s["nuclear"] += terms["nuclear"].item()
                    s["joint"] += terms["joint"].item()
                    s["total"] += loss.item()
                else:
                    s["total"] += ce_value
                acc.batches += 1
                acc.correct += int((logits.argmax(1) == yb).sum())
                acc.seen += len(yb)
                bar.update(1)
                if progress and (global_step % 20 == 0 or step_in_epoch == n_batches):
                    bar.set_postfix(
                        epoch=f"{epoch}/{config.epochs}",
                        loss=f"{s['total'] / acc.batches:.4f}",
                        acc=f"{acc.correct / acc.seen:.3f}",
                        test_acc="-" if last_test is None else f"{last_test:.4f}",
                        refresh=False,
                    )
                if (
                    h.every_steps is not None
                    and global_step % h.every_steps == 0
                    and step_in_epoch < n_batches
                ):
                    times["train"] += time.perf_counter() - t_train
                    commit("steps")
                    t_train = time.perf_counter()
            times["train"] += time.perf_counter() - t_train
            is_row = epoch % h.every_epochs == 0 or epoch == config.epochs
            row = commit("epoch" if is_row else None)
            if row is not None and "test_acc" in row:
                last_test = row["test_acc"]
    finally:
        bar.close()

    # --- finish: final checkpoint, then done.json (the commit point), then clean up
    final = out_dir / FINAL_FILE
    last_row = rows[-1] if rows else {}
    save_checkpoint(
        model,
        final,
        dataset=config.dataset,
        epoch=epoch,
        step=global_step,
        preset=config.name,
        config=config.plain(),
        test_acc=last_row.get("test_acc"),
    )
    done = {
        "name": config.name,
        "epochs": config.epochs,
        "steps": global_step,
        "final_checkpoint": FINAL_FILE,
        "test_acc": last_row.get("test_acc"),
        "time_train": times["train"],
        "time_elapsed": elapsed(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(out_dir / DONE_FILE, (json.dumps(done, indent=2) + "\n").encode("utf-8"))
    (out_dir / RESUME_FILE).unlink(missing_ok=True)
    (out_dir / LAST_FILE).unlink(missing_ok=True)
    msg = f"[{config.name}] finished {config.epochs} epochs in {done['time_elapsed']:.1f} s"
    if last_row.get("test_acc") is not None:
        msg += f"; test accuracy {last_row['test_acc']:.4f}"
    _log(msg)
    model.eval()
    return TrainResult(
        model=model,
        history=rows,
        out_dir=out_dir,
        final_checkpoint=final,
        history_jsonl=jsonl,
        history_csv=csv_path,
        wall_time=time.perf_counter() - t_call,
        config=config,
        resumed=resume_state is not None,
    )
