"""Safe checkpoints: one safetensors file whose header carries JSON metadata.

The header holds the architecture (name and options, from which the model is rebuilt),
the exact structure of its layers when it has any (masks, factors:
:func:`~robustrank.models.structure_of`, re-applied before the weights load), the input
shape when known, a SHA-256 digest of the tensors, and the caller's metadata.
No pickle is ever read or written. A model named by import path is rebuilt only with
``trust_code=True``; without it nothing is imported. The weights of any ``nn.Module``
can be saved, and loaded back into a model the caller builds (``model=``).

Nothing is allocated from what the header claims: every header field is checked (a
malformed one is a :class:`CheckpointError`), and the architecture is first built on the
``meta`` device (no memory) and its state-dict keys and shapes compared with the file's
tensors; only on a match is the real model built. Building the probe stops once it
registers far more parameters, buffers or submodules than the file holds tensors.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

from .._io import atomic_write_bytes
from .registry import (
    UntrustedCodeError,
    create_model,
    input_shape_of,
    set_input_shape,
)
from .structured import StructureError, apply_structure, structure_of, structured_layers

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
    structure = structure_of(model)
    if structure:
        header["structure"] = structure
    data = save(tensors, metadata={"robustrank": json.dumps(header, sort_keys=True)})
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


_REBUILD_FIX = "re-save it with robustrank.save_checkpoint or restore it from a backup"


def _corrupt(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: {problem}; the file is corrupt or not a robustrank checkpoint: {_REBUILD_FIX}"
    )


def _load_tensors(path: Path, raw: bytes) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the ``__metadata__`` of a safetensors file's bytes."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(raw)
        n = int.from_bytes(raw[:8], "little")
        header_meta = json.loads(raw[8 : 8 + n]).get("__metadata__") or {}
    except (SafetensorError, ValueError, KeyError, AssertionError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({type(err).__name__}: {err}); it may be "
            f"truncated or corrupt: {_REBUILD_FIX}"
        ) from err
    if not isinstance(header_meta, dict):
        raise _corrupt(path, "its safetensors __metadata__ is not an object")
    return tensors, header_meta


def _parse_header(path: Path, text: Any) -> dict[str, Any]:
    """The robustrank header (a JSON object) from its metadata string."""
    try:
        header = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError) as err:
        raise _corrupt(path, f"robustrank metadata is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise _corrupt(
            path, f"robustrank metadata is a JSON {type(header).__name__}, not an object"
        )
    if header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {header.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}; {_REBUILD_FIX}"
        )
    _check_header_fields(path, header)
    return header


def _check_header_fields(path: Path, header: dict[str, Any]) -> None:
    """Every field :func:`load_checkpoint` uses has the type :func:`save_checkpoint` writes."""
    arch = header.get("architecture", {})
    if not isinstance(arch, dict):
        raise _corrupt(path, f"its architecture is a {type(arch).__name__}, not an object")
    if not isinstance(arch.get("name", ""), str) or not isinstance(arch.get("class", ""), str):
        raise _corrupt(path, "its architecture's name (or class) is not a string")
    if not isinstance(arch.get("options", {}), dict):
        raise _corrupt(path, "its architecture's options are not an object of keyword arguments")
    if not isinstance(header.get("metadata", {}), dict):
        raise _corrupt(path, "its metadata is not an object")
    if not isinstance(header.get("structure", {}), dict):
        raise _corrupt(path, "its structure is not an object")
    if not isinstance(header.get("sha256"), str):
        raise _corrupt(path, "it records no SHA-256 digest of its tensors")
    shape = header.get("input_shape")
    if shape is not None and not (
        isinstance(shape, list)
        and 0 < len(shape) <= 8
        and all(type(d) is int and 0 < d <= 1 << 24 for d in shape)
    ):
        raise _corrupt(path, f"its input_shape {shape!r} is not a list of positive dimensions")


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and the verified robustrank header of a checkpoint file."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    tensors, header_meta = _load_tensors(path, path.read_bytes())
    if "robustrank" not in header_meta:
        raise CheckpointError(
            f"{path} has no robustrank metadata; save it with robustrank.save_checkpoint"
        )
    header = _parse_header(path, header_meta["robustrank"])
    if _tensor_digest(tensors) != header["sha256"]:
        raise CheckpointError(
            f"{path}: tensor checksum mismatch, the weights were modified after saving "
            "(tampered or corrupt); do not use this file"
        )
    return tensors, header


def read_checkpoint_header(path: str | Path) -> dict[str, Any]:
    """The verified JSON header of a checkpoint (architecture, metadata); imports nothing."""
    return _read(Path(path))[1]


class _ProbeTooLarge(Exception):
    """Building the meta-device probe registered more than its budget of modules/tensors."""


@contextmanager
def _registration_budget(limit: int) -> Iterator[None]:
    """Raise :class:`_ProbeTooLarge` once this thread registers more than ``limit``
    parameters, buffers and submodules (all modules) inside the block."""
    count, thread = 0, threading.get_ident()

    def hook(*_: Any) -> None:
        nonlocal count
        if threading.get_ident() == thread:
            count += 1
            if count > limit:
                raise _ProbeTooLarge

    handles = [
        register_module_parameter_registration_hook(hook),
        register_module_buffer_registration_hook(hook),
        register_module_module_registration_hook(hook),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _mismatch(model: nn.Module, tensors: dict[str, Tensor]) -> str | None:
    """How ``model``'s state dict differs from ``tensors`` (keys, shapes); None if it fits."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    bad = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or extra or bad:
        return f"missing {_short(missing)}, unexpected {_short(extra)}, wrong shape {_short(bad)}"
    return None


