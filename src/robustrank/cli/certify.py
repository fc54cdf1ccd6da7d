"""Certifying a checkpoint: ``robustrank certify`` (certified accuracy over eps x method,
optionally plotted beside an attack's robust accuracy)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..evaluation.certification import DEFAULT_CERTIFIER, list_certifiers
from .common import (
    ATTACK_CHOICES,
    CheckpointArg,
    DataDirOpt,
    DataPathOpt,
    DatasetOpt,
    DeviceOpt,
    ProgressOpt,
    SeedOpt,
    SubsetOpt,
    TrustOpt,
    check_outputs,
    fail,
    model_and_subset,
    parse_eps_grid,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..evaluation.certification import CertificationSweep

__all__ = ["certify_cmd", "CERTIFIER_CHOICES"]

CERTIFIER_CHOICES = " | ".join(list_certifiers())
#: the attack ``--plot`` compares against unless ``--attack`` names another
DEFAULT_PLOT_ATTACK = "apgd-ce"


def parse_methods(items: list[str] | None) -> list[str]:
    """``--method`` values (repeatable, each comma-separated) as registered certifier names,
    each once; an unknown name is a one-line error with a did-you-mean."""
    from ..evaluation.certification import get_certifier

    names = [t.strip() for item in items or [DEFAULT_CERTIFIER] for t in item.split(",")]
    try:
        methods = [get_certifier(t).name for t in names if t]
    except ValueError as err:
        fail(f"--method: {err}")
    if not methods:
        fail(f"--method is empty; pass one of {CERTIFIER_CHOICES}")
    return list(dict.fromkeys(methods))


def certify_cmd(
    checkpoint: CheckpointArg,
    method: list[str] = typer.Option(
        None, help=f"{CERTIFIER_CHOICES}; comma-separated or repeated (default {DEFAULT_CERTIFIER})"
    ),
    eps: str = typer.Option("0.01,0.02,0.05", help="comma-separated l_inf budgets"),
    n: SubsetOpt = 1000,
    batch_size: int = typer.Option(None, help="inputs per certifier call (default: all)"),
    out: Path = typer.Option(None, help="a .json or .csv file, or a directory for both"),
    plot: Path = typer.Option(None, help="figure: certified vs attacked accuracy over eps"),
    attack: str = typer.Option(
        DEFAULT_PLOT_ATTACK, help=f"the attack --plot compares with: {ATTACK_CHOICES}"
    ),
    dataset: DatasetOpt = None,
    data_path: DataPathOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    overwrite: bool = typer.Option(False, help="replace existing result files"),
    data_dir: DataDirOpt = None,
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
) -> None:
    """Certified accuracy (sound bounds: IBP, CROWN, ...) of a checkpoint at several eps."""
    from ..evaluation.certification import certify_sweep, sweep_paths

    methods = parse_methods(method)
    grid = parse_eps_grid(eps, "--eps")
    json_path, csv_path = sweep_paths(out)
    check_outputs([json_path, csv_path, plot], overwrite)
    if plot is not None:
        _check_attack(attack)
    model, meta, ref, x, y = model_and_subset(
        checkpoint, trust_code=trust_code, device=device, dataset=dataset,
        data_path=data_path, n=n, seed=seed, data_dir=data_dir,
    )  # fmt: skip
    try:
        sweep = certify_sweep(model, x, y, grid, methods, batch_size=batch_size, progress=progress)
    except (ValueError, TypeError, RuntimeError) as err:
        fail(str(err))
    arch = getattr(model, "robustrank_spec", {}).get("name")
    typer.echo(f"{checkpoint} ({arch}) on {ref.name} test, n={len(x)}, subset seed {seed}")
    typer.echo(sweep.format())
    metadata = {
        "checkpoint": str(checkpoint),
        "model": getattr(model, "robustrank_spec", None),
        "dataset": ref.plain(),
        "split": "test",
        "subset_seed": seed,
        "checkpoint_metadata": meta,
    }
    written = _save(sweep, json_path, csv_path, metadata, overwrite)
    if plot is not None:
        written += _plot(model, x, y, sweep, attack, plot, seed, progress, overwrite)
    for p in written:
        typer.echo(f"wrote {p}")


def _check_attack(attack: str) -> None:
    from ..attacks import get_attack

    try:
        get_attack(attack)
    except ValueError as err:
        fail(f"--attack: {err}")


def _save(
    sweep: CertificationSweep,
    json_path: Path | None,
    csv_path: Path | None,
    metadata: dict[str, Any],
    overwrite: bool,
) -> list[Path]:
    from ..ownership import OwnershipError

    try:
        return sweep.save(
            json_path=json_path, csv_path=csv_path, metadata=metadata, overwrite=overwrite
        )
    except (OwnershipError, OSError, ValueError) as err:
        fail(str(err))


def _plot(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    sweep: CertificationSweep,
    attack: str,
    path: Path,
    seed: int,
    progress: bool,
    overwrite: bool,
) -> list[Path]:
    """The attacked robust accuracy at the sweep's eps, and the figure beside it."""
    from ..attacks import supported_options
    from ..evaluation.certified_curves import certified_curve, plot_certified_curve
    from ..ownership import OwnershipError

    try:
        curve = certified_curve(
            model, x, y, sweep.eps, sweep.methods, attack=attack, sweep=sweep,
            progress=progress, **supported_options(attack, {"seed": seed}),
        )  # fmt: skip
    except (ValueError, TypeError, RuntimeError) as err:
        fail(str(err))
    typer.echo("\n" + curve.format())
    try:
        return [plot_certified_curve(curve, path, overwrite=overwrite)]
    except (OwnershipError, OSError) as err:
        fail(str(err))
