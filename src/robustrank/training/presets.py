"""Bundled presets: one YAML config per row of the paper's Tables 1 and 2, and more."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ..yamlio import YAMLInputError, load_yaml
from . import preset_index
from .config import ConfigError, TrainConfig, config_from_dict, load_config
from .preset_index import list_presets, preset_dir

__all__ = ["list_presets", "load_preset", "resolve_config"]


def load_preset(name: str) -> TrainConfig:
    """The bundled preset ``name`` (e.g. ``"fcnn-natural"``, ``"cnn-pgd"``)."""
    names = preset_index.list_presets()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint} Available presets: {', '.join(names)}")
    resource = preset_dir() / f"{name}.yaml"
    try:
        data = load_yaml(resource.read_text(encoding="utf-8"), f"preset {name}")
    except YAMLInputError as err:  # pragma: no cover - bundled files are tested
        raise ConfigError(str(err)) from None
    config = config_from_dict(data, source=f"preset {name}")
    if config.name != name:
        raise ConfigError(f"preset {name}: its name field is {config.name!r}; they must agree")
    return config


def resolve_config(
    config: str | Path | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    trust_code: bool = False,
) -> TrainConfig:
    """The run of a YAML file ``config`` or a bundled ``preset`` (exactly one), with the
    top-level ``overrides`` whose value is not None applied (``epochs``, ``seed``, ...)."""
    if (config is None) == (preset is None):
        raise ConfigError("give exactly one of CONFIG (a YAML file) or --preset NAME")
    cfg = load_config(config, trust_code=trust_code) if config is not None else load_preset(preset)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return cfg
    return config_from_dict(
        {**cfg.plain(), **given}, "command-line overrides", trust_code=trust_code
    )
