"""Exact structure: pruning, low-rank factorisation and proximal steps, on any model.

* :mod:`.pruning` -- ``prune(model, density=...)``: masks of an exact density;
* :mod:`.methods` -- the pruning-method registry (``magnitude``, ``random``, ``scores``);
* :mod:`.scores` -- HYDRA's score phase and fine-tuning phase;
* :mod:`.gradual` -- gradual pruning along Zhu & Gupta's (2017) cubic schedule
  (``structure.prune.gradual`` in a training config);
* :mod:`.factorization` -- ``factorize(model, rank=... | energy=...)``: ``U V`` of an exact rank;
* :mod:`.proximal` -- soft-thresholding and singular value thresholding (Eqs. 5-6 as
  proximal steps, ``regularizers: {mode: proximal}``);
* :mod:`.config` -- the ``structure:`` section of a training config;
* :mod:`.compress` -- post-hoc compression of a checkpoint (``robustrank compress``).

The structured layers themselves (masks, factors) are parametrizations defined in
:mod:`robustrank.models.structured`, so checkpoints rebuild them.
"""

from .config import BudgetConfig, FactorizeConfig, GradualConfig, PruneConfig, StructureConfig
from .factorization import energy_rank, factorize
from .gradual import cubic_density, scheduled_density
from .methods import (
    PruningMethod,
    get_pruning_method,
    list_pruning_methods,
    register_pruning_method,
)
from .proximal import proximal_step, singular_value_threshold, soft_threshold
from .pruning import prune
from .scores import fix_masks, score_phase, scored_layers

__all__ = [
    "prune",
    "factorize",
    "energy_rank",
    "PruningMethod",
    "register_pruning_method",
    "get_pruning_method",
    "list_pruning_methods",
    "soft_threshold",
    "singular_value_threshold",
    "proximal_step",
    "score_phase",
    "scored_layers",
    "fix_masks",
    "StructureConfig",
    "PruneConfig",
    "FactorizeConfig",
    "BudgetConfig",
    "GradualConfig",
    "cubic_density",
    "scheduled_density",
]
