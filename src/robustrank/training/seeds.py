"""Seeds: every source of randomness in a run is derived from its ``seed``, one independent
stream per purpose, and the learning-rate schedule."""

from __future__ import annotations

import math

import numpy as np

from .config import TrainConfig

__all__ = ["derive_seed", "lr_at_epoch", "INIT", "SHUFFLE", "ATTACK", "GLOBAL"]

#: tags mixed into derive_seed(seed, TAG, ...) -- one independent stream per purpose
INIT, SHUFFLE, ATTACK, GLOBAL = 0, 1, 2, 3


def derive_seed(*parts: int) -> int:
    """An independent 63-bit seed for the stream identified by ``parts`` (e.g. seed, tag, epoch)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate used during ``epoch`` (1-based) under ``config.schedule``."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))
    if config.schedule == "step":
        return config.lr * config.lr_gamma ** ((epoch - 1) // config.lr_step_epochs)
    return config.lr
