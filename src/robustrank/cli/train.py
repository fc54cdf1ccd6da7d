"""``robustrank train``: one training run from a YAML config or a bundled preset."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import ConfigDeviceOpt, ProgressOpt, TrustOpt, fail

__all__ = ["train_cmd"]


def train_cmd(
    config: Path = typer.Argument(None, help="YAML training config (or use --preset)"),
    preset: str = typer.Option(None, "--preset", help="bundled preset (see `robustrank presets`)"),
    epochs: int = typer.Option(None, "--epochs", help="override the number of epochs"),
    out: Path = typer.Option(None, "--out", help="run directory (default: runs/<name>)"),
    seed: int = typer.Option(None, "--seed", help="override the seed"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete the run in --out first"),
    device: ConfigDeviceOpt = None,
    threads: int = typer.Option(
        None, "--threads", min=1, help="CPU threads of the run (overrides the config)"
    ),
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
) -> None:
    """Train a model from a YAML config or a preset (natural, adversarial, regularised)."""
    from ..data import DataError
    from ..models import CheckpointError
    from ..training import ConfigError, RunError, resolve_config, train

    overrides = {"epochs": epochs, "seed": seed, "device": device, "threads": threads}
    try:
        cfg = resolve_config(config, preset, overrides, trust_code=trust_code)
        out_dir = out if out is not None else Path("runs") / cfg.name
        result = train(
            cfg,
            out_dir,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            trust_code=trust_code,
        )
    except (ConfigError, RunError, DataError, CheckpointError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        typer.secho("interrupted; continue the run with --resume", err=True)
        raise typer.Exit(130) from None
    typer.echo(result.format())
