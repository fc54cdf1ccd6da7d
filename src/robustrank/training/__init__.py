"""Training (Section 5): natural, adversarial and regularised runs, and tools for your loop.

* :mod:`.config` -- the validated YAML config (:class:`TrainConfig`).
* :mod:`.presets` -- one preset per row of the paper's Tables 1 and 2.
* :mod:`.rundir` -- the run directory, its history files and resume state.
* :mod:`.setup` / :mod:`.loop` -- starting a run and the training loop (:func:`train`).
* :mod:`.measurements` -- what a history row measures.
* :mod:`.seeds` -- derived seeds and the learning rate of an epoch.
* :mod:`.optimizers` / :mod:`.schedules` -- the registries of optimizers (``sgd``,
  ``adam``, ``adamw``, ``rmsprop``) and learning-rate schedules (``constant``, ``cosine``,
  ``step``, ``linear-warmup``).
* :mod:`.objectives` -- the registry of training objectives (``madry``, ``mix``,
  ``trades``, ``mart``); :mod:`.certified` adds ``ibp`` and ``crown-ibp``.
* :mod:`.tracker` -- :class:`StructureTracker` for your own training loop.
"""

from . import certified as _certified  # noqa: F401  (registers ibp, crown-ibp)
from .config import (
    AdversarialConfig,
    ConfigError,
    HistoryConfig,
    InitConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimizerConfig,
    PaperRef,
    ScheduleConfig,
    TrainConfig,
    config_from_dict,
    load_config,
    prune_attack_options,
)
from .loop import TrainResult, train
from .measurements import Measurer
from .objectives import get_objective, list_objectives, register_objective
from .optimizers import create_optimizer, get_optimizer, list_optimizers, register_optimizer
from .presets import list_presets, load_preset, resolve_config
from .rundir import RunError, read_history
from .schedules import get_schedule, list_schedules, register_schedule
from .seeds import derive_seed, lr_at_epoch
from .tracker import StructureTracker

__all__ = [
    "ConfigError",
    "RunError",
    "ModelConfig",
    "InitConfig",
    "AdversarialConfig",
    "HistoryConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "ObjectiveConfig",
    "PaperRef",
    "TrainConfig",
    "TrainResult",
    "Measurer",
    "StructureTracker",
    "config_from_dict",
    "load_config",
    "prune_attack_options",
    "list_presets",
    "load_preset",
    "resolve_config",
    "derive_seed",
    "lr_at_epoch",
    "register_optimizer",
    "get_optimizer",
    "list_optimizers",
    "create_optimizer",
    "register_schedule",
    "get_schedule",
    "list_schedules",
    "register_objective",
    "get_objective",
    "list_objectives",
    "train",
    "read_history",
]
