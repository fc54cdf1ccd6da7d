"""Setting a run up: the starting model (fresh, fine-tuned, resumed), the data on the
device, the dataset fingerprint, and a clean history."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._io import atomic_write_bytes, log
from .._modes import resolve_device
from ..models import (
    StructureError,
    apply_structure,
    create_model,
    input_shape_of,
    load_checkpoint,
    model_spec,
    output_classes,
    set_input_shape,
)
from .config import ConfigError, TrainConfig
from .rundir import (
    CONFIG_FILE,
    DONE_FILE,
    FINAL_FILE,
    HISTORY_CSV,
    HISTORY_JSONL,
    LAST_FILE,
    RESUME_FILE,
    RunError,
    load_resume,
    read_history,
)
from .seeds import INIT, STRUCTURE, derive_seed

__all__ = [
    "RunSetup",
    "setup_run",
    "pin_data",
    "private_rng",
    "check_labels_before_run",
    "preset_run_dir",
    "needs_parent_run",
]


@functools.lru_cache(maxsize=4)
def _load_dataset(ref: Any, split: str) -> tuple[Tensor, Tensor]:
    """``data.load_dataset`` cached per process (verification costs seconds per call).

    The cached tensors are never modified in place (batching and subsets copy).
    """
    from ..data import load_dataset

    return load_dataset(ref, split)


@contextmanager
def private_rng(device: torch.device) -> Iterator[None]:
    """Run with a forked global RNG so training neither reads nor disturbs the caller's."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def pin_data(config: TrainConfig) -> TrainConfig:
    """The config with its dataset's SHA-256 fingerprint recorded (custom datasets only).

    A config that already pins a fingerprint must match the data it names.
    """
    from ..data import dataset_fingerprint

    ref = config.dataset
    found = dataset_fingerprint(ref)
    if found is None:
        return config
    if ref.sha256 is not None and ref.sha256 != found:
        raise RunError(
            f"dataset {ref.path} has SHA-256 {found}, but the config pins {ref.sha256}: the "
            "data changed. Restore the original data, or remove dataset.sha256 to train on "
            "the new data in a new run directory"
        )
    return config.model_copy(update={"dataset": ref.model_copy(update={"sha256": found})})


@dataclass
class RunSetup:
    """Everything a run needs before its first step."""

    device: torch.device
    model: nn.Module
    origin: str
    init_measures: dict[str, Any] | None
    resume_state: tuple[dict[str, Tensor], dict[str, Any]] | None
    x_tr: Tensor
    y_tr: Tensor
    x_te: Tensor
    y_te: Tensor

    def batches_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.x_tr) / batch_size)


def setup_run(
    config: TrainConfig,
    out_dir: Path,
    mode: str,
    trust_code: bool,
) -> RunSetup:
    """Model (fresh, fine-tuned or resumed), data on the device, and a clean history."""
    device = resolve_device(config.device)
    state_path = out_dir / RESUME_FILE
    resume_state = load_resume(state_path) if mode == "resume" and state_path.exists() else None
    if mode == "resume" and resume_state is None:
        log(f"[{config.name}] {out_dir} has no resume state yet; starting the run from scratch")
    if resume_state is None:
        model, origin, init_measures = _initial_model(config, out_dir, trust_code)
    else:
        opts = config.model.options
        model = create_model(config.model.name, trust_code=trust_code, **opts)
        origin, init_measures = f"resumed from {state_path}", None
    x_tr, y_tr, x_te, y_te = _training_data(config)
    if input_shape_of(model) is None:
        set_input_shape(model, tuple(x_tr.shape[1:]))
    if resume_state is not None:
        _restore_structure(model, resume_state[1], state_path)
    elif config.structure.active and (applied := _apply_structure(config, model)):
        origin += f"; {applied}"
        init_measures = None  # the parent's last row measured the unstructured weights
    config.regularizers.check_model(model)
    _check_proximal(config, model)
    _check_run_labels(config, model, x_tr, (y_tr, y_te))
    if config.adversarial.attack != "none" and config.adversarial.eps == 0:
        log(f"[{config.name}] warning: adversarial.eps is 0, adversarial examples are clean")
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume_state is None:
        for p in (out_dir / HISTORY_JSONL, out_dir / HISTORY_CSV, out_dir / LAST_FILE):
            p.unlink(missing_ok=True)
        atomic_write_bytes(out_dir / CONFIG_FILE, config.to_yaml().encode("utf-8"))
    tensors = (t.to(device) for t in (x_tr, y_tr, x_te, y_te))
    return RunSetup(device, model, origin, init_measures, resume_state, *tensors)


