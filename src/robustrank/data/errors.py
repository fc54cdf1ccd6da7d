"""Exceptions raised by the data layer."""

from __future__ import annotations

__all__ = [
    "DataError",
    "DataIntegrityError",
    "DataUnavailableError",
    "IDXFormatError",
    "LabelError",
]


class DataError(RuntimeError):
    """Base class for data-layer failures."""


class DataIntegrityError(DataError):
    """Data failed verification (checksum, size or format) and cannot be used."""


class DataUnavailableError(DataError):
    """No source could provide verified data for a dataset."""


class LabelError(DataIntegrityError, ValueError):
    """Labels outside the classes of the model they are used with (see ``check_labels``)."""


class IDXFormatError(ValueError):
    """Malformed IDX file (bad magic, dtype code, header or payload length)."""
