"""``DatasetRef``: how configs, checkpoints and the CLI name a dataset.

Either a bare registered name (``"mnist"``) or a mapping ``{name: npz, path: data.npz,
sha256: ...}`` for datasets read from a path. ``path`` is stored as given; a relative path
is resolved against the current working directory when the data is used, and ``~`` is
expanded. ``sha256`` pins the data's fingerprint (:func:`dataset_fingerprint`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .registry import DatasetSpec, get_dataset, list_datasets

__all__ = ["DatasetRef"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


class DatasetRef(BaseModel):
    """A registered dataset, plus the path it is read from (and its pinned SHA-256) when
    the dataset needs one. Frozen and hashable.

    Example::

        >>> DatasetRef.parse("mnist").plain()
        'mnist'
        >>> DatasetRef.parse({"name": "npz", "path": "data.npz"}).plain()
        {'name': 'npz', 'path': 'data.npz'}
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: str | None = None
    sha256: str | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        if isinstance(v, os.PathLike):
            v = os.fspath(v)
        if isinstance(v, str) and not v.strip():
            raise ValueError("path must not be empty")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.fullmatch(v.lower()):
            raise ValueError(f"sha256 must be 64 hexadecimal digits, got {v!r}")
        return None if v is None else v.lower()

    @model_validator(mode="after")
    def _against_registry(self) -> DatasetRef:
        spec = get_dataset(self.name)
        if spec.needs_path and self.path is None:
            raise ValueError(
                f"dataset {self.name!r} is read from a file you provide: add the 'path' key, "
                f"e.g. dataset: {{name: {self.name}, path: {spec.path_example}}}"
            )
        if not spec.needs_path and self.path is not None:
            takes = [n for n in list_datasets() if get_dataset(n).needs_path]
            raise ValueError(
                f"dataset {self.name!r} does not take a path: remove the 'path' key "
                f"(datasets read from a path: {', '.join(takes) or 'none'})"
            )
        if self.sha256 is not None and self.path is None:
            raise ValueError(
                f"'sha256' pins the data at 'path', and dataset {self.name!r} has no path: "
                "remove the 'sha256' key"
            )
        return self

    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | DatasetRef) -> DatasetRef:
        """A ref from a name (``"mnist"``), a mapping (``{"name": "npz", "path": ...}``) or
        a ref; ``ValueError`` with a readable message if it is not valid."""
        if isinstance(value, DatasetRef):
            return value
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping):
            raise ValueError(
                f"a dataset is a name or a mapping with keys name, path, sha256; got "
                f"{type(value).__name__} {value!r}"
            )
        try:
            return cls.model_validate(dict(value))
        except ValidationError as err:
            raise ValueError(_readable(err)) from None

    @property
    def spec(self) -> DatasetSpec:
        """The registered :class:`DatasetSpec`."""
        return get_dataset(self.name)

    def resolved_path(self) -> Path | None:
        """``path`` with ``~`` expanded, made absolute against the current directory."""
        return None if self.path is None else Path(self.path).expanduser().absolute()

    def plain(self) -> str | dict[str, str]:
        """The bare name when only ``name`` is set (so built-in datasets serialise as
        before), else a dict of the keys that are set."""
        if self.path is None and self.sha256 is None:
            return self.name
        return self.model_dump(exclude_none=True)


def _readable(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key (the keys are {', '.join(DatasetRef.model_fields)})"
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
