"""HYDRA's score-based pruning (Sehwag et al., "HYDRA: Pruning Adversarially Robust Neural
Networks", NeurIPS 2020) in two phases, under any training objective:

1. **scores**: the weights are frozen and the importance scores of the
   :class:`robustrank.models.ScoredMask` layers are trained, through the top-k mask's
   straight-through gradient, on the training loss (adversarial or not);
2. **fine-tune**: the scores are frozen (so is the mask) and the weights train.

:func:`score_phase` switches between them by ``requires_grad`` (optimizers skip
parameters without a gradient, so one optimizer serves both); :func:`fix_masks` turns the
learnt masks into fixed :class:`robustrank.models.Masked` ones.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize

from ..models import Masked, ScoredMask, structured_layers

__all__ = ["scored_layers", "score_phase", "fix_masks"]


def scored_layers(model: nn.Module) -> list[tuple[nn.Module, ScoredMask]]:
    """``[(layer, its ScoredMask)]`` of every layer pruned by trainable scores."""
    return [(m, p) for _, m, p in structured_layers(model) if isinstance(p, ScoredMask)]


def score_phase(model: nn.Module, train_scores: bool) -> bool:
    """Phase 1 (``train_scores``: only the scores learn) or phase 2 (only the weights);
    returns whether the model has scores at all (otherwise nothing changes)."""
    scored = scored_layers(model)
    if not scored:
        return False
    scores = {id(p.scores) for _, p in scored}
    for param in model.parameters():
        param.requires_grad_(train_scores if id(param) in scores else not train_scores)
    return True


def fix_masks(model: nn.Module) -> int:
    """Replace every trainable-score mask by the fixed mask it selects now (same function);
    returns how many layers changed."""
    scored = scored_layers(model)
    for module, p in scored:
        mask = p.mask
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        parametrize.register_parametrization(module, "weight", Masked(mask))
    return len(scored)
