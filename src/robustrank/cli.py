"""The ``robustrank`` command line: a thin Typer layer over the Python API."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="robustrank: low-rank and sparse weights vs. adversarial robustness.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch and verify MNIST and Fashion-MNIST.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _load_model_or_checkpoint(target: str):
    """A registered model name (fresh weights) or a checkpoint path."""
    from .models import CheckpointError, create_model, list_models, load_checkpoint

    if target in list_models():
        return create_model(target), {}
    path = Path(target)
    if not path.exists():
        _fail(f"{target!r} is neither a model name ({', '.join(list_models())}) nor a file")
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        _fail(str(err))


# --------------------------------------------------------------------------- data


@data_app.command("fetch")
def data_fetch(
    names: list[str] = typer.Argument(None, help="mnist, fashion-mnist (default: both)"),
    data_dir: Path = typer.Option(None, help="cache directory (default: $ROBUSTRANK_DATA or ~/.cache/robustrank)"),
) -> None:
    """Fetch, verify (SHA-256) and cache datasets."""
    from . import data

    try:
        data.fetch(names or None, data_dir=data_dir)
    except (ValueError, RuntimeError) as err:
        _fail(str(err))
    typer.echo(data.format_verify_table(data.verify(data_dir=data_dir)))


@data_app.command("verify")
def data_verify(data_dir: Path = typer.Option(None, help="cache directory")) -> None:
    """Check every cached array against its SHA-256 (offline; fetches nothing)."""
    from . import data

    results = data.verify(data_dir=data_dir)
    typer.echo(data.format_verify_table(results))
    if any(r.status != "ok" for r in results):
        raise typer.Exit(1)


# --------------------------------------------------------------------------- models


@app.command("models")
def models_cmd() -> None:
    """List the registered models."""
    from .models import list_models

    for name in list_models():
        typer.echo(name)


@app.command("info")
def info(target: str = typer.Argument(..., help="model name or checkpoint path")) -> None:
    """Print the architecture and the per-layer structure report (Eqs. 2-3)."""
    from .metrics import format_structure_report, structure_report

    model, meta = _load_model_or_checkpoint(target)
    typer.echo(model)
    if meta:
        typer.echo(f"metadata: {meta}")
    typer.echo(format_structure_report(structure_report(model)))


# === attacks / evaluation commands ===


# === training commands ===


# === information / theory commands ===


# === reproduce commands ===


def main() -> None:
    app()


if __name__ == "__main__":
    main()