def _apply_structure(config: TrainConfig, model: nn.Module) -> str:
    """Apply ``config.structure`` to the starting weights; what was done, for the log ("" when
    the section leaves every layer as it is: density 1, no rank)."""
    try:
        done = config.structure.apply(model, derive_seed(config.seed, STRUCTURE))
    except StructureError as err:
        raise ConfigError(f"{config.name}: {err}") from None
    if not done:
        return ""
    parts = [
        name + "".join(f" {k} {v:g}" for k, v in sorted(what.items()))
        for name, what in done.items()
    ]
    return "structure: " + ", ".join(parts)


def _restore_structure(model: nn.Module, header: dict[str, Any], path: Path) -> None:
    """Give a resumed model the structure its resume state was saved with."""
    try:
        apply_structure(model, header.get("structure") or {})
    except StructureError as err:
        raise RunError(f"{path}: {err}; start the run over with --overwrite") from None


def _check_proximal(config: TrainConfig, model: nn.Module) -> None:
    """Refuse proximal steps on layers that cannot take them (factorised ones)."""
    if not config.regularizers.proximal:
        return
    from ..regularizers import Regularizer
    from ..structure.proximal import check_proximal

    l1, nuclear = Regularizer.from_config(config.regularizers).layers(model)
    try:
        check_proximal(l1 + nuclear)
    except StructureError as err:
        raise ConfigError(f"{config.name}: {err}") from None


def _check_run_labels(
    config: TrainConfig, model: nn.Module, x: Tensor, labels: tuple[Tensor, Tensor]
) -> None:
    """Both splits' labels must be classes the model predicts: the width of its output on
    one training input (any model, whatever its options are called). Runs before the run
    directory gets any content; a model that cannot take the inputs is a ConfigError."""
    from ..data import check_labels

    try:
        with torch.random.fork_rng(devices=[]):
            num_classes = output_classes(model, x)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ConfigError(
            f"model {config.model.name} cannot take the inputs of dataset {config.dataset.name} "
            f"(shape {tuple(x.shape[1:])}): {err}. Fix: pick a model for that input shape"
        ) from None
    if num_classes is None:
        return
    where = config.dataset.path or config.dataset.name
    for split, y in zip(("train", "test"), labels, strict=True):
        check_labels(y, num_classes, f"dataset {where}, {split} split")


def check_labels_before_run(config: TrainConfig, trust_code: bool) -> None:
    """Refuse labels the model cannot predict before the run directory is touched: the
    model is built on the meta device (no weights allocated) and its output width read off
    one input. A model that cannot run on the meta device is checked later, in setup."""
    x_tr, y_tr, _, y_te = _training_data(config)
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            model = create_model(config.model.name, trust_code=trust_code, **config.model.options)
            num_classes = output_classes(model, x_tr[:1].to("meta"))
    except (NotImplementedError, RuntimeError, ValueError, TypeError):
        return
    if num_classes is not None:
        from ..data import check_labels

        where = config.dataset.path or config.dataset.name
        for split, y in zip(("train", "test"), (y_tr, y_te), strict=True):
            check_labels(y, num_classes, f"dataset {where}, {split} split")


