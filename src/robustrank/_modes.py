"""Mode handling shared by attacks, evaluation and layer probing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


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