def _short(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters (header values can be long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _build(path: Path, name: str, options: dict[str, Any], trust_code: bool) -> nn.Module:
    try:
        return create_model(name, trust_code=trust_code, **options)
    except UntrustedCodeError as err:
        raise CheckpointError(
            f"{path}: its model is named by import path {name!r}; rebuilding it imports and "
            "runs that code, so nothing was imported. If you trust the file, pass "
            "trust_code=True (CLI: --trust-code), or build the model yourself and pass "
            "model=..."
        ) from err
    except (KeyError, ValueError, TypeError, RuntimeError, OverflowError) as err:
        raise CheckpointError(
            f"{path}: cannot rebuild the architecture {name!r} with options "
            f"{_short(options)}: {err}; {_REBUILD_FIX}"
        ) from err


def _structured(path: Path, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
    """``model`` with the checkpoint's structure applied (unless it carries it already)."""
    if not structure:
        return model
    if next(structured_layers(model), None) is not None:
        return model  # a model passed in structured already: the state dict decides
    try:
        return apply_structure(model, structure)
    except (StructureError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: its structure record does not fit the model: {err}"
        ) from None


def _probe(
    path: Path,
    name: str,
    options: dict[str, Any],
    tensors: dict[str, Tensor],
    trust_code: bool,
    structure: dict[str, Any],
) -> None:
    """Build the architecture on the meta device (no memory, the global RNG untouched) and
    refuse it unless its state dict has exactly the file's keys and shapes.

    A factory that cannot run on the meta device (e.g. it calls ``.item()``) cannot be
    checked, so it is refused too: the caller builds that model and passes ``model=``."""
    budget = 16 * len(tensors) + 1024
    try:
        with (
            torch.random.fork_rng(devices=[]),
            torch.device("meta"),
            _registration_budget(budget),
        ):
            probe = _structured(path, _build(path, name, options, trust_code), structure)
    except _ProbeTooLarge:
        raise CheckpointError(
            f"{path}: the architecture {name!r} with options {_short(options)} has far more layers "
            f"than the file's {len(tensors)} tensors (stopped after {budget} registrations): "
            f"the header does not match the weights; {_REBUILD_FIX}"
        ) from None
    except CheckpointError as err:
        if not isinstance(err.__cause__, RuntimeError):
            raise
        raise CheckpointError(
            f"{path}: cannot build the architecture {name!r} with options {_short(options)} "
            f"on the meta device to check it against the weights before allocating them "
            f"({err.__cause__}); build the model yourself and pass it: "
            "load_checkpoint(path, model=...)"
        ) from err
    problem = _mismatch(probe, tensors)
    if problem is not None:
        raise CheckpointError(
            f"{path}: weights do not match architecture {name} with options {_short(options)}: "
            f"{problem} (nothing was built); {_REBUILD_FIX}"
        )


def _rebuild(
    path: Path,
    arch: dict[str, Any],
    tensors: dict[str, Tensor],
    trust_code: bool,
    structure: dict[str, Any],
) -> nn.Module:
    name = arch.get("name")
    if name is None:
        raise CheckpointError(
            f"{path} holds the weights of a {arch.get('class', 'model')} that was not built "
            "by create_model, so it cannot be rebuilt by name; build the model yourself and "
            "pass it: load_checkpoint(path, model=...)"
        )
    options = arch.get("options", {})
    _probe(path, name, options, tensors, trust_code, structure)
    return _structured(path, _build(path, name, options, trust_code), structure)


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
    structure = header.get("structure") or {}
    if model is None:
        model = _rebuild(path, arch, tensors, trust_code, structure)
    else:
        model = _structured(path, model, structure)
    problem = _mismatch(model, tensors)
    if problem is not None:
        what = arch.get("name") or arch.get("class") or type(model).__name__
        raise CheckpointError(f"{path}: weights do not match architecture {what}: {problem}")
    model.load_state_dict(tensors)
    if header.get("input_shape"):
        set_input_shape(model, tuple(header["input_shape"]))
    model.to(map_location).eval()
    return model, header.get("metadata", {})
