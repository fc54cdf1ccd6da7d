"""Many runs at once: ``robustrank reproduce`` (the paper) and ``budgets`` (fine-tuning
epochs)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..execution import ExecutorName
from ..experiments.profiles import ProfileName
from .common import AddressOpt, ExecutorOpt, ProgressOpt, ThreadsOpt, WorkersOpt, fail

__all__ = ["reproduce_cmd", "budgets_cmd"]


def reproduce_cmd(
    profile: str = typer.Option(
        "quick",
        help=f"one of {', '.join(ProfileName)} (their descriptions: README, Profiles)",
    ),
    out: Path = typer.Option(None, help="output directory (default: results/<profile>)"),
    only: str = typer.Option(None, help="run one architecture: fcnn or cnn"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    seed: int = typer.Option(None, help="base seed of every run (seed k gets SEED + k)"),
    seeds: int = typer.Option(
        None,
        min=1,
        help="independent seeds per preset (default: the profile's seeds); raising it later "
        "trains only the new seeds",
    ),
    overwrite: bool = typer.Option(False, help="discard earlier runs in the output directory"),
    progress: ProgressOpt = True,
    executor: ExecutorOpt = ExecutorName.processes,
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Train every model of Section 5 (N seeds each) and write the tables with intervals,
    figures, claim verdicts and report. Independent runs go in parallel on every core
    (--executor processes; each run keeps its --threads, so the numbers are those of
    --executor local)."""
    from ..execution import ExecutionError
    from ..experiments.reproduce import ReproduceError, reproduce

    try:
        result = reproduce(
            profile,
            out,
            only=only,
            device=device,
            seed=seed,
            seeds=seeds,
            overwrite=overwrite,
            progress=progress,
            executor=executor,
            workers=workers,
            address=address,
            threads=threads,
        )
    except (ReproduceError, ExecutionError, ValueError) as err:
        fail(str(err))
    typer.echo("\n" + result.format())


def budgets_cmd(
    family: str = typer.Option(..., help="model family of the fine-tuning presets (fcnn, cnn)"),
    max_epochs: int = typer.Option(100, min=1, help="epochs of every fine-tune"),
    out: Path = typer.Option(..., help="study directory (runs, budgets.json/csv/md, figure)"),
    natural_run: Path = typer.Option(
        None, help="finished natural run to fine-tune (default: train it into OUT/runs)"
    ),
    preset: list[str] = typer.Option(None, help="fine-tuning preset (repeat; default: all)"),
    every: int = typer.Option(1, min=1, help="epochs between history rows"),
    set_: list[str] = typer.Option(
        None,
        "--set",
        help="config override KEY=VALUE, dotted key, YAML value (repeat), e.g. "
        "history.track_mi=false",
    ),
    executor: ExecutorOpt = ExecutorName.local,
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    threads: ThreadsOpt = 1,
    progress: ProgressOpt = True,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="delete a study of other settings in --out first (its files)"
    ),
) -> None:
    """Clean accuracy, fooling ratios and structure against fine-tuning epochs (one long
    run per preset; every shorter budget is read off it)."""
    from ..execution import ExecutionError
    from ..experiments.budgets import budget_study, budgets_markdown, parse_overrides

    try:
        study = budget_study(
            family,
            out,
            max_epochs=max_epochs,
            presets=preset or None,
            natural_run=natural_run,
            every=every,
            overrides=parse_overrides(set_ or []),
            executor=executor,
            workers=workers,
            address=address,
            threads=threads,
            progress=progress,
            overwrite=overwrite,
        )
    except (ExecutionError, ValueError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        typer.secho("interrupted; re-run the same command to resume the study", err=True)
        raise typer.Exit(130) from None
    typer.echo(budgets_markdown(study))
    typer.echo(f"wrote {', '.join(str(p) for p in study.files.values())}")