def _training_data(config: TrainConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The (optionally subsampled) training split and the test split."""
    x_tr, y_tr = _load_dataset(config.dataset, "train")
    if config.train_subset is not None:
        if config.train_subset > len(x_tr):
            raise ConfigError(
                f"train_subset {config.train_subset} exceeds the {len(x_tr)} training examples "
                f"of {config.dataset.name}; lower it or set null"
            )
        from ..data import eval_subset

        x_tr, y_tr = eval_subset(x_tr, y_tr, config.train_subset, seed=config.seed)
    x_te, y_te = _load_dataset(config.dataset, "test")
    return x_tr, y_tr, x_te, y_te


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
    from ..yamlio import YAMLInputError, load_yaml_file
    from .config import config_from_dict

    try:
        raw = load_yaml_file(parent_dir / CONFIG_FILE)
        parent = config_from_dict(raw, source=str(parent_dir / CONFIG_FILE)).plain()
    except (OSError, YAMLInputError, ConfigError):
        return None
    when = ("every_epochs", "every_steps")  # when to measure, not what: irrelevant here
    mine = {k: v for k, v in config.plain()["history"].items() if k not in when}
    theirs = {k: v for k, v in parent["history"].items() if k not in when}
    if parent["dataset"] != config.dataset.plain() or theirs != mine:
        return None
    rows = read_history(parent_dir)
    if not rows or rows[-1].get("kind") != "epoch" or rows[-1].get("epoch") != parent["epochs"]:
        return None
    return {k: v for k, v in rows[-1].items() if not k.startswith(_ROW_BOOKKEEPING)}


def preset_run_dir(config: TrainConfig, out_dir: Path) -> Path:
    """The run directory of ``init.from_preset`` for a run in ``out_dir``: a sibling named
    after the preset, or ``init.preset_run`` relative to ``out_dir``."""
    name = config.init.from_preset
    assert name is not None
    if config.init.preset_run is not None:
        return out_dir / config.init.preset_run
    return out_dir.parent / name


def needs_parent_run(config: TrainConfig, out_dir: Path, mode: str) -> bool:
    """Whether this run starts from ``init.from_preset`` (not from a checkpoint, nor from
    its own resume state) and that preset's run has not finished yet."""
    if config.init.from_preset is None or config.init.checkpoint is not None:
        return False
    if mode == "resume" and (out_dir / RESUME_FILE).exists():
        return False
    return not (preset_run_dir(config, out_dir) / DONE_FILE).exists()


def _finished_preset_run(config: TrainConfig, out_dir: Path) -> Path:
    """The finished run directory of ``init.from_preset`` (``train`` trains it first)."""
    parent_dir = preset_run_dir(config, out_dir)
    if not (parent_dir / DONE_FILE).exists():
        raise RunError(
            f"init.from_preset {config.init.from_preset!r}: no finished run in {parent_dir}; "
            "train it first (train() does so by itself)"
        )
    return parent_dir


def _initial_model(
    config: TrainConfig, out_dir: Path, trust_code: bool
) -> tuple[nn.Module, str, dict[str, Any] | None]:
    """The starting weights, where they came from, and reusable epoch-0 measurements.

    A fine-tune of a preset run reuses the evaluation of that run's final row for its own
    epoch-0 row when the history settings agree (the numbers are identical: same weights,
    same seeded evaluation), which saves one full evaluation per fine-tuning run.
    """
    if config.init.checkpoint is not None:
        path = Path(config.init.checkpoint)
        model, meta = load_checkpoint(path, trust_code=trust_code)
        _check_init_model(model, config, f"init.checkpoint {path}")
        ds = meta.get("dataset")
        if ds is not None and ds != config.dataset.plain():
            log(f"warning: {path} was trained on {ds}; fine-tuning it on {config.dataset.name}")
        return model, f"checkpoint {path}", None
    if config.init.from_preset is not None:
        parent_dir = _finished_preset_run(config, out_dir)
        model, meta = load_checkpoint(parent_dir / FINAL_FILE, trust_code=trust_code)
        _check_init_model(model, config, f"preset run {parent_dir}")
        parent_seed = (meta.get("config") or {}).get("seed")
        origin = f"fine-tuning {parent_dir / FINAL_FILE} (seed {parent_seed})"
        return model, origin, _reusable_measures(config, parent_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, INIT))
        model = create_model(config.model.name, trust_code=trust_code, **config.model.options)
    return model, f"fresh init (seed {config.seed})", None
