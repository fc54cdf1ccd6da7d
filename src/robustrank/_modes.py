"""Mode handling shared by attacks, evaluation, layer probing and runs: eval mode, the
CPU thread count and the device."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["eval_mode", "torch_threads", "resolve_device", "model_device"]


def resolve_device(name: str | torch.device) -> torch.device:
    """``name`` as a device; a CUDA device on a machine without CUDA raises ValueError."""
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {name!r} is not a device name ({err}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(name)!r} requested but CUDA is not available in this torch "
            "build/machine; use device: cpu (--device cpu)"
        )
    return dev


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU without either)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore every module's own ``training`` flag on exit.

    Restoring per module (not ``model.train(flag)``) keeps mixed states intact, e.g. a
    frozen submodule in eval mode inside a model in training mode.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(threads)`` and restore the previous count on exit.

    ``None`` leaves PyTorch's setting alone. A run's thread count is part of the run: float
    reductions may be ordered differently with another count.
    """
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
