"""Structure, information and theory: ``robustrank info``, ``analyze`` and ``theory``."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import (
    BatchOpt,
    CheckpointArg,
    DataDirOpt,
    DataPathOpt,
    DatasetOpt,
    DeviceOpt,
    TrustOpt,
    check_outputs,
    fail,
    load_model_or_checkpoint,
    model_and_subset,
)

__all__ = ["info_cmd", "analyze_cmd", "theory_cmd"]


def info_cmd(
    target: str = typer.Argument(..., help="model name, import path or checkpoint path"),
    trust_code: TrustOpt = False,
) -> None:
    """Print the architecture and the per-layer structure report (Eqs. 2-3)."""
    from ..metrics import format_structure_report, structure_report

    model, meta = load_model_or_checkpoint(target, trust_code)
    typer.echo(model)
    if meta:
        typer.echo(f"metadata: {meta}")
    typer.echo(format_structure_report(structure_report(model)))


def theory_cmd(
    n: int = typer.Option(784, "--n", help="ambient dimension (MNIST: 784)"),
    k: int = typer.Option(20, "--k", help="dimension of the data subspace"),
    samples: int = typer.Option(5000, "--samples", help="train and test points"),
    seed: int = typer.Option(0, "--seed", help="seed of everything"),
    instances: int = typer.Option(200, "--instances", help="random (V, w) instances"),
    out: Path = typer.Option(Path("results/theory"), "--out", help="directory for JSON + PNG"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace existing outputs"),
) -> None:
    """Section 3: Theorem 1 (projection onto the data subspace) checked numerically."""
    from ..linear_theory import (
        format_theory_summary,
        run_theory_experiment,
        theory_paths,
        write_theory_outputs,
    )

    check_outputs(theory_paths(out), overwrite)
    try:
        result = run_theory_experiment(n=n, k=k, samples=samples, seed=seed, instances=instances)
    except (ValueError, TypeError) as err:
        fail(str(err))
    typer.echo(format_theory_summary(result))
    try:
        paths = write_theory_outputs(result, out, overwrite=overwrite)
    except (FileExistsError, OSError) as err:
        fail(str(err))
    for p in paths:
        typer.echo(f"wrote {p}")


def analyze_cmd(
    checkpoint: CheckpointArg,
    n: int = typer.Option(10000, "--n", help="test images for the MI estimate (paper: 10,000)"),
    noise_var: float = typer.Option(0.1, "--noise-var", help="KDE noise variance (paper: 0.1)"),
    dataset: DatasetOpt = None,
    data_path: DataPathOpt = None,
    layers: str = typer.Option(
        None,
        help="comma-separated module paths or globs whose outputs to analyse "
        "(default: the paper's t^i, or every weight layer but the last)",
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the test subset (when n < test size)"),
    batch_size: BatchOpt = 1000,
    device: DeviceOpt = None,
    out: Path = typer.Option(None, "--out", help="write the report as JSON here"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out"),
    data_dir: DataDirOpt = None,
    trust_code: TrustOpt = False,
) -> None:
    """Per-layer effective rank and sparsity (Eqs. 2-3) and KDE I(T;X), I(T;Y) bounds."""
    from ..information import analyze_model
    from ..ownership import OwnershipError

    check_outputs([out], overwrite)
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
    chosen = [t.strip() for t in layers.split(",") if t.strip()] if layers else None
    try:
        report = analyze_model(
            model,
            x,
            y,
            noise_var=noise_var,
            batch_size=batch_size,
            layers=chosen,
            checkpoint=checkpoint,
            dataset=ref.plain(),
            subset_seed=seed,
            checkpoint_metadata=meta,
        )
    except (ValueError, TypeError) as err:
        fail(str(err))
    typer.echo(report.format())
    if out is not None:
        try:
            typer.echo(f"wrote {report.save_json(out, overwrite=overwrite)}")
        except OwnershipError as err:
            fail(str(err))
