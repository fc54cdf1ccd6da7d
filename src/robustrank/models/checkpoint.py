"""Safe checkpoints: one safetensors file whose header carries JSON metadata.

The header holds the architecture (name and options, from which the model is rebuilt),
the input shape when known, a SHA-256 digest of the tensors, and the caller's metadata.
No pickle is ever read or written. A model named by import path is rebuilt only with
``trust_code=True``; without it nothing is imported. The weights of any ``nn.Module``
can be saved, and loaded back into a model the caller builds (``model=``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._io import atomic_write_bytes
from .registry import (
    UntrustedCodeError,
    create_model,
    input_shape_of,
    set_input_shape,
)

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint_header"]

CHECKPOINT_FORMAT = "robustrank-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, tampered with, or does not match its model."""


def _tensor_digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _architecture(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "robustrank_spec", None)
    if spec is not None:
        return dict(spec)
    cls = type(model)
    return {"class": f"{cls.__module__}:{cls.__qualname__}"}


def save_checkpoint(model: nn.Module, path: str | Path, **metadata: Any) -> Path:
    """Save ``model`` as safetensors with JSON metadata (architecture + ``metadata``).

    Any ``nn.Module`` can be saved. Models built by ``create_model`` are rebuilt by
    :func:`load_checkpoint`; other models' weights load into a model you pass
    (``load_checkpoint(path, model=MyNet())``). The write is atomic; ``metadata`` must be
    JSON-serialisable.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    try:
        user = json.loads(json.dumps(metadata))
    except TypeError as err:
        raise ValueError(f"checkpoint metadata must be JSON-serialisable: {err}") from err
    header: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "architecture": _architecture(model),
        "sha256": _tensor_digest(tensors),
        "metadata": user,
    }
    shape = input_shape_of(model)
    if shape is not None:
        header["input_shape"] = list(shape)
    data = save(tensors, metadata={"robustrank": json.dumps(header, sort_keys=True)})
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and the verified robustrank header of a checkpoint file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raw = path.read_bytes()
    try:
        tensors = load(raw)
        n = int.from_bytes(raw[:8], "little")
        header_meta = json.loads(raw[8 : 8 + n]).get("__metadata__") or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({err}); it may be truncated or "
            "corrupt: re-save it or restore it from a backup"
        ) from err
    if "robustrank" not in header_meta:
        raise CheckpointError(
            f"{path} has no robustrank metadata; save it with robustrank.save_checkpoint"
        )
    try:
        header = json.loads(header_meta["robustrank"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: robustrank metadata is not valid JSON ({err})") from err
    if header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {header.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}"
        )
    if _tensor_digest(tensors) != header.get("sha256"):
        raise CheckpointError(
            f"{path}: tensor checksum mismatch, the weights were modified after saving "
            "(tampered or corrupt); do not use this file"
        )
    return tensors, header


def read_checkpoint_header(path: str | Path) -> dict[str, Any]:
    """The verified JSON header of a checkpoint (architecture, metadata); imports nothing."""
    return _read(Path(path))[1]


def _rebuild(path: Path, arch: dict[str, Any], trust_code: bool) -> nn.Module:
    name = arch.get("name")
    if name is None:
        raise CheckpointError(
            f"{path} holds the weights of a {arch.get('class', 'model')} that was not built "
            "by create_model, so it cannot be rebuilt by name; build the model yourself and "
            "pass it: load_checkpoint(path, model=...)"
        )
    try:
        return create_model(name, trust_code=trust_code, **arch.get("options", {}))
    except UntrustedCodeError as err:
        raise CheckpointError(
            f"{path}: its model is named by import path {name!r}; rebuilding it imports and "
            "runs that code, so nothing was imported. If you trust the file, pass "
            "trust_code=True (CLI: --trust-code), or build the model yourself and pass "
            "model=..."
        ) from err
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the architecture {arch}: {err}") from err


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    trust_code: bool = False,
    model: nn.Module | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the ``.safetensors`` file.
        map_location: device of the returned model.
        trust_code: allow rebuilding a model named by import path (imports its module).
        model: load the weights into this model instead of rebuilding one.

    Returns ``(model, metadata)``; the model is in eval mode. Tampered tensors, a missing
    or foreign header, or weights that do not fit the architecture raise
    :class:`CheckpointError`.
    """
    path = Path(path)
    tensors, header = _read(path)
    arch = header.get("architecture") or {}
    if model is None:
        model = _rebuild(path, arch, trust_code)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    bad = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or extra or bad:
        what = arch.get("name") or arch.get("class") or type(model).__name__
        raise CheckpointError(
            f"{path}: weights do not match architecture {what}: missing {missing}, "
            f"unexpected {extra}, wrong shape {bad}"
        )
    model.load_state_dict(tensors)
    if header.get("input_shape"):
        set_input_shape(model, tuple(header["input_shape"]))
    model.to(map_location).eval()
    return model, header.get("metadata", {})
