"""Memory layout: channels-last storage for conv models on CPU, where oneDNN is faster."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["prefers_channels_last", "use_fast_layout"]


def prefers_channels_last(model: nn.Module, device: str | torch.device = "cpu") -> bool:
    """Whether ``model`` runs faster channels-last on ``device``: CPU with ``Conv2d`` layers."""
    return torch.device(device).type == "cpu" and any(
        isinstance(m, nn.Conv2d) for m in model.modules()
    )


def use_fast_layout(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """Store a conv model's 4-D tensors channels-last on CPU, where oneDNN is faster.

    Values, state-dict keys and checkpoints are unchanged (checkpoints are written
    contiguous); only the memory layout differs. Models without ``Conv2d`` layers, and
    CUDA devices, are left as they are. Returns ``model`` (converted in place). The gain is
    measured by ``benchmarks/bench_training.py``.
    """
    if prefers_channels_last(model, device):
        model.to(memory_format=torch.channels_last)
    return model
