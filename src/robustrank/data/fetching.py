"""Datasets robustrank fetches by itself (MNIST, Fashion-MNIST): ``fetch``, ``verify``,
``cache_path`` and the loader that serves them from the verified cache.

Every array is checked against a pinned SHA-256 of its decoded uint8 bytes before use,
whichever source it came from (:mod:`robustrank.data.sources`). A dataset is fetchable
when its registered loader is a :class:`VerifiedLoader`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ._util import check_choice, logger
from .cache import KINDS, SPLITS, CacheRead, read_cached, resolve_data_dir, write_cache
from .errors import DataIntegrityError, DataUnavailableError
from .registry import DatasetSpec, get_dataset, list_datasets
from .sources import fetch_from_sources
from .verified import IDXDataset

__all__ = [
    "FetchResult",
    "VerifyResult",
    "VerifiedLoader",
    "verified_dataset",
    "fetchable_datasets",
    "cache_path",
    "fetch",
    "verify",
    "format_verify_table",
]


@dataclass(frozen=True)
class FetchResult:
    """Outcome of fetching one dataset."""

    dataset: str
    source: str  # "cache" when everything already verified
    seconds: float
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class VerifyResult:
    """Verification status of one cached array."""

    dataset: str
    split: str
    kind: str
    path: Path
    status: str  # "ok" | "missing" | "mismatch"
    sha256: str | None  # of the file as found (None when missing)
    expected: str


@dataclass(frozen=True)
class VerifiedLoader:
    """Loader of a fetchable dataset: x float32 (N, 1, H, W) = pixel/255, y int64 (N,).

    Missing data is fetched; a cache file that fails verification (wrong hash, truncated)
    is deleted and refetched, and ``DataIntegrityError`` is raised if that fails.
    """

    spec: IDXDataset

    def __call__(
        self,
        split: str,
        path: Path | None = None,
        *,
        data_dir: str | Path | None = None,
        idx_dir: str | Path | None = None,
        progress: bool = True,
        **_: object,
    ) -> tuple[Tensor, Tensor]:
        return _load_verified(self.spec, split, resolve_data_dir(data_dir), idx_dir, progress)


def verified_dataset(
    spec: IDXDataset,
    *,
    num_classes: int,
    description: str = "",
    class_names: tuple[str, ...] | None = None,
) -> DatasetSpec:
    """The registry entry of a fetchable dataset whose arrays are pinned by ``spec``."""
    height, width = spec.shapes[("train", "images")][1:]
    return DatasetSpec(
        name=spec.name,
        input_shape=(1, height, width),
        num_classes=num_classes,
        splits=SPLITS,
        loader=VerifiedLoader(spec),
        checksums={f"{s}-{k}": digest for (s, k), digest in spec.sha256.items()},
        needs_path=False,
        description=description,
        class_names=class_names,
    )


def fetchable_datasets() -> list[str]:
    """Registered datasets that ``fetch``/``verify`` obtain and check by themselves."""
    return [n for n in list_datasets() if isinstance(get_dataset(n).loader, VerifiedLoader)]


def _fetchable(name: str) -> IDXDataset:
    names = fetchable_datasets()
    if name not in names and name in list_datasets():
        raise ValueError(
            f"dataset {name!r} is not fetched by robustrank: it is read from a path you give "
            f"(load_dataset({name!r}, split, path=...)); fetchable: {', '.join(names)}"
        )
    check_choice("dataset", name, names)
    loader = get_dataset(name).loader
    assert isinstance(loader, VerifiedLoader)
    return loader.spec


def _names(names: str | Sequence[str] | None) -> list[IDXDataset]:
    if names is None:
        names = fetchable_datasets()
    elif isinstance(names, str):
        names = [names]
    out: list[IDXDataset] = []
    for name in names:
        spec = _fetchable(name)
        if spec not in out:
            out.append(spec)
    return out


def cache_path(name: str, split: str, kind: str, data_dir: str | Path | None = None) -> Path:
    """Path of one cached array: ``<data_dir>/<name>/<split>-<kind>.u8``."""
    _fetchable(name)
    check_choice("split", split, SPLITS)
    check_choice("kind", kind, KINDS)
    return resolve_data_dir(data_dir) / name / f"{split}-{kind}.u8"


def _fetch_one(
    spec: IDXDataset, root: Path, progress: bool, idx_dir: str | Path | None, force: bool
) -> FetchResult:
    start = time.perf_counter()
    if not force:
        reads = [read_cached(spec, s, k, root) for s, k in spec.shapes]
        if all(r.status == "ok" for r in reads):
            return FetchResult(
                spec.name, "cache", time.perf_counter() - start, tuple(r.path for r in reads)
            )
        for r in reads:
            if r.status == "mismatch":
                logger.warning(
                    "%s: cached %s failed verification (%s)", spec.name, r.path, r.detail
                )
    label, arrays = fetch_from_sources(spec, idx_dir, progress)
    paths = write_cache(spec, arrays, root)
    return FetchResult(spec.name, label, time.perf_counter() - start, tuple(paths))


def fetch(
    names: str | Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    *,
    idx_dir: str | Path | None = None,
    force: bool = False,
) -> dict[str, FetchResult]:
    """Fetch, verify and cache all four arrays of each dataset (default: all fetchable).

    Datasets whose cache already verifies are left alone unless ``force``. Raises
    ``DataUnavailableError`` if no source yields verified data.
    """
    root = resolve_data_dir(data_dir)
    specs = _names(names)
    return {spec.name: _fetch_one(spec, root, progress, idx_dir, force) for spec in specs}


def verify(
    data_dir: str | Path | None = None, names: str | Sequence[str] | None = None
) -> list[VerifyResult]:
    """Report the status of every cached array; never fetches or modifies anything."""
    root = resolve_data_dir(data_dir)
    out = []
    for spec in _names(names):
        for split, kind in spec.shapes:
            r = read_cached(spec, split, kind, root)
            expected = spec.sha256[(split, kind)]
            out.append(VerifyResult(spec.name, split, kind, r.path, r.status, r.sha256, expected))
    return out


def format_verify_table(results: Sequence[VerifyResult]) -> str:
    """Plain-text table of ``verify`` results, with a summary line."""
    header = ("dataset", "split", "kind", "status", "sha256", "path")
    rows = [
        (r.dataset, r.split, r.kind, r.status, (r.sha256 or "-")[:16], str(r.path)) for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    n_ok = sum(r.status == "ok" for r in results)
    lines.append(f"{n_ok}/{len(results)} arrays verified")
    return "\n".join(lines)


def _drop_bad(name: str, bad: list[CacheRead]) -> list[str]:
    """Delete cache files that failed verification; returns those that could not be."""
    undeletable = []
    for r in bad:
        logger.warning(
            "%s: cache file %s failed verification (%s); deleting and refetching",
            name,
            r.path,
            r.detail,
        )
        try:
            r.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            undeletable.append(f"{r.path} ({exc})")
    return undeletable


def _load_verified(
    spec: IDXDataset, split: str, root: Path, idx_dir: str | Path | None, progress: bool
) -> tuple[Tensor, Tensor]:
    name = spec.name
    check_choice("split", split, SPLITS)
    reads = {kind: read_cached(spec, split, kind, root) for kind in KINDS}
    bad = [r for r in reads.values() if r.status == "mismatch"]
    undeletable = _drop_bad(name, bad)
    if any(r.status != "ok" for r in reads.values()):
        try:
            _fetch_one(spec, root, progress, idx_dir, force=True)
        except DataUnavailableError as exc:
            if not bad:
                raise
            files = ", ".join(str(r.path) for r in bad)
            fix = f"run `robustrank data fetch {name}` once a source is available"
            if undeletable:
                fix += f", or delete {', '.join(undeletable)} by hand"
            raise DataIntegrityError(
                f"cached {name} {split} data failed SHA-256/size verification ({files}) "
                f"and could not be refetched. Fix: {fix}.\nRefetch error: {exc}"
            ) from exc
        reads = {kind: read_cached(spec, split, kind, root) for kind in KINDS}
        still_bad = [r for r in reads.values() if r.status != "ok"]
        if still_bad:
            files = ", ".join(f"{r.path} ({r.status} {r.detail})" for r in still_bad)
            raise DataIntegrityError(
                f"{name} {split}: cache still fails verification after refetch: {files}. "
                f"Fix: delete the file(s) and run `robustrank data fetch {name}`."
            )
    images, labels = reads["images"].array, reads["labels"].array
    assert images is not None and labels is not None
    x = torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels).to(torch.int64)
    return x, y
