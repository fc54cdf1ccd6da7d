"""``robustrank data``: fetch, verify and list datasets."""

from __future__ import annotations

from pathlib import Path

import typer

from ..data import list_datasets
from .common import fail

__all__ = ["app"]

app = typer.Typer(
    help="Fetch, verify and list datasets.", no_args_is_help=True, rich_markup_mode=None
)


@app.command("fetch")
def data_fetch(
    names: list[str] = typer.Argument(None, help="datasets to fetch (default: all fetchable)"),
    data_dir: Path = typer.Option(
        None, help="cache directory (default: $ROBUSTRANK_DATA or ~/.cache/robustrank)"
    ),
) -> None:
    """Fetch, verify (SHA-256) and cache datasets."""
    from .. import data

    try:
        data.fetch(names or None, data_dir=data_dir)
    except (ValueError, RuntimeError) as err:
        fail(str(err))
    typer.echo(data.format_verify_table(data.verify(data_dir=data_dir)))


@app.command("verify")
def data_verify(data_dir: Path = typer.Option(None, help="cache directory")) -> None:
    """Check every cached array against its SHA-256 (offline; fetches nothing)."""
    from .. import data

    results = data.verify(data_dir=data_dir)
    typer.echo(data.format_verify_table(results))
    if any(r.status != "ok" for r in results):
        raise typer.Exit(1)


@app.command("list")
def data_list() -> None:
    """List the registered datasets."""
    from ..data import get_dataset

    for name in list_datasets():
        spec = get_dataset(name)
        shape = "x".join(map(str, spec.input_shape)) if spec.input_shape else "from file"
        path = ", needs a path" if spec.needs_path else ""
        typer.echo(f"{name}  ({shape}, {spec.num_classes or '?'} classes{path})")
        if spec.description:
            typer.echo(f"    {spec.description}")
