"""Training (Section 5): natural, adversarial and regularised runs, and tools for your loop.

* :mod:`.config` -- the validated YAML config (:class:`TrainConfig`).
* :mod:`.presets` -- one preset per row of the paper's Tables 1 and 2.
* :mod:`.rundir` -- the run directory, its history files and resume state.
* :mod:`.setup` / :mod:`.loop` -- starting a run and the training loop (:func:`train`).
* :mod:`.measurements` -- what a history row measures.
* :mod:`.seeds` -- derived seeds and the learning-rate schedule.
* :mod:`.tracker` -- :class:`StructureTracker` for your own training loop.
"""

from .config import (
    AdversarialConfig,
    ConfigError,
    HistoryConfig,
    InitConfig,
    ModelConfig,
    PaperRef,
    TrainConfig,
    config_from_dict,
    load_config,
    prune_attack_options,
)
from .loop import TrainResult, train
from .measurements import Measurer
from .presets import list_presets, load_preset
from .rundir import RunError, read_history
from .seeds import derive_seed, lr_at_epoch
from .tracker import StructureTracker

__all__ = [
    "ConfigError",
    "RunError",
    "ModelConfig",
    "InitConfig",
    "AdversarialConfig",
    "HistoryConfig",
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
    "derive_seed",
    "lr_at_epoch",
    "train",
    "read_history",
]
