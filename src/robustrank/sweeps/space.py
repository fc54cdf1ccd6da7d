"""Dotted config paths: ``regularizers.l1.1`` sets lambda_{1,1} (Eq. 5) of layer 1.

A path names a key of a training config; missing mappings on the way are created. Under
``regularizers.l1`` and ``regularizers.nuclear`` the rest of the path is one layer key
(Section 4: a 1-based index, an alias such as ``W1``, or a module path such as
``block.conv1``): all digits make an int index, anything else stays a string.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .._mappings import deep_merge

__all__ = [
    "SpaceError",
    "LAYER_MAPS",
    "parse_path",
    "layer_key",
    "set_path",
    "apply_values",
    "merge_overrides",
]

#: Mappings keyed by layer: the rest of a dotted path below them is one layer key.
LAYER_MAPS = (
    ("regularizers", "l1"),
    ("regularizers", "nuclear"),
    ("structure", "prune", "density"),
    ("structure", "factorize", "rank"),
)


class SpaceError(ValueError):
    """A dotted path cannot be set into a config (e.g. it runs through a number)."""


def parse_path(key: str) -> list[str | int]:
    """``"regularizers.l1.1"`` -> ``["regularizers", "l1", 1]``;
    ``"regularizers.nuclear.block.conv1"`` -> ``["regularizers", "nuclear", "block.conv1"]``;
    the same below ``structure.prune.density`` and ``structure.factorize.rank``."""
    parts = key.split(".")
    if not key or any(not p.strip() for p in parts):
        raise SpaceError(
            f"{key!r} is not a dotted config key; write keys like lr, history.eps or "
            "regularizers.l1.1"
        )
    for prefix in LAYER_MAPS:
        if len(parts) > len(prefix) and tuple(parts[: len(prefix)]) == prefix:
            layer = ".".join(parts[len(prefix) :])
            return [*prefix, int(layer) if layer.isdigit() else layer]
    return list(parts)


def layer_key(path: list[str | int]) -> str | int | None:
    """The layer key a parsed path ends in (``regularizers.l1.1`` -> 1,
    ``structure.prune.density.W1`` -> ``"W1"``), or None for a path outside the layer maps."""
    for prefix in LAYER_MAPS:
        if len(path) == len(prefix) + 1 and tuple(path[:-1]) == prefix:
            return path[-1]
    return None


def _set(config: dict[str, Any], key: str, value: Any, merge: bool) -> None:
    """Set ``key`` in ``config`` in place (creating mappings); ``merge`` deep-merges dicts."""
    path = parse_path(key)
    node: Any = config
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(str(p) for p in path[: i + 1])
            raise SpaceError(
                f"{where} is {child!r}, not a mapping, so {key} cannot be set below it; "
                f"set {where} itself"
            )
        node = child
    last = path[-1]
    if merge and isinstance(value, Mapping) and isinstance(node.get(last), dict):
        node[last] = deep_merge(node[last], value)
    else:
        node[last] = copy.deepcopy(value)


def _pruned(config: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """``out`` without the attack options of attacks it no longer lists (see
    :func:`robustrank.training.prune_attack_options`)."""
    from ..training.config import prune_attack_options

    return prune_attack_options(config, out)


def set_path(config: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``config`` with the dotted ``key`` set to ``value`` (setting
    ``history.attacks`` drops the options of the attacks it no longer lists)."""
    out = copy.deepcopy(dict(config))
    _set(out, key, value, merge=False)
    return _pruned(config, out)


def apply_values(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with every ``{dotted key: value}`` of a trial set, in order
    (as in :func:`set_path`)."""
    out = copy.deepcopy(dict(config))
    for key, value in values.items():
        _set(out, key, value, merge=False)
    return _pruned(config, out)


def merge_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with ``overrides`` deep-merged: nested mappings update the
    config's mappings key by key (``history: {eval_n: 200}`` keeps the other history keys),
    and keys may be dotted paths. Overriding ``history.attacks`` drops the config's options
    of the attacks no longer listed (:func:`robustrank.training.prune_attack_options`)."""
    out = copy.deepcopy(dict(config))
    for key, value in overrides.items():
        _set(out, str(key), value, merge=True)
    return _pruned(config, out)
