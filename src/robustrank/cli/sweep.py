"""``robustrank sweep``: run a sweep, show how far one is, list the bundled specs."""

from __future__ import annotations

from pathlib import Path

import typer

from ..execution import ExecutorName
from ..sweeps.spec import DEFAULT_MAX_TRIALS
from .common import AddressOpt, ExecutorOpt, ProgressOpt, TrustOpt, WorkersOpt, fail

__all__ = ["app"]

app = typer.Typer(
    help="Sweep a search space (lambdas per layer, eps, epochs, seeds): one run per trial.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help is plain text: "robustrank[ray]" is not a style tag
)


@app.command("run")
def sweep_run(
    spec: str = typer.Argument(..., help="a spec file or a bundled spec name (`sweep list`)"),
    out: Path = typer.Option(..., "--out", help="the sweep directory (trials, tables, report)"),
    executor: ExecutorOpt = ExecutorName.local,
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="delete the sweep in --out first (e.g. another spec's)"
    ),
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
    max_trials: int | None = typer.Option(
        None,
        "--max-trials",
        min=1,
        help="refuse a spec of more trials than this (default: the spec's max_trials, else "
        f"{DEFAULT_MAX_TRIALS:,})",
    ),
    parents_from: Path | None = typer.Option(
        None,
        "--parents-from",
        help="another sweep's --out: reuse its finished parent runs (fine-tune bases) where "
        "their config is this sweep's (copied into --out/parents); the rest train here",
    ),
) -> None:
    """Run a sweep into --out, or resume it there (one training run per trial)."""
    from ..execution import ExecutionError
    from ..sweeps import SpecError, SweepError, run_sweep
    from ..training import ConfigError, RunError

    try:
        result = run_sweep(
            spec,
            out,
            executor=executor,
            workers=workers,
            address=address,
            progress=progress,
            overwrite=overwrite,
            trust_code=trust_code,
            max_trials=max_trials,
            parents_from=parents_from,
        )
    except (SpecError, SweepError, ExecutionError, ConfigError, RunError, ValueError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        typer.secho("interrupted; re-run the same command to resume the sweep", err=True)
        raise typer.Exit(130) from None
    typer.echo("\n" + result.format())


@app.command("status")
def sweep_status_cmd(
    directory: Path = typer.Argument(..., help="the sweep directory (the --out of `sweep run`)"),
) -> None:
    """Trials done, running and pending, and the best so far (read from the directory)."""
    from ..sweeps import SweepError, sweep_status

    try:
        typer.echo(sweep_status(directory).format())
    except (SweepError, OSError, ValueError, KeyError) as err:
        fail(str(err))


@app.command("list")
def sweep_list() -> None:
    """List the bundled specs (usable by name) and the search strategies."""
    from ..sweeps import list_specs, list_strategies

    for name, description in list_specs().items():
        typer.echo(f"{name}\n    {description}")
    typer.echo("\nstrategies: " + "; ".join(f"{k}: {v}" for k, v in list_strategies().items()))
