"""The names of the bundled presets (a leaf: configs check ``init.from_preset`` against
it, :mod:`robustrank.training.presets` loads them)."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable

__all__ = ["preset_dir", "list_presets"]


def preset_dir() -> Traversable:
    """The folder of the bundled preset files (``<name>.yaml``)."""
    return resources.files("robustrank") / "experiments" / "presets"


def list_presets() -> list[str]:
    """Names of the bundled presets (every row of the paper's Tables 1 and 2, and more)."""
    return sorted(
        p.name[: -len(".yaml")] for p in preset_dir().iterdir() if p.name.endswith(".yaml")
    )
