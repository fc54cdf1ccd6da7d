"""What the commands share: the option annotations (each option spelled once) and the
helpers that turn arguments into objects or one-line errors (exit code 2, :func:`fail`).

The heavy parts of robustrank (torch models, datasets) are imported inside the helpers,
so that ``robustrank --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ..attacks import list_attacks
from ..data import list_datasets
from ..execution import ExecutorName, list_executors

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..attacks import AttackSpec
    from ..data import DatasetRef

__all__ = [
    "ATTACK_CHOICES",
    "DATASET_CHOICES",
    "TRUST_HELP",
    "CheckpointArg",
    "SubsetOpt",
    "DatasetOpt",
    "DataPathOpt",
    "BatchOpt",
    "DeviceOpt",
    "ConfigDeviceOpt",
    "DataDirOpt",
    "ProgressOpt",
    "TrustOpt",
    "SeedOpt",
    "ExecutorOpt",
    "WorkersOpt",
    "AddressOpt",
    "ThreadsOpt",
    "fail",
    "load_model_or_checkpoint",
    "dataset_ref",
    "check_device",
    "load_test_subset",
    "model_and_subset",
    "parse_eps_grid",
    "check_outputs",
    "parse_options",
]

ATTACK_CHOICES = " | ".join(list_attacks())
DATASET_CHOICES = " | ".join(list_datasets())
TRUST_HELP = "allow a model named by import path (package.module:factory): imports its code"

# options shared by the commands that attack or analyse a checkpoint on a test subset
CheckpointArg = Annotated[Path, typer.Argument(help="checkpoint written by robustrank")]
SubsetOpt = Annotated[int, typer.Option("--n", help="size of the fixed seeded test subset")]
DatasetOpt = Annotated[
    str | None, typer.Option(help=f"{DATASET_CHOICES} (default: checkpoint metadata)")
]
DataPathOpt = Annotated[
    Path | None, typer.Option(help="file or directory of a dataset that needs one")
]
BatchOpt = Annotated[int, typer.Option(help="inputs per batch")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu | cuda (default: cpu)")]
# train's --device: its default is the config's device
ConfigDeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda (overrides the config)")]
DataDirOpt = Annotated[Path | None, typer.Option(help="data cache directory")]
ProgressOpt = Annotated[bool, typer.Option(help="show progress bars")]
TrustOpt = Annotated[bool, typer.Option("--trust-code", help=TRUST_HELP)]
SeedOpt = Annotated[int, typer.Option(help="seed of the test subset and of seeded attacks")]

# options of the commands that run many runs (reproduce, budgets, sweep run): see
# robustrank.execution
ExecutorOpt = Annotated[
    ExecutorName,
    typer.Option(
        help="where runs go: " + "; ".join(f"{k}: {v}" for k, v in list_executors().items())
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="processes: CPUs of the worker pool; ray: CPUs of the local Ray instance "
        "(default: all cores)",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        help="ray: join this cluster (HOST:PORT) instead of starting one (default: "
        "$RAY_ADDRESS); --out must be on a filesystem every node mounts at the same path"
    ),
]
ThreadsOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="CPU threads of every run (a Ray task reserves as many CPUs); fixed per run, so "
        "results do not depend on --executor or --workers",
    ),
]


def fail(message: str) -> NoReturn:
    """Print ``error: MESSAGE`` in red to stderr and exit with code 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def load_model_or_checkpoint(
    target: str, trust_code: bool = False, device: str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """A registered model name or import path (fresh weights, no metadata), or a
    checkpoint path (its model and metadata)."""
    from ..models import CheckpointError, create_model, is_import_path, list_models, load_checkpoint

    try:
        if target in list_models() or (is_import_path(target) and not Path(target).exists()):
            return create_model(target, trust_code=trust_code).to(device), {}
        if not Path(target).exists():
            fail(
                f"{target!r} does not exist and is neither a model name "
                f"({', '.join(list_models())}) nor an import path (package.module:factory)"
            )
        return load_checkpoint(target, map_location=device, trust_code=trust_code)
    except (CheckpointError, ValueError, TypeError) as err:
        fail(str(err))


def dataset_ref(
    model: nn.Module, meta: dict[str, Any], dataset: str | None, data_path: Path | None
) -> DatasetRef:
    """The dataset to evaluate on: ``--dataset``/``--data-path``, else the checkpoint's
    metadata, else the model's registered default (the paper pairs FCNN/MNIST, CNN/F-MNIST)."""
    from ..data import DatasetRef
    from ..models import get_model, is_import_path

    chosen = dataset if dataset is not None else meta.get("dataset")
    if chosen is None:
        arch = getattr(model, "robustrank_spec", {}).get("name")
        if arch is not None and not is_import_path(arch):
            chosen = get_model(arch).dataset
    if chosen is None:
        fail(
            "the checkpoint does not say which dataset it was trained on: pass --dataset "
            f"({DATASET_CHOICES})"
        )
    raw = dict(chosen) if isinstance(chosen, dict) else {"name": chosen}
    if data_path is not None:
        raw["path"] = str(data_path)
    try:
        return DatasetRef.parse(raw)
    except ValueError as err:
        fail(str(err))


def check_device(device: str | None) -> str:
    """``--device`` (default ``cpu``), refused when unavailable (CUDA on a CPU machine)."""
    from .._modes import resolve_device

    try:
        resolve_device(device or "cpu")
    except ValueError as err:
        fail(f"--device {device}: {err}")
    return device or "cpu"


def load_test_subset(
    ref: DatasetRef, n: int, seed: int, data_dir: Path | None
) -> tuple[Tensor, Tensor]:
    """The fixed seeded subset of ``n`` test inputs (all of them when there are fewer)."""
    from ..data import DataError, eval_subset, load_dataset

    try:
        x, y = load_dataset(ref, "test", data_dir)
        return eval_subset(x, y, min(n, len(x)), seed=seed)
    except (ValueError, DataError) as err:
        fail(str(err))


def model_and_subset(
    checkpoint: Path,
    *,
    trust_code: bool,
    device: str | None,
    dataset: str | None,
    data_path: Path | None,
    n: int,
    seed: int,
    data_dir: Path | None,
) -> tuple[nn.Module, dict[str, Any], DatasetRef, Tensor, Tensor]:
    """The checkpoint's model and metadata, its dataset and the fixed seeded test subset."""
    model, meta = load_model_or_checkpoint(str(checkpoint), trust_code, check_device(device))
    ref = dataset_ref(model, meta, dataset, data_path)
    x, y = load_test_subset(ref, n, seed, data_dir)
    return model, meta, ref, x, y


def parse_eps_grid(text: str, option: str = "--eps-grid") -> list[float]:
    """Comma-separated l_inf budgets, each in [0, 1] and listed once."""
    from .._types import check_budget

    try:
        grid = [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        fail(f"{option} must be comma-separated numbers like 0.01,0.02,0.05, got {text!r}")
    if not grid:
        fail(f"{option} is empty; pass numbers like 0.01,0.02,0.05")
    twice = sorted({e for e in grid if grid.count(e) > 1})
    if twice:
        fail(f"{option} lists {', '.join(f'{e:g}' for e in twice)} twice; list each eps once")
    try:
        return [check_budget(e, option) for e in grid]
    except ValueError as err:
        fail(str(err))


def check_outputs(paths: Iterable[Path | None], overwrite: bool) -> None:
    """Refuse output files in the way before any work (robustrank.ownership.check_files)."""
    from ..ownership import OwnershipError, check_files

    try:
        check_files(paths, overwrite=overwrite)
    except OwnershipError as err:
        fail(str(err))


def parse_options(items: list[str] | None, spec: AttackSpec) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs, values parsed as YAML (``5``, ``dlr``, ``[a, b]``),
    checked against the options the attack takes."""
    from ..yamlio import YAMLInputError, load_yaml

    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--option {item!r}: write KEY=VALUE, e.g. --option n_restarts=5")
        try:
            options[key.strip()] = load_yaml(value, f"--option {key.strip()}")
        except YAMLInputError as err:
            fail(str(err))
    try:
        spec.check_options(options)
    except ValueError as err:
        fail(str(err))
    return options
