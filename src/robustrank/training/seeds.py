"""Seeds: every source of randomness in a run is derived from its ``seed``, one independent
stream per purpose; and the learning rate of an epoch under the config's schedule."""

from __future__ import annotations

import numpy as np

from .config import TrainConfig
from .schedules import get_schedule

__all__ = ["derive_seed", "lr_at_epoch", "INIT", "SHUFFLE", "ATTACK", "GLOBAL", "STRUCTURE"]

#: tags mixed into derive_seed(seed, TAG, ...) -- one independent stream per purpose
INIT, SHUFFLE, ATTACK, GLOBAL, STRUCTURE = 0, 1, 2, 3, 4


def derive_seed(*parts: int) -> int:
    """An independent 63-bit seed for the stream identified by ``parts`` (e.g. seed, tag, epoch)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate used during ``epoch`` (1-based) under ``config.schedule``
    (:mod:`robustrank.training.schedules`)."""
    schedule = get_schedule(config.schedule.name)
    return schedule.fn(config.lr, epoch, config.epochs, **config.schedule_options())
