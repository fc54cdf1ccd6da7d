"""Pre-evaluation sanity checks of a model (in the spirit of AutoAttack's checks)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import eval_mode

__all__ = ["check_model"]


def check_model(
    model: nn.Module, x: Tensor, y: Tensor, *, n: int = 32, warn: bool = True, stacklevel: int = 2
) -> list[str]:
    """Sanity checks before an evaluation (in the spirit of AutoAttack's checks).

    Looks at the first ``n`` inputs and reports (and, with ``warn``, emits as
    ``UserWarning``) common evaluation mistakes:

    * outputs that look like probabilities (all in [0, 1], rows summing to 1): attacks
      expect logits; a softmax inside the model flattens the loss and masks gradients;
    * inputs whose loss gradient is exactly zero (gradient masking or saturated units:
      a robustness claim then needs a gradient-free or transfer check, Section 5);
    * a model in training mode (attacks and evaluation switch to eval mode anyway).

    Returns the list of messages (empty when nothing looks wrong).
    """
    messages: list[str] = []
    if model.training:
        messages.append(
            "the model is in training mode; robustrank evaluates it in eval mode (and "
            "restores the mode afterwards), call model.eval() to silence this"
        )
    xs = x[:n].detach().clone()
    ys = y[:n].to(device=x.device, dtype=torch.int64)
    if len(xs):
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            xs.requires_grad_(True)
            out = model(xs)
            if out.dim() == 2 and out.shape[1] > 1:
                o = out.detach()
                sums = o.sum(1)
                if bool(((o >= 0) & (o <= 1)).all()) and bool(
                    torch.allclose(sums, torch.ones_like(sums), atol=1e-4)
                ):
                    messages.append(
                        "model outputs look like probabilities (rows in [0, 1] summing to 1); "
                        "attacks and the cross-entropy expect logits: remove the final softmax"
                    )
                if int(ys.max()) < out.shape[1]:
                    loss = F.cross_entropy(out, ys, reduction="sum")
                    (g,) = torch.autograd.grad(loss, xs)
                    zero = (g.flatten(1).abs().amax(1) == 0).float().mean().item()
                    if zero > 0:
                        messages.append(
                            f"the input gradient is exactly zero for {zero:.0%} of the checked "
                            "inputs (gradient masking or saturated units?); gradient attacks "
                            "cannot move these inputs, so check robustness with a larger eps "
                            "or a transfer attack"
                        )
    if warn:
        for msg in messages:
            warnings.warn(msg, UserWarning, stacklevel=stacklevel)
    return messages
