"""Data layer: a dataset registry, verified MNIST/Fashion-MNIST, CIFAR-10 and npz files.

- :mod:`~robustrank.data.registry`: :class:`DatasetSpec`, :func:`register_dataset`,
  :func:`list_datasets`, :func:`get_dataset`; :mod:`~robustrank.data.refs`:
  :class:`DatasetRef` (how configs name a dataset).
- :mod:`~robustrank.data.loading`: :func:`load_dataset`, :func:`dataset_fingerprint`,
  :func:`dataset_info`.
- MNIST and Fashion-MNIST (:mod:`~robustrank.data.mnist`) are fetched from several sources
  (:mod:`~robustrank.data.sources`, :mod:`~robustrank.data.offline`), every array checked
  against a pinned SHA-256 before use, and cached as raw uint8 arrays under
  ``<data_dir>/<name>/<split>-<kind>.u8`` (:mod:`~robustrank.data.cache`,
  :mod:`~robustrank.data.fetching`); nothing is ever pickled.
- CIFAR-10 (:mod:`~robustrank.data.cifar10`) is read from the official binary
  distribution at a path you give; ``npz`` (:mod:`~robustrank.data.npz`) reads your arrays.
- :mod:`~robustrank.data.idx` (IDX files), :mod:`~robustrank.data.batching` (mini-batches),
  :mod:`~robustrank.data.labels` (:func:`check_labels`: labels against a model's classes).
"""

from __future__ import annotations

from .batching import batches, eval_subset, subset_indices
from .cache import DATA_ENV, KINDS, SPLITS, default_data_dir
from .errors import DataError, DataIntegrityError, DataUnavailableError, IDXFormatError, LabelError
from .fetching import (
    FetchResult,
    VerifyResult,
    cache_path,
    fetch,
    fetchable_datasets,
    format_verify_table,
    verify,
)
from .idx import read_idx, read_idx_file, write_idx
from .labels import check_labels
from .loading import dataset_fingerprint, dataset_info, load_dataset
from .refs import DatasetRef
from .registry import DatasetInfo, DatasetSpec, get_dataset, list_datasets, register_dataset
from .sources import IDX_ENV, IDX_FILES

# Built-in datasets register themselves on import, in this order.
from . import mnist, cifar10, npz  # noqa: F401  isort: skip

#: Datasets that ``fetch``/``verify`` obtain by themselves (derived from the registry).
DATASETS: tuple[str, ...] = tuple(fetchable_datasets())

__all__ = [
    "DATASETS",
    "SPLITS",
    "KINDS",
    "DataError",
    "DataIntegrityError",
    "DataUnavailableError",
    "IDXFormatError",
    "LabelError",
    "check_labels",
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
    "subset_indices",
    "DatasetSpec",
    "DatasetInfo",
    "DatasetRef",
    "register_dataset",
    "list_datasets",
    "get_dataset",
    "fetchable_datasets",
    "dataset_fingerprint",
    "dataset_info",
    "DATA_ENV",
    "IDX_ENV",
    "IDX_FILES",
]
