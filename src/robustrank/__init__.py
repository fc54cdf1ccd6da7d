"""robustrank: low-rank and sparse weights vs. adversarial robustness.

Implements Langenberg, Balda, Behboodi & Mathar, "On the Effect of Low-Rank Weights on
Adversarial Robustness of Neural Networks": the paper's models, FGSM/PGD/GNM attacks,
fooling ratios, l1/nuclear/joint regularisers (Eqs. 5-8), effective rank and sparsity
(Eqs. 2-3), KDE mutual-information bounds and the Section 3 linear experiment.
"""

from .metrics import effective_rank, effective_sparsity, structure_report
from .models import create_model, list_models, load_checkpoint, save_checkpoint, weight_matrices

__version__ = "0.1.0"

__all__ = [
    "create_model",
    "list_models",
    "load_checkpoint",
    "save_checkpoint",
    "weight_matrices",
    "effective_rank",
    "effective_sparsity",
    "structure_report",
]
