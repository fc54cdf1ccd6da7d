"""``robustrank compress``: post-hoc exact structure of a trained checkpoint
(:func:`robustrank.experiments.compress.compress`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from .common import CheckpointArg, ProgressOpt, TrustOpt, fail

__all__ = ["compress_cmd", "parse_layer_values"]


def parse_layer_values(
    items: list[str] | None, option: str, cast: Callable[[str], Any]
) -> dict[int | str, Any]:
    """``["W1=0.1", "2=0.5"]`` -> ``{"W1": 0.1, 2: 0.5}``: layer keys (a digit string is a
    1-based paper index) and values cast by ``cast``; a one-line error on bad input."""
    values: dict[int | str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            fail(f"{option} {item!r}: write LAYER=VALUE, e.g. {option} W1=0.1")
        try:
            value = cast(text.strip())
        except ValueError:
            fail(f"{option} {item!r}: {text.strip()!r} is not a {cast.__name__}")
        values[int(key) if key.isdigit() else key] = value
    return values


def compress_cmd(
    checkpoint: CheckpointArg,
    out: Path = typer.Option(..., help="directory for compressed.safetensors and compress.json"),
    density: list[str] = typer.Option(
        None, help="LAYER=D: prune LAYER (alias W1, index, module path or glob) to density D"
    ),
    rank: list[str] = typer.Option(None, help="LAYER=R: factorise LAYER to rank R"),
    energy: float = typer.Option(
        None, help="factorise every layer to keep this share of ||W||_F^2"
    ),
    method: str = typer.Option("magnitude", help="pruning method (`robustrank pruning`)"),
    scope: str = typer.Option("layer", help="layer | global (one ranking over the layers)"),
    seed: int = typer.Option(0, help="seed of random pruning and of the fine-tune"),
    finetune: str = typer.Option(None, help="fine-tune with this preset's recipe, e.g. fcnn-pgd"),
    set_: list[str] = typer.Option(
        None, "--set", help="fine-tune config override KEY=VALUE (dotted key, YAML value)"
    ),
    overwrite: bool = typer.Option(False, help="replace a compression of another request"),
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
) -> None:
    """Prune and/or factorise a trained model to exact densities and ranks; a layer in both
    is low rank plus sparse (ATMC). Optionally fine-tune it, the structure kept exact."""
    from ..experiments.budgets import BudgetError, parse_overrides
    from ..experiments.compress import CompressError, compress

    try:
        result = compress(
            checkpoint,
            out,
            density=parse_layer_values(density, "--density", float),
            rank=parse_layer_values(rank, "--rank", int),
            energy=energy,
            method=method,
            scope=scope,
            seed=seed,
            finetune=finetune,
            overrides=parse_overrides(set_ or []),
            overwrite=overwrite,
            progress=progress,
            trust_code=trust_code,
        )
    except (CompressError, BudgetError) as err:
        fail(str(err))
    typer.echo(result.format())
    typer.echo(f"wrote {result.checkpoint}")
