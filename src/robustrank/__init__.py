"""robustrank: low-rank and sparse weights vs. adversarial robustness.

Open to any ``nn.Module``, dataset and attack through registries (``register_model``,
``register_dataset``, ``register_attack``; optimizers, learning-rate schedules, executors
and sweep strategies register the same way, :mod:`robustrank.registry`), with
``Regularizer`` and ``StructureTracker`` for your own training loop.

Implements Langenberg, Balda, Behboodi & Mathar, "On the Effect of Low-Rank Weights on
Adversarial Robustness of Neural Networks": the paper's models, FGSM/PGD/GNM attacks,
fooling ratios, l1/nuclear/joint regularisers (Eqs. 5-8), effective rank and sparsity
(Eqs. 2-3), KDE mutual-information bounds and the Section 3 linear experiment.
"""

from .metrics import effective_rank, effective_sparsity, structure_report
from .models import (
    create_model,
    list_models,
    load_checkpoint,
    register_model,
    save_checkpoint,
    weight_matrices,
)

__version__ = "0.1.0"

# Loaded on first use, so that ``import robustrank`` stays light.
_LAZY = {
    "register_attack": "attacks",
    "create_attack": "attacks",
    "list_attacks": "attacks",
    "register_dataset": "data",
    "list_datasets": "data",
    "load_dataset": "data",
    "Regularizer": "regularizers",
    "StructureTracker": "training",
    "FGSM": "attacks",
    "PGD": "attacks",
    "GNM": "attacks",
    "fooling_ratio": "evaluation",
    "robust_accuracy": "evaluation",
    "eps_sweep": "evaluation",
    "evaluate": "evaluation",
    "l1_penalty": "regularizers",
    "nuclear_penalty": "regularizers",
    "joint_l1_penalty": "regularizers",
    "train": "training",
    "load_preset": "training",
    "list_presets": "training",
    "mi_per_layer": "information",
    "run_theory_experiment": "linear_theory",
    "diagnose": "evaluation",
    "robustness_curve": "evaluation",
    "create_executor": "execution",
    "run_sweep": "sweeps",
    "budget_study": "experiments.budgets",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name == "reproduce":
        from .experiments.reproduce import reproduce

        return reproduce
    raise AttributeError(f"module 'robustrank' has no attribute {name!r}")


__all__ = [
    "create_model",
    "list_models",
    "register_model",
    "load_checkpoint",
    "save_checkpoint",
    "weight_matrices",
    "effective_rank",
    "effective_sparsity",
    "structure_report",
    *_LAZY,
    "reproduce",
]
