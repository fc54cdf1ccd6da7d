"""The listings: ``robustrank models``, ``attacks``, ``optimizers``, ``schedules``,
``objectives``, ``pruning`` and ``presets`` (every name comes from its registry)."""

from __future__ import annotations

import typer

__all__ = [
    "models_cmd",
    "attacks_cmd",
    "optimizers_cmd",
    "schedules_cmd",
    "objectives_cmd",
    "pruning_cmd",
    "presets_cmd",
]


def models_cmd() -> None:
    """List the registered models (import paths package.module:factory also work)."""
    from ..models import get_model, list_models

    for name in list_models():
        entry = get_model(name)
        shape = "x".join(map(str, entry.input_shape)) if entry.input_shape else "any"
        typer.echo(f"{name}  (input {shape})  {entry.description}")


def attacks_cmd() -> None:
    """List the registered attacks and their default settings."""
    from ..attacks import get_attack, list_attacks

    for name in list_attacks():
        spec = get_attack(name)
        defaults = ", ".join(f"{k}={v}" for k, v in spec.defaults.items()) or "-"
        typer.echo(f"{name}  ({defaults})  {spec.description}")


def optimizers_cmd() -> None:
    """List the registered optimizers (config key `optimizer`) and their options."""
    from ..registry import format_options
    from ..training import get_optimizer, list_optimizers

    for name in list_optimizers():
        entry = get_optimizer(name)
        typer.echo(f"{name}  {entry.description}\n    options: {format_options(entry.options)}")


def schedules_cmd() -> None:
    """List the registered learning-rate schedules (config key `schedule`) and their options."""
    from ..registry import format_options
    from ..training import get_schedule, list_schedules

    for name in list_schedules():
        entry = get_schedule(name)
        typer.echo(f"{name}  ({format_options(entry.options) or '-'})  {entry.description}")


def objectives_cmd() -> None:
    """List the registered training objectives (config key `adversarial.objective`)."""
    from ..registry import format_options
    from ..training import get_objective, list_objectives

    for name in list_objectives():
        entry = get_objective(name)
        attack = "" if entry.needs_attack else "; without an attack: natural training"
        typer.echo(f"{name}  ({format_options(entry.options) or '-'}{attack})  {entry.description}")


def pruning_cmd() -> None:
    """List the registered pruning methods (config key `structure.prune.method`)."""
    from ..structure import get_pruning_method, list_pruning_methods

    for name in list_pruning_methods():
        entry = get_pruning_method(name)
        kind = "trained in the run" if entry.trainable else "post hoc or at the start of a run"
        typer.echo(f"{name}  ({kind})  {entry.description}")


def presets_cmd() -> None:
    """List the bundled training presets with the paper's clean accuracies (Tables 1-2)."""
    from ..training import list_presets, load_preset

    for name in list_presets():
        cfg = load_preset(name)
        paper = (
            f"paper Table {cfg.paper.table}: {cfg.paper.accuracy:.4f}"
            if cfg.paper is not None
            else "not in the paper's tables"
        )
        init = f", from {cfg.init.from_preset}" if cfg.init.from_preset else ""
        epochs = f"{cfg.epochs} epoch{'' if cfg.epochs == 1 else 's'}"
        typer.echo(f"{name}  ({paper}; {epochs}{init})")
        typer.echo(f"    {cfg.description}")
