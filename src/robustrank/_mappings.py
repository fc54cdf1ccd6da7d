"""Deep merge of nested mappings: how profiles, sweeps and budget studies override configs."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["deep_merge"]


def deep_merge(base: Mapping[Any, Any], extra: Mapping[Any, Any] | None) -> dict[Any, Any]:
    """``base`` updated by ``extra``, nested mappings merged key by key (inputs unchanged).

    ``history: {eval_n: 200}`` in ``extra`` keeps the other keys of ``base["history"]``.
    """
    out = copy.deepcopy(dict(base))
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
