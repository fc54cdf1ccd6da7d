"""Attacking a checkpoint: ``robustrank evaluate``, ``diagnose`` and ``curve``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import (
    ATTACK_CHOICES,
    BatchOpt,
    CheckpointArg,
    DataDirOpt,
    DataPathOpt,
    DatasetOpt,
    DeviceOpt,
    ProgressOpt,
    SeedOpt,
    SubsetOpt,
    TrustOpt,
    check_device,
    check_outputs,
    fail,
    load_model_or_checkpoint,
    model_and_subset,
    parse_eps_grid,
    parse_options,
)

if TYPE_CHECKING:
    from ..attacks import AttackSpec

__all__ = ["evaluate_cmd", "diagnose_cmd", "curve_cmd"]


def evaluate_cmd(
    checkpoint: CheckpointArg,
    attack: str = typer.Option("pgd", help=f"{ATTACK_CHOICES} (l_inf; `robustrank attacks`)"),
    eps: float = typer.Option(0.05, help="l_inf budget (paper: 0.05)"),
    eps_grid: str = typer.Option(None, help="comma-separated eps values (overrides --eps)"),
    n: SubsetOpt = 1000,
    early_stop: bool = typer.Option(False, help="stop attacking inputs once fooled (faster)"),
    dataset: DatasetOpt = None,
    data_path: DataPathOpt = None,
    batch_size: BatchOpt = 500,
    seed: SeedOpt = 0,
    steps: int = typer.Option(None, help="iterations (default: the attack's, e.g. PGD 20)"),
    alpha: float = typer.Option(None, help="step size, for attacks that take one"),
    option: list[str] = typer.Option(
        None, "--option", "-o", help="attack option KEY=VALUE (YAML value), repeatable"
    ),
    device: DeviceOpt = None,
    out: Path = typer.Option(None, help="directory for eval-<attack>.json and .csv"),
    json_path: Path = typer.Option(None, "--json", help="write the results as JSON here"),
    csv_path: Path = typer.Option(None, "--csv", help="write the results as CSV here"),
    overwrite: bool = typer.Option(False, help="replace existing result files"),
    data_dir: DataDirOpt = None,
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
) -> None:
    """Fooling ratio and robust accuracy of a checkpoint under any registered attack."""
    from ..attacks import get_attack
    from ..evaluation import eps_sweep, format_breakdown, format_results, result_paths, save_results

    try:
        spec = get_attack(attack)
    except ValueError as err:
        fail(str(err))
    grid = parse_eps_grid(eps_grid) if eps_grid is not None else parse_eps_grid(str(eps), "--eps")
    json_path, csv_path = result_paths(out, spec.name, json_path, csv_path)
    check_outputs([json_path, csv_path], overwrite)
    model, meta, ref, x, y = model_and_subset(
        checkpoint,
        trust_code=trust_code,
        device=device,
        dataset=dataset,
        data_path=data_path,
        n=n,
        seed=seed,
        data_dir=data_dir,
    )
    kw = _attack_options(spec, steps=steps, alpha=alpha, seed=seed, option=option)
    try:
        results = eps_sweep(
            model, spec.name, grid, x, y, batch_size=batch_size, early_stop=early_stop,
            progress=progress, **kw,
        )  # fmt: skip
    except (ValueError, TypeError, RuntimeError) as err:
        fail(str(err))
    arch = getattr(model, "robustrank_spec", {}).get("name")
    typer.echo(f"{checkpoint} ({arch}) on {ref.name} test, n={len(x)}, subset seed {seed}")
    typer.echo(format_results(results))
    breakdown = format_breakdown(results)
    if breakdown:
        typer.echo("\n" + breakdown)
    metadata = {
        "checkpoint": str(checkpoint),
        "model": getattr(model, "robustrank_spec", None),
        "dataset": ref.plain(),
        "split": "test",
        "subset_seed": seed,
        "checkpoint_metadata": meta,
    }
    try:
        written = save_results(
            results, json_path=json_path, csv_path=csv_path, metadata=metadata, overwrite=overwrite
        )
    except (FileExistsError, OSError, ValueError) as err:
        fail(str(err))
    for p in written:
        typer.echo(f"wrote {p}")


def _attack_options(
    spec: AttackSpec, *, steps: int | None, alpha: float | None, seed: int, option: list[str] | None
) -> dict[str, Any]:
    """The attack's keyword options from ``--steps``, ``--alpha``, ``--seed`` (seeded attacks
    only) and ``--option KEY=VALUE``; an option the attack does not take is an error."""
    from ..attacks import supported_options

    asked = {"steps": steps, "alpha": alpha}
    unsupported = [k for k, v in asked.items() if v is not None and not spec.accepts(k)]
    if unsupported:
        fail(f"attack {spec.name!r} takes no {', '.join('--' + k for k in unsupported)}")
    kw = supported_options(spec.name, {**asked, "seed": seed if spec.takes_seed else None})
    kw.update(parse_options(option, spec))
    return kw


def diagnose_cmd(
    checkpoint: CheckpointArg,
    n: SubsetOpt = 500,
    eps: float = typer.Option(0.05, help="the l_inf budget under scrutiny (paper: 0.05)"),
    surrogate: Path = typer.Option(None, help="another checkpoint for the transfer check"),
    out: Path = typer.Option(None, help="directory for diagnostics.json"),
    steps: int = typer.Option(100, help="APGD iterations (the convergence check doubles them)"),
    n_queries: int = typer.Option(1000, help="Square's query budget"),
    large_eps: float = typer.Option(0.5, help="budget at which almost every input must break"),
    certifier: str = typer.Option(
        "crown-ibp", help="certifier of the certified-vs-attacked check; 'none' skips it"
    ),
    dataset: DatasetOpt = None,
    data_path: DataPathOpt = None,
    batch_size: BatchOpt = 500,
    seed: int = typer.Option(0, help="seed of the test subset and of the attacks"),
    device: DeviceOpt = None,
    overwrite: bool = typer.Option(False, help="replace an existing diagnostics.json"),
    data_dir: DataDirOpt = None,
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
) -> None:
    """Gradient-masking checks (Carlini et al. 2019; AutoAttack): can its robustness be trusted?

    Exits with 0 when every check passes and 1 when any warns.
    """
    from ..evaluation import diagnose
    from ..ownership import OwnershipError

    target = None if out is None else out / "diagnostics.json"
    check_outputs([target], overwrite)
    model, _, ref, x, y = model_and_subset(
        checkpoint,
        trust_code=trust_code,
        device=device,
        dataset=dataset,
        data_path=data_path,
        n=n,
        seed=seed,
        data_dir=data_dir,
    )
    other = None
    if surrogate is not None:
        other, _ = load_model_or_checkpoint(str(surrogate), trust_code, check_device(device))
    try:
        report = diagnose(
            model,
            x,
            y,
            eps,
            other,
            steps=steps,
            n_queries=n_queries,
            large_eps=large_eps,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            certifier=None if certifier.strip().lower() == "none" else certifier,
        )
    except (ValueError, TypeError, RuntimeError) as err:
        fail(str(err))
    typer.echo(f"{checkpoint} on {ref.name} test, n={len(x)}, eps={eps:g}\n")
    typer.echo(report.format())
    if target is not None:
        try:
            typer.echo(f"wrote {report.save_json(target, overwrite=overwrite)}")
        except OwnershipError as err:
            fail(str(err))
    raise typer.Exit(1 if report.warnings else 0)


def curve_cmd(
    checkpoint: CheckpointArg,
    out: Path = typer.Option(..., help="directory for curve.json and curve.png"),
    eps_grid: str = typer.Option(
        "0,0.01,0.02,0.03,0.05,0.075,0.1,0.15,0.2,0.3", help="comma-separated eps values"
    ),
    attack: str = typer.Option("fab", help=f"{ATTACK_CHOICES}; fab: one minimal-perturbation run"),
    confirm: str = typer.Option(None, help="fixed-eps attack confirming points, e.g. autoattack"),
    confirm_eps: str = typer.Option(None, help="comma-separated eps to confirm (default: grid)"),
    n: SubsetOpt = 1000,
    dataset: DatasetOpt = None,
    data_path: DataPathOpt = None,
    batch_size: BatchOpt = 500,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    overwrite: bool = typer.Option(False, help="replace existing curve files"),
    data_dir: DataDirOpt = None,
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
) -> None:
    """Robust accuracy and fooling ratio against eps (a robustness curve) with its figure."""
    from ..attacks import supported_options
    from ..evaluation import curve_paths, robustness_curve, save_curve
    from ..ownership import OwnershipError

    check_outputs(curve_paths(out), overwrite)
    grid = parse_eps_grid(eps_grid)
    conf = None if confirm_eps is None else parse_eps_grid(confirm_eps, "--confirm-eps")
    model, _, ref, x, y = model_and_subset(
        checkpoint,
        trust_code=trust_code,
        device=device,
        dataset=dataset,
        data_path=data_path,
        n=n,
        seed=seed,
        data_dir=data_dir,
    )
    try:
        curve = robustness_curve(
            model,
            x,
            y,
            grid,
            attack,
            confirm=confirm,
            confirm_eps=conf,
            batch_size=batch_size,
            progress=progress,
            **supported_options(attack, {"seed": seed}),
        )
    except (ValueError, TypeError, RuntimeError) as err:
        fail(str(err))
    try:
        written = save_curve(
            curve, out, checkpoint=checkpoint, dataset=ref.plain(), overwrite=overwrite
        )
    except OwnershipError as err:
        fail(str(err))
    typer.echo(curve.format())
    for p in written:
        typer.echo(f"wrote {p}")
